import { counterStem, facetToken, parseCounterId, TOTAL_TOKEN } from '../../common/counter-id';
import { AbacusError } from '../../common/errors';
import type { CounterRow } from '../io/types';
import { loadNativeKernel, type CountKernel } from '../native/kernel';
import type { CountingSettings, CountingTally } from './counting';
import type { CountableEvent } from './event';
import { bucketEnd, bucketStart } from './time';

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
 */

const INITIAL_BATCH_BYTES = 1 << 20;

/** A sink row whose totals rebase() may still raise. */
export type WindowRow = Omit<CounterRow, 'count' | 'uniques' | 'id'> & { id: string; count: number; uniques?: number };

/** A window's counters as finalise() leaves them: sink rows with their totals, and where each came from. */
export interface NativeWindow {
  readonly rows: WindowRow[];
  /** Per row: its key group. */
  readonly groups: Uint32Array;
  /** Per row: 1 when the counter had no total before this window (neither counted nor loaded). */
  readonly fresh: Uint8Array;
}

export class NativeState {
  private readonly kernel: CountKernel;
  private buffer = Buffer.allocUnsafe(INITIAL_BATCH_BYTES);
  private offset = 0;
  private events = 0;
  /** Set when a commit failed: the kernel's tables are ahead of the store and must not be used again. */
  private poisoned = false;

  constructor(private readonly settings: CountingSettings) {
    const { CountKernel: Kernel } = loadNativeKernel();
    this.kernel = new Kernel(settings.granularities.length, settings.level === 'account', settings.dedupRetentionSec, settings.uniquesRetentionSec);
  }

  /** Adds one valid event of key group `group` to the batch counted by the next count(). */
  add(ev: CountableEvent, group: number, ingestSec: number): void {
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
    const scope = this.settings.level === 'account' ? ev.companyId : ev.customerId;
    for (const g of this.settings.granularities) {
      const bucket = bucketStart(g, ev.seconds);
      this.reserve(8);
      this.buffer.writeDoubleLE(bucketEnd(g, bucket), this.offset);
      this.offset += 8;
      this.str(counterStem(scope, ev.statisticId, g, bucket));
    }
    this.str(TOTAL_TOKEN);
    for (const [facet, value] of ev.facets) this.str(facetToken(facet, value));
    this.events++;
  }

  /** Counts the events added since the last call, in order; returns their tally. */
  count(): CountingTally {
    this.usable();
    if (this.events === 0) return { counted: 0, duplicates: 0, beyondHorizon: 0 };
    const tally = this.kernel.countBatch(this.buffer.subarray(0, this.offset), this.events);
    this.offset = 0;
    this.events = 0;
    return tally;
  }

  /**
   * Ends the window: every counter it touched, with its new total (the kernel's total before
   * the window plus the window's changes). Fresh counters of groups hydrated from the sink get
   * their sink value added by rebase().
   */
  finalise(): NativeWindow {
    this.usable();
    const out = this.kernel.finalise();
    const ids = JSON.parse(out.ids) as string[];
    const account = this.settings.level === 'account';
    const rows = new Array<WindowRow>(ids.length);
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i]!;
      const { scope, statisticId, granularity, bucket, facet, value } = parseCounterId(id);
      rows[i] = account ? { scope, statisticId, granularity, bucket, facet, value, id, count: out.counts[i]!, uniques: out.uniques[i]! } : { scope, statisticId, granularity, bucket, facet, value, id, count: out.counts[i]! };
    }
    return { rows, groups: out.groups, fresh: out.fresh };
  }

  /** Adds base values (read from the sink) to rows of the last finalise(), in the kernel and in the rows. */
  rebase(window: NativeWindow, positions: readonly number[], bases: ReadonlyArray<{ count: number; uniques?: number }>): void {
    const counts = new Float64Array(positions.length);
    const uniques = new Float64Array(positions.length);
    for (let i = 0; i < positions.length; i++) {
      const row = window.rows[positions[i]!]!;
      counts[i] = bases[i]!.count;
      uniques[i] = bases[i]!.uniques ?? 0;
      row.count += counts[i]!;
      if (row.uniques !== undefined) row.uniques += uniques[i]!;
    }
    this.kernel.rebase(Uint32Array.from(positions), counts, uniques);
  }

  /** The changes since the last call, one segment per key group, to commit; the kernel forgets them. */
  changes(): Array<[group: number, segment: Buffer]> {
    this.usable();
    const { groups, segments } = this.kernel.changes();
    return Array.from(groups, (g, i): [number, Buffer] => [g, segments[i]!]);
  }

  /** Applies a committed segment of a key group (segments of a group in the order they were written). */
  load(group: number, segment: Buffer): void {
    this.usable();
    this.kernel.loadSegment(group, segment);
  }

  /** Forgets everything the kernel holds of these groups. */
  drop(groups: readonly number[]): void {
    this.usable();
    if (groups.length > 0) this.kernel.dropGroups(Uint32Array.from(groups));
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
