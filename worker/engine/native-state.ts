import { counterStem, facetToken, parseCounterId, TOTAL_TOKEN } from '../../common/counter-id';
import { AbacusError } from '../../common/errors';
import type { CounterColumns, CounterKey, CounterRow, Granularity } from '../io/types';
import { loadNativeKernel, type CountKernel, type GroupWatermarks, type StateChanges } from '../native/kernel';
import type { SourceRecord } from '../io/types';
import type { CountingSettings, CountingTally } from './counting';
import type { CountableEvent, ParseOptions } from './event';
import { bucketEnd, bucketStart } from './time';
import type { RocksStore } from '../state/rocks';
import { loadSpillRecords, restoreNeeds, spillPuts, sweepSpillRecords } from '../state/spill-records';

/**
 * The TypeScript side of the native counting engine (`state.engine: native`, ADR 7): events
 * validated by parseEvent are encoded into one buffer per micro-batch and counted by the
 * Rust kernel in one call; the kernel keeps the whole state of its key groups in fixed-width
 * tables and hands back, per window, the touched counters' totals and, per key group, one
 * segment of changes to commit. What the kernel needs of an event is computed here, by the
 * same functions the records engine uses (bucket bounds, counter stems, facet tokens), so
 * the two engines cannot disagree on what a counter is.
 *
 * Batch encoding (little-endian; the kernel's count_kernel.rs reads it), per event:
 *   u32 key group, u32 ingest second, u16 token count T,
 *   str company, str statistic, str customer, str identity,
 *   per granularity: f64 bucket end, str counter stem,
 *   T × str token ('*' first)
 * where str = u32 byte length + UTF-8 bytes.
 *
 * The fast path (countRecords): the kernel reads the raw records itself
 * (native/hotpath/src/fast_path.rs) and encodes the common shape of event exactly as
 * encodeEvent() does, counting runs of records in one call; each record it is not certain
 * about is handed back, parsed here by parseEvent and added (or dead-lettered) before any
 * later record is counted.
 */

const INITIAL_BATCH_BYTES = 1 << 20;

/** A key group's segments of one commit or sweep: `counters` is loaded before `state`; an empty Buffer is no segment. */
export interface GroupSegments {
  group: number;
  counters: Buffer;
  state: Buffer;
}

function groupSegments(c: StateChanges): GroupSegments[] {
  return Array.from(c.groups, (group, i) => ({ group, counters: c.counters[i]!, state: c.state[i]! }));
}

/** The key groups a worker counts, and a number that moves whenever the set changes. */
export interface OwnedGroups {
  readonly groups: ReadonlySet<number>;
  readonly version: number;
}

/** Ingest seconds the kernel stores: 32 bits, 1970-01-01 to 2106-02-07. */
const MAX_INGEST_SEC = 0xffffffff;

/**
 * Why the native engine cannot count a record of this ingest second, or undefined when it
 * can. Kafka's CreateTime comes from the producer's clock; a record stamped beyond 2106 goes
 * to the dead letter instead of stopping the task (the records engine counts it).
 */
export function ingestOutOfRange(ingestSec: number): string | undefined {
  if (ingestSec >= 0 && ingestSec <= MAX_INGEST_SEC) return undefined;
  return `ingest time ${ingestSec} s is outside 1970-01-01..2106-02-07, which the native engine stores (32-bit seconds); fix the producer's clock, or use state.engine: records`;
}

/** The most facets an event may have on the native engine: its batch encoding counts tokens (the facets and the total) in 16 bits. */
export const MAX_NATIVE_FACETS = 0xffff - 1;

/**
 * Why the native engine cannot count an event with this many facets, or undefined when it
 * can. The records engine has no such limit (an event this wide makes thousands of times
 * the counter updates of an ordinary one).
 */
export function tooManyFacets(facets: number): string | undefined {
  if (facets <= MAX_NATIVE_FACETS) return undefined;
  return `event has ${facets} facets; the native engine counts at most ${MAX_NATIVE_FACETS} per event (its batch encoding counts them in 16 bits): send fewer facets (facets.include or facets.exclude), or use state.engine: records`;
}

/** One micro-batch's encoding (see the layout above), growing as needed. */
export class BatchWriter {
  buffer: Buffer;
  offset = 0;

  constructor(initialBytes: number) {
    this.buffer = Buffer.allocUnsafe(initialBytes);
  }

  /** Appends one valid event of key group `group` counted at `ingestSec`. */
  event(ev: CountableEvent, group: number, ingestSec: number, settings: Pick<CountingSettings, 'level' | 'granularities'>): void {
    const tokens = ev.facets.length + 1;
    this.reserve(10);
    const b = this.buffer;
    b.writeUInt32LE(group, this.offset);
    b.writeUInt32LE(ingestSec, this.offset + 4);
    b.writeUInt16LE(tokens, this.offset + 8);
    this.offset += 10;
    this.str(ev.companyId);
    this.str(ev.statisticId);
    this.str(ev.customerId);
    this.str(ev.identity);
    const scope = settings.level === 'account' ? ev.companyId : ev.customerId;
    for (const g of settings.granularities) {
      const bucket = bucketStart(g, ev.seconds);
      this.reserve(8);
      this.buffer.writeDoubleLE(bucketEnd(g, bucket), this.offset);
      this.offset += 8;
      this.str(counterStem(scope, ev.statisticId, g, bucket));
    }
    this.str(TOTAL_TOKEN);
    for (const [facet, value] of ev.facets) this.str(facetToken(facet, value));
  }

  private reserve(bytes: number): void {
    if (this.offset + bytes <= this.buffer.length) return;
    let size = this.buffer.length * 2;
    while (size < this.offset + bytes) size *= 2;
    const grown = Buffer.allocUnsafe(size);
    this.buffer.copy(grown, 0, 0, this.offset);
    this.buffer = grown;
  }

  /** Writes u32 length + UTF-8 bytes; ASCII (almost every id) is copied char by char, without a native call. */
  private str(s: string): void {
    const n = s.length;
    this.reserve(4 + n * 3);
    const b = this.buffer;
    const start = this.offset + 4;
    let i = 0;
    for (; i < n; i++) {
      const c = s.charCodeAt(i);
      if (c >= 0x80) break;
      b[start + i] = c;
    }
    const length = i === n ? n : i + b.write(s.slice(i), start + i, 'utf8');
    b.writeUInt32LE(length, this.offset);
    this.offset = start + length;
  }
}

/** The batch encoding of one event, as NativeState.add() writes it (the fast path's differential test compares against it). */
export function encodeEvent(ev: CountableEvent, group: number, ingestSec: number, settings: Pick<CountingSettings, 'level' | 'granularities'>): Buffer {
  const w = new BatchWriter(256);
  w.event(ev, group, ingestSec, settings);
  return Buffer.from(w.buffer.subarray(0, w.offset));
}

/**
 * A window's counters as finalise() leaves them: their totals in columns (rebase() may still
 * raise them), with where each came from. Rows are made only when a sink or the hydration
 * asks for them: the embedded sink writes the columns (ids as bytes), and making a string and
 * an object per counter was most of the cost of a window with many new counters.
 */
export class NativeWindow implements CounterColumns {
  private made: NativeRow[] | undefined;

  constructor(
    readonly ids: Buffer,
    readonly idEnds: Uint32Array,
    readonly counts: Float64Array,
    readonly uniques: Float64Array | undefined,
    /** Per counter: its key group. */
    readonly groups: Uint32Array,
    /** Per counter: 1 when it had no total before this window (neither counted nor loaded). */
    readonly fresh: Uint8Array,
  ) {}

  get length(): number {
    return this.idEnds.length;
  }

  /** Counter i's id. */
  id(i: number): string {
    return this.ids.toString('utf8', i === 0 ? 0 : this.idEnds[i - 1]!, this.idEnds[i]);
  }

  rows(): readonly NativeRow[] {
    return (this.made ??= Array.from({ length: this.length }, (_, i) => new NativeRow(this, i)));
  }

  /**
   * The window as one string, for the commit's outbox (replayed to the sink after a crash
   * between commit and sink write): u32 n, n × u32 id end, n × f64 count, n × f64 uniques
   * (0 without uniques), the ids; base64.
   */
  toOutbox(): string {
    const n = this.length;
    const head = Buffer.alloc(4 + n * 20);
    head.writeUInt32LE(n, 0);
    Buffer.from(this.idEnds.buffer, this.idEnds.byteOffset, n * 4).copy(head, 4);
    Buffer.from(this.counts.buffer, this.counts.byteOffset, n * 8).copy(head, 4 + n * 4);
    if (this.uniques !== undefined) Buffer.from(this.uniques.buffer, this.uniques.byteOffset, n * 8).copy(head, 4 + n * 12);
    return Buffer.concat([head, this.ids.subarray(0, n === 0 ? 0 : this.idEnds[n - 1])]).toString('base64');
  }

  /** The window toOutbox() wrote; `account`: whether totals carry uniques. Throws on a damaged outbox. */
  static fromOutbox(text: string, account: boolean): NativeWindow {
    const b = Buffer.from(text, 'base64');
    const n = b.length >= 4 ? b.readUInt32LE(0) : -1;
    const idBytes = n >= 0 && b.length >= 4 + n * 20 ? b.length - 4 - n * 20 : -1;
    const copy = <T>(make: (ab: ArrayBuffer) => T, from: number, bytes: number): T => make(b.buffer.slice(b.byteOffset + from, b.byteOffset + from + bytes));
    const idEnds = idBytes < 0 ? undefined : copy((ab) => new Uint32Array(ab), 4, n * 4);
    if (idEnds === undefined || idEnds.some((end, i) => end < (i === 0 ? 0 : idEnds[i - 1]!)) || (n > 0 && idEnds[n - 1] !== idBytes)) {
      throw new AbacusError('StateCorrupt', `the outbox of the last commit is damaged (${b.length} bytes)`, 'restore the state from a checkpoint, or start over with a fresh --data-dir');
    }
    const counts = copy((ab) => new Float64Array(ab), 4 + n * 4, n * 8);
    const uniques = account ? copy((ab) => new Float64Array(ab), 4 + n * 12, n * 8) : undefined;
    return new NativeWindow(b.subarray(4 + n * 20), idEnds, counts, uniques, new Uint32Array(n), new Uint8Array(n));
  }
}

/** A counter of a NativeWindow as a sink row; its key fields are parsed from the id on first use. */
class NativeRow implements CounterRow {
  private key: CounterKey | undefined;
  private idText: string | undefined;

  constructor(
    private readonly window: NativeWindow,
    private readonly i: number,
  ) {}

  get id(): string {
    return (this.idText ??= this.window.id(this.i));
  }

  get count(): number {
    return this.window.counts[this.i]!;
  }

  get uniques(): number | undefined {
    return this.window.uniques?.[this.i];
  }

  get scope(): string {
    return this.parsed().scope;
  }

  get statisticId(): string {
    return this.parsed().statisticId;
  }

  get granularity(): Granularity {
    return this.parsed().granularity;
  }

  get bucket(): number {
    return this.parsed().bucket;
  }

  get facet(): string {
    return this.parsed().facet;
  }

  get value(): string {
    return this.parsed().value;
  }

  private parsed(): CounterKey {
    return (this.key ??= parseCounterId(this.id));
  }
}

export class NativeState {
  private readonly kernel: CountKernel;
  private readonly batch = new BatchWriter(INITIAL_BATCH_BYTES);
  private events = 0;
  /** The fast path's input: a micro-batch's records back to back, where each ends, and their ingest seconds. */
  private lines = Buffer.allocUnsafe(INITIAL_BATCH_BYTES);
  private ends = new Uint32Array(4096);
  private ingest = new Uint32Array(4096);
  /** The options the kernel's fast path was configured with (see configureFastPath). */
  private fastPathFor: ParseOptions | undefined;
  private fastPathKeyGroups = 0;
  private fastPathOwned: number | undefined;
  /** Set when a commit failed: the kernel's tables are ahead of the store and must not be used again. */
  private poisoned = false;
  /** Spill records read back into memory since the start. */
  private restoredRecords = 0;

  /**
   * `readSpilled` reads spill records from the store (the task's getMany); a kernel that
   * never evicts (no memory budget) never asks.
   */
  constructor(
    private readonly settings: CountingSettings,
    private readonly readSpilled: (keys: string[]) => Promise<Array<string | undefined>> = () => Promise.reject(new Error('this NativeState has no store to read spill records from')),
  ) {
    const { CountKernel: Kernel } = loadNativeKernel();
    this.kernel = new Kernel(settings.granularities.length, settings.level === 'account', settings.dedupRetentionSec, settings.uniquesRetentionSec);
  }

  /** Adds one valid event of key group `group` to the batch counted by the next count(). */
  add(ev: CountableEvent, group: number, ingestSec: number): void {
    this.batch.event(ev, group, ingestSec, this.settings);
    this.events++;
  }

  /** Counts the events added since the last call, in order (their spilled state read back first); returns their tally. */
  async count(): Promise<CountingTally> {
    this.usable();
    if (this.events === 0) return { counted: 0, duplicates: 0, beyondHorizon: 0 };
    const batch = this.batch.buffer.subarray(0, this.batch.offset);
    let tally = this.kernel.countBatch(batch, this.events, false);
    if (tally.needs.length > 0) {
      await this.restore(tally.needs);
      tally = this.kernel.countBatch(batch, this.events, true);
    }
    this.batch.offset = 0;
    this.events = 0;
    return { counted: tally.counted, duplicates: tally.duplicates, beyondHorizon: tally.beyondHorizon };
  }

  /** Reads the spill records a count needs and gives them to the kernel. */
  private async restore(needs: Buffer): Promise<void> {
    this.restoredRecords += await restoreNeeds(this.kernel, needs, this.readSpilled);
  }

  /** Spill records read back into memory since the start. */
  get restored(): number {
    return this.restoredRecords;
  }

  /**
   * Counts a micro-batch of raw records, in order, through the kernel's fast path. The
   * kernel counts the records it can encode itself, exactly as parseEvent → keyGroupOf → add
   * would; each other record is handed to `deferred`, which parses it and either rejects it
   * or add()s its event, and that event is counted before any later record. `parse` and
   * `keyGroups` are the job's, `owned` the key groups a worker counts (undefined: all, local
   * mode; its version moves when the set changes): records of other groups are deferred too.
   * Returns the tally of every record counted, by the kernel or through add().
   */
  async countRecords(records: readonly SourceRecord[], parse: ParseOptions, keyGroups: number, owned: OwnedGroups | undefined, deferred: (record: SourceRecord) => void | Promise<void>): Promise<CountingTally> {
    this.usable();
    this.configureFastPath(parse, keyGroups, owned);
    const n = records.length;
    this.prepareLines(records);
    const tally = { counted: 0, duplicates: 0, beyondHorizon: 0 };
    const sum = (t: CountingTally): void => {
      tally.counted += t.counted;
      tally.duplicates += t.duplicates;
      tally.beyondHorizon += t.beyondHorizon;
    };
    for (let from = 0; from < n; ) {
      let counted = this.kernel.countLines(this.lines, this.ends, this.ingest, from, n, false);
      if (counted.needs.length > 0) {
        // Nothing was counted: the lines' spilled state comes back, then the same lines are counted.
        await this.restore(counted.needs);
        counted = this.kernel.countLines(this.lines, this.ends, this.ingest, from, n, true);
      }
      sum(counted);
      if (counted.next >= n) break;
      const pending = deferred(records[counted.next]!);
      if (pending !== undefined) await pending;
      // The deferred record's event, if any, is counted before the fast path goes on.
      if (this.events > 0) sum(await this.count());
      from = counted.next + 1;
    }
    return tally;
  }

  /** The encoding the fast path counts for one raw line, or null when it defers the line to parseEvent (the differential test's hook). */
  encodeLine(line: Buffer, ingestSec: number, parse: ParseOptions, keyGroups: number): Buffer | null {
    this.configureFastPath(parse, keyGroups);
    return this.kernel.encodeLine(line, ingestSec);
  }

  /**
   * The route stage's key groups: for each value the fast path reads, its key group (it is
   * valid), else -1 (the caller validates it with parseEvent). One kernel call for all of
   * them; nothing is counted. Use a NativeState of its own: this configures the fast path for
   * every group.
   */
  keyGroupsOf(values: readonly Buffer[], parse: ParseOptions, keyGroups: number): Int32Array {
    this.configureFastPath(parse, keyGroups);
    this.prepareLines(values.map((value) => ({ value, ingestTimeMs: 0 })));
    return this.kernel.keyGroupsOf(this.lines, this.ends, values.length);
  }

  /**
   * Lays the records out for countLines. A record the fast path must not read gets an empty
   * line, which it always defers: one whose value holds only the head of an oversized line
   * (its true size is byteLength), and one whose ingest second the kernel cannot store (the
   * caller dead-letters it: ingestOutOfRange).
   */
  private prepareLines(records: ReadonlyArray<Pick<SourceRecord, 'value' | 'ingestTimeMs' | 'byteLength'>>): void {
    const n = records.length;
    let bytes = 0;
    for (let i = 0; i < n; i++) bytes += records[i]!.value.length;
    if (bytes > this.lines.length) this.lines = Buffer.allocUnsafe(Math.max(bytes, this.lines.length * 2));
    if (n > this.ends.length) {
      const size = Math.max(n, this.ends.length * 2);
      this.ends = new Uint32Array(size);
      this.ingest = new Uint32Array(size);
    }
    const { lines, ends, ingest } = this;
    let offset = 0;
    for (let i = 0; i < n; i++) {
      const record = records[i]!;
      const sec = Math.floor(record.ingestTimeMs / 1000);
      if (record.byteLength === undefined && ingestOutOfRange(sec) === undefined) {
        lines.set(record.value, offset);
        offset += record.value.length;
        ingest[i] = sec;
      } else {
        ingest[i] = 0;
      }
      ends[i] = offset;
    }
  }

  /**
   * Gives the kernel the job's settings for the fast path, once per options object. Facet
   * names that are not well-formed Unicode are left out of the lists: napi would turn their
   * lone surrogates into U+FFFD, and the name of a line the fast path reads (no escapes, valid
   * UTF-8) is always well-formed, so such a name can never equal it.
   */
  private configureFastPath(parse: ParseOptions, keyGroups: number, owned?: OwnedGroups): void {
    if (this.fastPathFor === parse && this.fastPathKeyGroups === keyGroups && this.fastPathOwned === owned?.version) return;
    const wellFormed = (names: readonly string[]): string[] => names.filter((name) => name.isWellFormed());
    const { include, exclude } = parse.facets;
    this.kernel.configureFastPath({
      level: parse.level,
      granularities: [...this.settings.granularities],
      keyGroups,
      maxEventBytes: parse.maxEventBytes,
      ...(include === undefined ? {} : { include: wellFormed(include) }),
      exclude: wellFormed(exclude),
      ...(owned === undefined ? {} : { ownedGroups: [...owned.groups] }),
    });
    this.fastPathFor = parse;
    this.fastPathKeyGroups = keyGroups;
    this.fastPathOwned = owned?.version;
  }

  /**
   * Ends the window: every counter it touched, with its new total (the kernel's total before
   * the window plus the window's changes). Fresh counters of groups hydrated from the sink get
   * their sink value added by rebase().
   */
  finalise(): NativeWindow {
    this.usable();
    const out = this.kernel.finalise();
    return new NativeWindow(out.ids, out.idEnds, out.counts, this.settings.level === 'account' ? out.uniques : undefined, out.groups, out.fresh);
  }

  /** Adds base values (read from the sink) to counters of the last finalise() (by position), in the kernel and in the window. */
  rebase(window: NativeWindow, positions: readonly number[], bases: ReadonlyArray<{ count: number; uniques?: number }>): void {
    const counts = new Float64Array(positions.length);
    const uniques = new Float64Array(positions.length);
    for (let i = 0; i < positions.length; i++) {
      counts[i] = bases[i]!.count;
      uniques[i] = bases[i]!.uniques ?? 0;
    }
    this.kernel.rebase(Uint32Array.from(positions), counts, uniques);
    for (let i = 0; i < positions.length; i++) {
      const p = positions[i]!;
      window.counts[p] = window.counts[p]! + counts[i]!;
      if (window.uniques !== undefined) window.uniques[p] = window.uniques[p]! + uniques[i]!;
    }
  }

  /** The changes since the last call, per key group its counter and state segments (empty: none), to commit in that order; the kernel forgets them. */
  changes(): GroupSegments[] {
    this.usable();
    return groupSegments(this.kernel.changes());
  }

  /** Applies a committed segment of a key group (a group's segments in the order they were written); true when it held counters or totals. */
  load(group: number, segment: Buffer): boolean {
    this.usable();
    return this.kernel.loadSegment(group, segment);
  }


  /**
   * Spills what keeps the kernel's state above `limit` bytes (the memory budget's share,
   * common/memory-budget.ts): the puts of its records, to commit with the window (after
   * changes()), and what was spilled.
   */
  evict(limit: number): { puts: Array<[string, string]>; identities: number; customers: number; stateBytes: number } {
    this.usable();
    const spilled = this.kernel.evict(limit);
    return { puts: spillPuts(spilled), identities: spilled.identities, customers: spilled.customers, stateBytes: spilled.stateBytes };
  }

  /** After a group's segments are loaded: which of its entries have spill records. */
  loadSpilled(store: RocksStore, group: number): Promise<void> {
    this.usable();
    return loadSpillRecords(store, this.kernel, group);
  }

  /** The expiry of a group's spill records at `cutoff`: the writes for the sweep's commit, and what was removed. */
  sweepSpilled(store: RocksStore, group: number, cutoff: number): ReturnType<typeof sweepSpillRecords> {
    this.usable();
    return sweepSpillRecords(store, this.kernel, group, cutoff, this.settings.dedupRetentionSec);
  }

  /** Forgets everything the kernel holds of these groups. */
  drop(groups: readonly number[]): void {
    this.usable();
    if (groups.length > 0) this.kernel.dropGroups(Uint32Array.from(groups));
  }

  /**
   * Deletes what expired before each group's cutoff (ingest seconds; -Infinity: nothing) and
   * returns each group's segments (SweepResult): its state segment replaces its earlier
   * state segments, and where `full` its counter segment its earlier counter segments. The
   * groups' pending changes are in them (changes() no longer lists them).
   */
  sweep(groups: readonly number[], cutoffs: readonly number[], full: readonly boolean[]): { segments: GroupSegments[]; dedup: number; markers: number } {
    this.usable();
    const out = this.kernel.sweep(Uint32Array.from(groups), Float64Array.from(cutoffs), Uint8Array.from(full, (f) => (f ? 1 : 0)));
    return { segments: groupSegments(out.segments), dedup: out.dedup, markers: out.markers };
  }

  /** Per key group the kernel holds: the newest ingest second counted in it since it was loaded. */
  watermarks(): GroupWatermarks {
    return this.kernel.watermarks();
  }

  /** After a failed commit the tables hold changes the store does not: the task must reopen. */
  poison(): void {
    this.poisoned = true;
  }

  stats(): ReturnType<CountKernel['stats']> {
    return this.kernel.stats();
  }

  private usable(): void {
    if (this.poisoned) throw new AbacusError('StateLost', 'the native engine lost a commit: its memory is ahead of the state store', 'restart the task; it reopens the state from the last commit');
  }
}
