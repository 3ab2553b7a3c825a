/**
 * A reference counter: the counting contract of /work/shared/design/semantics.md, written a
 * second time, as plainly as possible, for tests to compare the real system against.
 *
 * It deliberately shares NO code with worker/ (no parser, no key-group math, no bucket
 * helpers): a bug in the engine must not be able to hide by appearing on both sides. It is
 * brute force on purpose — correctness by inspection matters here, speed does not.
 *
 * Processing order: the events are taken in array order. "Only the first copy processed is
 * counted", so when copies of one identity differ in content (same event_id, different
 * timestamp or facets), the result depends on which copy the system processed first; tests
 * that spread input over several partitions should therefore duplicate events byte for byte
 * (then the order cannot matter).
 *
 * Choices the contract leaves to the job, made here like the engine documents them:
 * - dedup: a copy is a duplicate when its ingest time is less than `dedupRetentionMs` after
 *   the ingest time of the copy that was counted; later copies count again. The contract
 *   only promises "at least" the retention, so tests should keep copies within it.
 * - uniques beyond the horizon (ingest time later than bucket end + `uniquesRetentionMs`):
 *   the customer counts as new (uniques may overcount), matching the engine's metric
 *   `abacus_uniques_beyond_horizon_total`. Tests should stay within the horizon.
 */

export type RefGranularity = 'hour' | 'day' | 'month';

export interface RefOptions {
  readonly level: 'account' | 'customer';
  /** Default: all three. */
  readonly granularities?: readonly RefGranularity[];
  /** Only these fields are facets (include), or all scalar fields minus `exclude`. */
  readonly facets?: { readonly include?: readonly string[]; readonly exclude?: readonly string[] };
  /** Default 1 MiB. */
  readonly maxEventBytes?: number;
  /** Default 7 days. */
  readonly dedupRetentionMs?: number;
  /** Default 7 days. */
  readonly uniquesRetentionMs?: number;
}

/** One counter, in the shape `abacus counts` prints (bucket as ISO-8601 UTC). */
export interface RefRow {
  scope: string;
  statistic_id: string;
  granularity: RefGranularity;
  facet: string;
  value: string;
  bucket: string;
  count: number;
  uniques?: number;
}

export interface RefResult {
  rows: RefRow[];
  /** Indexes (into the input) of the events the contract calls invalid, with the reason. */
  invalid: Array<{ index: number; reason: string }>;
  counted: number;
  duplicates: number;
}

const RESERVED = new Set(['company_id', 'statistic_id', 'customer_id', 'timestamp', 'event_id']);
const DAY_MS = 24 * 3600 * 1000;
/** 10000-01-01T00:00:00Z in seconds: timestamps must be before it. */
const YEAR_10000_S = 253402300800;

/** Counts `events` the way the contract says; rows sorted by their identity. */
export function referenceCounts(events: ReadonlyArray<{ value: string; ingestTimeMs: number }>, opts: RefOptions): RefRow[] {
  return referenceRun(events, opts).rows;
}

/** Like referenceCounts, with the invalid events and totals too. */
export function referenceRun(events: ReadonlyArray<{ value: string; ingestTimeMs: number }>, opts: RefOptions): RefResult {
  const granularities = opts.granularities ?? ['hour', 'day', 'month'];
  const maxBytes = opts.maxEventBytes ?? 1024 * 1024;
  const dedupMs = opts.dedupRetentionMs ?? 7 * DAY_MS;
  const uniquesMs = opts.uniquesRetentionMs ?? 7 * DAY_MS;

  const counters = new Map<string, { row: RefRow; customers: Set<string> }>();
  const seen = new Map<string, number>(); // identity -> ingest time of the counted copy
  const invalid: Array<{ index: number; reason: string }> = [];
  let counted = 0;
  let duplicates = 0;

  events.forEach((ev, index) => {
    const parsed = parse(ev.value, maxBytes);
    if (typeof parsed === 'string') {
      invalid.push({ index, reason: parsed });
      return;
    }
    // Identity: (company, customer, statistic, event_id), the whole second standing in for
    // an absent id (tagged, so an id "100" and second 100 are not confused).
    const identityKey = JSON.stringify(
      parsed.eventId === undefined
        ? [parsed.company, parsed.customer, parsed.statistic, 'second', Math.floor(parsed.seconds)]
        : [parsed.company, parsed.customer, parsed.statistic, 'id', parsed.eventId],
    );
    const firstIngest = seen.get(identityKey);
    if (firstIngest !== undefined && ev.ingestTimeMs - firstIngest < dedupMs) {
      duplicates++;
      return;
    }
    seen.set(identityKey, ev.ingestTimeMs);
    counted++;

    const scope = opts.level === 'account' ? parsed.company : parsed.customer;
    const facetPairs: Array<[string, string]> = [['*', '*']];
    for (const [name, raw] of Object.entries(parsed.object)) {
      if (RESERVED.has(name)) continue;
      if (opts.facets?.include !== undefined && !opts.facets.include.includes(name)) continue;
      if (opts.facets?.exclude?.includes(name)) continue;
      const text = facetText(raw);
      if (text !== undefined) facetPairs.push([name, text]);
    }
    for (const g of granularities) {
      const [startMs, endMs] = bucketOf(parsed.seconds, g);
      const bucket = isoSeconds(startMs);
      for (const [facet, value] of facetPairs) {
        const key = JSON.stringify([scope, parsed.statistic, g, facet, value, bucket]);
        let c = counters.get(key);
        if (c === undefined) {
          c = { row: { scope, statistic_id: parsed.statistic, granularity: g, facet, value, bucket, count: 0 }, customers: new Set() };
          if (opts.level === 'account') c.row.uniques = 0;
          counters.set(key, c);
        }
        c.row.count++;
        if (opts.level === 'account') {
          const beyondHorizon = ev.ingestTimeMs > endMs + uniquesMs;
          if (beyondHorizon || !c.customers.has(parsed.customer)) {
            c.customers.add(parsed.customer);
            c.row.uniques = (c.row.uniques ?? 0) + 1;
          }
        }
      }
    }
  });

  const rows = [...counters.values()].map((c) => c.row);
  return { rows: sortRows(rows), invalid, counted, duplicates };
}

/** Sorts rows by (scope, statistic, granularity, facet, value, bucket); returns the array. */
export function sortRows<T extends RefRow>(rows: T[]): T[] {
  const k = (r: RefRow): string => JSON.stringify([r.scope, r.statistic_id, r.granularity, r.facet, r.value, r.bucket]);
  return rows.sort((a, b) => (k(a) < k(b) ? -1 : k(a) > k(b) ? 1 : 0));
}

interface Parsed {
  object: Record<string, unknown>;
  company: string;
  statistic: string;
  customer: string;
  seconds: number;
  eventId?: string;
}

function parse(text: string, maxBytes: number): Parsed | string {
  if (Buffer.byteLength(text, 'utf8') > maxBytes) return 'too large';
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch {
    return 'not JSON';
  }
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) return 'not an object';
  const o = doc as Record<string, unknown>;
  for (const f of ['company_id', 'statistic_id', 'customer_id']) {
    if (typeof o[f] !== 'string' || o[f] === '') return `bad ${f}`;
  }
  const seconds = timestampSeconds(o.timestamp);
  if (seconds === undefined) return 'bad timestamp';
  const id = o.event_id;
  const eventId = typeof id === 'string' && id !== '' ? id : typeof id === 'number' ? JSON.stringify(id) : undefined;
  return {
    object: o,
    company: o.company_id as string,
    statistic: o.statistic_id as string,
    customer: o.customer_id as string,
    seconds,
    ...(eventId === undefined ? {} : { eventId }),
  };
}

/** Unix seconds of a contract timestamp, or undefined when it is not one. */
function timestampSeconds(t: unknown): number | undefined {
  let s: number;
  if (typeof t === 'number') {
    s = t;
  } else if (typeof t === 'string') {
    const m = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(\.\d+)?(Z|[+-]\d{2}:\d{2})$/.exec(t);
    if (m === null) return undefined;
    const [, y, mo, d, h, mi, se, frac, zone] = m;
    const local = Date.UTC(Number(y), Number(mo) - 1, Number(d), Number(h), Number(mi), Number(se));
    // Reject impossible dates (Feb 30 and the like) by round-tripping the fields.
    const back = new Date(local);
    if (back.getUTCFullYear() !== Number(y) || back.getUTCMonth() !== Number(mo) - 1 || back.getUTCDate() !== Number(d) || Number(h) > 23 || Number(mi) > 59 || Number(se) > 59) {
      return undefined;
    }
    let offsetMin = 0;
    if (zone !== 'Z') {
      const sign = zone!.startsWith('-') ? -1 : 1;
      offsetMin = sign * (Number(zone!.slice(1, 3)) * 60 + Number(zone!.slice(4, 6)));
    }
    s = local / 1000 - offsetMin * 60 + (frac === undefined ? 0 : Number(`0${frac}`));
  } else {
    return undefined;
  }
  if (!Number.isFinite(s) || s < 0 || s >= YEAR_10000_S) return undefined;
  return s;
}

function facetText(v: unknown): string | undefined {
  if (typeof v === 'string') return v === '' ? undefined : v;
  if (typeof v === 'number' || typeof v === 'boolean') return JSON.stringify(v);
  return undefined;
}

/** [start, end) of the calendar bucket holding `seconds`, in ms. */
function bucketOf(seconds: number, g: RefGranularity): [number, number] {
  const d = new Date(Math.floor(seconds) * 1000);
  const y = d.getUTCFullYear();
  const m = d.getUTCMonth();
  if (g === 'month') return [Date.UTC(y, m, 1), Date.UTC(y, m + 1, 1)];
  if (g === 'day') return [Date.UTC(y, m, d.getUTCDate()), Date.UTC(y, m, d.getUTCDate() + 1)];
  const h = Date.UTC(y, m, d.getUTCDate(), d.getUTCHours());
  return [h, h + 3600 * 1000];
}

function isoSeconds(ms: number): string {
  return new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z');
}
