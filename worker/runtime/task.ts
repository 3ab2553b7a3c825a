import { keyGroupOf, routingKey } from '../../common/keygroups';
import { AbacusError } from '../../common/errors';
import { fingerprintMismatch, stateFingerprint, type JobConfig } from '../../common/job-config';
import { countEvent, countingSettings, eventKeys, overflowKeys, shardOverflowKeys, WindowAccumulator, type CountingSettings, type CountingTally, type EventKeys } from '../engine/counting';
import { parseEvent, type CountableEvent, type ParseOptions } from '../engine/event';
import { ingestOutOfRange, NativeState, NativeWindow, tooManyFacets } from '../engine/native-state';
import type { CountSink, CounterColumns, CounterRow, CounterValue, DeadLetterSink, Source, SourceRecord } from '../io/types';
import { BloomFilter } from '../state/bloom';
import { StateCache } from '../state/cache';
import { parseCounterId, parseCounterStem, parseCounterToken } from '../../common/counter-id';
import { counterIdOfKey, expiryKey, KEY_GROUP_PREFIX_WIDTH, KIND_OFFSET, keyGroupOfKey, keyGroupPrefix, keyGroupRange, META_KEY, OUTBOX_KEY, positionKey, type SegmentKind, UNKEYED_POSITION_PREFIX } from '../state/keys';
import { decodeCounter, encodeCounter, type CounterRecord } from '../state/records';
import { RocksStore } from '../state/rocks';
import { expiryStep, sweepCutoff } from '../state/expiry';
import { findExpired, type PendingChanges } from '../state/sweep';
import { readSegments, SegmentLog } from '../state/segment-log';
import { Checkpointer, CheckpointPreempted, type CheckpointerSettings, type CheckpointResult } from '../checkpoint/checkpointer';
import type { ObjectStore } from '../checkpoint/object-store';
import { encodePresence, groupsWithLocalState, presenceKey, readPresence, type Presence } from '../checkpoint/presence';
import { restoreGroups, type RestoreOptions, type RestoreResult } from '../checkpoint/restore';
import { inputLagObserved, metrics } from './metrics';
import { sleep } from '../../common/sleep';

/**
 * The count task: one loop over a source, for a set of owned key groups.
 *
 *   poll → process (validate, load state, count into the window) → maybe flush → repeat
 *
 * Commit protocol of a window flush (the one place that implements it):
 *   1. finalise: every counter the window touched gets its new total = local value (state,
 *      or hydrated from the sink when there is none) + the window's delta;
 *   2. COMMIT POINT — one synchronous RocksDB write batch holds every changed state record,
 *      the input position after the last record processed, and the outbox (the list of
 *      counters whose totals the sink has not confirmed yet);
 *   3. the totals are written to the sink (idempotent: they are totals, not increments),
 *      retried with backoff while the sink fails. The loop goes on polling and counting the
 *      next window meanwhile (flush(true) returns at the commit point); with a remote
 *      sink it keeps that window open past `window` until the write is confirmed (windowDue);
 *   4. the next commit waits for that sink write to be confirmed — at most one is
 *      outstanding, which is the backpressure while the sink fails — then replaces or
 *      deletes the outbox.
 * A crash before 2 loses nothing: the input is re-read from the old position and decisions
 * (made on ingest time carried by the records) come out the same. A crash between 2 and 3
 * leaves the outbox, which open() sends to the sink before anything else. So the sink never
 * holds a value that the state has not committed, and hydration can trust it.
 *
 * Checkpoints (worker/checkpoint/) are snapshots taken between two flushes — after step 3
 * of one, before step 2 of the next: the commit points — and uploaded while counting goes
 * on. A commit does not start while a checkpoint waits for a commit point (commitPoint), so
 * back-to-back windows cannot starve it. The outbox is not in them: a snapshot is taken
 * after the sink confirmed the commit whose outbox it would hold, and re-sending those older
 * totals after a restore could move a Cassandra counter backwards over newer totals written
 * since.
 */

/**
 * Checkpoint settings of a task (see TaskOptions.checkpoints): the checkpointer's own settings
 * (job name, fingerprint, clock and log come from the task) plus when to take them.
 */
export interface TaskCheckpoints
  extends Pick<CheckpointerSettings, 'objectStore' | 'writer' | 'retention' | 'includeUnkeyed' | 'generation' | 'pinned' | 'keepChains' | 'maxChainLength' | 'maxPendingBytes'> {
  /** Time between periodic checkpoints; 0 = only on demand (and the final one). */
  readonly intervalMs: number;
  /** Cluster: at open, restore every owned group that has no local state from the newest complete checkpoint holding it. */
  readonly restoreMissing: boolean;
  /** Local mode: one last checkpoint after the final flush of run(). */
  readonly finalCheckpoint: boolean;
}

export interface TaskOptions {
  readonly config: JobConfig;
  readonly dataDir: string;
  readonly source: Source;
  readonly sink: CountSink;
  readonly deadLetter: DeadLetterSink;
  /** The key groups this task owns; default all of them (local mode). */
  readonly keyGroups?: readonly number[];
  /** Milliseconds since the epoch; injected so windows can be tested without sleeping. */
  readonly clock?: () => number;
  /**
   * The latest ingest time (ms) a sweep believes: a key group's newest ingest time is capped by
   * it before its expiry cutoff is taken. Kafka record timestamps come from producers' clocks,
   * and one record stamped years ahead would otherwise move the cutoff past every record and
   * delete dedup state that later copies still need. Capping only delays deletions, which is
   * always safe. Unset (local mode, whose ingest time is given): no cap.
   */
  readonly sweepCeilingMs?: () => number;
  /** Records per poll (a micro-batch). */
  readonly batchSize?: number;
  /** Bloom filter size in bits (default: from the memory budget, else 2^27 = 16 MiB). */
  readonly filterBits?: number;
  /**
   * Native engine: the kernel's state limit in bytes, above which it spills (default: the
   * memory budget's share, common/memory-budget.ts; without a budget, none). 0 spills all it
   * can after every window (the tests' way to exercise the spill path on small inputs).
   */
  readonly nativeStateBytes?: number;
  readonly signal?: AbortSignal;
  readonly onProgress?: (progress: TaskProgress) => void;
  /** Extra log lines (sink retries, recovery) go here. */
  readonly log?: (line: string, level?: 'info' | 'warn') => void;
  /** Checkpointing; none when absent. */
  readonly checkpoints?: TaskCheckpoints;
}

export interface TaskProgress {
  read: number;
  counted: number;
  duplicates: number;
  invalid: number;
  windows: number;
  beyondHorizon: number;
  /** Counter rows written to the sink. */
  rowsWritten: number;
  /** State records deleted past their retention (worker/state/expiry.ts). */
  expired: number;
}

/** A window stays open for at most this many times `window` while the previous window's sink write is outstanding (see windowDue). */
const WINDOW_STRETCH = 4;

/** A flush stops looking for expired records once it has this many to delete; the other groups' sweeps wait for the next flushes. */
const SWEEP_BATCH = 200_000;

/** Native engine: a group's log of segments is compacted into one once it has this many (loading and deleting them stays bounded). */
const COMPACT_SEGMENTS = 1024;

/**
 * Native engine: a flush sweeps groups whose segments to rewrite hold up to this many bytes.
 * The kernel rewrites their state segments (and, in a full sweep, their counter segments),
 * and passes over its tables once whatever it sweeps (about 0.35 s for 18 MiB of state
 * segments, 5 M markers: docs/performance.md, "Bounded state").
 */
const SWEEP_SEGMENT_BYTES = 16 * 1024 * 1024;

/**
 * Milliseconds each phase of a stop took, in order: the flush's (finalise, previous sink
 * write, sweep, commit, sink write) then the stop's own (outbox dropped, the source and
 * the task forgetting the groups), with the rows and state records the flush wrote.
 */
export interface StopTimes {
  finaliseMs?: number;
  previousSinkMs?: number;
  sweepMs?: number;
  commitMs?: number;
  sinkMs?: number;
  outboxMs?: number;
  sourceMs?: number;
  stateMs?: number;
  rows?: number;
  puts?: number;
}
type Phase = Exclude<keyof StopTimes, 'rows' | 'puts'>;

/** Times consecutive phases, each from the end of the one before. */
class Phases {
  readonly started: number;
  private last: number;
  constructor(
    private readonly clock: () => number,
    readonly times: StopTimes = {},
  ) {
    this.started = clock();
    this.last = this.started;
  }
  mark(phase: Phase): void {
    const now = this.clock();
    this.times[phase] = now - this.last;
    this.last = now;
  }
}

export class CountTask {
  private readonly window = new WindowAccumulator();
  private readonly tally: CountingTally = { counted: 0, duplicates: 0, beyondHorizon: 0 };
  readonly progress: TaskProgress = { read: 0, counted: 0, duplicates: 0, invalid: 0, windows: 0, beyondHorizon: 0, rowsWritten: 0, expired: 0 };
  private readonly positions = new Map<string, SourceRecord>();
  private readonly settings: CountingSettings;
  private readonly parseOptions: ParseOptions;
  /** Groups counted now (undefined = all of them, local mode); changed only at consistent points. */
  private readonly owned: Set<number> | undefined;
  /** Work that must run between two iterations of the loop (ownership changes, see atConsistentPoint). */
  private readonly between: Array<() => Promise<void>> = [];
  private looping = false;
  /** Stops waiting for the last window's sink write: while any does, the loop closes no window (see stopGroups). */
  private windowCloseHeld = 0;
  /** Where the last flush's time went (see StopTimes): a stop reports it, as its flush is part of the moved groups' pause. */
  private lastFlush: StopTimes = {};
  private readonly clock: () => number;
  private windowStartedAt: number;
  private outboxWritten = false;
  /** The committed outbox's totals are in the sink (its write returned): close() may drop it. */
  private outboxConfirmed = false;
  private lastSizeUpdate = 0;
  private recordsInWindow = 0;
  /** Newest ingest time among the records of the current window. */
  private newestIngestMs = 0;
  /** Per key group: the newest ingest second counted in it since this task took it (-Infinity: none), which moves its expiry cutoff. */
  private readonly watermarks: Float64Array;
  /** Per key group: the cutoff of its last sweep, as committed in its expiry record (read on first use). */
  private readonly sweptAt = new Map<number, number>();
  /** Where the next flush starts looking for groups to sweep, so that a capped flush does not starve the later groups. */
  private sweepFrom = 0;
  private readonly expiryStepSec: number;
  private readonly pendingChanges: PendingChanges = {
    get: (key) => this.cache.pending(key),
    withPrefix: (prefix) => this.cache.pendingWithPrefix(prefix),
  };
  /** Owned groups with local state (presence record written or to be written with their next commit). */
  private readonly present = new Set<number>();
  /** Groups exactly as a restore left them: their first commit clears the presence record's chain. */
  private readonly restoredClean = new Map<number, Presence>();
  /**
   * Groups whose missing counters are hydrated from the sink: those that had no local state
   * when the task took them (and no checkpoint to restore). A group with local state is
   * authoritative: a counter it lacks was first counted after that state, and the replay
   * from the state's positions counts it from zero (see checkpoint/presence.ts).
   */
  private readonly hydrate = new Set<number>();
  /**
   * Groups not counted whose every key is in the cache's index since a restore wrote them
   * (nothing else writes a group that is not counted): starting them needs no scan of their
   * range. A pre-copy indexes the whole group while the old owner still counts; the final
   * delta then only adds its own keys.
   */
  private readonly indexed = new Set<number>();
  /**
   * The sink held no counter when the task opened (CountSink.holdsNoCounters: a new local
   * data dir, a new Cassandra table), so no group it opens with needs hydrating: a brand-new
   * counter then costs no sink read. Only at open: a group started later (a hand-over, a
   * rescale) may have been written by its previous owner since.
   */
  private sinkHeldNothing = false;
  /** Resolves when the state write in flight (if any) is done: checkpoints snapshot only between writes. */
  private writing: Promise<void> | undefined;
  /** The last commit's sink write while the next window fills (step 3 of the protocol); at most one. */
  private sinkWrite: Promise<void> | undefined;
  /** Callers of commitPoint() that have not yet run the code they waited for (see commitPoint). */
  private commitPointWaiters = 0;
  private checkpointer: Checkpointer | undefined;
  /** The checkpoint in flight (periodic or on demand): one at a time. */
  private checkpointing: Promise<unknown> = Promise.resolve();
  private checkpointBusy = false;
  /** Checkpoints in flight or queued that an urgent one may preempt (see checkpoint()). */
  private readonly preemptible = new Set<AbortController>();
  /** Retention after the last commit, off the checkpoints' critical path; `retainAgain` when another commit came meanwhile. */
  private retaining: Promise<void> | undefined;
  private retainAgain = false;
  private nextCheckpointAt = 0;
  private checkpointFailuresInARow = 0;
  /** What the last committed checkpoint wrote. */
  lastCheckpoint: CheckpointResult | undefined;
  /** The native engine (`state.engine: native`); undefined with the records engine (the cache and counting.ts). */
  private readonly native: NativeState | undefined;
  /** Native engine: the warning that its state stays above its share of the budget was logged. */
  private warnedOverBudget = false;
  /** Native engine: each key group's segments in the store (numbering, and what a sweep replaces). */
  private readonly segmentLog = new SegmentLog();
  /** Moves whenever `owned` changes (the native fast path is configured with the owned groups). */
  private ownedVersion = 0;
  /** open() has loaded the owned groups (a restore before that need not load what open() loads next). */
  private opened = false;

  private constructor(
    private readonly options: TaskOptions,
    private readonly store: RocksStore,
    private readonly cache: StateCache,
  ) {
    const c = options.config;
    this.settings = countingSettings(c);
    this.parseOptions = { maxEventBytes: c.maxEventBytes, facets: c.facets, level: c.level };
    this.watermarks = new Float64Array(c.keyGroups).fill(Number.NEGATIVE_INFINITY);
    this.expiryStepSec = expiryStep(this.settings.dedupRetentionSec, this.settings.uniquesRetentionSec);
    this.owned = options.keyGroups === undefined ? undefined : new Set(options.keyGroups);
    this.clock = options.clock ?? Date.now;
    this.windowStartedAt = this.clock();
    this.native = c.engine === 'native' ? new NativeState(this.settings, (keys) => this.store.getMany(keys)) : undefined;
  }

  /** Opens the state, checks it was written with the same settings, indexes it, and finishes an interrupted sink write. */
  static async open(options: TaskOptions): Promise<CountTask> {
    const store = await RocksStore.open(`${options.dataDir}/state`, options.config.rocksdb);
    try {
      await checkFingerprint(store, options.config, options.dataDir);
      const memory = options.config.memory;
      const filter = new BloomFilter(options.filterBits ?? memory?.filterBits ?? 2 ** 27);
      const cache = new StateCache(store, filter, { entries: options.config.stateCacheEntries, bytes: memory?.cacheBytes ?? Number.POSITIVE_INFINITY });
      const task = new CountTask(options, store, cache);
      task.sinkHeldNothing = (await options.sink.holdsNoCounters?.()) === true;
      await task.openCheckpoints();
      task.sinkHeldNothing = false;
      if (task.native !== undefined) await task.loadSegments(task.ownedGroups());
      else for (const g of task.ownedGroups()) await cache.indexRange(keyGroupRange(g));
      task.opened = true;
      await task.replayOutbox();
      return task;
    } catch (err) {
      await store.close();
      throw err;
    }
  }

  /** Presence of owned groups; restores the ones without local state (cluster); opens the checkpointer. */
  private async openCheckpoints(): Promise<void> {
    const owned = this.ownedGroups();
    const local = await groupsWithLocalState(this.store, owned);
    const cp = this.options.checkpoints;
    if (cp !== undefined) {
      if (cp.restoreMissing) {
        const missing = owned.filter((g) => !local.has(g));
        if (missing.length > 0) {
          const result = await this.retryStore(`restore ${missing.length} key groups without local state`, () => this.restoreFrom(cp.objectStore, missing, {}));
          for (const r of result.groups) local.add(r.group);
        }
      }
      this.checkpointer = new Checkpointer({
        objectStore: cp.objectStore,
        writer: cp.writer,
        job: this.options.config.name,
        fingerprint: stateFingerprint(this.options.config),
        retention: cp.retention,
        includeUnkeyed: cp.includeUnkeyed,
        ...(cp.generation ? { generation: cp.generation } : {}),
        ...(cp.pinned ? { pinned: cp.pinned } : {}),
        ...(cp.keepChains ? { keepChains: cp.keepChains } : {}),
        ...(cp.maxChainLength !== undefined ? { maxChainLength: cp.maxChainLength } : {}),
        ...(cp.maxPendingBytes !== undefined ? { maxPendingBytes: cp.maxPendingBytes } : {}),
        clock: this.clock,
        ...(this.options.log ? { log: this.options.log } : {}),
      });
      this.nextCheckpointAt = this.clock() + cp.intervalMs;
    }
    await this.adoptGroups(owned, local);
  }

  /**
   * Decides, for groups the task takes (at open, or started later), whether their local state
   * is authoritative (present) or their missing counters are hydrated from the sink, and
   * continues a restored checkpoint chain.
   */
  private async adoptGroups(groups: readonly number[], local: ReadonlySet<number>): Promise<void> {
    const presence = await readPresence(this.store, groups);
    for (const g of groups) {
      if (!local.has(g)) {
        if (!this.sinkHeldNothing) this.hydrate.add(g);
        continue;
      }
      this.present.add(g);
      const p = presence.get(g);
      if (p === undefined) continue;
      if (p.restored !== null) {
        this.restoredClean.set(g, p);
        this.checkpointer?.adopt(g, p.restored);
      }
    }
  }

  /**
   * Runs an object-store call until it succeeds (the store may be down at start): a group
   * without its state must not be counted from scratch. A damaged checkpoint is not retried
   * here: restoreGroups already fell back past it.
   */
  private async retryStore<T>(what: string, call: () => Promise<T>): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await call();
      } catch (err) {
        if (err instanceof AbacusError || this.options.signal?.aborted === true) throw err;
        const wait = Math.min(30_000, 500 * 2 ** attempt);
        this.options.log?.(`${what} failed (attempt ${attempt}; retrying in ${wait} ms): ${(err as Error).message}`);
        await sleep(wait);
      }
    }
  }

  private ownedGroups(): number[] {
    if (this.owned !== undefined) return [...this.owned];
    return Array.from({ length: this.options.config.keyGroups }, (_, g) => g);
  }

  /** The input positions committed with the state, for Source.start(). */
  async committedPositions(): Promise<Map<string, string>> {
    const positions = new Map<string, string>();
    await this.store.scan({ gte: UNKEYED_POSITION_PREFIX, lt: `${UNKEYED_POSITION_PREFIX}\uffff` }, (key, value) => {
      positions.set(key.slice(UNKEYED_POSITION_PREFIX.length), value);
    });
    for (const g of this.ownedGroups()) {
      const prefix = `${keyGroupPrefix(g)}P`;
      await this.store.scan({ gte: prefix, lt: `${keyGroupPrefix(g)}Q` }, (key, value) => positions.set(key.slice(prefix.length), value));
    }
    return positions;
  }

  /**
   * Runs until the source is exhausted (bounded sources) or the signal aborts; always ends
   * with a flush. When the signal aborts while the sink is failing, the flush gives up
   * instead of retrying: a window not yet committed is read again from the source by the
   * next run (its positions were not committed), and a committed one is in the outbox,
   * which the next run sends first. So a stop is prompt even with Cassandra unreachable.
   */
  async run(): Promise<TaskProgress> {
    const { source, signal } = this.options;
    await source.start(await this.committedPositions());
    const batchSize = this.options.batchSize ?? 4096;
    this.looping = true;
    try {
      while (!signal?.aborted) {
        await this.runBetween();
        const records = await source.poll(batchSize);
        if (records === null) break;
        if (records.length > 0) await this.process(records);
        else await sleep(Math.min(50, this.options.config.windowMs));
        if (this.windowDue()) await this.flush(true);
        this.maybeCheckpoint();
      }
      await this.flush();
    } catch (err) {
      if (!(err instanceof SinkGaveUp)) throw err;
      this.options.log?.(`stopping with the sink unavailable: ${err.message}`);
      return this.progress;
    } finally {
      this.looping = false;
      await this.runBetween();
    }
    if (this.options.checkpoints?.finalCheckpoint === true) await this.checkpoint(undefined, 'final');
    return this.progress;
  }

  /**
   * Whether the loop closes the window now: `window` has passed since it opened and, for a
   * remote sink, the previous window's write is confirmed. While that write is outstanding
   * the window keeps filling instead (closing it would only stop the loop until the write
   * confirms, with the input waiting in the source), for at most WINDOW_STRETCH windows;
   * then it closes and the loop waits for the write. So a slow sink gets fewer, larger
   * windows (fewer rows per event), and an event read meanwhile is written by the next
   * write, not the one after it. An embedded sink's windows close on time (CountSink.remote).
   */
  private windowDue(): boolean {
    if (this.windowCloseHeld > 0) return false;
    const open = this.clock() - this.windowStartedAt;
    const { windowMs } = this.options.config;
    if (open < windowMs) return false;
    if (this.options.sink.remote !== true) return true;
    return this.writing === undefined || open >= WINDOW_STRETCH * windowMs;
  }

  private async runBetween(): Promise<void> {
    while (this.between.length > 0) await this.between.shift()!();
  }

  /**
   * Runs `fn` at a consistent point: between two micro-batches of the loop (or at once when
   * the loop is not running), so nothing is half-counted while it changes what the task owns.
   */
  atConsistentPoint<T>(fn: () => Promise<T>): Promise<T> {
    if (!this.looping) return fn();
    return new Promise<T>((resolve, reject) => this.between.push(() => fn().then(resolve, reject)));
  }

  /** Groups counted now. */
  groups(): number[] {
    return this.ownedGroups().sort((a, b) => a - b);
  }

  /**
   * Stops counting key groups at a consistent point: the window is flushed (state and positions
   * committed, the sink has confirmed the totals), the confirmed outbox is deleted, then the
   * groups leave the source (their cached records stay, see below). Resolves with the times the groups' last records were counted (`stop`: the
   * consistent point) and their flush committed (`flushed`). Other groups only wait for that one flush.
   */
  async stopGroups(groups: readonly number[]): Promise<{ stop: number; flushed: number; times: StopTimes }> {
    // The stop's flush must see the last window's sink write confirmed before it commits; if
    // that write were still in flight at the stop, the moving groups would wait for two sink
    // writes instead of one. So it is waited for first, while every group still counts, and
    // the loop closes no window meanwhile (no new write starts); the window grows a little.
    this.windowCloseHeld++;
    try {
      await this.sinkWrite?.catch(() => undefined); // a failure is thrown by the flush's sinkConfirmed()
      return await this.stopAtConsistentPoint(groups);
    } finally {
      this.windowCloseHeld--;
    }
  }

  private stopAtConsistentPoint(groups: readonly number[]): Promise<{ stop: number; flushed: number; times: StopTimes }> {
    return this.atConsistentPoint(async () => {
      const owned = this.requireOwnedSet();
      const stop = this.clock();
      await this.flush();
      const phases = new Phases(this.clock, { ...this.lastFlush });
      // The sink has confirmed this commit's totals. A restart must not re-send them from the
      // outbox: once the groups are released, their new owner's totals are newer than these.
      await this.dropConfirmedOutbox();
      phases.mark('outboxMs');
      for (const g of groups) owned.delete(g);
      this.ownedVersion++;
      this.options.source.removeGroups?.(groups);
      phases.mark('sourceMs');
      // The cache keeps the groups' records: a pass over millions of them took 0.3-1.5 s here,
      // inside the pause. Nothing reads a group the task does not count; the records age out
      // oldest-first, and a restore or start of the group forgets them first (outside the
      // pause when the group comes back: its pre-copy restore does).
      // The native engine holds its groups in its tables: they leave them now (a rebuild of the
      // tables without them, which grows with the state: see ADR 7, "What remains").
      this.native?.drop(groups);
      for (const g of groups) {
        this.indexed.delete(g);
        this.forgetExpiry(g);
        this.segmentLog.forget(g);
        this.present.delete(g);
        this.hydrate.delete(g);
        this.restoredClean.delete(g);
      }
      phases.mark('stateMs');
      return { stop, flushed: this.clock(), times: phases.times };
    });
  }

  /**
   * Starts counting key groups from their committed state and positions (already restored
   * into the store when they came from another worker). Resolves with the time counting resumed.
   */
  startGroups(groups: readonly number[]): Promise<number> {
    return this.atConsistentPoint(async () => {
      const owned = this.requireOwnedSet();
      const fresh = groups.filter((g) => !owned.has(g));
      if (fresh.length === 0) return this.clock();
      const positions = new Map<string, string>();
      const local = await groupsWithLocalState(this.store, fresh);
      const cp = this.options.checkpoints;
      const missing = fresh.filter((g) => !local.has(g));
      if (cp?.restoreMissing === true && missing.length > 0) {
        // A group this worker has no state for (first start, lost volume): the newest checkpoint holding it.
        const result = await this.restoreFrom(cp.objectStore, missing, {});
        for (const r of result.groups) local.add(r.group);
      }
      // Groups a restore just wrote are already adopted (restoreFrom); the rest decide from their presence records.
      await this.adoptGroups(fresh.filter((g) => !this.present.has(g)), local);
      if (this.native !== undefined) await this.loadSegments(fresh);
      else this.cache.forgetGroups(fresh.filter((g) => !this.indexed.has(g)));
      for (const g of fresh) {
        if (this.native === undefined && !this.indexed.delete(g)) await this.cache.indexRange(keyGroupRange(g));
        this.forgetExpiry(g);
        const prefix = `${keyGroupPrefix(g)}P`;
        await this.store.scan({ gte: prefix, lt: `${keyGroupPrefix(g)}Q` }, (key, value) => positions.set(key.slice(prefix.length), value));
        owned.add(g);
        this.ownedVersion++;
      }
      this.options.source.addGroups?.(fresh, positions);
      return this.clock();
    });
  }

  /** The RocksDB store, for restores into it (only at consistent points, for groups not counted). */
  get stateStore(): RocksStore {
    return this.store;
  }

  private requireOwnedSet(): Set<number> {
    if (this.owned === undefined) throw new Error('this task counts every key group (local mode); it cannot hand groups over');
    return this.owned;
  }

  /** Counts a micro-batch into the current window (no commit). */
  async process(records: readonly SourceRecord[]): Promise<void> {
    const before = { ...this.tally };
    if (this.native !== undefined) await this.processNative(this.native, records);
    else await this.processParsed(records);
    this.recordsInWindow += records.length;
    this.progress.read += records.length;
    this.progress.counted = this.tally.counted;
    this.progress.duplicates = this.tally.duplicates;
    this.progress.beyondHorizon = this.tally.beyondHorizon;
    metrics.eventsIn.inc(records.length);
    metrics.eventsCounted.inc(this.tally.counted - before.counted);
    metrics.duplicates.inc(this.tally.duplicates - before.duplicates);
    metrics.uniquesBeyondHorizon.inc(this.tally.beyondHorizon - before.beyondHorizon);
    this.options.onProgress?.(this.progress);
  }

  /**
   * process() of the native engine: the kernel's fast path (native/hotpath/src/fast_path.rs)
   * reads the raw records and counts those it encodes exactly as admit() → NativeState.add
   * would; every other record (a shape it is not certain about, or an event of a key group
   * this worker does not count) is handed to admit() here, and rejected or counted before
   * any later record.
   */
  private async processNative(native: NativeState, records: readonly SourceRecord[]): Promise<void> {
    for (const record of records) {
      this.positions.set(record.partition, record);
      if (record.ingestTimeMs > this.newestIngestMs) this.newestIngestMs = record.ingestTimeMs;
    }
    const owned = this.owned === undefined ? undefined : { groups: this.owned, version: this.ownedVersion };
    const restoredBefore = native.restored;
    const counted = await native.countRecords(records, this.parseOptions, this.options.config.keyGroups, owned, async (record) => {
      const admitted = await this.admit(record);
      if (admitted !== undefined) native.add(admitted.ev, admitted.group, admitted.ingestSec);
    });
    this.tally.counted += counted.counted;
    this.tally.duplicates += counted.duplicates;
    this.tally.beyondHorizon += counted.beyondHorizon;
    if (native.restored > restoredBefore) metrics.stateSpillReads.inc(native.restored - restoredBefore);
  }

  /** process() of the records engine: every record parsed by parseEvent, the micro-batch's state read at once, then counted. */
  private async processParsed(records: readonly SourceRecord[]): Promise<void> {
    const pending: Array<{ keys: EventKeys; ingestSec: number }> = [];
    const keys: string[] = [];
    for (const record of records) {
      this.positions.set(record.partition, record);
      if (record.ingestTimeMs > this.newestIngestMs) this.newestIngestMs = record.ingestTimeMs;
      const admitted = await this.admit(record);
      if (admitted !== undefined) pending.push({ keys: eventKeys(admitted.ev, keyGroupPrefix(admitted.group), this.settings, keys), ingestSec: admitted.ingestSec });
    }
    await this.cache.load(keys);
    const more: string[] = [];
    for (const p of pending) overflowKeys(p.keys, this.settings, this.cache, more);
    if (more.length > 0) {
      await this.cache.loadMore(more);
      more.length = 0;
      for (const p of pending) shardOverflowKeys(p.keys, this.cache, more);
      if (more.length > 0) await this.cache.loadMore(more);
    }
    for (const p of pending) countEvent(p.keys, p.ingestSec, this.settings, this.cache, this.window, this.tally);
  }

  /**
   * A record parsed and checked: its event, key group and ingest second, or undefined once
   * it was rejected (invalid, of a key group this worker does not count, or — native engine —
   * of an ingest time it cannot store or with more facets than it encodes). Moves the
   * group's watermark.
   */
  private async admit(record: SourceRecord): Promise<{ ev: CountableEvent; group: number; ingestSec: number } | undefined> {
    const parsed = parseEvent(record.value, this.parseOptions, record.byteLength);
    if (!parsed.ok) {
      await this.rejectRecord(record, parsed.code, parsed.reason);
      return undefined;
    }
    const ev = parsed.event;
    const group = keyGroupOf(routingKey(this.settings.level, ev.companyId, ev.statisticId, ev.customerId), this.options.config.keyGroups);
    if (this.owned !== undefined && !this.owned.has(group)) {
      await this.rejectRecord(record, 'wrong_key_group', `event belongs to key group ${group}, which this worker does not own; check that the router and workers use the same keyGroups and level`);
      return undefined;
    }
    const ingestSec = Math.floor(record.ingestTimeMs / 1000);
    const outOfRange = this.native === undefined ? undefined : ingestOutOfRange(ingestSec);
    if (outOfRange !== undefined) {
      await this.rejectRecord(record, 'ingest_time_out_of_range', outOfRange);
      return undefined;
    }
    const tooWide = this.native === undefined ? undefined : tooManyFacets(ev.facets.length);
    if (tooWide !== undefined) {
      await this.rejectRecord(record, 'too_many_facets', tooWide);
      return undefined;
    }
    if (ingestSec > this.watermarks[group]!) this.watermarks[group] = ingestSec;
    return { ev, group, ingestSec };
  }

  private async rejectRecord(record: SourceRecord, code: string, reason: string): Promise<void> {
    this.progress.invalid++;
    metrics.invalid.inc({ reason: code });
    await this.options.deadLetter.send(record, reason);
  }

  /**
   * Closes the window: finalise, commit, write the sink (see the protocol above). Resolves
   * once the sink has confirmed the totals; with `overlap`, as soon as the window is
   * committed, its sink write going on while the loop fills the next window.
   */
  async flush(overlap = false): Promise<void> {
    const phases = new Phases(this.clock);
    this.lastFlush = phases.times;
    const openedAt = this.windowStartedAt;
    this.windowStartedAt = phases.started;
    if (this.recordsInWindow === 0) {
      if (!overlap) await this.sinkConfirmed();
      phases.mark('sinkMs');
      return;
    }
    metrics.windowOpenSeconds.observe(Math.max(0, phases.started - openedAt) / 1000);
    const timer = metrics.windowFlushSeconds.startTimer();
    // Finalising may overlap the previous window's sink write: that window's counters are
    // committed and in the cache, so none of them is hydrated from the sink.
    const { keys: counterKeys, rows } = this.native !== undefined ? await this.finaliseNative(this.native) : await this.finalise();
    phases.mark('finaliseMs');
    // The outbox holds one commit's counters: this commit replaces it only once the sink has
    // the previous one's totals. A checkpoint waiting for a commit point goes first.
    await this.sinkConfirmed();
    while (this.commitPointWaiters > 0) await new Promise<void>((resolve) => setImmediate(resolve));
    phases.mark('previousSinkMs');
    // The native engine's sweep takes the swept groups' changes into its segments: it goes first.
    const sweepStarted = performance.now();
    const sweep = this.native !== undefined ? await this.sweepDueNative(this.native) : await this.sweepDue();
    if (sweep.cutoffs.length > 0 || sweep.puts.length > 0) metrics.stateSweepSeconds.observe((performance.now() - sweepStarted) / 1000);
    phases.mark('sweepMs');

    const { puts, deletes } = this.native !== undefined ? this.segmentPuts(this.native) : this.cache.changes();
    // Under a memory budget the kernel spills what keeps it above its share; the records go with this commit.
    const limit = this.options.nativeStateBytes ?? this.options.config.memory?.nativeStateBytes;
    if (this.native !== undefined && limit !== undefined) this.spill(this.native, limit, puts, sweep);
    for (const put of sweep.puts) puts.push(put);
    for (const key of sweep.deletes) deletes.push(key);
    for (const [g, cutoff] of sweep.cutoffs) puts.push([expiryKey(keyGroupPrefix(g)), String(cutoff)]);
    for (const [partition, record] of this.positions) puts.push([positionKey(partition, record.keyGroup), record.nextPosition]);
    if (rows.length > 0) {
      // The records engine's outbox names counter records; the native engine has none, so it holds the totals.
      puts.push([OUTBOX_KEY, rows instanceof NativeWindow ? rows.toOutbox() : JSON.stringify(counterKeys)]);
      this.outboxWritten = true;
      this.outboxConfirmed = false;
    } else if (this.outboxWritten) {
      deletes.push(OUTBOX_KEY);
      this.outboxWritten = false;
    }
    this.presencePuts(puts, deletes);
    // From the commit until the sink confirmed its totals, no snapshot may be taken: a
    // checkpoint must never hold totals the sink may not have (its outbox is not restored).
    let written!: () => void;
    this.writing = new Promise<void>((resolve) => (written = resolve));
    const done = (): void => {
      this.writing = undefined;
      written();
    };
    try {
      await this.store.write(puts, deletes, true);
      this.checkpointer?.recordCommit(puts, deletes);
    } catch (err) {
      this.cache.discardUncommitted();
      this.native?.poison();
      done();
      throw new AbacusError('CommitFailed', `committing the window to ${this.store.location} failed: ${(err as Error).message}`, 'check the volume (space, permissions); the task restarts from the last committed position');
    }
    phases.mark('commitMs');
    phases.times.rows = rows.length;
    phases.times.puts = puts.length;
    this.cache.markCommitted();
    for (const [g, cutoff] of sweep.cutoffs) this.sweptAt.set(g, cutoff);
    metrics.stateExpired.inc({ kind: 'dedup' }, sweep.dedup);
    metrics.stateExpired.inc({ kind: 'marker' }, sweep.markers);
    this.progress.expired += sweep.expired;
    metrics.countersTouched.observe(this.native !== undefined ? rows.length : this.window.size);
    inputLagObserved(Math.max(0, (this.clock() - this.newestIngestMs) / 1000));
    this.window.clear();
    this.positions.clear();
    this.recordsInWindow = 0;
    this.progress.windows++;
    this.updateGauges();

    const write = this.writeSink(rows)
      .then(() => {
        this.outboxConfirmed = true;
        this.progress.rowsWritten += rows.length;
        timer();
      })
      .finally(done);
    write.catch(() => undefined); // a failure is thrown by the next sinkConfirmed(), not left unhandled
    this.sinkWrite = write;
    if (!overlap) {
      await this.sinkConfirmed();
      phases.mark('sinkMs');
    }
  }
  /** Waits for the sink write of the last commit (if one is outstanding); throws its failure (SinkGaveUp). */
  private async sinkConfirmed(): Promise<void> {
    const write = this.sinkWrite;
    if (write === undefined) return;
    try {
      await write;
    } finally {
      if (this.sinkWrite === write) this.sinkWrite = undefined;
    }
  }
  /**
   * The records of owned groups whose expiry cutoff moved since their last sweep (one step of
   * ingest time, see worker/state/expiry.ts), up to SWEEP_BATCH keys, to delete with this
   * flush's commit, and the groups' new cutoffs. They are dropped from the cache here: a
   * cached copy would decide the same way, but would hold memory for nothing.
   */
  private async sweepDue(): Promise<Sweep> {
    const out = noSweep();
    const K = this.watermarks.length;
    const from = this.sweepFrom;
    for (let i = 0; i < K && out.deletes.length < SWEEP_BATCH; i++) {
      const g = (from + i) % K;
      const cutoff = this.expiryCutoff(g);
      if (cutoff === undefined) continue;
      const previous = await this.lastSweep(g);
      if (cutoff <= previous) continue;
      const found = await findExpired(this.store, keyGroupPrefix(g), cutoff, previous, this.settings, this.pendingChanges);
      for (const key of found.keys) {
        this.cache.forget(key);
        out.deletes.push(key);
      }
      for (const key of found.pending) this.cache.delete(key);
      out.expired += found.keys.length + found.pending.length;
      out.cutoffs.push([g, cutoff]);
      out.dedup += found.dedup;
      out.markers += found.markers;
      this.sweepFrom = (g + 1) % K;
    }
    return out;
  }

  /** The expiry cutoff of an owned group with a watermark (worker/state/expiry.ts), or undefined. */
  private expiryCutoff(g: number): number | undefined {
    const watermark = this.watermarks[g]!;
    if (watermark === Number.NEGATIVE_INFINITY || (this.owned !== undefined && !this.owned.has(g))) return undefined;
    const ceiling = this.options.sweepCeilingMs === undefined ? Number.POSITIVE_INFINITY : Math.floor(this.options.sweepCeilingMs() / 1000);
    return sweepCutoff(Math.min(watermark, ceiling), this.expiryStepSec);
  }

  /**
   * The native engine's sweep (docs/adr/0007, "As built (session 14)"): the kernel deletes
   * what expired in the groups whose cutoff moved and hands back each one's remaining state
   * but its counters as one segment, which replaces the group's earlier state segments in
   * this commit; a group whose state or counter log grew to COMPACT_SEGMENTS segments is
   * compacted the same way at its last cutoff, its counters too when theirs did. A flush
   * sweeps groups whose logs to rewrite hold up to SWEEP_SEGMENT_BYTES (at least one group);
   * the rest wait for the next flushes. The kernel's pass costs the same for one group as
   * for many, so due groups are swept together.
   */
  private async sweepDueNative(native: NativeState): Promise<Sweep> {
    const out = noSweep();
    const { groups: held, seconds } = native.watermarks();
    for (let i = 0; i < held.length; i++) {
      const g = held[i]!;
      if (seconds[i]! > this.watermarks[g]!) this.watermarks[g] = seconds[i]!;
    }
    const K = this.watermarks.length;
    const from = this.sweepFrom;
    const groups: number[] = [];
    const cutoffs: number[] = [];
    const full: boolean[] = [];
    let bytes = 0;
    for (let i = 0; i < K && (groups.length === 0 || bytes < SWEEP_SEGMENT_BYTES); i++) {
      const g = (from + i) % K;
      const log = this.segmentLog.size(g);
      if (log.S.segments + log.T.segments === 0) continue;
      const cutoff = this.expiryCutoff(g);
      const previous = await this.lastSweep(g);
      const expires = cutoff !== undefined && cutoff > previous;
      // A state log from before counters had their own must keep them: only a full sweep may replace it.
      const counters = log.T.segments >= COMPACT_SEGMENTS || log.countersInState;
      if (!expires && !counters && log.S.segments < COMPACT_SEGMENTS) continue;
      groups.push(g);
      cutoffs.push(expires ? cutoff : previous);
      full.push(counters);
      if (expires) out.cutoffs.push([g, cutoff]);
      bytes += log.S.bytes + (counters ? log.T.bytes : 0);
      this.sweepFrom = (g + 1) % K;
    }
    if (groups.length === 0) return out;
    const swept = native.sweep(groups, cutoffs, full);
    const fullGroups = new Set(groups.filter((_, i) => full[i]));
    for (const { group, counters, state } of swept.segments) {
      // The counter segment first: the state segment's markers may refer to its counters.
      if (fullGroups.has(group)) this.replaceSegment(out, group, 'T', counters);
      else this.appendSegment(out.puts, group, 'T', counters);
      this.replaceSegment(out, group, 'S', state);
    }
    out.dedup = swept.dedup;
    out.markers = swept.markers;
    // Spill records expire by the same rules: a scan of each group whose cutoff moved.
    for (const [g, cutoff] of out.cutoffs) {
      const records = await native.sweepSpilled(this.store, g, cutoff);
      for (const put of records.puts) out.puts.push(put);
      for (const key of records.deletes) out.deletes.push(key);
      out.dedup += records.identities;
      out.markers += records.markers;
    }
    out.expired = out.dedup + out.markers;
    return out;
  }

  /**
   * Native engine under a budget: the records of what the kernel evicts, added to the
   * commit's writes. They supersede what this commit's sweep wrote or deleted under the same
   * keys: the sweep rewrote a customer's marker record as the store had it, and the kernel
   * evicted that customer's whole set, which holds all of the record's live markers and
   * those counted since.
   */
  private spill(native: NativeState, limit: number, puts: Array<[string, string]>, sweep: Sweep): void {
    const spilled = native.evict(limit);
    if (sweep.puts.length + sweep.deletes.length > 0 && spilled.puts.length > 0) {
      const swept = new Set([...sweep.puts.map(([key]) => key), ...sweep.deletes]);
      const evicted = new Set(spilled.puts.filter(([key]) => swept.has(key)).map(([key]) => key));
      sweep.puts = sweep.puts.filter(([key]) => !evicted.has(key));
      sweep.deletes = sweep.deletes.filter((key) => !evicted.has(key));
    }
    for (const put of spilled.puts) puts.push(put);
    metrics.nativeStateBytes.set(spilled.stateBytes);
    metrics.nativeStateLimitBytes.set(limit);
    if (spilled.stateBytes > limit && !this.warnedOverBudget) {
      this.warnedOverBudget = true;
      const mib = (b: number): string => (b / 2 ** 20).toFixed(0);
      this.options.log?.(`the native engine's state takes ${mib(spilled.stateBytes)} MiB after spilling, above its ${mib(limit)} MiB share of the memory budget: its counters, customers and the marker sets' least room stay in memory. Raise state.memoryBudget (spec.memoryBudget) by up to 2.6 times the difference (the kernel's share is 39 % of a budget of 800 MiB or more), or use state.engine: records`, 'warn');
    }
    metrics.stateSpilled.inc({ kind: 'dedup' }, spilled.identities);
    metrics.stateSpilled.inc({ kind: 'customer_markers' }, spilled.customers);
  }

  /** Adds a group's new segment of that kind to the puts (none when it is empty). */
  private appendSegment(puts: Array<[string, string]>, group: number, kind: SegmentKind, segment: Buffer): void {
    if (segment.length > 0) puts.push([this.segmentLog.append(group, kind, segment.length), segment.toString('base64')]);
  }

  /** Adds to a sweep the segment that replaces a group's segments of its kind, and the deletes of those. */
  private replaceSegment(out: Sweep, group: number, kind: SegmentKind, segment: Buffer): void {
    const { key, deletes } = this.segmentLog.replace(group, kind, segment.length);
    if (key !== undefined) out.puts.push([key, segment.toString('base64')]);
    for (const d of deletes) out.deletes.push(d);
  }

  /** The cutoff of a group's last committed sweep; -Infinity when it was never swept. */
  private async lastSweep(g: number): Promise<number> {
    let at = this.sweptAt.get(g);
    if (at === undefined) {
      const text = await this.store.get(expiryKey(keyGroupPrefix(g)));
      at = text === undefined ? Number.NEGATIVE_INFINITY : Number(text);
      this.sweptAt.set(g, at);
    }
    return at;
  }

  /** Forgets what the task knows of a group's expiry (it left, or its state was replaced by a restore). */
  private forgetExpiry(g: number): void {
    this.sweptAt.delete(g);
    this.watermarks[g] = Number.NEGATIVE_INFINITY;
  }

  /**
   * Adds to a commit the presence record of each group it touches for the first time (the
   * group now has local state) or for the first time since a restore (the state no longer
   * equals the restored chain).
   */
  private presencePuts(puts: Array<[string, string]>, deletes: readonly string[]): void {
    const prefixes = new Set<string>();
    for (const [key] of puts) if (key.charCodeAt(0) !== 0x7e) prefixes.add(key.slice(0, KEY_GROUP_PREFIX_WIDTH));
    for (const key of deletes) if (key.charCodeAt(0) !== 0x7e) prefixes.add(key.slice(0, KEY_GROUP_PREFIX_WIDTH));
    for (const prefix of prefixes) {
      const g = keyGroupOfKey(prefix);
      const restored = this.restoredClean.get(g);
      if (restored !== undefined) {
        puts.push([presenceKey(g), encodePresence({ ...restored, restored: null })]);
        this.restoredClean.delete(g);
      } else if (!this.present.has(g)) {
        puts.push([presenceKey(g), encodePresence({ sinceMs: this.clock(), restoredFrom: null, restored: null })]);
        this.present.add(g);
      }
    }
  }

  /**
   * Waits until no commit is in flight (state write through sink confirmation): the store then
   * holds exactly the last commit, and the sink has its totals. The caller must use that
   * point synchronously after its await (a snapshot). Until then no commit starts: flush()
   * yields to the event loop while a waiter is registered, and the count drops only in the
   * next turn of the loop, after the caller's continuation (a microtask) has run.
   */
  private async commitPoint(): Promise<void> {
    this.commitPointWaiters++;
    try {
      while (this.writing !== undefined) await this.writing;
    } finally {
      setImmediate(() => this.commitPointWaiters--);
    }
  }

  /**
   * Writes a checkpoint of `groups` (default: every owned group) and resolves once its
   * manifest is committed. The snapshot is taken at the next commit point; counting goes on
   * during the upload. Checkpoints run one at a time (a call waits for the one in flight).
   * For a hand-over: stop feeding the group, flush(), then checkpoint([group], 'handover').
   * Rejects when the checkpoint failed (the caller may retry; nothing is lost).
   */
  checkpoint(groups?: readonly number[], reason = 'on-demand', options: { urgent?: boolean } = {}): Promise<CheckpointResult> {
    const checkpointer = this.checkpointer;
    if (checkpointer === undefined) return Promise.reject(new AbacusError('NoCheckpoints', 'this task has no checkpoint settings', 'configure checkpoints (checkpoints: in the job config, or --checkpoint-dir)'));
    // Urgent (a hand-over's release: its group is paused until this commits): the checkpoints
    // in flight or queued give way — they stop before their manifest and hand their changes
    // back — instead of this one waiting for their uploads. It is a delta on the chain the
    // new owner pre-copied, never a compaction.
    const urgent = options.urgent === true;
    if (urgent) for (const c of this.preemptible) c.abort();
    const preempt = urgent ? undefined : new AbortController();
    if (preempt !== undefined) this.preemptible.add(preempt);
    const run = this.checkpointing.then(async () => {
      this.checkpointBusy = true;
      try {
        if (preempt?.signal.aborted === true) throw new CheckpointPreempted(reason);
        await this.commitPoint();
        const snapshot = checkpointer.snapshot(this.store, groups ?? this.ownedGroups(), reason, { urgent, carry: this.ownedGroups() });
        const result = await checkpointer.write(snapshot, preempt?.signal);
        this.lastCheckpoint = result;
        this.checkpointFailuresInARow = 0;
        this.options.log?.(
          `checkpoint ${result.manifestId} (${reason}) committed: ${result.base.length} base, ${result.delta.length} delta, ${result.unchanged.length} unchanged groups; ${result.bytes} bytes in ${result.durationMs} ms`,
          'info',
        );
        this.retainSoon(checkpointer);
        return result;
      } finally {
        this.checkpointBusy = false;
        if (preempt !== undefined) this.preemptible.delete(preempt);
      }
    });
    this.checkpointing = run.catch(() => undefined);
    return run;
  }

  /** Runs retention after a commit, one run at a time; a commit during a run asks for one more. */
  private retainSoon(checkpointer: Checkpointer): void {
    if (this.retaining !== undefined) {
      this.retainAgain = true;
      return;
    }
    this.retaining = (async () => {
      do {
        this.retainAgain = false;
        await checkpointer.retain();
      } while (this.retainAgain);
    })().finally(() => (this.retaining = undefined));
  }

  /** Starts a periodic checkpoint in the background when one is due; a failed one is retried with backoff. */
  private maybeCheckpoint(): void {
    const cp = this.options.checkpoints;
    if (cp === undefined || cp.intervalMs <= 0 || this.checkpointBusy || this.clock() < this.nextCheckpointAt) return;
    this.nextCheckpointAt = Number.POSITIVE_INFINITY; // until this one ends
    this.checkpoint(undefined, 'periodic').then(
      () => {
        this.nextCheckpointAt = this.clock() + cp.intervalMs;
      },
      (err: unknown) => {
        if (err instanceof CheckpointPreempted) {
          this.options.log?.(err.message);
          this.nextCheckpointAt = this.clock() + Math.min(cp.intervalMs, 1000); // not a failure: taken again shortly
          return;
        }
        this.checkpointFailuresInARow++;
        const wait = Math.min(cp.intervalMs, 1000 * 2 ** Math.min(this.checkpointFailuresInARow, 6));
        this.nextCheckpointAt = this.clock() + wait;
        this.options.log?.(`checkpoint failed (attempt ${this.checkpointFailuresInARow}; counting goes on, retrying in ${wait} ms): ${(err as Error).message}`);
      },
    );
  }

  /**
   * Replaces the local records of `groups` by a checkpoint (see restoreGroups) while the task
   * runs for its other groups; the caller must not feed these groups' records meanwhile.
   * Afterwards the groups are indexed, counted from the restored positions, and their next
   * checkpoint continues the restored chain.
   */
  async restoreGroups(objectStore: ObjectStore, groups: readonly number[], options: Pick<RestoreOptions, 'manifestId' | 'concurrency' | 'background'> = {}): Promise<RestoreResult> {
    // Groups the task does not count are written by no commit: their restore need not wait
    // for the one in flight (a hand-over's acquire would wait for another group's sink write).
    if (groups.some((g) => this.owned?.has(g) !== false)) await this.commitPoint();
    return this.restoreFrom(objectStore, groups, options);
  }

  private async restoreFrom(objectStore: ObjectStore, groups: readonly number[], options: Pick<RestoreOptions, 'manifestId' | 'concurrency' | 'background'>): Promise<RestoreResult> {
    const result = await restoreGroups(this.store, objectStore, groups, {
      ...options,
      fingerprint: stateFingerprint(this.options.config),
      clock: this.clock,
      ...(this.options.log ? { log: this.options.log } : {}),
    });
    this.cache.forgetGroups(result.groups.map((r) => r.group));
    // The native engine loads a group's segments when it starts counting it (startGroups, or
    // here when it counts it already); the records engine indexes the restored keys.
    const counted = result.groups.map((r) => r.group).filter((g) => this.owned?.has(g) !== false);
    if (this.native !== undefined && this.opened && counted.length > 0) await this.loadSegments(counted);
    for (const r of result.groups) {
      this.forgetExpiry(r.group);
      if (this.native === undefined) {
        if (r.put !== undefined && this.indexed.has(r.group)) this.cache.index(r.put);
        else await this.cache.indexRange(keyGroupRange(r.group));
        if (this.owned?.has(r.group) !== true) this.indexed.add(r.group);
      }
      this.present.add(r.group);
      this.hydrate.delete(r.group);
      this.restoredClean.set(r.group, { sinceMs: this.clock(), restoredFrom: r.manifestId, restored: r.entry });
      this.checkpointer?.adopt(r.group, r.entry);
    }
    if (result.groups.length > 0 || result.missing.length > 0) {
      this.options.log?.(
        `restored ${result.groups.length} key groups (${result.records} records, ${result.bytes} bytes) in ${result.durationMs} ms` +
          (result.missing.length > 0 ? `; no checkpoint holds key groups ${result.missing.join(',')}` : ''),
        result.missing.length > 0 ? 'warn' : 'info',
      );
    }
    return result;
  }

  /**
   * Native engine: the window's totals from the kernel; fresh counters of groups hydrated
   * from the sink get the sink's value added (in the rows and in the kernel's totals).
   */
  private async finaliseNative(native: NativeState): Promise<{ keys: string[]; rows: NativeWindow }> {
    const window = native.finalise();
    await this.hydrateNative(native, window);
    return { keys: [], rows: window };
  }

  private async hydrateNative(native: NativeState, window: NativeWindow): Promise<void> {
    if (this.hydrate.size === 0) return;
    const positions: number[] = [];
    for (let i = 0; i < window.length; i++) if (window.fresh[i] === 1 && this.hydrate.has(window.groups[i]!)) positions.push(i);
    if (positions.length === 0) return;
    const rows = window.rows();
    const missing = positions.map((i) => rows[i]!);
    const values = await this.withSinkRetry(`hydrate ${missing.length} counters`, () => this.options.sink.read(missing));
    // The sink keys its values by counter id (CountSink.read).
    const found = positions.filter((i) => values.has(rows[i]!.id));
    if (found.length > 0) native.rebase(window, found, found.map((i) => values.get(rows[i]!.id)!));
  }

  /** Native engine: the kernel's changes as a counter and a state segment per key group touched. */
  private segmentPuts(native: NativeState): { puts: Array<[string, string]>; deletes: string[] } {
    const puts: Array<[string, string]> = [];
    for (const { group, counters, state } of native.changes()) {
      // In this order: the state segment's markers may refer to the counter segment's counters.
      this.appendSegment(puts, group, 'T', counters);
      this.appendSegment(puts, group, 'S', state);
    }
    return { puts, deletes: [] };
  }

  /** Native engine: (re)loads the groups' state into the kernel from their committed segments. */
  private async loadSegments(groups: readonly number[]): Promise<void> {
    const native = this.native!;
    native.drop(groups);
    for (const g of groups) {
      const segments = await readSegments(this.store, g);
      this.segmentLog.loaded(
        g,
        segments.map(({ kind, seq, segment }) => ({ kind, seq, bytes: segment.length, holdsCounters: native.load(g, segment) })),
      );
      await native.loadSpilled(this.store, g);
    }
  }

  /**
   * New totals for every counter the window touched: local value, or hydrated value, plus
   * delta. A window of a wide event touches tens of thousands of counters no earlier window
   * had, so the cost per counter is kept to one state read (answered by the filter for a new
   * one), one update and one row; the stem's fields are parsed once for all its counters.
   */
  private async finalise(): Promise<{ keys: string[]; rows: CounterRow[] }> {
    const keys: string[] = [];
    const deltas: CounterRecord[] = [];
    const rows: MutableRow[] = [];
    const account = this.settings.level === 'account';
    for (const [stemKey, tokens] of this.window.byStem()) {
      const stem = parseCounterStem(stemKey, KIND_OFFSET + 1).parts;
      for (const [token, delta] of tokens) {
        const key = stemKey + token;
        const { facet, value } = parseCounterToken(token);
        keys.push(key);
        deltas.push(delta);
        const id = counterIdOfKey(key);
        const { scope, statisticId, granularity, bucket } = stem;
        rows.push(account ? { scope, statisticId, granularity, bucket, facet, value, id, count: 0, uniques: 0 } : { scope, statisticId, granularity, bucket, facet, value, id, count: 0 });
      }
    }
    const locals = await this.cache.readCommitted(keys);
    const hydrated = await this.hydrated(keys, locals, rows);
    const totals = new Array<string>(keys.length);
    for (let i = 0; i < keys.length; i++) {
      const local = locals[i]!;
      const delta = deltas[i]!;
      const row = rows[i]!;
      const base = local !== null ? decodeCounter(local) : (hydrated?.get(row.id) ?? ZERO);
      row.count = base.count + delta.count;
      const uniques = (base.uniques ?? 0) + delta.uniques;
      if (account) row.uniques = uniques;
      totals[i] = encodeCounter({ count: row.count, uniques });
    }
    this.cache.stage(keys, totals);
    return { keys, rows };
  }

  /** The sink's values of the counters that have no local value and belong to groups hydrated from the sink. */
  private async hydrated(keys: readonly string[], locals: ReadonlyArray<string | null>, rows: readonly CounterRow[]): Promise<Map<string, CounterValue> | undefined> {
    if (this.hydrate.size === 0) return undefined;
    const missing: CounterRow[] = [];
    for (let i = 0; i < keys.length; i++) if (locals[i] === null && this.hydrate.has(keyGroupOfKey(keys[i]!))) missing.push(rows[i]!);
    if (missing.length === 0) return undefined;
    return this.withSinkRetry(`hydrate ${missing.length} counters`, () => this.options.sink.read(missing));
  }

  /** The sink row of a counter state key and its total (uniques at account level only). */
  private rowOf(stateKey: string, total: CounterRecord): CounterRow {
    return this.rowOfId(counterIdOfKey(stateKey), total);
  }

  /** The sink row of a counter id and its total. */
  private rowOfId(id: string, total: CounterRecord): CounterRow {
    const { scope, statisticId, granularity, bucket, facet, value } = parseCounterId(id);
    return this.settings.level === 'account'
      ? { scope, statisticId, granularity, bucket, facet, value, id, count: total.count, uniques: total.uniques }
      : { scope, statisticId, granularity, bucket, facet, value, id, count: total.count };
  }

  /** The outbox of a native commit written before the outbox was binary (JSON [id, count, uniques] triples). */
  private legacyNativeOutbox(text: string): CounterRow[] {
    const totals = JSON.parse(text) as Array<[id: string, count: number, uniques: number]>;
    return totals.map(([id, count, uniques]) => this.rowOfId(id, { count, uniques }));
  }

  /** Writes rows to the sink, retrying until it succeeds (see withSinkRetry). */
  private async writeSink(rows: readonly CounterRow[] | CounterColumns): Promise<void> {
    if (rows.length === 0) return;
    const sink = this.options.sink;
    const write = (): Promise<void> => (!isRowArray(rows) ? (sink.writeColumns?.(rows) ?? sink.write(rows.rows())) : sink.write(rows));
    await this.withSinkRetry(`write ${rows.length} rows`, write);
  }

  /**
   * Runs a sink call until it succeeds, with capped exponential backoff. While it fails the
   * source is paused and the next commit waits for it: that is the backpressure, and nothing
   * is dropped — the windows' changes wait in memory, uncommitted or committed-with-outbox.
   */
  private async withSinkRetry<T>(what: string, call: () => Promise<T>): Promise<T> {
    const { signal } = this.options;
    let delay = 100;
    for (let attempt = 1; ; attempt++) {
      try {
        const result = await call();
        if (attempt > 1) this.options.source.resume?.();
        return result;
      } catch (err) {
        if (attempt === 1) this.options.source.pause?.();
        if (signal?.aborted) {
          throw new SinkGaveUp(`sink ${what} failed (attempt ${attempt}) after the stop was asked: ${(err as Error).message}; the next run replays it`);
        }
        metrics.sinkWriteRetries.inc();
        this.options.log?.(`sink ${what} failed (attempt ${attempt}): ${(err as Error).message}; retrying in ${delay} ms`);
        await sleep(delay, signal);
        delay = Math.min(delay * 2, 10_000);
      }
    }
  }

  /** Sends the totals of a commit whose sink write may not have finished (crash between steps 2 and 3). */
  private async replayOutbox(): Promise<void> {
    const text = await this.store.get(OUTBOX_KEY);
    if (text === undefined) return;
    if (this.native !== undefined) {
      const rows = text.startsWith('[') ? this.legacyNativeOutbox(text) : NativeWindow.fromOutbox(text, this.settings.level === 'account');
      this.options.log?.(`re-sending ${rows.length} counter totals of the last commit to the sink (the previous run stopped before the sink confirmed them)`);
      await this.writeSink(rows);
      await this.store.write([], [OUTBOX_KEY], true);
      return;
    }
    const keys = JSON.parse(text) as string[];
    // The index only holds the groups owned at open — none for a worker that follows the
    // assignment (it starts with none) — and would rule these keys out: they are read as is.
    this.cache.index(keys);
    await this.cache.load(keys);
    const rows: CounterRow[] = [];
    for (const key of keys) {
      const text = this.cache.get(key);
      if (text === null) continue;
      rows.push(this.rowOf(key, decodeCounter(text)));
    }
    this.options.log?.(`re-sending ${rows.length} counter totals of the last commit to the sink (the previous run stopped before the sink confirmed them)`);
    await this.writeSink(rows);
    await this.store.write([], [OUTBOX_KEY], true);
  }

  private updateGauges(): void {
    const now = this.clock();
    if (now - this.lastSizeUpdate < 10_000) return;
    this.lastSizeUpdate = now;
    metrics.stateSizeBytes.set(this.store.diskSize());
  }

  /** Bytes the state takes on disk. */
  stateSize(): number {
    return this.store.diskSize();
  }

  /** Native engine: spill records read back since the task opened. */
  get spillReads(): number {
    return this.native?.restored ?? 0;
  }

  /** The native engine's table sizes (benchmarks); undefined with the records engine. */
  nativeStats(): ReturnType<NativeState['stats']> | undefined {
    return this.native?.stats();
  }

  get cacheStats(): StateCache['stats'] {
    return this.cache.stats;
  }

  /** Records and estimated bytes the state cache holds (benchmarks). */
  get cacheSize(): number {
    return this.cache.size;
  }

  get cacheBytes(): number {
    return this.cache.bytes;
  }

  async close(): Promise<void> {
    await this.checkpointing; // never close the store under a snapshot being read
    await this.retaining;
    // Without this the next open would re-send the last totals (the same values when this
    // worker kept its groups) and say the previous run stopped before the sink had them.
    await this.dropConfirmedOutbox();
    await this.store.close();
  }

  /** Deletes the outbox once the sink has confirmed its totals: nothing of it is left to re-send. */
  private async dropConfirmedOutbox(): Promise<void> {
    if (!this.outboxWritten || !this.outboxConfirmed) return;
    await this.store.write([], [OUTBOX_KEY], true);
    this.outboxWritten = false;
  }
}

/** Refuses a data dir written with settings that change what its state means. */
async function checkFingerprint(store: RocksStore, config: JobConfig, dataDir: string): Promise<void> {
  const stored = await store.get(META_KEY);
  if (stored === undefined) {
    await store.write([[META_KEY, JSON.stringify(stateFingerprint(config))]], [], true);
    return;
  }
  const mismatch = fingerprintMismatch(stored, config, dataDir);
  if (mismatch !== undefined) throw mismatch;
}

/** A row finalise() fills in once the counter's total is known. */
type MutableRow = Omit<CounterRow, 'count' | 'uniques' | 'id'> & { id: string; count: number; uniques?: number };

const ZERO: CounterValue = { count: 0, uniques: 0 };

/** What a flush's sweep adds to its commit. */
interface Sweep {
  puts: Array<[string, string]>;
  deletes: string[];
  /** Groups whose expiry cutoff moved, with the new cutoff (their expiry records). */
  cutoffs: Array<[number, number]>;
  /** Dedup identities and uniqueness markers deleted, and every state record deleted (progress). */
  dedup: number;
  markers: number;
  expired: number;
}

function noSweep(): Sweep {
  return { puts: [], deletes: [], cutoffs: [], dedup: 0, markers: 0, expired: 0 };
}

/** A sink call abandoned because the task is stopping (see run()). */
export class SinkGaveUp extends Error {}

function isRowArray(rows: readonly CounterRow[] | CounterColumns): rows is readonly CounterRow[] {
  return Array.isArray(rows);
}
