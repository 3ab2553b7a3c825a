import { referenceRun, sortRows, type RefGranularity, type RefRow } from '../../test/support/reference';
import type { CounterIdentity } from './ts-kernel';

/** What a kernel run leaves, for the figures and the exactness check. */
export interface Counted {
  counted: number;
  duplicates: number;
  invalid: number;
  beyondHorizon: number;
  windows: number;
  rowsFlushed: number;
  extra: Record<string, number>;
  rows(): RefRow[];
}

const GRANULARITY_NAMES: readonly RefGranularity[] = ['hour', 'day', 'month'];

/** A kernel's counters (identity by index, totals in typed arrays) in the reference's row shape. */
export function kernelRows(counters: readonly CounterIdentity[], count: Float64Array, uniques: Float64Array): RefRow[] {
  return counters.map((c, i) => ({
    scope: c.scope,
    statistic_id: c.statistic,
    granularity: GRANULARITY_NAMES[c.granularity]!,
    facet: c.facet,
    value: c.value,
    bucket: new Date(c.bucket * 1000).toISOString().replace('.000Z', 'Z'),
    count: count[i]!,
    uniques: uniques[i]!,
  }));
}

/**
 * Every counter of an account-level run against test/support/reference.ts; returns the
 * differences (at most 20), empty when identical.
 *
 * The reference overcounts uniques of a bucket once ingest time is past bucket end +
 * retention (semantics.md leaves that to the job); the engine's rule is exact for a
 * back-fill into a bucket it has not seen, which is every late bucket of the benchmark
 * workload (its ingest time spans minutes). So the reference runs with an unbounded uniques
 * horizon and the kernel must report no update beyond its own: both then mean "exact".
 */
export function differencesFromReference(records: ReadonlyArray<{ value: string; ingestSec: number }>, result: Counted): string[] {
  const ref = referenceRun(
    records.map((r) => ({ value: r.value, ingestTimeMs: r.ingestSec * 1000 })),
    { level: 'account', uniquesRetentionMs: Number.MAX_SAFE_INTEGER / 4 },
  );
  const key = (r: RefRow): string => JSON.stringify([r.scope, r.statistic_id, r.granularity, r.facet, r.value, r.bucket]);
  const got = sortRows(result.rows());
  const want = new Map(ref.rows.map((r) => [key(r), r]));
  const problems: string[] = [];
  if (result.beyondHorizon !== 0) problems.push(`${result.beyondHorizon} updates beyond the uniques horizon`);
  if (ref.counted !== result.counted || ref.duplicates !== result.duplicates || ref.invalid.length !== result.invalid) {
    problems.push(`counted/duplicates/invalid ${result.counted}/${result.duplicates}/${result.invalid}, reference ${ref.counted}/${ref.duplicates}/${ref.invalid.length}`);
  }
  if (got.length !== ref.rows.length) problems.push(`${got.length} counters, reference ${ref.rows.length}`);
  for (const r of got) {
    if (problems.length >= 20) break;
    const w = want.get(key(r));
    if (w === undefined || w.count !== r.count || w.uniques !== r.uniques) {
      problems.push(`${key(r)}: count ${r.count} uniques ${r.uniques}, reference ${w === undefined ? 'absent' : `${w.count} ${w.uniques}`}`);
    }
  }
  return problems;
}
