import { AbacusError } from '../../common/errors';
import { sleep } from '../../common/sleep';
import { keyGroupRange } from '../state/keys';
import type { RocksStore } from '../state/rocks';
import { metrics } from '../runtime/metrics';
import { decodeChunk, decodeManifest, manifestKeyOfId, parseManifestKey, type ChunkEntry, type ChunkRef, type GroupEntry, type Manifest } from './format';
import type { ObjectStore } from './object-store';
import { encodePresence, presenceKey, readPresence, type Presence } from './presence';

/**
 * Restoring key groups from checkpoints. Commit protocol of one group's restore:
 *   1. fetch every chunk of its chain and check each against the manifest's sha256, size
 *      and record count — nothing is written before the whole chain is known good;
 *   2. mark the group `restoring` in its presence record (a crash from here on leaves a
 *      group that counts as having no local state, so it is restored again at start);
 *   3. replace the group's records (clear its range, write the folded chain) — or, when
 *      the group holds exactly a prefix of this chain from an earlier restore (pre-copy),
 *      apply only the new deltas;
 *   4. COMMIT POINT — the presence record naming the manifest and chain, written synced.
 */

export interface CatalogEntry {
  readonly key: string;
  readonly manifest?: Manifest;
  /** Why the manifest cannot be used, when it cannot. */
  readonly problem?: string;
}

/** Every manifest under the root (all writers), complete ones newest first, then damaged ones. */
export async function readCatalog(objectStore: ObjectStore): Promise<CatalogEntry[]> {
  const out: CatalogEntry[] = [];
  for (const o of await objectStore.list('')) {
    if (parseManifestKey(o.key) === undefined) continue;
    try {
      out.push({ key: o.key, manifest: decodeManifest(await objectStore.get(o.key), o.key) });
    } catch (err) {
      if ((err as { code?: string }).code === 'ObjectMissing') continue; // deleted by retention meanwhile
      if ((err as { code?: string }).code !== 'ManifestDamaged') throw err;
      out.push({ key: o.key, problem: (err as Error).message });
    }
  }
  return out.sort((a, b) => (a.manifest === undefined ? 1 : b.manifest === undefined ? -1 : newestFirst(a.manifest, b.manifest)));
}

/** Order of manifests: higher assignment generation, then later, then higher sequence first. */
export function newestFirst(a: Manifest, b: Manifest): number {
  return b.generation - a.generation || b.createdAtMs - a.createdAtMs || b.sequence - a.sequence;
}

export interface RestoreOptions {
  /** Restore exactly this checkpoint (`<writer>/<sequence>`); without it, the newest complete one holding each group. */
  readonly manifestId?: string;
  /** stateFingerprint(config) of the job: a checkpoint written with other settings is refused. */
  readonly fingerprint?: Readonly<Record<string, unknown>>;
  readonly log?: (line: string) => void;
  readonly clock?: () => number;
  /** Groups restored at once (default 1). A hand-over's acquire, which its groups wait for, restores several side by side. */
  readonly concurrency?: number;
  /**
   * A pre-copy, which nobody waits for but counting shares the worker with: it writes in
   * small batches and, after each, pauses as long as the batch took, so counting keeps at
   * least half of the worker's time.
   */
  readonly background?: boolean;
}

export interface RestoredGroup {
  readonly group: number;
  readonly manifestId: string;
  /** Records written (after folding the chain). */
  readonly records: number;
  /** Chunk bytes downloaded. */
  readonly bytes: number;
  /** Partition → next position, from the checkpoint. */
  readonly positions: Readonly<Record<string, string>>;
  /** True when only new deltas were applied on top of an earlier restore of the same chain; false for a full replace. */
  readonly incremental: boolean;
  /** Incremental only: the keys the new deltas put (an index of the group's keys only needs these added). */
  readonly put?: readonly string[];
  /** The chain now in the store (for Checkpointer.adopt). */
  readonly entry: GroupEntry;
}

export interface RestoreResult {
  readonly groups: RestoredGroup[];
  /** Groups that no complete checkpoint holds (nothing was written for them). */
  readonly missing: number[];
  /** Checkpoints passed over, and why (damaged, a chunk missing or corrupt, other settings). */
  readonly skipped: Array<{ readonly manifestId: string; readonly problem: string }>;
  readonly bytes: number;
  readonly records: number;
  readonly durationMs: number;
}

/**
 * Replaces the local records of `groups` by their newest complete checkpoint (or exactly
 * `options.manifestId`'s), group by group. Usable before a task opens (a lost volume) and
 * while a task runs for OTHER groups (a hand-over: pre-copy from the last periodic
 * checkpoint, then the final delta) — the caller must not count a group while it is being
 * restored. Throws when `manifestId` is given and cannot be used for every group.
 */
export async function restoreGroups(store: RocksStore, objectStore: ObjectStore, groups: readonly number[], options: RestoreOptions = {}): Promise<RestoreResult> {
  const clock = options.clock ?? Date.now;
  const started = clock();
  const timer = metrics.restoreSeconds.startTimer();
  const skipped: Array<{ manifestId: string; problem: string }> = [];
  const skippedIds = new Set<string>();
  const skip = (id: string, problem: string): void => {
    if (skippedIds.has(id)) return;
    skippedIds.add(id);
    skipped.push({ manifestId: id, problem });
    options.log?.(`checkpoint ${id} skipped: ${problem}`);
  };

  let candidates: Manifest[];
  if (options.manifestId !== undefined) {
    const manifest = await readManifestById(objectStore, options.manifestId);
    const mismatch = fingerprintProblem(manifest, options.fingerprint);
    if (mismatch !== undefined) throw new AbacusError('CheckpointMismatch', `checkpoint ${manifest.id} ${mismatch}`, 'restore a checkpoint of this job written with its current settings');
    const absent = groups.filter((g) => manifest.groups[g] === undefined);
    if (absent.length > 0) throw new AbacusError('GroupNotInCheckpoint', `checkpoint ${manifest.id} holds no state for key groups ${absent.join(', ')}`, 'name a checkpoint written by the worker that owned them, or omit the checkpoint id');
    candidates = [manifest];
  } else {
    candidates = [];
    for (const c of await readCatalog(objectStore)) {
      if (c.manifest === undefined) {
        skip(c.key, c.problem!);
        continue;
      }
      const mismatch = fingerprintProblem(c.manifest, options.fingerprint);
      if (mismatch !== undefined) skip(c.manifest.id, mismatch);
      else candidates.push(c.manifest);
    }
  }

  const presence = await readPresence(store, groups);
  const restored: RestoredGroup[] = [];
  const missing: number[] = [];
  const pace: Pace = options.background === true ? { batch: 2000, dutyCycle: true } : { batch: 20_000, dutyCycle: false };
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < groups.length) {
      const g = groups[next++]!;
      let done: RestoredGroup | undefined;
      for (const manifest of candidates) {
        const entry = manifest.groups[g];
        if (entry === undefined || skippedIds.has(manifest.id)) continue;
        try {
          done = await restoreGroup(store, objectStore, g, manifest.id, entry, presence.get(g), clock, pace);
          break;
        } catch (err) {
          if (options.manifestId !== undefined || !isCheckpointProblem(err)) throw err;
          skip(manifest.id, (err as Error).message);
        }
      }
      if (done === undefined) missing.push(g);
      else restored.push(done);
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(options.concurrency ?? 1, groups.length)) }, worker));
  restored.sort((a, b) => a.group - b.group);
  missing.sort((a, b) => a - b);
  const bytes = restored.reduce((n, r) => n + r.bytes, 0);
  metrics.restoreBytes.inc(bytes);
  timer();
  return { groups: restored, missing, skipped, bytes, records: restored.reduce((n, r) => n + r.records, 0), durationMs: clock() - started };
}

/** Reads and checks one manifest by id; a clear error when it is missing or damaged. */
export async function readManifestById(objectStore: ObjectStore, id: string): Promise<Manifest> {
  const key = manifestKeyOfId(id);
  if (key === undefined) throw new AbacusError('BadCheckpointId', `"${id}" is not a checkpoint id`, 'checkpoint ids look like local/000000000007 or w0/000000000042 (see `abacus restore` output or the manifests/ folders)');
  const manifest = decodeManifest(await objectStore.get(key), key);
  return manifest;
}

/** Downloads and checks every chunk a manifest references (nothing is written). Throws on the first bad one. */
export async function verifyManifest(objectStore: ObjectStore, manifest: Manifest): Promise<{ bytes: number }> {
  let bytes = 0;
  const refs: ChunkRef[] = [];
  for (const entry of Object.values(manifest.groups)) refs.push(...entry.chunks);
  if (manifest.unkeyed !== undefined) refs.push(manifest.unkeyed.chunk);
  for (const ref of refs) {
    await decodeChunk(await objectStore.get(ref.key), ref);
    bytes += ref.bytes;
  }
  return { bytes };
}

/** Fetches and checks chunks in order. */
export async function fetchChunks(objectStore: ObjectStore, refs: readonly ChunkRef[]): Promise<{ chunks: ChunkEntry[][]; bytes: number }> {
  const chunks: ChunkEntry[][] = [];
  let bytes = 0;
  for (const ref of refs) {
    chunks.push(await decodeChunk(await objectStore.get(ref.key), ref));
    bytes += ref.bytes;
  }
  return { chunks, bytes };
}

/** How a restore writes: entries per write batch, and whether it pauses after each as long as the batch took (background). */
interface Pace {
  readonly batch: number;
  readonly dutyCycle: boolean;
}

async function restoreGroup(
  store: RocksStore,
  objectStore: ObjectStore,
  group: number,
  manifestId: string,
  entry: GroupEntry,
  before: Presence | undefined,
  clock: () => number,
  pace: Pace,
): Promise<RestoredGroup> {
  const had = before?.restoring === true ? null : (before?.restored ?? null);
  const prefixLength = had !== null && isPrefix(had.chunks, entry.chunks) ? had.chunks.length : 0;
  const incremental = prefixLength > 0;
  const { chunks, bytes } = await fetchChunks(objectStore, entry.chunks.slice(prefixLength)); // 1
  const restoringMark: Presence = { sinceMs: clock(), restoredFrom: manifestId, restored: null, restoring: true };
  let records = 0;
  const put: string[] = [];
  const done: Presence = { sinceMs: before?.sinceMs ?? clock(), restoredFrom: manifestId, restored: entry };
  if (incremental) {
    for (const chunk of chunks) for (const [k, v] of chunk) if (v !== null) put.push(k);
    const total = chunks.reduce((n, c) => n + c.length, 0);
    if (total <= pace.batch) {
      // A small delta (the usual final one of a hand-over): records and the new presence in
      // one synced batch — atomic, so 2-4 collapse into one commit point and one sync.
      const entries = chunks.flat();
      const puts = entries.filter((e): e is [string, string] => e[1] !== null);
      puts.push([presenceKey(group), encodePresence(done)]);
      await store.write(puts, entries.filter(([, v]) => v === null).map(([k]) => k), true);
      return { group, manifestId, records: total, bytes, positions: entry.positions, incremental, entry, put };
    }
    await store.write([[presenceKey(group), encodePresence(restoringMark)]], [], true); // 2
    for (const chunk of chunks) records += await writeEntries(store, chunk, pace); // 3
  } else {
    await store.clearRange(keyGroupRange(group));
    await store.write([[presenceKey(group), encodePresence(restoringMark)]], [], true); // 2
    if (chunks.length === 1) {
      records = await writeEntries(store, chunks[0]!.filter(([, v]) => v !== null), pace); // 3 (a lone base needs no folding)
    } else {
      const folded = new Map<string, string | null>();
      for (const chunk of chunks) for (const [k, v] of chunk) folded.set(k, v);
      records = await writeEntries(store, [...folded].filter(([, v]) => v !== null), pace); // 3
    }
  }
  await store.write([[presenceKey(group), encodePresence(done)]], [], true); // 4 COMMIT POINT
  return { group, manifestId, records, bytes, positions: entry.positions, incremental, entry, ...(incremental ? { put } : {}) };
}

async function writeEntries(store: RocksStore, entries: readonly ChunkEntry[], pace: Pace): Promise<number> {
  for (let i = 0; i < entries.length; i += pace.batch) {
    const started = performance.now();
    const puts: Array<[string, string]> = [];
    const deletes: string[] = [];
    for (const [k, v] of entries.slice(i, i + pace.batch)) {
      if (v === null) deletes.push(k);
      else puts.push([k, v]);
    }
    await store.write(puts, deletes, false);
    if (pace.dutyCycle) await sleep(performance.now() - started);
  }
  return entries.length;
}

/** `a` is `b` or the start of it: the store already holds `a`'s records, only `b`'s further chunks are missing. */
function isPrefix(a: readonly ChunkRef[], b: readonly ChunkRef[]): boolean {
  return a.length > 0 && a.length <= b.length && a.every((c, i) => c.key === b[i]!.key && c.sha256 === b[i]!.sha256);
}

function fingerprintProblem(m: Manifest, fingerprint: Readonly<Record<string, unknown>> | undefined): string | undefined {
  if (fingerprint === undefined) return undefined;
  const diffs = Object.keys(fingerprint)
    .filter((k) => JSON.stringify(m.fingerprint[k]) !== JSON.stringify(fingerprint[k]))
    .map((k) => `${k} was ${JSON.stringify(m.fingerprint[k])}, now ${JSON.stringify(fingerprint[k])}`);
  return diffs.length === 0 ? undefined : `was written with other settings (${diffs.join('; ')})`;
}

function isCheckpointProblem(err: unknown): boolean {
  const code = (err as { code?: string }).code;
  return code === 'CheckpointCorrupt' || code === 'ObjectMissing' || code === 'ManifestDamaged';
}
