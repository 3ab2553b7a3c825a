/**
 * The native counting kernel (native/hotpath: Rust behind napi-rs, docs/adr/0007-hot-path.md),
 * built by scripts/build-native.sh into dist/native/abacus-kernel.node and loaded from here.
 */
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { Granularity } from '../../common/counter-id';
import { AbacusError } from '../../common/errors';
import type { Level } from '../../common/job-config';

/** Overrides the path of the kernel's .node file. */
export const NATIVE_KERNEL_ENV = 'ABACUS_NATIVE_KERNEL';

/** What a `countBatch` call did with the batch's events. */
export interface CountBatchResult {
  counted: number;
  duplicates: number;
  beyondHorizon: number;
  /**
   * When not empty, nothing was counted: the spill records the events need, 21 bytes each
   * (kind letter, u32 LE key group, 16-byte fingerprint: worker/state/spill-records.ts), to
   * read and `restore` before counting the same input again with `resolved`.
   */
  needs: Buffer;
}

/** What a `countLines` call did: the tally of the lines it counted, and where it stopped. */
export interface CountLinesResult extends CountBatchResult {
  /** The first line not counted: the one the fast path deferred to TypeScript, or n. */
  next: number;
}

/**
 * The job's settings that decide how the fast path (native/hotpath/src/fast_path.rs) encodes
 * a raw line: those of parseEvent, routing and NativeState's encoding.
 */
export interface FastPathOptions {
  level: Level;
  /** The job's granularities in its order (the order of the counter stems in the batch). */
  granularities: Granularity[];
  /** K: the line's key group is murmur3_32(routing key) mod K. */
  keyGroups: number;
  maxEventBytes: number;
  /** `facets.include` when set (only these names are facets); names that are not well-formed Unicode left out. */
  include?: string[];
  /** `facets.exclude`, names that are not well-formed Unicode left out. */
  exclude: string[];
  /** The key groups a worker counts (each below keyGroups); absent: all (local mode). Lines of other groups are deferred. */
  ownedGroups?: number[];
}

/** The window's counters in id order: their ids (UTF-8, back to back, id i ending at `idEnds[i]`), key groups, totals and whether first seen. */
export interface FinalisedWindow {
  ids: Buffer;
  idEnds: Uint32Array;
  groups: Uint32Array;
  counts: Float64Array;
  uniques: Float64Array;
  fresh: Uint8Array;
}

/**
 * Per key group, its two segments (an empty Buffer is none), loaded in this order: its
 * counters with their totals, then the rest (customers, dedup, buckets, markers), whose
 * markers may refer to those counters.
 */
export interface StateChanges {
  groups: Uint32Array;
  counters: Buffer[];
  state: Buffer[];
}

/**
 * What a `sweep` deleted, and the swept groups' segments: each state segment replaces the
 * group's earlier state segments; a counter segment replaces its earlier counter segments
 * where the sweep was full, and otherwise holds the group's pending counters and totals.
 */
export interface SweepResult {
  segments: StateChanges;
  /** Dedup identities and uniqueness markers deleted. */
  dedup: number;
  markers: number;
}

/** Per key group the kernel holds: the newest ingest second counted in it since it was loaded. */
export interface GroupWatermarks {
  groups: Uint32Array;
  seconds: Uint32Array;
}

/** What `evict` spilled: record i's key (as a need) and its value `values[ends[i-1] .. ends[i]]`. */
export interface SpillRecords {
  keys: Buffer;
  values: Buffer;
  ends: Uint32Array;
  identities: number;
  customers: number;
  /** The state's bytes after the eviction: above the limit when what stays in memory passes it. */
  stateBytes: number;
}

/** Per marker record swept: 0 kept, 1 rewritten (its new value next in `values`), 2 deleted. */
export interface SweptRecords {
  actions: Uint8Array;
  values: Buffer;
  ends: Uint32Array;
  removed: number;
}

export interface CountKernelStats {
  counted: number;
  duplicates: number;
  beyondHorizon: number;
  identities: number;
  buckets: number;
  markers: number;
  counters: number;
  customers: number;
  stateBytes: number;
  /** Customers whose marker set is spilled (in whole or in part), and spilled dedup identities (tags; an identity spilled twice counts twice). */
  spilledCustomers: number;
  spilledIdentities: number;
}

/** An instance of the addon's `CountKernel` class. */
export interface CountKernel {
  /** Counts the batch, unless (without `resolved`) its events need spill records: see CountBatchResult.needs. */
  countBatch(batch: Buffer, n: number, resolved: boolean): CountBatchResult;
  /** Enables countLines and encodeLine; a later call replaces the options. */
  configureFastPath(options: FastPathOptions): void;
  /**
   * Counts lines [from, n) of `buf` (line i is `buf[ends[i-1] .. ends[i]]`, `ends[-1]` = 0,
   * counted at ingest second `ingest[i]`) in order, up to the first line the fast path
   * defers, whose index it returns as `next` (n when none). The caller handles that line
   * and calls again from next + 1. Without `resolved`, lines that need spill records are not
   * counted: see CountBatchResult.needs (then `next` is `from`).
   */
  countLines(buf: Buffer, ends: Uint32Array, ingest: Uint32Array, from: number, n: number, resolved: boolean): CountLinesResult;
  /** Brings the records a count needed back into memory: `found[i]` whether record i exists, its value `values[ends[i-1] .. ends[i]]`. */
  restore(needs: Buffer, found: Uint8Array, values: Buffer, ends: Uint32Array): void;
  /** Spills what keeps the state above `limit` bytes (stats().stateBytes) where it can; the records go into the commit. Call after changes(). */
  evict(limit: number): SpillRecords;
  /** A loaded group's spill records of one kind, by fingerprint (16 bytes each, as in their keys). */
  loadSpilled(group: number, kind: 'I' | 'M', fps: Buffer): void;
  /** Identity records of the group deleted from the store. */
  forgetIdentities(group: number, fps: Buffer): void;
  /** The sweep's marker rule at `cutoff` applied to a group's marker records (fingerprints, values as in restore). */
  sweepMarkerRecords(group: number, cutoff: number, fps: Buffer, values: Buffer, ends: Uint32Array): SweptRecords;
  /** The batch encoding countLines counts for one line, or null when the fast path defers it (tests). */
  encodeLine(line: Buffer, ingestSec: number): Buffer | null;
  /** The key group of each line [0, n) (laid out as for countLines) the fast path reads, or -1 for a line it defers; counts nothing (the route stage). */
  keyGroupsOf(buf: Buffer, ends: Uint32Array, n: number): Int32Array;
  finalise(): FinalisedWindow;
  rebase(positions: Uint32Array, counts: Float64Array, uniques: Float64Array): void;
  changes(): StateChanges;
  /** Applies a segment; true when it held counters or totals. */
  loadSegment(group: number, segment: Buffer): boolean;
  dropGroups(groups: Uint32Array): void;
  /**
   * Deletes what no event of ingest second cutoffs[i] or later decides on in key group
   * groups[i] (worker/state/expiry.ts's rules; a cutoff of -Infinity deletes nothing), and
   * returns each group's remaining state as segments; `full[i]` = 1 also rewrites its counters.
   */
  sweep(groups: Uint32Array, cutoffs: Float64Array, full: Uint8Array): SweepResult;
  watermarks(): GroupWatermarks;
  stats(): CountKernelStats;
}

export interface CountKernelConstructor {
  new (granularities: number, account: boolean, dedupRetentionSec: number, uniquesRetentionSec: number): CountKernel;
}

/** Per section of a segment (customers, counters with their ids, dedup, buckets, markers, totals): its records and bytes. */
export interface SegmentSections {
  records: number[];
  bytes: number[];
}

/** The addon's exports. */
export interface NativeKernelModule {
  readonly CountKernel: CountKernelConstructor;
  /** What a segment of key group `group` is made of; throws when it is not a valid segment. */
  segmentSections(segment: Buffer, group: number): SegmentSections;
}

/**
 * Where the kernel is loaded from: $ABACUS_NATIVE_KERNEL (relative to the working directory),
 * else dist/native/abacus-kernel.node next to this compiled file's dist/worker/native/.
 */
export function nativeKernelPath(): string {
  const override = process.env[NATIVE_KERNEL_ENV];
  if (override !== undefined && override !== '') return resolve(override);
  return join(__dirname, '..', '..', 'native', 'abacus-kernel.node');
}

const loaded = new Map<string, NativeKernelModule>();

/** The kernel at nativeKernelPath(), loaded once per process. */
export function loadNativeKernel(): NativeKernelModule {
  return loadNativeKernelFrom(nativeKernelPath());
}

/** The kernel at `path`, loaded once per path; an AbacusError naming the path and the fix when it cannot be. */
export function loadNativeKernelFrom(path: string): NativeKernelModule {
  const cached = loaded.get(path);
  if (cached !== undefined) return cached;
  const fix = buildFix(path);
  if (!existsSync(path)) {
    throw new AbacusError('NativeKernelMissing', `the native counting kernel ${path} does not exist`, fix);
  }
  const module = { exports: {} as NativeKernelModule };
  try {
    process.dlopen(module, path);
  } catch (err) {
    throw new AbacusError('NativeKernelLoadFailed', `the native counting kernel ${path} did not load: ${(err as Error).message}`, fix);
  }
  // A build from before the kernel had this class (the prototype's) loads but cannot count;
  // one from before the fast path, expiry, spill or native routing lacks countLines, sweep, evict or keyGroupsOf, which the task and the router call.
  const Kernel = (module.exports as Partial<NativeKernelModule>).CountKernel;
  if (typeof Kernel !== 'function') {
    throw new AbacusError('NativeKernelOutdated', `the native counting kernel ${path} has no CountKernel class (an older build)`, fix);
  }
  const prototype = (Kernel as unknown as { prototype: Partial<CountKernel> }).prototype;
  for (const method of ['countLines', 'sweep', 'evict', 'keyGroupsOf'] as const) {
    if (typeof prototype[method] !== 'function') {
      throw new AbacusError('NativeKernelOutdated', `the native counting kernel ${path} has no CountKernel.${method} (an older build)`, fix);
    }
  }
  loaded.set(path, module.exports);
  return module.exports;
}

function buildFix(path: string): string {
  const build = 'build it with `bash scripts/build-native.sh` (needs Rust\'s cargo; `npm test`, `npm run demo` and `npm run bench` run it)';
  const override = process.env[NATIVE_KERNEL_ENV];
  if (override !== undefined && override !== '' && resolve(override) === path) {
    return `${build}, or point ${NATIVE_KERNEL_ENV} at a built abacus-kernel.node (unset, dist/native/abacus-kernel.node is used)`;
  }
  return build;
}
