import { parseChunkKey, parseManifestKey } from './format';

/**
 * Retention planning — pure, so that "no kept object is ever deleted" can be tested on
 * arbitrary histories (test/unit/checkpoint-retention.test.ts).
 *
 * Rules, for one writer after it committed a checkpoint:
 * - its last `retention` complete manifests are kept; its older manifests (complete or
 *   damaged) are deleted;
 * - a chunk is referenced when any kept manifest of this writer or any manifest of another
 *   writer names it (a group that moved keeps pointing at the chunks of its old owner);
 * - pinned manifests of this writer are kept too, whatever their age: the final checkpoint of
 *   a key group released in a hand-over must outlive the periodic checkpoints written after
 *   it until the new owner has restored it (docs/adr/0005-rescale-hand-over.md);
 * - only objects in the writer's own namespace are ever deleted: unreferenced chunks whose
 *   sequence is not newer than the writer's newest committed manifest (a newer one may
 *   belong to a checkpoint in progress), and nothing else.
 */
export interface RetentionInput {
  readonly writer: string;
  readonly retention: number;
  /** Every object key under the job's root (all writers). */
  readonly objects: readonly string[];
  /** Manifests read from the root: id → the chunk keys it references, or null when it is damaged. */
  readonly manifests: ReadonlyMap<string, readonly string[] | null>;
  /** Manifest keys of this writer that must stay (released in a hand-over and not yet acquired). */
  readonly pinned?: ReadonlySet<string>;
}

export interface RetentionPlan {
  /** Object keys to delete: manifests first (so a reader never sees a kept manifest with deleted chunks), then chunks. */
  readonly delete: string[];
  /** Manifest keys of this writer that stay. */
  readonly keptManifests: string[];
}

export function planRetention(input: RetentionInput): RetentionPlan {
  const own: Array<{ key: string; sequence: number; refs: readonly string[] | null }> = [];
  const referenced = new Set<string>();
  for (const key of input.objects) {
    const m = parseManifestKey(key);
    if (m === undefined) continue;
    const refs = input.manifests.get(key);
    if (m.writer === input.writer) own.push({ key, sequence: m.sequence, refs: refs ?? null });
    // Another writer's manifest protects what it names, damaged or not (we cannot tell what a damaged one names; its own writer's retention cleans it).
    else for (const r of refs ?? []) referenced.add(r);
  }
  own.sort((a, b) => b.sequence - a.sequence);
  const complete = own.filter((m) => m.refs !== null);
  const newest = complete.slice(0, Math.max(1, input.retention));
  const kept = [...newest, ...complete.filter((m) => input.pinned?.has(m.key) === true && !newest.includes(m))];
  if (kept.length === 0) return { delete: [], keptManifests: [] };
  const newestKept = kept[0]!.sequence;
  const oldestKept = newest[newest.length - 1]!.sequence;
  const keptKeys = new Set(kept.map((m) => m.key));
  for (const m of kept) for (const r of m.refs!) referenced.add(r);

  const deleteManifests = own.filter((m) => !keptKeys.has(m.key) && m.sequence < oldestKept).map((m) => m.key);
  const deleteChunks: string[] = [];
  for (const key of input.objects) {
    const c = parseChunkKey(key);
    if (c === undefined || c.writer !== input.writer || referenced.has(key)) continue;
    if (c.sequence <= newestKept) deleteChunks.push(key);
  }
  return { delete: [...deleteManifests, ...deleteChunks], keptManifests: kept.map((m) => m.key) };
}
