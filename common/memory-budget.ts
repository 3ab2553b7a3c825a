import { parseSize } from './duration';
import { ConfigError } from './errors';
import { NATIVE_SEMI_SPACE_MIB } from './node-options';

/**
 * The memory budget of a worker (`state.memoryBudget` in the job config, `memoryBudget` in
 * an AbacusJob's spec, `--memory-budget` on the command line): one size that bounds the
 * process's memory, from which every memory-holding part of the state sizes itself. Shared
 * by the worker (which sizes its caches from it) and the operator (which checks that it fits
 * the container's memory limit).
 *
 * The split (docs/performance.md "Memory budget" has the measurements behind it):
 * - a runtime reserve for what no setting bounds: Node.js and RocksDB's own allocations, V8's
 *   young generation (`--max-semi-space-size`, sized from it: semiSpaceMiB), the micro-batch
 *   being counted, the window's changes until they are committed, and in local mode the
 *   embedded sink's RocksDB (SINK_MEMORY): 40 % of the budget, at least 320 MiB (a quarter
 *   left peak RSS 13 % above a 1 GiB budget: what no setting bounds took ~160 MiB there);
 * - the rest, the state share:
 *   - 30 % the state cache's committed records (bounded in estimated bytes; plus half of what
 *     the filter's rounding and the binding's 4 GiB limit on RocksDB's sizes leave over),
 *   - 15 % RocksDB's block cache,
 *   - 20 % RocksDB's write buffers (memtables: two of 10 % each, the one being filled and
 *     the one being flushed),
 *   - up to 10 % the Bloom filter (rounded down to a power of two bits),
 *   - the rest (at least 25 %) is the old generation's room beyond the cache: V8 is capped at
 *     heapLimitMiB (`--max-old-space-size`), so it collects instead of growing the heap to
 *     twice the live data (measured: 2.4 GiB peak RSS for a 1 GiB budget without the cap).
 */

export const MIN_MEMORY_BUDGET = 512 * 1024 ** 2;
export const MAX_MEMORY_BUDGET = 1024 ** 4;
const MIN_RESERVE = 320 * 1024 ** 2;
const RESERVE_SHARE = 0.4;
/** The `rocksdb` binding reads its sizes as 32-bit unsigned integers. */
const MAX_ROCKSDB_SIZE = 2 ** 32 - 1;

export interface MemoryPlan {
  readonly budget: number;
  /** Bytes left to the runtime (not allocated to a part). */
  readonly reserve: number;
  /** Estimated bytes of committed records the state cache keeps (StateCache's capacity). */
  readonly cacheBytes: number;
  readonly blockCacheSize: number;
  /** One memtable; RocksDB holds up to two (one filling, one flushing). */
  readonly writeBufferSize: number;
  /** Bloom filter size in bits, a power of two. */
  readonly filterBits: number;
  /**
   * V8's young generation must fit the reserve: the process runs with
   * `--max-semi-space-size` of this many MiB (V8 keeps up to three semi-spaces of young
   * objects). The operator sets it in the workers' NODE_OPTIONS; a process started with a
   * larger one (npm run bench's 128) may exceed the budget by the difference.
   */
  readonly semiSpaceMiB: number;
  /**
   * V8's old generation cap (`--max-old-space-size`): twice the cache (a Map that grows
   * holds its old and new tables at once: a cap of 1.25 times the cache ran out of heap on
   * the 1 M-identity benchmark), plus 64 MiB for the window and the batch.
   */
  readonly heapLimitMiB: number;
  /**
   * The native engine's state share: its kernel's tables (dedup identities, marker sets,
   * counters, customers, buckets) are kept within it by spilling identities and marker sets
   * to RocksDB (ADR 7). It is what the records engine gives its cache, its Bloom filter and
   * its heap room: the state share but RocksDB's block cache and write buffers.
   */
  readonly nativeStateBytes: number;
}

/** The embedded sink of local mode (a second RocksDB) under a budget: small, and counted in the reserve. */
export const SINK_MEMORY = { blockCacheSize: 8 * 1024 ** 2, writeBufferSize: 8 * 1024 ** 2 };

/** Parses a budget (a size such as `1536Mi` or `2Gi`), naming the field and the fix when it is not usable. */
export function parseMemoryBudget(value: unknown, field: string): number {
  if (typeof value !== 'string' && typeof value !== 'number') {
    throw new ConfigError(field, `${JSON.stringify(value)} is not a size`, `set ${field} to a size such as 1Gi or 1536Mi`);
  }
  const bytes = parseSize(value, field);
  if (bytes < MIN_MEMORY_BUDGET || bytes > MAX_MEMORY_BUDGET) {
    throw new ConfigError(field, `${value} is outside 512Mi..1Ti`, `set ${field} to at least 512Mi (Node.js and RocksDB alone need about 200Mi) and at most 1Ti`);
  }
  return bytes;
}

/** How a budget is divided (see the module comment). Pure. */
export function planMemory(budget: number): MemoryPlan {
  const reserve = Math.max(MIN_RESERVE, Math.floor(budget * RESERVE_SHARE));
  const state = budget - reserve;
  const filterBytes = Math.floor(state * 0.1);
  // The largest power of two of bits that fits its share.
  const filterBits = 2 ** Math.floor(Math.log2(filterBytes * 8));
  const blockCacheSize = Math.min(MAX_ROCKSDB_SIZE, Math.floor(state * 0.15));
  const writeBufferSize = Math.min(MAX_ROCKSDB_SIZE, Math.floor(state * 0.1));
  // Three semi-spaces take at most 3/8 of the reserve, and no more than the 128 MiB measured best (docs/performance.md).
  const semiSpaceMiB = Math.max(8, Math.min(128, 2 ** Math.floor(Math.log2(reserve / 8 / 1024 ** 2))));
  // Half of what the filter's rounding and the binding's limits leave of their shares goes to the cache (the heap cap is twice
  // the cache), as long as the settings leave ownAllocationsRoom to what no setting bounds.
  const others = 3 * semiSpaceMiB * 1024 ** 2 + blockCacheSize + 2 * writeBufferSize + filterBits / 8;
  const heapRoom = budget - ownAllocationsRoom(budget) - others;
  const cacheBytes = Math.min(
    Math.floor(state * 0.3 + ((filterBytes - filterBits / 8) + (Math.floor(state * 0.15) - blockCacheSize) + 2 * (Math.floor(state * 0.1) - writeBufferSize)) / 2),
    Math.floor((heapRoom - 65 * 1024 ** 2) / 2),
  );
  const heapLimitMiB = Math.ceil((cacheBytes * 2) / 1024 ** 2) + 64;
  const nativeStateBytes = state - blockCacheSize - 2 * writeBufferSize;
  return { budget, reserve, cacheBytes, blockCacheSize, writeBufferSize, filterBits, semiSpaceMiB, heapLimitMiB, nativeStateBytes };
}

/**
 * What a plan's settings leave to the allocations no setting bounds (Node.js's and RocksDB's
 * own, the allocator's slack): a fifth of the budget, at least 144 MiB (measured ~160 MiB
 * beyond the settings at 1 GiB: docs/performance.md "Memory budget").
 */
export function ownAllocationsRoom(budget: number): number {
  return Math.max(144 * 1024 ** 2, budget / 5);
}

/**
 * The Node.js flags a process under this plan runs with (NODE_OPTIONS of a worker, the
 * benchmark's own). The native engine keeps its young generation at 32 MiB whatever the
 * budget; its heap cap stays (the heap holds little but the window's rows).
 */
export function nodeFlags(plan: MemoryPlan, engine: 'records' | 'native' = 'records'): string[] {
  const semi = engine === 'native' ? Math.min(plan.semiSpaceMiB, NATIVE_SEMI_SPACE_MIB) : plan.semiSpaceMiB;
  return [`--max-semi-space-size=${semi}`, `--max-old-space-size=${plan.heapLimitMiB}`];
}

/** Bytes a plan lets the process use at most by its settings: the heap cap, three semi-spaces, RocksDB's block cache and memtables, the filter. The rest of the budget is for Node.js's and RocksDB's own allocations. */
export function plannedBytes(plan: MemoryPlan): number {
  return (plan.heapLimitMiB + 3 * plan.semiSpaceMiB) * 1024 ** 2 + plan.blockCacheSize + 2 * plan.writeBufferSize + plan.filterBits / 8;
}
