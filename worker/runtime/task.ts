import { keyGroupOf, routingKey } from '../../common/keygroups';
import { AbacusError } from '../../common/errors';
import { stateFingerprint, type JobConfig } from '../config';
import { countEvent, eventKeys, WindowAccumulator, type CountingSettings, type CountingTally, type EventKeys } from '../engine/counting';
import { parseEvent, type ParseOptions } from '../engine/event';
import type { CountSink, CounterRow, CounterValue, DeadLetterSink, Source, SourceRecord } from '../io/types';
import { BloomFilter } from '../state/bloom';
import { StateCache } from '../state/cache';
import { parseCounterId } from '../io/counter-id';
import { counterIdOfKey, counterOfKey, keyGroupPrefix, keyGroupRange, META_KEY, OUTBOX_KEY, positionKey, UNKEYED_POSITION_PREFIX } from '../state/keys';
import { decodeCounter, encodeCounter, type CounterRecord } from '../state/records';
import { RocksStore } from '../state/rocks';
import { metrics } from './metrics';

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
 *      retried with backoff while the sink fails — the loop does not poll meanwhile, which is
 *      the backpressure;
 *   4. the next commit replaces or deletes the outbox.
 * A crash before 2 loses nothing: the input is re-read from the old position and decisions
 * (made on ingest time carried by the records) come out the same. A crash between 2 and 3
 * leaves the outbox, which open() sends to the sink before anything else. So the sink never
 * holds a value that the state has not committed, and hydration can trust it.
 */

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
  /** Records per poll (a micro-batch). */
  readonly batchSize?: number;
  /** Bloom filter size in bits (default 2^27 = 16 MiB). */
  readonly filterBits?: number;
  readonly signal?: AbortSignal;
  readonly onProgress?: (progress: TaskProgress) => void;
  /** Extra log lines (sink retries, recovery) go here. */
  readonly log?: (line: string) => void;
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
}

export class CountTask {
  private readonly window = new WindowAccumulator();
  private readonly tally: CountingTally = { counted: 0, duplicates: 0, beyondHorizon: 0 };
  readonly progress: TaskProgress = { read: 0, counted: 0, duplicates: 0, invalid: 0, windows: 0, beyondHorizon: 0, rowsWritten: 0 };
  private readonly positions = new Map<string, SourceRecord>();
  private readonly settings: CountingSettings;
  private readonly parseOptions: ParseOptions;
  private readonly owned: Set<number> | undefined;
  private readonly clock: () => number;
  private windowStartedAt: number;
  private outboxWritten = false;
  private lastSizeUpdate = 0;
  private recordsInWindow = 0;
  /** Newest ingest time among the records of the current window. */
  private newestIngestMs = 0;

  private constructor(
    private readonly options: TaskOptions,
    private readonly store: RocksStore,
    private readonly cache: StateCache,
  ) {
    const c = options.config;
    this.settings = {
      level: c.level,
      granularities: c.granularities,
      dedupRetentionSec: c.dedupRetentionMs / 1000,
      uniquesRetentionSec: c.uniquesRetentionMs / 1000,
    };
    this.parseOptions = { maxEventBytes: c.maxEventBytes, facets: c.facets };
    this.owned = options.keyGroups === undefined ? undefined : new Set(options.keyGroups);
    this.clock = options.clock ?? Date.now;
    this.windowStartedAt = this.clock();
  }

  /** Opens the state, checks it was written with the same settings, indexes it, and finishes an interrupted sink write. */
  static async open(options: TaskOptions): Promise<CountTask> {
    const store = await RocksStore.open(`${options.dataDir}/state`, options.config.rocksdb);
    try {
      await checkFingerprint(store, options.config, options.dataDir);
      const cache = new StateCache(store, new BloomFilter(options.filterBits ?? 2 ** 27), options.config.stateCacheEntries);
      const task = new CountTask(options, store, cache);
      for (const g of task.ownedGroups()) await cache.indexRange(keyGroupRange(g));
      await task.replayOutbox();
      return task;
    } catch (err) {
      await store.close();
      throw err;
    }
  }

  private ownedGroups(): number[] {
    if (this.options.keyGroups !== undefined) return [...this.options.keyGroups];
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

  /** Runs until the source is exhausted (bounded sources) or the signal aborts; always ends with a flush. */
  async run(): Promise<TaskProgress> {
    const { source, signal } = this.options;
    await source.start(await this.committedPositions());
    const batchSize = this.options.batchSize ?? 4096;
    while (!signal?.aborted) {
      const records = await source.poll(batchSize);
      if (records === null) break;
      if (records.length > 0) await this.process(records);
      else await sleep(Math.min(50, this.options.config.windowMs));
      if (this.clock() - this.windowStartedAt >= this.options.config.windowMs) await this.flush();
    }
    await this.flush();
    return this.progress;
  }

  /** Counts a micro-batch into the current window (no commit). */
  async process(records: readonly SourceRecord[]): Promise<void> {
    const pending: Array<{ keys: EventKeys; ingestSec: number }> = [];
    const keys: string[] = [];
    const K = this.options.config.keyGroups;
    for (const record of records) {
      this.positions.set(record.partition, record);
      if (record.ingestTimeMs > this.newestIngestMs) this.newestIngestMs = record.ingestTimeMs;
      const parsed = parseEvent(record.value, this.parseOptions, record.byteLength);
      if (!parsed.ok) {
        await this.rejectRecord(record, parsed.code, parsed.reason);
        continue;
      }
      const ev = parsed.event;
      const group = keyGroupOf(routingKey(this.settings.level, ev.companyId, ev.statisticId, ev.customerId), K);
      if (this.owned !== undefined && !this.owned.has(group)) {
        await this.rejectRecord(record, 'wrong_key_group', `event belongs to key group ${group}, which this worker does not own; check that the router and workers use the same keyGroups and level`);
        continue;
      }
      pending.push({ keys: eventKeys(ev, keyGroupPrefix(group), this.settings, keys), ingestSec: Math.floor(record.ingestTimeMs / 1000) });
    }
    await this.cache.load(keys);
    const before = { ...this.tally };
    for (const p of pending) countEvent(p.keys, p.ingestSec, this.settings, this.cache, this.window, this.tally);
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

  private async rejectRecord(record: SourceRecord, code: string, reason: string): Promise<void> {
    this.progress.invalid++;
    metrics.invalid.inc({ reason: code });
    await this.options.deadLetter.send(record, reason);
  }

  /** Closes the window: finalise, commit, write the sink (see the protocol above). */
  async flush(): Promise<void> {
    this.windowStartedAt = this.clock();
    if (this.recordsInWindow === 0) return;
    const timer = metrics.windowFlushSeconds.startTimer();
    const { keys: counterKeys, rows } = await this.finalise();

    const { puts, deletes } = this.cache.changes();
    for (const [partition, record] of this.positions) puts.push([positionKey(partition, record.keyGroup), record.nextPosition]);
    if (rows.length > 0) {
      puts.push([OUTBOX_KEY, JSON.stringify(counterKeys)]);
      this.outboxWritten = true;
    } else if (this.outboxWritten) {
      deletes.push(OUTBOX_KEY);
      this.outboxWritten = false;
    }
    try {
      await this.store.write(puts, deletes, true);
    } catch (err) {
      this.cache.discardUncommitted();
      throw new AbacusError('CommitFailed', `committing the window to ${this.store.location} failed: ${(err as Error).message}`, 'check the volume (space, permissions); the task restarts from the last committed position');
    }
    this.cache.markCommitted();
    metrics.countersTouched.observe(this.window.size);
    metrics.inputLagSeconds.set(Math.max(0, (this.clock() - this.newestIngestMs) / 1000));
    this.window.clear();
    this.positions.clear();
    this.recordsInWindow = 0;
    this.progress.windows++;

    await this.writeSink(rows);
    this.progress.rowsWritten += rows.length;
    timer();
    this.updateGauges();
  }

  /** New totals for every counter the window touched: local value, or hydrated value, plus delta. */
  private async finalise(): Promise<{ keys: string[]; rows: CounterRow[] }> {
    const deltas = [...this.window.entries()];
    const keys = deltas.map(([key]) => key);
    await this.cache.load(keys);
    const missing = keys.filter((k) => this.cache.get(k) === null);
    const hydrated: Map<string, CounterValue> =
      missing.length === 0 ? new Map<string, CounterValue>() : await this.withSinkRetry(`hydrate ${missing.length} counters`, () => this.options.sink.read(missing.map(counterOfKey)));
    const rows: CounterRow[] = [];
    for (const [key, delta] of deltas) {
      const local = this.cache.get(key);
      const base = local !== null ? decodeCounter(local) : (hydrated.get(counterIdOfKey(key)) ?? { count: 0, uniques: 0 });
      const total: CounterRecord = { count: base.count + delta.count, uniques: (base.uniques ?? 0) + delta.uniques };
      this.cache.set(key, encodeCounter(total));
      rows.push(this.rowOf(key, total));
    }
    return { keys, rows };
  }

  /** The sink row of a counter state key and its total (uniques at account level only). */
  private rowOf(stateKey: string, total: CounterRecord): CounterRow {
    const id = counterIdOfKey(stateKey);
    const key = parseCounterId(id);
    return this.settings.level === 'account' ? { ...key, id, count: total.count, uniques: total.uniques } : { ...key, id, count: total.count };
  }

  /** Writes rows to the sink, retrying until it succeeds (see withSinkRetry). */
  private async writeSink(rows: CounterRow[]): Promise<void> {
    if (rows.length === 0) return;
    await this.withSinkRetry(`write ${rows.length} rows`, () => this.options.sink.write(rows));
  }

  /**
   * Runs a sink call until it succeeds, with capped exponential backoff. While it fails the
   * source is paused and the loop does not poll: that is the backpressure, and nothing is
   * dropped — the window's changes wait in memory, uncommitted or committed-with-outbox.
   */
  private async withSinkRetry<T>(what: string, call: () => Promise<T>): Promise<T> {
    let delay = 100;
    for (let attempt = 1; ; attempt++) {
      try {
        const result = await call();
        if (attempt > 1) this.options.source.resume?.();
        return result;
      } catch (err) {
        if (attempt === 1) this.options.source.pause?.();
        metrics.sinkWriteRetries.inc();
        this.options.log?.(`sink ${what} failed (attempt ${attempt}): ${(err as Error).message}; retrying in ${delay} ms`);
        await sleep(delay);
        delay = Math.min(delay * 2, 10_000);
      }
    }
  }

  /** Sends the totals of a commit whose sink write may not have finished (crash between steps 2 and 3). */
  private async replayOutbox(): Promise<void> {
    const text = await this.store.get(OUTBOX_KEY);
    if (text === undefined) return;
    const keys = JSON.parse(text) as string[];
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

  get cacheStats(): StateCache['stats'] {
    return this.cache.stats;
  }

  async close(): Promise<void> {
    await this.store.close();
  }
}

/** Refuses a data dir written with settings that change what its state means. */
async function checkFingerprint(store: RocksStore, config: JobConfig, dataDir: string): Promise<void> {
  const wanted = JSON.stringify(stateFingerprint(config));
  const stored = await store.get(META_KEY);
  if (stored === undefined) {
    await store.write([[META_KEY, wanted]], [], true);
    return;
  }
  if (stored !== wanted) {
    const before = JSON.parse(stored) as Record<string, unknown>;
    const now = JSON.parse(wanted) as Record<string, unknown>;
    const diffs = Object.keys(now)
      .filter((k) => JSON.stringify(before[k]) !== JSON.stringify(now[k]))
      .map((k) => `${k} was ${JSON.stringify(before[k])}, now ${JSON.stringify(now[k])}`);
    throw new AbacusError(
      'StateMismatch',
      `the data dir ${dataDir} holds state written with other settings (${diffs.join('; ')})`,
      'run with the original settings, or start over with a fresh --data-dir',
    );
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
