import { KEY_GROUP_PREFIX_WIDTH, keyGroupOfKey, keyGroupPrefix, keyGroupRange, META_KEY, UNKEYED_POSITION_PREFIX } from '../state/keys';
import type { RangeReader, RocksStore } from '../state/rocks';
import { checkpointCommitted, metrics } from '../runtime/metrics';
import {
  chunkKey,
  decodeManifest,
  parseChunkKey,
  encodeChunk,
  encodeManifest,
  manifestId,
  manifestKey,
  manifestKeyOfId,
  parseManifestKey,
  referencedKeys,
  type ChunkEntry,
  type ChunkRef,
  type GroupEntry,
  type Manifest,
} from './format';
import type { ObjectStore } from './object-store';
import { PRESENCE_KIND } from './presence';
import { planRetention } from './retention';

/**
 * Writes checkpoints of a running task's key groups. The state machine of one checkpoint
 * (docs/adr/0004-checkpoints.md):
 *
 *   SNAPSHOT (synchronous, at a commit point of the task: no flush in flight)
 *     per group: base → a RocksDB iterator (its snapshot is taken now);
 *                delta → the group's changes since its last checkpoint, taken out of memory;
 *                unchanged → nothing to write, the previous chain carries forward
 *   → UPLOAD   chunks, each an immutable object under the writer's namespace; counting goes on
 *   → COMMIT   the manifest, written last: THE COMMIT POINT. Before it the checkpoint does not exist.
 *   → RETAIN   delete what no kept manifest needs (a failure here only delays the cleanup)
 *   FAILED (any step before COMMIT): the taken deltas go back in front of the changes made
 *     since, so the next attempt loses nothing; orphan chunks are swept by a later retention.
 *
 * Incremental: a group's delta chunk holds the records its commits changed since its last
 * checkpoint, kept in memory and bounded by `maxPendingBytes`. Past that bound the largest
 * groups keep only WHICH keys changed (UNREAD): their delta reads those keys' values from the
 * snapshot, a scan of the group, but stays a delta, so a new owner that pre-copied the chain
 * still applies only the changes (a new base would make it restore the whole group again).
 * Only a group whose changed keys alone overflow the bound, or any group after a restart,
 * gets a new base. A chain is compacted into a new base when it reaches `maxChainLength`
 * chunks or its deltas hold more records than `maxDeltaFraction` of its base.
 */
export interface CheckpointerSettings {
  readonly objectStore: ObjectStore;
  /** The writer's namespace: `w<ordinal>` in a cluster, `local` in local mode. */
  readonly writer: string;
  readonly job: string;
  /** stateFingerprint(config): a restore refuses a checkpoint written with other settings. */
  readonly fingerprint: Readonly<Record<string, unknown>>;
  /** Complete checkpoints of this writer to keep. */
  readonly retention: number;
  /** Local mode: `~meta` and the unkeyed positions belong to the snapshot too. */
  readonly includeUnkeyed: boolean;
  /** The assignment generation the writer currently owns its groups under (0 when there is none). */
  readonly generation?: () => number;
  /** Manifest ids retention must keep (a hand-over's released checkpoints until they are acquired). */
  readonly pinned?: () => Iterable<string>;
  /**
   * Groups whose chain must not be compacted into a new base now: another worker has
   * pre-copied the chain and will take the group over by applying only what follows it
   * (docs/adr/0005-rescale-hand-over.md). Their deltas keep growing the chain instead.
   */
  readonly keepChains?: () => Iterable<number>;
  readonly maxChainLength?: number;
  readonly maxDeltaFraction?: number;
  readonly maxPendingBytes?: number;
  readonly clock?: () => number;
  readonly log?: (line: string) => void;
}

/** What checkpoint() returns. */
export interface CheckpointResult {
  /** `<writer>/<sequence>`: give it to restoreGroups({ manifestId }) to restore exactly this checkpoint. */
  readonly manifestId: string;
  /** Bytes uploaded (chunks + manifest). */
  readonly bytes: number;
  readonly durationMs: number;
  /** Groups written with a new base / a delta / carried forward unchanged. */
  readonly base: number[];
  readonly delta: number[];
  readonly unchanged: number[];
  /** Records written in chunks. */
  readonly records: number;
}

/** A change whose value is read from the snapshot when the checkpoint is written (see shedPending). */
const UNREAD: unique symbol = Symbol('unread');
/** A tracked change: the new value, null for a delete, or UNREAD. */
type Change = string | null | typeof UNREAD;
type Changes = Map<string, Change>;

/** Bytes a tracked change holds besides its key. */
const changeBytes = (value: Change | undefined): number => (typeof value === 'string' ? value.length : 0);

interface Chain {
  readonly entry: GroupEntry;
  /** Chunk keys already known to exist (other writers' chunks of an adopted chain are checked once). */
  verified: boolean;
}

/** A base that compacts an existing chain keeps the changes it took, so a failed (or preempted) one can give them back and the chain goes on. */
type GroupPlan =
  | { kind: 'base'; reader: RangeReader; changes?: Changes }
  /** `reader` (of the snapshot) when some changes are UNREAD. */
  | { kind: 'delta'; changes: Changes; reader?: RangeReader }
  | { kind: 'unchanged' };

/** What a snapshot may do besides its own groups. */
export interface SnapshotOptions {
  /**
   * A hand-over's final checkpoint, its groups paused until it commits: a group with a chain
   * gets a delta whatever the chain's length (the new owner holds the chain and applies only
   * what follows it), and every chunk is uploaded at once.
   */
  readonly urgent?: boolean;
  /**
   * Groups whose committed chains are listed in the manifest unchanged, though not
   * snapshotted (the groups the writer still owns, in a checkpoint of only some of them):
   * every manifest then names every live chain of its writer, so retention, which keeps
   * the newest manifests, never drops the only manifest that holds a chain still in use.
   */
  readonly carry?: Iterable<number>;
}

/** `work`, or a rejection as soon as `signal` aborts (the work goes on unobserved; its result is dropped). */
function untilAborted<T>(work: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (signal === undefined) return work;
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => reject(new Error('aborted'));
    if (signal.aborted) onAbort();
    signal.addEventListener('abort', onAbort, { once: true });
    work.then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort));
  });
}

/** The snapshot's values of the UNREAD keys among `changes` (absent: deleted since the last checkpoint), by one scan of the group. */
async function readUnread(changes: ReadonlyArray<readonly [string, Change]>, reader: RangeReader, signal: AbortSignal | undefined, stopped: () => Error): Promise<Map<string, string>> {
  const wanted = new Set<string>();
  for (const [k, v] of changes) if (v === UNREAD) wanted.add(k);
  const found = new Map<string, string>();
  await reader.readAll((k, v) => {
    if (wanted.has(k)) found.set(k, v);
  }, signal, stopped);
  return found;
}

/** A checkpoint given up for a more urgent one (a hand-over's release); its changes went back, nothing is lost. */
export class CheckpointPreempted extends Error {
  constructor(reason: string) {
    super(`checkpoint (${reason}) preempted by a more urgent one; it is taken again later`);
  }
}

/** A snapshot taken at a commit point, not yet uploaded. */
export interface Snapshot {
  readonly reason: string;
  readonly startedAt: number;
  /** The assignment generation at the snapshot: the groups were owned under it. */
  readonly generation: number;
  readonly groups: Map<number, GroupPlan>;
  /** Groups whose chains the manifest lists unchanged (SnapshotOptions.carry). */
  readonly carry: ReadonlySet<number>;
  /** SnapshotOptions.urgent. */
  readonly urgent: boolean;
  readonly unkeyed: RangeReader[] | undefined;
}

/**
 * maxChainLength bounds the chunks a restore fetches; what a delta adds is bounded by
 * maxDeltaFraction. It was 8 until session 10: at 1 GB of state on 2 workers with 10 s
 * checkpoints, every group was compacted every 80 s for a few kilobytes of deltas, each new
 * base 25-110 MB and 35-45 s of the worker's time, and a hand-over's release checkpoint had to
 * preempt one of them (docs/adr/0005-rescale-hand-over.md).
 */
const DEFAULTS = { maxChainLength: 32, maxDeltaFraction: 0.5, maxPendingBytes: 64 * 1024 * 1024 };
const UPLOAD_CONCURRENCY = 4;

export class Checkpointer {
  private readonly chains = new Map<number, Chain>();
  /** Changes committed since the last snapshot, per group with a chain (or a base in flight). */
  private readonly pending = new Map<number, Changes>();
  private pendingBytes = 0;
  /** Found in the object store by the first checkpoint (so opening needs no object store). */
  private nextSequence: number | undefined;
  private readonly clock: () => number;
  /** Manifests are immutable: what each one references is read once. */
  private readonly manifestRefs = new Map<string, string[] | null>();

  constructor(readonly settings: CheckpointerSettings) {
    this.clock = settings.clock ?? Date.now;
  }

  /** The next sequence number of this writer: one past the newest manifest or chunk folder it ever wrote. */
  private async allocateSequence(): Promise<number> {
    if (this.nextSequence === undefined) {
      let last = 0;
      for (const o of await this.settings.objectStore.list(`${this.settings.writer}/`)) {
        const seq = parseManifestKey(o.key)?.sequence ?? parseChunkKey(o.key)?.sequence ?? 0;
        last = Math.max(last, seq);
      }
      this.nextSequence = last + 1;
    }
    return this.nextSequence++;
  }

  /**
   * Called with every commit's changes, right after the commit is durable. Changes of groups
   * this writer has no chain for are not kept (their next checkpoint is a base anyway).
   */
  recordCommit(puts: ReadonlyArray<readonly [string, string]>, deletes: readonly string[]): void {
    if (this.pending.size === 0) return;
    for (const [key, value] of puts) this.track(key, value);
    for (const key of deletes) this.track(key, null);
    if (this.pendingBytes > (this.settings.maxPendingBytes ?? DEFAULTS.maxPendingBytes)) this.shedPending();
  }

  private track(key: string, value: string | null): void {
    if (key.charCodeAt(0) === 0x7e || key[KEY_GROUP_PREFIX_WIDTH] === PRESENCE_KIND) return;
    const changes = this.pending.get(keyGroupOfKey(key));
    if (changes === undefined) return;
    const before = changes.get(key);
    if (before === undefined) this.pendingBytes += key.length + 16;
    this.pendingBytes += changeBytes(value) - changeBytes(before);
    changes.set(key, value);
  }

  /**
   * Memory bound, until half of it is free: first the largest groups forget the values of
   * their changes (UNREAD: the delta reads them from the snapshot); only if the changed keys
   * alone are still too many, the largest groups drop their deltas and get a new base.
   */
  private shedPending(): void {
    const limit = (this.settings.maxPendingBytes ?? DEFAULTS.maxPendingBytes) / 2;
    const bySize = [...this.pending.entries()].map(([g, m]) => [g, m.size] as const).sort((a, b) => b[1] - a[1]);
    for (const [g] of bySize) {
      if (this.pendingBytes <= limit) return;
      const changes = this.pending.get(g)!;
      for (const [key, value] of changes) {
        if (typeof value !== 'string') continue;
        this.pendingBytes -= value.length;
        changes.set(key, UNREAD);
      }
    }
    for (const [g] of bySize) {
      if (this.pendingBytes <= limit) return;
      this.dropTracking(g);
      this.chains.delete(g);
    }
  }

  private dropTracking(group: number): void {
    const changes = this.pending.get(group);
    if (changes === undefined) return;
    for (const [k, v] of changes) this.pendingBytes -= k.length + 16 + changeBytes(v);
    this.pending.delete(group);
  }

  /** Forget groups this writer released: later manifests no longer list them. */
  forget(groups: Iterable<number>): void {
    for (const g of groups) {
      this.chains.delete(g);
      this.dropTracking(g);
    }
  }

  /**
   * After a restore left `group` exactly at `entry`'s chain: the next checkpoint continues
   * that chain with a delta of the changes committed from now on.
   */
  adopt(group: number, entry: GroupEntry): void {
    this.dropTracking(group);
    this.chains.set(group, { entry, verified: entry.chunks.every((c) => c.key.startsWith(`${this.settings.writer}/`)) });
    this.pending.set(group, new Map());
  }

  /** Groups that have a chain (a complete checkpoint of this writer, or an adopted restore). */
  get checkpointedGroups(): number[] {
    return [...this.chains.keys()];
  }

  /**
   * SNAPSHOT. Must be called at a commit point (no flush in flight) and runs
   * synchronously, so every group and the unkeyed records are cut at the same instant.
   */
  snapshot(store: RocksStore, groups: readonly number[], reason: string, options: SnapshotOptions = {}): Snapshot {
    const maxChain = this.settings.maxChainLength ?? DEFAULTS.maxChainLength;
    const maxFraction = this.settings.maxDeltaFraction ?? DEFAULTS.maxDeltaFraction;
    const keep = new Set(this.settings.keepChains?.() ?? []);
    const plans = new Map<number, GroupPlan>();
    for (const g of groups) {
      const chain = this.chains.get(g);
      const changes = this.pending.get(g);
      const first = chain?.entry.chunks[0];
      const base = first?.kind === 'base' ? first : undefined;
      const deltaRecords = (chain?.entry.chunks.slice(1).reduce((n, c) => n + c.records, 0) ?? 0) + (changes?.size ?? 0);
      const compact =
        options.urgent !== true &&
        !keep.has(g) &&
        chain !== undefined &&
        (chain.entry.chunks.length >= maxChain || deltaRecords > Math.max(1000, maxFraction * (base?.records ?? 0)));
      if (chain === undefined || changes === undefined || compact) {
        plans.set(g, { kind: 'base', reader: store.reader(keyGroupRange(g)), ...(chain !== undefined && changes !== undefined ? { changes } : {}) });
        this.dropTracking(g);
        this.pending.set(g, new Map());
      } else if (changes.size === 0) {
        plans.set(g, { kind: 'unchanged' });
      } else {
        let unread = false;
        for (const v of changes.values()) if (v === UNREAD) unread = true;
        plans.set(g, unread ? { kind: 'delta', changes, reader: store.reader(keyGroupRange(g)) } : { kind: 'delta', changes });
        this.dropTracking(g);
        this.pending.set(g, new Map());
      }
    }
    const unkeyed = this.settings.includeUnkeyed
      ? [store.reader({ gte: META_KEY, lt: `${META_KEY}\u0000` }), store.reader({ gte: UNKEYED_POSITION_PREFIX, lt: `${UNKEYED_POSITION_PREFIX}\uffff` })]
      : undefined;
    const carry = new Set([...(options.carry ?? [])].filter((g) => !plans.has(g)));
    return { reason, startedAt: this.clock(), generation: this.settings.generation?.() ?? 0, groups: plans, carry, urgent: options.urgent === true, unkeyed };
  }

  /**
   * UPLOAD, COMMIT (see the class comment). Rejects when the checkpoint failed; nothing is
   * lost then. `signal` preempts it (CheckpointPreempted) any time before its manifest is
   * written. RETAIN is retain(), which the caller runs after, off the critical path.
   */
  async write(snap: Snapshot, signal?: AbortSignal): Promise<CheckpointResult> {
    const { writer } = this.settings;
    const store = this.settings.objectStore;
    let bytes = 0;
    let records = 0;
    const entries = new Map<number, GroupEntry>();
    const timer = metrics.checkpointSeconds.startTimer();
    let sequence = 0;
    try {
      sequence = await this.allocateSequence();
      const work = [...snap.groups.entries()];
      let next = 0;
      const preempted = (): void => {
        if (signal?.aborted === true) throw new CheckpointPreempted(snap.reason);
      };
      const upload = async (): Promise<void> => {
        while (next < work.length) {
          preempted();
          const [g, plan] = work[next++]!;
          if (plan.kind === 'unchanged') continue;
          const chain = this.chains.get(g);
          const list: ChunkEntry[] = [];
          if (plan.kind === 'base') {
            await plan.reader.readAll(
              (k, v) => {
                if (k[KEY_GROUP_PREFIX_WIDTH] !== PRESENCE_KIND) list.push([k, v]);
              },
              signal,
              () => new CheckpointPreempted(snap.reason),
            );
          } else {
            const sorted = [...plan.changes.entries()].sort((a, b) => (a[0] < b[0] ? -1 : 1));
            const read = plan.reader === undefined ? undefined : await readUnread(sorted, plan.reader, signal, () => new CheckpointPreempted(snap.reason));
            for (const [k, v] of sorted) list.push([k, v === UNREAD ? (read!.get(k) ?? null) : v]);
          }
          const positions: Record<string, string> = plan.kind === 'base' ? {} : { ...chain!.entry.positions };
          const pPrefix = `${keyGroupPrefix(g)}P`;
          for (const [k, v] of list) if (k.startsWith(pPrefix) && v !== null) positions[k.slice(pPrefix.length)] = v;
          if (plan.kind === 'base' && list.length === 0) {
            // An empty group: no object, an empty chain.
            entries.set(g, { chunks: [], positions, snapshotSequence: sequence });
            continue;
          }
          preempted();
          // Compressing a large base takes seconds in the thread pool and cannot be stopped:
          // a preemption does not wait for it (the result is dropped).
          const encoded = await untilAborted(encodeChunk(list), signal);
          preempted();
          const ref: ChunkRef = { key: chunkKey(writer, g, sequence, plan.kind), kind: plan.kind, sha256: encoded.sha256, bytes: encoded.body.length, records: encoded.records };
          await store.put(ref.key, encoded.body, signal);
          bytes += encoded.body.length;
          records += encoded.records;
          metrics.checkpointUploadedBytes.inc(encoded.body.length);
          entries.set(g, { chunks: plan.kind === 'base' ? [ref] : [...chain!.entry.chunks, ref], positions, snapshotSequence: sequence });
        }
      };
      // A hand-over's final checkpoint (few small deltas, groups paused): every chunk at once.
      const concurrency = snap.urgent ? work.length : UPLOAD_CONCURRENCY;
      await Promise.all(Array.from({ length: Math.max(1, concurrency) }, upload));

      let unkeyed: Manifest['unkeyed'];
      if (snap.unkeyed !== undefined) {
        const list: ChunkEntry[] = [];
        for (const reader of snap.unkeyed) await reader.readAll((k, v) => list.push([k, v]));
        const encoded = await encodeChunk(list);
        const ref: ChunkRef = { key: chunkKey(writer, 'unkeyed', sequence, 'base'), kind: 'base', sha256: encoded.sha256, bytes: encoded.body.length, records: encoded.records };
        await store.put(ref.key, encoded.body);
        bytes += encoded.body.length;
        metrics.checkpointUploadedBytes.inc(encoded.body.length);
        const positions: Record<string, string> = {};
        for (const [k, v] of list) if (k.startsWith(UNKEYED_POSITION_PREFIX)) positions[k.slice(UNKEYED_POSITION_PREFIX.length)] = v!;
        unkeyed = { chunk: ref, positions };
      }

      // Carried-forward chains of the groups this snapshot is of: every one must still exist
      // (an adopted chain of another writer could have been swept by its retention meanwhile).
      // Only those: a group released in a hand-over, or pre-copied before its acquire, keeps a
      // chain here, and carrying it into a newer manifest would offer a stale copy of it as
      // the newest (docs/adr/0005-rescale-hand-over.md).
      const groups: Record<string, GroupEntry> = {};
      for (const [g, chain] of this.chains) {
        if (entries.has(g) || !(snap.groups.has(g) || snap.carry.has(g))) continue;
        if (!chain.verified) {
          for (const c of chain.entry.chunks) {
            if ((await store.size(c.key)) !== c.bytes) {
              this.forget([g]);
              throw new Error(`chunk ${c.key} of the restored chain of key group ${g} is gone from ${store.description}; that group's next checkpoint is a new base`);
            }
          }
          chain.verified = true;
        }
        groups[g] = chain.entry;
      }
      for (const [g, entry] of entries) groups[g] = entry;

      const manifest: Manifest = {
        format: 'abacus-checkpoint/1',
        id: manifestId(writer, sequence),
        job: this.settings.job,
        writer,
        sequence: sequence,
        generation: snap.generation,
        createdAtMs: Date.now(), // wall time, not the injected clock: it orders manifests across writers and runs
        reason: snap.reason,
        fingerprint: this.settings.fingerprint,
        groups,
        ...(unkeyed === undefined ? {} : { unkeyed }),
      };
      const body = encodeManifest(manifest);
      preempted();
      await store.barrier(); // every chunk durable before the manifest that names them
      await store.put(manifestKey(writer, sequence), body); // COMMIT POINT
      await store.barrier();
      bytes += body.length;
      metrics.checkpointUploadedBytes.inc(body.length);
    } catch (err) {
      this.failed(snap);
      // An upload abandoned by the preemption fails with the store's abort error: say why.
      if (signal?.aborted === true) throw err instanceof CheckpointPreempted ? err : new CheckpointPreempted(snap.reason);
      metrics.checkpointFailures.inc();
      throw err;
    } finally {
      for (const plan of snap.groups.values()) if (plan.kind !== 'unchanged') await plan.reader?.end();
      for (const reader of snap.unkeyed ?? []) await reader.end();
    }
    // A group forgotten (released) while this checkpoint was in flight stays forgotten.
    for (const [g, entry] of entries) if (this.pending.has(g)) this.chains.set(g, { entry, verified: true });
    const durationMs = this.clock() - snap.startedAt;
    timer();
    checkpointCommitted(Date.now());
    const byKind = (k: GroupPlan['kind']): number[] => [...snap.groups.entries()].filter(([, p]) => p.kind === k).map(([g]) => g);
    return { manifestId: manifestId(writer, sequence), bytes, durationMs, base: byKind('base'), delta: byKind('delta'), unchanged: byKind('unchanged'), records };
  }

  /** A failed checkpoint: put the taken deltas back, older under newer; groups whose base failed have no chain to continue. */
  private failed(snap: Snapshot): void {
    for (const [g, plan] of snap.groups) {
      if (plan.kind === 'unchanged') continue;
      // A delta, or a compaction whose chain still stands: the changes it took go back.
      const taken = plan.kind === 'delta' || this.chains.has(g) ? plan.changes : undefined;
      if (taken !== undefined) {
        const since = this.pending.get(g);
        if (since === undefined) continue; // forgotten meanwhile
        this.dropTracking(g);
        for (const [k, v] of since) taken.set(k, v);
        this.pending.set(g, taken);
        for (const [k, v] of taken) this.pendingBytes += k.length + 16 + changeBytes(v);
      } else {
        // The changes before the snapshot were dropped for this base: only a new base can follow.
        this.chains.delete(g);
        this.dropTracking(g);
      }
    }
  }

  /** RETAIN: deletes what no kept manifest references (see retention.ts). Errors are logged: cleanup waits for the next checkpoint. */
  async retain(): Promise<void> {
    const store = this.settings.objectStore;
    try {
      const objects = (await store.list('')).map((o) => o.key);
      const manifests = new Map<string, string[] | null>();
      for (const key of objects) {
        if (parseManifestKey(key) === undefined) continue;
        let refs = this.manifestRefs.get(key);
        if (refs === undefined) {
          try {
            refs = referencedKeys(decodeManifest(await store.get(key), key));
          } catch (err) {
            const code = (err as { code?: string }).code;
            if (code === 'ObjectMissing') continue;
            if (code !== 'ManifestDamaged') throw err;
            refs = null;
          }
          this.manifestRefs.set(key, refs);
        }
        manifests.set(key, refs);
      }
      const pinned = new Set<string>();
      for (const id of this.settings.pinned?.() ?? []) {
        const key = manifestKeyOfId(id);
        if (key !== undefined) pinned.add(key);
      }
      const plan = planRetention({ writer: this.settings.writer, retention: this.settings.retention, objects, manifests, pinned });
      if (plan.delete.length > 0) await store.delete(plan.delete);
      for (const key of plan.delete) this.manifestRefs.delete(key);
    } catch (err) {
      this.settings.log?.(`checkpoint retention failed (old checkpoints stay until the next one): ${(err as Error).message}`);
    }
  }
}
