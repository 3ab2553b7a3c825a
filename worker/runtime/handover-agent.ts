import type { Assignment, Move } from '../../common/assignment';
import { emptyReport, pruneReport, workerDuties, type WorkerReport } from '../../common/handover';
import type { LogFn } from '../io/kafka-client';
import { metrics } from './metrics';
import type { CountTask } from './task';
import { sleep } from '../../common/sleep';

/** Where the worker reads the newest assignment document (a ConfigMap through the API, or a file). */
export interface AssignmentSource {
  read(): Promise<Assignment | undefined>;
  /**
   * Calls `onChange` when the document changed, with it (undefined: read it), until the
   * stream ends (resolves) or fails (rejects); the agent then watches again. Without it the
   * agent only polls.
   */
  watch?(onChange: (doc: Assignment | undefined) => void, signal: AbortSignal): Promise<void>;
}

/** Where the worker keeps its report (its status ConfigMap); load() gives back what the last run saved. */
export interface ReportStore {
  load(): Promise<WorkerReport | undefined>;
  save(report: WorkerReport): Promise<void>;
}

/** What the hand-over needs of checkpoints (worker/checkpoint/). */
export interface GroupCheckpoints {
  /**
   * The final checkpoint of released groups (their committed state): urgent, it does not
   * wait for a periodic checkpoint in flight. Resolves to its manifest id (the commit point)
   * and the bytes it uploaded.
   */
  checkpoint(groups: readonly number[], reason: string): Promise<{ manifest: string; bytes?: number }>;
  /** Replaces the local records of these groups from exactly `manifest`, or the newest complete checkpoint holding them. */
  restore(groups: readonly number[], manifest?: string): Promise<void>;
  /**
   * A checkpoint of groups about to move out, in the background (it may be preempted): the
   * new owner's second pre-copy pass picks it up, so the final checkpoint and the restore in
   * the pause carry only what changed after it.
   */
  refresh?(groups: readonly number[]): void;
}

export interface HandoverAgentOptions {
  readonly ordinal: number;
  readonly task: CountTask;
  readonly assignment: AssignmentSource;
  readonly reports: ReportStore;
  readonly checkpoints: GroupCheckpoints;
  readonly keyGroups: number;
  readonly log: LogFn;
  /** How often the document is read besides the watch's notices (default 1 s). */
  readonly pollMs?: number;
  readonly clock?: () => number;
  /** Last checkpoint time and input lag, added to the report every PROGRESS_REPORT_MS for status.lastCheckpointTime / inputLag. */
  readonly progress?: () => { lastCheckpointMs?: number; inputLagSeconds?: number };
}

/** How often the progress figures are written to the report (a ConfigMap patch each). */
const PROGRESS_REPORT_MS = 15_000;

/** A pre-copy round shorter than this applied little: the next one would not shorten the pause much. */
const PRE_COPY_CONVERGED_MS = 1000;
export const PRE_COPY_MAX_ROUNDS = 5;

/**
 * Iterative pre-copy: the first round restores the newest checkpoint of the moving groups,
 * each later one only the chunks committed over it since. The second round always runs (the
 * old owner checkpointed these groups when it saw the document, likely during the first);
 * further rounds run while the last one still took PRE_COPY_CONVERGED_MS or more — the old
 * owner's periodic checkpoints went on meanwhile — so that what is left for the pause is about
 * one checkpoint interval of changes, whatever the state's size. Returns the rounds made.
 */
export async function preCopy(round: () => Promise<void>, clock: () => number): Promise<number> {
  for (let n = 1; ; n++) {
    const started = clock();
    await round();
    if (n >= 2 && (n >= PRE_COPY_MAX_ROUNDS || clock() - started < PRE_COPY_CONVERGED_MS)) return n;
  }
}

/** Marker, outside every key group's key range: "group g was restored for the acquire published at generation N". */
const acquiredKey = (group: number): string => `~acquired:${group}`;

/**
 * The worker's side of the hand-over (docs/adr/0005-rescale-hand-over.md): reads the
 * document, makes the task count exactly the groups it gives this worker, carries out the
 * moves that name this worker, and reports each step. Everything it does is derived from the
 * document and its own saved report (workerDuties), so a restarted worker simply does what is
 * still missing: level-triggered, like the operator.
 *
 * Order within one document, chosen so that no group is counted twice and kept groups never
 * wait on a slow step: stop the groups it no longer owns (one flush: state, positions and the
 * sink's confirmation committed), write their final checkpoint, report released; restore
 * acquired groups from exactly the released manifest and start them, report acquired; then
 * pre-copy the groups it will receive (slow, but nobody waits for it but the operator).
 */
export class HandoverAgent {
  private report: WorkerReport;
  private progressSavedMs = 0;
  private applied = -1;
  private applying = 0;
  private unsaved = false;
  private readonly clock: () => number;
  /** Aborted by a watch notice: the run loop reads the document now instead of at its next poll. */
  private nudge = new AbortController();
  /** The newest document a watch notice carried, not applied yet: the next step takes it instead of reading. */
  private watched: Assignment | undefined;
  /** Groups this worker still has to hand over (moves from it in prepare or release): their checkpoint chains are not compacted meanwhile. */
  private leaving: number[] = [];

  constructor(private readonly opts: HandoverAgentOptions) {
    this.report = emptyReport(opts.ordinal);
    this.clock = opts.clock ?? Date.now;
  }

  /** Generation of the newest document applied (−1 before the first). */
  get generation(): number {
    return this.applied;
  }

  /** Manifests of released groups not yet acquired by their new owner: checkpoint retention keeps them. */
  pinnedManifests(): string[] {
    return [...new Set(Object.values(this.report.released).map((r) => r.manifest))];
  }

  /**
   * Groups another worker pre-copies, or will, from this worker's checkpoints: compacting
   * their chains now would turn the final delta into a whole new base to restore.
   */
  movingOut(): readonly number[] {
    return this.leaving;
  }

  /** Generation of the document being applied or last applied: the ownership epoch checkpoints are written under. */
  get epoch(): number {
    return this.applying;
  }

  /** Loads the saved report and applies the current document; retries until both are readable. */
  async start(signal: AbortSignal): Promise<void> {
    for (let attempt = 0; !signal.aborted; attempt++) {
      try {
        this.report = (await this.opts.reports.load()) ?? emptyReport(this.opts.ordinal);
        if (this.report.ordinal !== this.opts.ordinal) throw new Error(`the saved report is worker ${this.report.ordinal}'s, not ${this.opts.ordinal}'s`);
        if (await this.step()) return;
      } catch (err) {
        this.opts.log('warn', 'applying the assignment failed; retrying', { attempt, error: (err as Error).message });
      }
      await sleep(Math.min(5000, 250 * 2 ** Math.min(attempt, 5)), signal);
    }
  }

  /** Follows the document until `signal` aborts: on every watch notice, and every `pollMs` in case a notice was lost. */
  async run(signal: AbortSignal): Promise<void> {
    const watching = this.watch(signal);
    const wake = (): void => this.nudge.abort(); // the current nudge, whichever it is then
    signal.addEventListener('abort', wake, { once: true });
    while (!signal.aborted) {
      await sleep(this.opts.pollMs ?? 1000, this.nudge.signal); // at once when nudged meanwhile
      this.nudge = new AbortController();
      if (signal.aborted) break;
      try {
        await this.step();
      } catch (err) {
        this.opts.log('warn', 'applying the assignment failed; retrying', { generation: this.applied, error: (err as Error).message });
      }
    }
    signal.removeEventListener('abort', wake);
    await watching;
  }

  /** Keeps a watch on the document open (re-opened with backoff when it fails), nudging the run loop on every notice. */
  private async watch(signal: AbortSignal): Promise<void> {
    const source = this.opts.assignment;
    if (source.watch === undefined) return;
    for (let failures = 0; !signal.aborted; ) {
      try {
        await source.watch((doc) => {
          if (doc !== undefined && doc.generation > (this.watched?.generation ?? -1)) this.watched = doc;
          this.nudge.abort();
        }, signal);
        failures = 0;
      } catch (err) {
        failures++;
        this.opts.log('warn', 'watching the assignment failed; polling meanwhile', { error: (err as Error).message, failures });
        await sleep(Math.min(30_000, 500 * 2 ** Math.min(failures, 6)), signal);
      }
    }
  }

  /** Reads the document and applies it if new (or if the last report is not saved yet). True once a document was applied. */
  async step(): Promise<boolean> {
    const seenAt = this.clock();
    const watched = this.watched;
    this.watched = undefined;
    const doc = watched ?? (await this.opts.assignment.read());
    if (doc === undefined) return false;
    if (doc.keyGroups !== this.opts.keyGroups) {
      throw new Error(`the assignment is for ${doc.keyGroups} key groups but the job has ${this.opts.keyGroups}; it was published for another job`);
    }
    // Never an older document than one already (partly) applied: a watch notice can lag a read.
    if (doc.generation > this.applied || (this.unsaved && doc.generation >= this.applying)) await this.apply(doc, seenAt);
    const now = (this.opts.clock ?? Date.now)();
    if (this.opts.progress !== undefined && now - this.progressSavedMs >= PROGRESS_REPORT_MS) {
      this.report = { ...this.report, ...this.opts.progress() };
      await this.opts.reports.save(this.report);
      this.progressSavedMs = now;
    }
    return true;
  }

  private async apply(doc: Assignment, seenAt: number): Promise<void> {
    const { task, ordinal } = this.opts;
    this.applying = Math.max(this.applying, doc.generation);
    const duties = workerDuties(doc, ordinal, this.report);
    const leaving = (doc.handover?.moves ?? []).filter((m) => m.from === ordinal && m.phase !== 'acquire').map((m) => m.group);
    const newlyLeaving = leaving.filter((g) => !this.leaving.includes(g));
    this.leaving = leaving;
    if (newlyLeaving.length > 0) this.opts.checkpoints.refresh?.(newlyLeaving);
    const report = pruneReport(this.report, doc, doc.generation);
    const released = { ...report.released };
    const acquired = { ...report.acquired };
    const prepared = { ...report.prepared };
    const save = async () => {
      this.report = { ordinal, generation: doc.generation, prepared, released, acquired, ...(this.opts.progress?.() ?? {}) };
      this.unsaved = true;
      await this.opts.reports.save(this.report);
      this.unsaved = false;
    };

    // 1. Stop every group the document does not give this worker: it refuses to count them.
    const wanted = new Set(duties.count);
    const stop = task.groups().filter((g) => !wanted.has(g));
    let stopped = { stop: this.clock(), flushed: this.clock() };
    if (stop.length > 0) {
      const { times, ...at } = await task.stopGroups(stop);
      stopped = at;
      this.opts.log('info', 'stopped key groups', { generation: doc.generation, groups: stop.length, stopMs: at.flushed - at.stop, ...times });
    }

    // 2. Release: the final checkpoint of the stopped groups is the commit point of the move.
    if (duties.release.length > 0) {
      const end = metrics.handoverStepSeconds.startTimer({ step: 'release' });
      const groups = duties.release.map((m) => m.group);
      const { manifest, bytes } = await this.opts.checkpoints.checkpoint(groups, `release@${doc.generation}`);
      const steps = { seen: seenAt, ...stopped, checkpointed: this.clock() };
      for (const m of duties.release) {
        released[m.group] = { generation: doc.generation, manifest, stoppedAtMs: stopped.flushed, bytes: bytes === undefined ? undefined : Math.round(bytes / groups.length), steps };
      }
      end();
      metrics.handoverGroups.inc({ step: 'release' }, groups.length);
      this.opts.log('info', 'released key groups', { generation: doc.generation, groups, manifest });
      await save();
    }

    // 3. Acquire: restore exactly the released manifest (once per move), then count.
    const end = metrics.handoverStepSeconds.startTimer({ step: 'acquire' });
    await this.restoreForAcquire(duties.acquire);
    const restoredAt = this.clock();
    const start = duties.count.filter((g) => !task.groups().includes(g));
    const resumedAt = start.length > 0 ? await task.startGroups(start) : this.clock();
    if (start.length > 0) this.opts.log('info', 'counting key groups', { generation: doc.generation, groups: start.length });
    if (duties.acquire.length > 0) {
      for (const m of duties.acquire) acquired[m.group] = { generation: doc.generation, resumedAtMs: resumedAt, steps: { seen: seenAt, restored: restoredAt } };
      end();
      metrics.handoverGroups.inc({ step: 'acquire' }, duties.acquire.length);
      this.opts.log('info', 'acquired key groups', { generation: doc.generation, groups: duties.acquire.map((m) => m.group) });
    }
    await save();

    // 4. Prepare: pre-copy from the newest checkpoint while the old owner still counts.
    if (duties.prepare.length > 0) {
      const endPrepare = metrics.handoverStepSeconds.startTimer({ step: 'prepare' });
      const groups = duties.prepare.map((m) => m.group);
      const rounds = await preCopy(() => this.opts.checkpoints.restore(groups), this.clock);
      for (const m of duties.prepare) prepared[m.group] = doc.generation;
      endPrepare();
      metrics.handoverGroups.inc({ step: 'prepare' }, groups.length);
      this.opts.log('info', 'pre-copied key groups', { generation: doc.generation, groups, rounds });
      await save();
    }
    this.applied = doc.generation;
    metrics.assignmentGeneration.set(doc.generation);
  }

  /**
   * Restores the acquired groups from their released manifests (the groups of one manifest
   * together), except those this worker already restored for this very move (a restart after
   * the restore): restoring again would roll back what it has counted since, and the counters
   * it created since would then be hydrated from the sink and counted twice.
   */
  private async restoreForAcquire(moves: readonly Move[]): Promise<void> {
    const store = this.opts.task.stateStore;
    const byManifest = new Map<string | undefined, Move[]>();
    for (const m of moves) {
      const done = await store.get(acquiredKey(m.group));
      if (done !== undefined && Number(done) >= m.since) continue;
      const list = byManifest.get(m.manifest) ?? [];
      list.push(m);
      byManifest.set(m.manifest, list);
    }
    if (byManifest.size === 0) return;
    // One manifest per old owner: side by side, the groups of each already are.
    await Promise.all([...byManifest].map(([manifest, list]) => this.opts.checkpoints.restore(list.map((m) => m.group), manifest)));
    await store.write([...byManifest.values()].flat().map((m) => [acquiredKey(m.group), String(m.since)]), [], true);
  }
}
