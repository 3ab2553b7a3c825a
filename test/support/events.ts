/**
 * Deterministic test input: valid events with facets of every kind the contract mentions,
 * byte-identical duplicates, and malformed records. Seeded, so a failing run can be replayed.
 */

/** A small, seedable PRNG (mulberry32). */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export interface GenOptions {
  readonly seed: number;
  /** Event times fall in [nowSec - spanSec, nowSec]. */
  readonly nowSec: number;
  readonly spanSec?: number;
  readonly companies?: number;
  readonly customers?: number;
  /**
   * Extra facets `attr0`…, each with one of `values` long pseudo-random values: state that
   * grows by about count × valueBytes per event and granularity (uniqueness markers hold
   * the values' text), with a bounded number of counters (benchmarks of large state).
   */
  readonly extraFacets?: { readonly count: number; readonly values: number; readonly valueBytes: number };
}

const STATISTICS = ['email open', 'email click', 'purchase', 'page view'];
const CAMPAIGNS = ['holiday sales', 'spring', 'welcome', 'winback'];
const DEVICES = ['ios', 'android', 'web'];

/** `n` valid events as JSON text (unique by construction unless they collide on id-less seconds). */
export function validEvents(n: number, opts: GenOptions): string[] {
  const r = rng(opts.seed);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(r() * xs.length)]!;
  const span = opts.spanSec ?? 3 * 86400;
  const out: string[] = [];
  const extra = opts.extraFacets === undefined ? [] : extraFacetValues(opts.extraFacets);
  for (let i = 0; i < n; i++) {
    const seconds = opts.nowSec - r() * span;
    const ev: Record<string, unknown> = {
      company_id: `company-${Math.floor(r() * (opts.companies ?? 5))}`,
      statistic_id: pick(STATISTICS),
      customer_id: `customer-${Math.floor(r() * (opts.customers ?? 200))}`,
    };
    const tsKind = r();
    if (tsKind < 0.5) ev.timestamp = Math.round(seconds * 1000) / 1000;
    else if (tsKind < 0.8) ev.timestamp = new Date(Math.floor(seconds) * 1000).toISOString();
    else ev.timestamp = isoWithOffset(Math.floor(seconds), pick([120, -330, 60]));
    const idKind = r();
    if (idKind < 0.5) ev.event_id = `ev-${opts.seed}-${i}`;
    else if (idKind < 0.7) ev.event_id = opts.seed * 10_000_000 + i; // numeric id
    else if (idKind < 0.8) ev.event_id = null; // absent: the second stands in
    // else: no event_id at all
    ev.campaign = pick(CAMPAIGNS);
    if (r() < 0.7) ev.device = pick(DEVICES);
    if (r() < 0.3) ev.amount = pick([1, 2.5, 10, 12.5]);
    if (r() < 0.2) ev.vip = r() < 0.5;
    if (r() < 0.1) ev.empty = ''; // not a facet value
    if (r() < 0.1) ev.tags = ['a', 'b']; // arrays are not facet values
    if (r() < 0.1) ev.meta = { nested: 1 }; // nor objects
    if (r() < 0.05) ev.nothing = null;
    extra.forEach((values, k) => (ev[`attr${k}`] = pick(values)));
    out.push(JSON.stringify(ev));
  }
  return out;
}

/** Per extra facet, its possible values: hexadecimal text from a seeded generator (compresses like real ids, not like repeated text). */
function extraFacetValues(spec: NonNullable<GenOptions['extraFacets']>): string[][] {
  const r = rng(0xfacade);
  const hex = (bytes: number) => Array.from({ length: bytes }, () => Math.floor(r() * 16).toString(16)).join('');
  return Array.from({ length: spec.count }, () => Array.from({ length: spec.values }, () => hex(spec.valueBytes)));
}

function isoWithOffset(seconds: number, offsetMin: number): string {
  const local = new Date((seconds + offsetMin * 60) * 1000).toISOString().replace(/\.\d{3}Z$/, '');
  const sign = offsetMin < 0 ? '-' : '+';
  const abs = Math.abs(offsetMin);
  return `${local}${sign}${String(Math.floor(abs / 60)).padStart(2, '0')}:${String(abs % 60).padStart(2, '0')}`;
}

/** Records the contract calls invalid, one of each kind (the last one is larger than `maxEventBytes`). */
export function malformedEvents(maxEventBytes: number, nowSec: number): string[] {
  const ok = { company_id: 'company-1', statistic_id: 'purchase', customer_id: 'customer-1', timestamp: nowSec };
  return [
    'this is not json',
    '{"company_id": "company-1", "statistic_id": ',
    '[1, 2, 3]',
    '"just a string"',
    JSON.stringify({ ...ok, company_id: undefined }),
    JSON.stringify({ ...ok, company_id: '' }),
    JSON.stringify({ ...ok, customer_id: 42 }),
    JSON.stringify({ ...ok, statistic_id: null }),
    JSON.stringify({ ...ok, timestamp: 'yesterday' }),
    JSON.stringify({ ...ok, timestamp: '2018-12-07T22:15:00' }), // no zone
    JSON.stringify({ ...ok, timestamp: 253402300800 }), // year 10000
    JSON.stringify({ ...ok, timestamp: -1 }),
    JSON.stringify({ ...ok, timestamp: true }),
    JSON.stringify({ ...ok, padding: 'x'.repeat(maxEventBytes) }),
  ];
}

/**
 * The input of a test: valid events, copies of ~`dupRate` of them (byte for byte), and the
 * malformed records, shuffled. Returns values in the order to produce them.
 */
export function testInput(opts: GenOptions & { valid: number; dupRate: number; maxEventBytes: number }): string[] {
  const r = rng(opts.seed ^ 0x5bd1e995);
  const valid = validEvents(opts.valid, opts);
  const all = [...valid];
  for (const v of valid) {
    if (r() < opts.dupRate) all.push(v);
    if (r() < opts.dupRate / 4) all.push(v); // some are sent three times
  }
  all.push(...malformedEvents(opts.maxEventBytes, opts.nowSec));
  for (let i = all.length - 1; i > 0; i--) {
    const j = Math.floor(r() * (i + 1));
    [all[i], all[j]] = [all[j]!, all[i]!];
  }
  return all;
}
