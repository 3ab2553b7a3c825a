/**
 * The Node.js flags a worker runs with (the operator puts them in the pod's NODE_OPTIONS;
 * the benchmarks start their workers the same way, so they measure what production runs).
 *
 * A 128 MiB young generation: the engine allocates short-lived strings per event, and a
 * larger nursery lets them die young (measured +50 % events/s, docs/performance.md).
 */
export const WORKER_NODE_OPTIONS = '--max-semi-space-size=128';

/**
 * The young generation for a counting engine. The native engine makes no string or object
 * per event (its kernel keeps the state), so a 32 MiB nursery does: at 1 M records it ran as
 * fast as with 128 MiB (64.7 k against 63.7 k events per CPU-second) with 100-200 MiB less
 * RSS (docs/performance.md, "The native engine").
 */
export function workerNodeOptions(engine: 'records' | 'native'): string {
  return engine === 'native' ? `--max-semi-space-size=${NATIVE_SEMI_SPACE_MIB}` : WORKER_NODE_OPTIONS;
}

/** The native engine's young generation, in MiB (with or without a memory budget). */
export const NATIVE_SEMI_SPACE_MIB = 32;

/**
 * glibc's allocator keeps up to 8 arenas per core, one per thread that allocates at once
 * (RocksDB's flush and compaction threads, V8's helpers), and returns little of them. Two
 * arenas: the 1 M-identity benchmark under a 1 GiB budget peaked at 892 MiB instead of
 * 995 MiB, at the same speed (docs/performance.md "Memory budget"). Set in the workers'
 * environment by the operator and by the benchmark when it runs itself under a budget.
 */
export const WORKER_MALLOC_ENV = { MALLOC_ARENA_MAX: '2' } as const;
