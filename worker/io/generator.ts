import type { Source, SourceRecord } from './types';

/**
 * A built-in generator of realistic events, for the demo and the benchmarks.
 *
 * Deterministic and random-access: event i depends only on (seed, i), so the source can
 * resume from any committed position and two runs with the same options produce the same
 * input. Its shape follows the workload the engine is built for: a Zipf-distributed customer
 * population, a few accounts and statistics, several facets per event, exact re-deliveries
 * of recent events (duplicates), events that arrive hours late, and back-filled events
 * years old. Ingest time is simulated (`ratePerSecond` events per simulated second from
 * `startMs`), so retention decisions are reproducible too.
 */
export interface GeneratorOptions {
  readonly events: number;
  readonly seed: number;
  readonly customers: number;
  readonly companies: number;
  readonly statistics: number;
  /** Facets per event (0-10). */
  readonly facets: number;
  /** Share of records that re-deliver an earlier event byte for byte. */
  readonly duplicateRate: number;
  /** Share of events that arrive hours late or are back-filled from past years. */
  readonly lateRate: number;
  /** Share of events without an event_id (their identity is the whole second). */
  readonly noIdRate: number;
  readonly zipfExponent: number;
  readonly startMs: number;
  readonly ratePerSecond: number;
}

export const DEFAULT_GENERATOR: GeneratorOptions = {
  events: 200_000,
  seed: 42,
  customers: 50_000,
  companies: 4,
  statistics: 4,
  facets: 6,
  duplicateRate: 0.02,
  lateRate: 0.05,
  noIdRate: 0.1,
  zipfExponent: 1.0,
  startMs: Date.UTC(2026, 10, 27, 6, 0, 0),
  ratePerSecond: 2000,
};

const STATISTICS = ['email_open', 'email_click', 'order_placed', 'page_view', 'sms_sent', 'cart_add'];
const COMPANIES = ['acme-outdoor', 'borealis-books', 'cobalt-coffee', 'delta-decor', 'ember-eyewear', 'fjord-fashion'];

/** Facet name → its values; cardinalities differ as they do in practice. */
const FACETS: ReadonlyArray<readonly [string, readonly string[]]> = [
  ['campaign', Array.from({ length: 40 }, (_, i) => `campaign-${i + 1}`)],
  ['country', ['US', 'DE', 'FR', 'GB', 'NL', 'SE', 'JP', 'BR', 'CA', 'AU', 'ES', 'IT']],
  ['device', ['mobile', 'desktop', 'tablet']],
  ['channel', ['email', 'sms', 'push', 'web']],
  ['list', Array.from({ length: 25 }, (_, i) => `list-${i + 1}`)],
  ['plan', ['free', 'basic', 'pro', 'enterprise']],
  ['browser', ['chrome', 'safari', 'firefox', 'edge']],
  ['segment', Array.from({ length: 15 }, (_, i) => `segment-${i + 1}`)],
  ['variant', ['A', 'B']],
  ['first_purchase', ['true', 'false']],
];

export class EventGenerator {
  private readonly customerCdf: Float64Array;

  constructor(readonly options: GeneratorOptions) {
    this.customerCdf = zipfCdf(options.customers, options.zipfExponent);
  }

  /** The raw record at index i and its ingest time. */
  recordAt(i: number): { value: string; ingestTimeMs: number } {
    const ingestTimeMs = this.options.startMs + Math.floor((i * 1000) / this.options.ratePerSecond);
    let source = i;
    // A duplicate re-delivers an earlier event (byte for byte) within the last ~10k records.
    for (let hops = 0; hops < 8 && source > 0; hops++) {
      const r = rand(this.options.seed, source, 1);
      if (r >= this.options.duplicateRate) break;
      source = Math.max(0, source - 1 - Math.floor(rand(this.options.seed, source, 2) * Math.min(source, 10_000)));
    }
    return { value: this.eventJson(source), ingestTimeMs };
  }

  private eventJson(i: number): string {
    const o = this.options;
    const seed = o.seed;
    const customer = sampleCdf(this.customerCdf, rand(seed, i, 3));
    const company = COMPANIES[Math.floor(rand(seed, i, 4) ** 2 * Math.min(o.companies, COMPANIES.length))]!;
    const statistic = STATISTICS[Math.floor(rand(seed, i, 5) * Math.min(o.statistics, STATISTICS.length))]!;
    const ingestSec = (o.startMs + Math.floor((i * 1000) / o.ratePerSecond)) / 1000;
    let eventSec = ingestSec - rand(seed, i, 6) * 60;
    const late = rand(seed, i, 7);
    if (late < o.lateRate / 2) eventSec = ingestSec - 3600 * (1 + rand(seed, i, 8) * 47);
    else if (late < o.lateRate) eventSec = ingestSec - 86_400 * (30 + rand(seed, i, 9) * 1000);
    const ts = Math.floor(eventSec * 1000) / 1000;
    // Alternate timestamp forms, as producers do: Unix seconds or ISO-8601 with a zone.
    const timestamp = rand(seed, i, 10) < 0.8 ? String(ts) : JSON.stringify(new Date(Math.floor(ts) * 1000).toISOString().replace('.000Z', 'Z'));
    const eventId = rand(seed, i, 11) < o.noIdRate ? '' : `,"event_id":"${company.slice(0, 3)}-${i.toString(36)}"`;
    let facets = '';
    for (let f = 0; f < Math.min(o.facets, FACETS.length); f++) {
      const [name, values] = FACETS[f]!;
      // Skewed facet values: low indexes are more common.
      const v = values[Math.floor(rand(seed, i, 20 + f) ** 1.5 * values.length)]!;
      facets += name === 'first_purchase' ? `,"${name}":${v}` : `,"${name}":"${v}"`;
    }
    return `{"company_id":"${company}","statistic_id":"${statistic}","customer_id":"cust-${customer}","timestamp":${timestamp}${eventId}${facets}}`;
  }
}

const GENERATOR_PARTITION = 'generator';

/**
 * A generated record. Its position and origin strings are made when read: the task reads the
 * position of a micro-batch's last record only, and the origin of a rejected one, and making
 * both for every record cost two number-to-string conversions each that nothing read.
 */
class GeneratedRecord implements SourceRecord {
  readonly partition = GENERATOR_PARTITION;

  constructor(
    readonly value: Buffer,
    readonly ingestTimeMs: number,
    private readonly index: number,
  ) {}

  get nextPosition(): string {
    return String(this.index + 1);
  }

  get origin(): string {
    return `generator#${this.index}`;
  }
}


/** The generator as a bounded Source; position = index of the next record. */
export class GeneratorSource implements Source {
  readonly partition = GENERATOR_PARTITION;
  private next = 0;
  private readonly generator: EventGenerator;

  constructor(options: GeneratorOptions) {
    this.generator = new EventGenerator(options);
  }

  start(positions: ReadonlyMap<string, string>): Promise<void> {
    this.next = Number(positions.get(this.partition) ?? 0);
    return Promise.resolve();
  }

  poll(max: number): Promise<SourceRecord[] | null> {
    const total = this.generator.options.events;
    if (this.next >= total) return Promise.resolve(null);
    const out: SourceRecord[] = [];
    const end = Math.min(total, this.next + max);
    for (let i = this.next; i < end; i++) {
      const { value, ingestTimeMs } = this.generator.recordAt(i);
      out.push(new GeneratedRecord(Buffer.from(value), ingestTimeMs, i));
    }
    this.next = end;
    return Promise.resolve(out);
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}

/** Cumulative distribution of a Zipf law over ranks 1..n. */
function zipfCdf(n: number, s: number): Float64Array {
  const cdf = new Float64Array(n);
  let sum = 0;
  for (let k = 1; k <= n; k++) {
    sum += 1 / k ** s;
    cdf[k - 1] = sum;
  }
  for (let k = 0; k < n; k++) cdf[k]! /= sum;
  return cdf;
}

function sampleCdf(cdf: Float64Array, u: number): number {
  let lo = 0;
  let hi = cdf.length - 1;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (cdf[mid]! < u) lo = mid + 1;
    else hi = mid;
  }
  return lo + 1;
}

/** A uniform number in [0, 1) from (seed, index, stream): a stateless hash, so any record can be regenerated alone. */
function rand(seed: number, index: number, stream: number): number {
  let h = (seed ^ Math.imul(index, 0x9e3779b1) ^ Math.imul(stream, 0x85ebca77)) >>> 0;
  h = Math.imul(h ^ (h >>> 16), 0x7feb352d);
  h = Math.imul(h ^ (h >>> 15), 0x846ca68b);
  h ^= h >>> 16;
  // Mix in the high bits of index for sequences longer than 2^32.
  h = (h + Math.floor(index / 4294967296)) >>> 0;
  return h / 4294967296;
}
