import { existsSync } from 'node:fs';
import { nativeKernelPath } from '../../worker/native/kernel';
import type { KernelSettings } from './ts-kernel';

/**
 * The TypeScript side of the Rust prototype (native/hotpath, built by scripts/build-native.sh,
 * which ensure-ready runs): one call per micro-batch.
 */

export interface BatchDeltas {
  /** Counter indexes touched by the batch, with their count and uniques deltas. */
  readonly index: Uint32Array;
  readonly count: Uint32Array;
  readonly uniques: Uint32Array;
  /** JSON array of [scope, statistic, granularity, bucket, facet, value] per counter first seen in the batch, in index order; "" when none. */
  readonly newCounters: string;
}

export interface RustKernelStats {
  counted: number;
  duplicates: number;
  invalid: number;
  beyondHorizon: number;
  identities: number;
  markers: number;
  buckets: number;
  stateBytes: number;
}

export interface RustKernel {
  countBatch(buf: Buffer, starts: Int32Array, ends: Int32Array, ingest: Uint32Array, n: number): BatchDeltas;
  stats(): RustKernelStats;
}

interface NativeModule {
  Kernel: new (level: string, granularities: number[], dedupRetentionSec: number, uniquesRetentionSec: number, simd: boolean, compactMarkers: boolean, markerSlots: number) => RustKernel;
}

/** The built library: $ABACUS_HOTPATH_LIB, else the kernel's (worker/native/kernel.ts: dist/native/abacus-kernel.node). */
export function nativeLibrary(): string {
  const path = process.env.ABACUS_HOTPATH_LIB ?? nativeKernelPath();
  if (!existsSync(path)) throw new Error(`the Rust prototype is not built (${path} is missing): run \`bash scripts/build-native.sh\``);
  return path;
}

export function loadNative<T>(path: string): T {
  const module = { exports: {} as T };
  process.dlopen(module, path);
  return module.exports;
}

/**
 * simd: parse with simd-json (else serde_json); compactMarkers: markers keyed by (counter
 * index, customer index); markerSlots: their table's starting capacity (0: small, doubling).
 */
export function loadRustKernel(s: KernelSettings, simd: boolean, compactMarkers: boolean, markerSlots = 0): RustKernel {
  const native = loadNative<NativeModule>(nativeLibrary());
  return new native.Kernel(s.level, [...s.granularities], s.dedupRetentionSec, s.uniquesRetentionSec, simd, compactMarkers, markerSlots);
}
