import { bucketEndOf, bucketStartOf, isoSeconds } from './civil';
import { fpString, fpWords } from './fingerprint';
import { FpTable } from './table';

/**
 * Prototype of the per-micro-batch counting kernel in TypeScript (issue 9): the rules of
 * worker/engine/counting.ts on fixed-width state, all in memory.
 *
 * - Every identity is a 128-bit fingerprint (fingerprint.ts) built from the fingerprints
 *   of its parts: dedup (company, statistic, customer, event id or second), bucket and
 *   counter stem (scope, statistic, granularity, bucket start), counter (stem, facet
 *   token), uniqueness marker (counter, customer).
 * - State lives in open-addressing typed-array tables (table.ts): dedup fingerprint →
 *   first ingest second, bucket → (last ingest hour, epoch), marker → epoch + 1,
 *   counter → dense counter index.
 * - Window deltas are typed arrays indexed by counter index plus a list of the touched
 *   ones; a flush adds them to the totals.
 *
 * Per event nothing is allocated beyond JSON.parse's object and strings (and the text of
 * a numeric event_id or facet value, which the workload does not have); per new counter its
 * identity is kept once, for the sink.
 */

export interface KernelSettings {
  readonly level: 'account' | 'customer';
  /** Granularity codes of civil.ts (0 hour, 1 day, 2 month). */
  readonly granularities: readonly number[];
  readonly dedupRetentionSec: number;
  readonly uniquesRetentionSec: number;
}

export interface KernelSizing {
  readonly identities: number;
  readonly markers: number;
  readonly counters: number;
}

/** One counter's identity, kept once per counter for the sink (and the exactness check). */
export interface CounterIdentity {
  readonly scope: string;
  readonly statistic: string;
  readonly granularity: number;
  readonly bucket: number;
  readonly facet: string;
  readonly value: string;
}

// Fingerprint domains (seeds).
const S_STRING = 0x51a7e;
const S_ID_SECOND = 0x5ec0d;
const S_TOKEN = 0x70ce2;
const S_DEDUP = 0xdedf9;
const S_STEM = 0x57e33;
const S_COUNTER = 0xc0a27;
const S_MARKER = 0x3a4ce;

// Word offsets in the scratch array `w`: company, statistic, customer, identity side by side
// (the dedup tuple), then a stem input (scope, statistic, g, bucket), then pairs.
const W_COMPANY = 0;
const W_STATISTIC = 4;
const W_CUSTOMER = 8;
const W_ID = 12;
const W_STEM_IN = 16; // scope(4) statistic(4) g bucketLo bucketHi 0
const W_PAIR = 28; // two fingerprints side by side (8)
const W_DEDUP = 36;
const W_NAME_VALUE = 40; // name(4) value(4)
const W_SIZE = 48;

export class TsKernel {
  readonly dedup: FpTable;
  readonly buckets: FpTable;
  readonly markers: FpTable;
  readonly counterIndex: FpTable;
  /** Counter index → identity. */
  readonly counters: CounterIdentity[] = [];
  totalCount = new Float64Array(1024);
  totalUniques = new Float64Array(1024);
  private winCount = new Uint32Array(1024);
  private winUniques = new Uint32Array(1024);
  private touched = new Uint32Array(1024);
  private touchedN = 0;

  counted = 0;
  duplicates = 0;
  invalid = 0;
  beyondHorizon = 0;
  windows = 0;
  rowsFlushed = 0;

  private readonly w = new Int32Array(W_SIZE);
  /** Per event: fingerprints of its tokens (4 words each), stems, and the token texts. */
  private tokenFp = new Int32Array(64);
  private readonly stemFp = new Int32Array(12);
  private readonly bucketStarts = new Float64Array(3);
  /** Per (granularity, token): counter and marker fingerprints, 4 words each. */
  private counterFps = new Int32Array(64 * 3);
  private markerFps = new Int32Array(64 * 3);
  /** Folds the early reads of table.touch() so the engine cannot drop them. */
  touchSink = 0;
  private tokenFacet: string[] = ['*'];
  private tokenValue: string[] = ['*'];
  private readonly account: boolean;

  constructor(
    private readonly s: KernelSettings,
    sizing: KernelSizing,
  ) {
    this.account = s.level === 'account';
    this.dedup = new FpTable(sizing.identities);
    this.buckets = new FpTable(1024);
    this.markers = new FpTable(this.account ? sizing.markers : 0);
    this.counterIndex = new FpTable(sizing.counters);
    fpString('*', S_TOKEN, this.tokenFp, 0);
  }

  /** Counts the lines [starts[i], ends[i]) of buf, i < n, with their ingest seconds. */
  countBatch(buf: Buffer, starts: Int32Array, ends: Int32Array, ingest: Uint32Array, n: number): void {
    for (let i = 0; i < n; i++) this.countLine(buf.toString('utf8', starts[i], ends[i]), ingest[i]!);
  }

  /** Ends the window: adds its deltas to the totals (a real worker writes them to the sink). */
  flush(): number {
    const n = this.touchedN;
    for (let i = 0; i < n; i++) {
      const c = this.touched[i]!;
      this.totalCount[c]! += this.winCount[c]!;
      this.totalUniques[c]! += this.winUniques[c]!;
      this.winCount[c] = 0;
      this.winUniques[c] = 0;
    }
    this.touchedN = 0;
    this.windows++;
    this.rowsFlushed += n;
    return n;
  }

  /** Bytes held by the state tables and window arrays. */
  stateBytes(): number {
    return this.dedup.bytes + this.buckets.bytes + this.markers.bytes + this.counterIndex.bytes + (this.totalCount.byteLength + this.winCount.byteLength) * 2 + this.touched.byteLength;
  }

  private countLine(text: string, ingest: number): void {
    let doc: unknown;
    try {
      doc = JSON.parse(text);
    } catch {
      this.invalid++;
      return;
    }
    if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) {
      this.invalid++;
      return;
    }
    const o = doc as Record<string, unknown>;
    const company = o.company_id;
    const statistic = o.statistic_id;
    const customer = o.customer_id;
    if (typeof company !== 'string' || company === '' || typeof statistic !== 'string' || statistic === '' || typeof customer !== 'string' || customer === '') {
      this.invalid++;
      return;
    }
    const ts = o.timestamp;
    const seconds = typeof ts === 'number' ? ts : typeof ts === 'string' ? isoSeconds(ts) : NaN;
    if (!(seconds >= 0 && seconds < 253_402_300_800)) {
      this.invalid++;
      return;
    }
    const sec = Math.floor(seconds);
    const w = this.w;
    fpString(company, S_STRING, w, W_COMPANY);
    fpString(statistic, S_STRING, w, W_STATISTIC);
    fpString(customer, S_STRING, w, W_CUSTOMER);
    const id = o.event_id;
    if (typeof id === 'string' && id !== '') fpString(id, S_STRING, w, W_ID);
    else if (typeof id === 'number' && Number.isFinite(id)) fpString(JSON.stringify(id), S_STRING, w, W_ID);
    else {
      w[W_PAIR] = sec % 4_294_967_296;
      w[W_PAIR + 1] = Math.floor(sec / 4_294_967_296);
      w[W_PAIR + 2] = 0;
      w[W_PAIR + 3] = 0;
      fpWords(w, W_PAIR, 4, S_ID_SECOND, w, W_ID);
    }

    fpWords(w, W_COMPANY, 16, S_DEDUP, w, W_DEDUP);
    let touched = this.dedup.touch(w, W_DEDUP);

    // Tokens: `*` (fingerprint fixed at 0) then one per counted facet value.
    let tokens = 1;
    for (const name in o) {
      if (name === 'company_id' || name === 'statistic_id' || name === 'customer_id' || name === 'timestamp' || name === 'event_id') continue;
      const v = o[name];
      let text: string;
      if (typeof v === 'string') {
        if (v === '') continue;
        text = v;
      } else if (typeof v === 'number') {
        if (!Number.isFinite(v)) continue;
        text = JSON.stringify(v);
      } else if (typeof v === 'boolean') {
        text = v ? 'true' : 'false';
      } else {
        continue;
      }
      if ((tokens + 1) * 4 > this.tokenFp.length) this.growTokens();
      fpString(name, S_STRING, w, W_NAME_VALUE);
      fpString(text, S_STRING, w, W_NAME_VALUE + 4);
      fpWords(w, W_NAME_VALUE, 8, S_TOKEN, this.tokenFp, tokens * 4);
      this.tokenFacet[tokens] = name;
      this.tokenValue[tokens] = text;
      tokens++;
    }

    // Every fingerprint of the event before any lookup, each home slot read early (touch).
    const gs = this.s.granularities;
    if (gs.length * tokens * 4 > this.counterFps.length) {
      this.counterFps = new Int32Array(gs.length * tokens * 8);
      this.markerFps = new Int32Array(gs.length * tokens * 8);
    }
    const scopeAt = this.account ? W_COMPANY : W_CUSTOMER;
    for (let k = 0; k < 4; k++) {
      w[W_STEM_IN + k] = w[scopeAt + k]!;
      w[W_STEM_IN + 4 + k] = w[W_STATISTIC + k]!;
    }
    for (let gi = 0; gi < gs.length; gi++) {
      const bucket = bucketStartOf(gs[gi]!, sec);
      this.bucketStarts[gi] = bucket;
      w[W_STEM_IN + 8] = gs[gi]!;
      w[W_STEM_IN + 9] = bucket % 4_294_967_296;
      w[W_STEM_IN + 10] = Math.floor(bucket / 4_294_967_296);
      w[W_STEM_IN + 11] = 0;
      fpWords(w, W_STEM_IN, 12, S_STEM, this.stemFp, gi * 4);
      if (this.account) touched ^= this.buckets.touch(this.stemFp, gi * 4);
      for (let t = 0; t < tokens; t++) {
        const at = (gi * tokens + t) * 4;
        for (let k = 0; k < 4; k++) {
          w[W_PAIR + k] = this.stemFp[gi * 4 + k]!;
          w[W_PAIR + 4 + k] = this.tokenFp[t * 4 + k]!;
        }
        fpWords(w, W_PAIR, 8, S_COUNTER, this.counterFps, at);
        touched ^= this.counterIndex.touch(this.counterFps, at);
        if (this.account) {
          for (let k = 0; k < 4; k++) {
            w[W_PAIR + k] = this.counterFps[at + k]!;
            w[W_PAIR + 4 + k] = w[W_CUSTOMER + k]!;
          }
          fpWords(w, W_PAIR, 8, S_MARKER, this.markerFps, at);
          touched ^= this.markers.touch(this.markerFps, at);
        }
      }
    }
    this.touchSink ^= touched;

    // Dedup.
    const d = this.dedup.find(w, W_DEDUP);
    if (d >= 0) {
      if (ingest - (this.dedup.val(d) - 1) <= this.s.dedupRetentionSec) {
        this.duplicates++;
        return;
      }
      this.dedup.set(d, ingest + 1);
    } else {
      this.dedup.insert(d, w, W_DEDUP, ingest + 1);
    }
    this.counted++;

    for (let gi = 0; gi < gs.length; gi++) {
      const g = gs[gi]!;
      const bucket = this.bucketStarts[gi]!;
      const epoch = this.account ? this.touchBucket(g, bucket, ingest, gi * 4) : 0;
      for (let t = 0; t < tokens; t++) {
        const at = (gi * tokens + t) * 4;
        const c = this.counterOf(at, g, bucket, t, company, customer, statistic);
        let isNew = 0;
        if (this.account) {
          const m = this.markers.find(this.markerFps, at);
          if (m < 0) {
            this.markers.insert(m, this.markerFps, at, epoch + 1);
            isNew = 1;
          } else if (this.markers.val(m) !== epoch + 1) {
            this.markers.set(m, epoch + 1);
            isNew = 1;
          }
          if (isNew === 1 && epoch > 0) this.beyondHorizon++;
        }
        if (this.winCount[c] === 0) this.touched[this.touchedN++] = c;
        this.winCount[c]! += 1;
        this.winUniques[c]! += isNew;
      }
    }
  }

  /** The dense index of the counter whose fingerprint is at counterFps[at], created on first use. */
  private counterOf(at: number, g: number, bucket: number, t: number, company: string, customer: string, statistic: string): number {
    const slot = this.counterIndex.find(this.counterFps, at);
    if (slot >= 0) return this.counterIndex.val(slot) - 1;
    const c = this.counters.length;
    this.counters.push({ scope: this.account ? company : customer, statistic, granularity: g, bucket, facet: this.tokenFacet[t]!, value: this.tokenValue[t]! });
    this.counterIndex.insert(slot, this.counterFps, at, c + 1);
    if (c >= this.winCount.length) this.growCounters();
    return c;
  }

  /** Same rule as touchBucket in worker/engine/counting.ts; returns the marker epoch in force. */
  private touchBucket(g: number, bucket: number, ingest: number, at: number): number {
    const hour = ingest - (ingest % 3600);
    const b = this.buckets.find(this.stemFp, at);
    if (b < 0) {
      this.buckets.insert(b, this.stemFp, at, hour + 1, 0);
      return 0;
    }
    const last = this.buckets.val(b) - 1;
    const epoch = this.buckets.val2(b);
    if (ingest > Math.max(bucketEndOf(g, bucket), last) + this.s.uniquesRetentionSec) {
      this.buckets.set(b, hour + 1, epoch + 1);
      return epoch + 1;
    }
    if (hour > last) this.buckets.set(b, hour + 1, epoch);
    return epoch;
  }

  private growTokens(): void {
    const next = new Int32Array(this.tokenFp.length * 2);
    next.set(this.tokenFp);
    this.tokenFp = next;
  }

  private growCounters(): void {
    const grow = <T extends Float64Array | Uint32Array>(a: T, make: (n: number) => T): T => {
      const next = make(a.length * 2);
      next.set(a);
      return next;
    };
    this.totalCount = grow(this.totalCount, (n) => new Float64Array(n));
    this.totalUniques = grow(this.totalUniques, (n) => new Float64Array(n));
    this.winCount = grow(this.winCount, (n) => new Uint32Array(n));
    this.winUniques = grow(this.winUniques, (n) => new Uint32Array(n));
    this.touched = grow(this.touched, (n) => new Uint32Array(n));
  }
}
