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
export function referenceCounts(events: ReadonlyArray<{ value: string | Buffer; ingestTimeMs: number }>, opts: RefOptions): RefRow[] {
  return referenceRun(events, opts).rows;
}

/** Like referenceCounts, with the invalid events and totals too. */
export function referenceRun(events: ReadonlyArray<{ value: string | Buffer; ingestTimeMs: number }>, opts: RefOptions): RefResult {
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
    const parsed = parse(ev.value, maxBytes, opts.facets, opts.level);
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
    const facetPairs: Array<[string, string]> = [['*', '*'], ...parsed.facets];
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

/**
 * The records of a JSONL file, as docs/semantics.md defines them: lines end at LF (a last
 * line without one still counts), one CR before the LF is not part of the line, a UTF-8
 * byte-order mark at the very start of the file is ignored, and lines made only of JSON
 * whitespace (space, tab, CR) are not records.
 */
export function jsonlRecords(file: Buffer): Buffer[] {
  let bytes = file;
  if (bytes.length >= 3 && bytes[0] === 0xef && bytes[1] === 0xbb && bytes[2] === 0xbf) bytes = bytes.subarray(3);
  const out: Buffer[] = [];
  let start = 0;
  while (start < bytes.length) {
    let end = bytes.indexOf(0x0a, start);
    if (end === -1) end = bytes.length;
    let line = bytes.subarray(start, end);
    if (line.length > 0 && line[line.length - 1] === 0x0d) line = line.subarray(0, line.length - 1);
    if (!line.every((b) => b === 0x20 || b === 0x09 || b === 0x0d)) out.push(line);
    start = end + 1;
  }
  return out;
}

/** Sorts rows by (scope, statistic, granularity, facet, value, bucket); returns the array. */
export function sortRows<T extends RefRow>(rows: T[]): T[] {
  const k = (r: RefRow): string => JSON.stringify([r.scope, r.statistic_id, r.granularity, r.facet, r.value, r.bucket]);
  return rows.sort((a, b) => (k(a) < k(b) ? -1 : k(a) > k(b) ? 1 : 0));
}

interface Parsed {
  /** Counted facets as [facet column, value]. */
  facets: Array<[string, string]>;
  company: string;
  statistic: string;
  customer: string;
  seconds: number;
  eventId?: string;
}

const strictUtf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

function parse(value: string | Buffer, maxBytes: number, selection: RefOptions['facets'], level: RefOptions['level']): Parsed | string {
  const bytes = typeof value === 'string' ? Buffer.from(value, 'utf8') : value;
  if (bytes.length > maxBytes) return 'too large';
  // JSON text is UTF-8 (RFC 8259 section 8.1): bytes that are not are no JSON text at all.
  let text: string;
  try {
    text = strictUtf8.decode(bytes);
  } catch {
    return 'not UTF-8';
  }
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
    if (hasLoneSurrogate(o[f])) return `lone surrogate in ${f}`;
  }
  // The sink's key (a Cassandra partition key, 65,535 bytes) holds the statistic and the
  // scope: each at most 16 KiB of UTF-8.
  for (const f of ['statistic_id', level === 'account' ? 'company_id' : 'customer_id']) {
    if (new TextEncoder().encode(o[f] as string).length > 16 * 1024) return `${f} too long for the key`;
  }
  const seconds = timestampSeconds(o.timestamp, text);
  if (seconds === undefined) return 'bad timestamp';
  const id = o.event_id;
  // A number's canonical text is JSON.stringify's; that of a non-finite number (1e400) is `null`, which is absent.
  const idText = typeof id === 'string' ? id : typeof id === 'number' ? JSON.stringify(id) : '';
  const eventId = idText === '' || (typeof id === 'number' && idText === 'null') ? undefined : idText;
  if (eventId !== undefined && hasLoneSurrogate(eventId)) return 'lone surrogate in event_id';
  const facets: Array<[string, string]> = [];
  for (const [name, raw] of Object.entries(o)) {
    if (RESERVED.has(name)) continue;
    if (selection?.include !== undefined && !selection.include.includes(name)) continue;
    if (selection?.exclude?.includes(name)) continue;
    const text = facetText(raw);
    if (text === undefined) continue;
    if (hasLoneSurrogate(name) || hasLoneSurrogate(text)) return 'lone surrogate in a facet';
    // A facet whose name and value pass 32,000 bytes would not fit the sink's key: not counted as a facet.
    if (new TextEncoder().encode(name).length + new TextEncoder().encode(text).length > 32_000) continue;
    facets.push([facetColumnOf(name), text]);
  }
  return {
    facets,
    company: o.company_id as string,
    statistic: o.statistic_id as string,
    customer: o.customer_id as string,
    seconds,
    ...(eventId === undefined ? {} : { eventId }),
  };
}

/** A UTF-16 surrogate without its partner: JSON can escape one (`"\ud800"`), Unicode text cannot hold it. */
function hasLoneSurrogate(s: string): boolean {
  return /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/.test(s);
}

/**
 * The text a top-level number member was written with (a double may have rounded it). Every
 * number token outside strings is rewritten as a string holding its text, and the rewritten
 * JSON parsed again: JSON.parse itself then picks the member (last one of a repeated name,
 * escaped names decoded).
 */
function topLevelNumberText(json: string, name: string): string {
  const asStrings = json.replace(/("[^"\\]*(?:\\.[^"\\]*)*")|-?\d[\d.eE+-]*/g, (token, str: string | undefined) => str ?? JSON.stringify(token));
  return (JSON.parse(asStrings) as Record<string, string>)[name]!;
}

/** The floor of a JSON number's text, exactly, in BigInt arithmetic. */
function floorOfNumber(text: string): bigint {
  const m = /^(-?)(\d+)(?:\.(\d*))?(?:[eE]([+-]?\d+))?$/.exec(text)!;
  const fraction = m[3] ?? '';
  const mantissa = BigInt(m[2]! + fraction);
  const exponent = Number(m[4] ?? '0') - fraction.length;
  // mantissa × 10^exponent; far beyond the years 1970..9999 either way, the size is all that matters.
  if (mantissa === 0n) return 0n;
  if (exponent > 40) return m[1] === '-' ? -(10n ** 40n) : 10n ** 40n;
  if (exponent < -(m[2]!.length + fraction.length + 40)) return m[1] === '-' ? -1n : 0n;
  const magnitude = exponent >= 0 ? mantissa * 10n ** BigInt(exponent) : mantissa / 10n ** BigInt(-exponent);
  const exact = exponent >= 0 || mantissa % 10n ** BigInt(-exponent) === 0n;
  return m[1] === '-' ? -magnitude - (exact ? 0n : 1n) : magnitude;
}

/**
 * The whole Unix second of a contract timestamp, or undefined when it is not one: a number is
 * floored from the text it was written with; an ISO-8601 text is read from its integer parts
 * (any fractional digits are dropped, never rounded), with its zone applied.
 */
function timestampSeconds(t: unknown, json: string): number | undefined {
  let s: number;
  if (typeof t === 'number') {
    const whole = floorOfNumber(topLevelNumberText(json, 'timestamp'));
    if (whole < 0n || whole >= BigInt(YEAR_10000_S)) return undefined;
    s = Number(whole);
  } else if (typeof t === 'string') {
    // RFC 3339 (`t`/`z` in either case, or a space between date and time), and the offsets
    // `±hh:mm`, `±hhmm` and `±hh`.
    const m = /^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2})(?::(\d{2})(?:\.\d+)?)?([Zz]|[+-]\d{2}(?::?\d{2})?)$/.exec(t);
    if (m === null) return undefined;
    const [y, mo, d, h, mi, se] = m.slice(1, 7).map((x) => Number(x ?? '0')) as [number, number, number, number, number, number];
    const zone = m[7]!;
    // Years below 100 would be read as 19xx by Date.UTC; they are out of range anyway.
    if (y < 100) return undefined;
    const localMs = Date.UTC(y, mo - 1, d, h, mi, se);
    // Reject impossible dates (Feb 30 and the like) by round-tripping the fields.
    const back = new Date(localMs);
    if (back.getUTCFullYear() !== y || back.getUTCMonth() !== mo - 1 || back.getUTCDate() !== d || h > 23 || mi > 59 || se > 59) return undefined;
    let offsetMin = 0;
    if (zone.toUpperCase() !== 'Z') {
      const digits = zone.slice(1).replace(':', '');
      const [oh, om] = [Number(digits.slice(0, 2)), Number(digits.slice(2) || '0')];
      if (oh > 23 || om > 59) return undefined;
      offsetMin = (zone.startsWith('-') ? -1 : 1) * (oh * 60 + om);
    }
    s = localMs / 1000 - offsetMin * 60;
  } else {
    return undefined;
  }
  if (!Number.isFinite(s) || s < 0 || s >= YEAR_10000_S) return undefined;
  return s;
}

/**
 * How a facet's name appears in a counter (docs/semantics.md): `*`/`*` is reserved for the
 * total, so a name made only of asterisks is written with one asterisk more.
 */
function facetColumnOf(name: string): string {
  let stars = name.length > 0;
  for (const ch of name) if (ch !== '*') stars = false;
  return stars ? `*${name}` : name;
}

function facetText(v: unknown): string | undefined {
  if (typeof v === 'string') return v === '' ? undefined : v;
  if (typeof v === 'boolean') return JSON.stringify(v);
  // JSON.stringify writes a non-finite number (1e400 parses to Infinity) as `null`: not a value.
  if (typeof v === 'number') return Number.isFinite(v) ? JSON.stringify(v) : undefined;
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
