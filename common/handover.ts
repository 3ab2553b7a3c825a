import { ownerMap, planOwners, workersFromOwners, type Assignment, type Move } from './assignment';

/**
 * The rescale hand-over as a pure state machine (docs/adr/0005-rescale-hand-over.md).
 *
 * The operator owns the document (common/assignment.ts); each worker owns one report. A
 * move goes through three phases, each published as a new document generation:
 *
 *   prepare  `from` counts g; `to` pre-copies g from the newest checkpoint     → to reports prepared
 *   release  nobody counts g; `from` stops g, commits, confirms the sink,
 *            writes a final checkpoint of g                                   → from reports released + manifest
 *   acquire  `to` counts g after restoring exactly that manifest              → to reports acquired
 *
 * A report only counts for a phase if it was made at a generation at least as new as the one
 * that published the phase (`Move.since`), so a report left over from an earlier move of
 * the same group never advances a later one.
 */

/** What one worker tells the operator (the data of its ConfigMap `<job>-worker-<ordinal>`, key status.json). */
export interface WorkerReport {
  readonly ordinal: number;
  /** The newest document generation the worker has applied. */
  readonly generation: number;
  /** Key groups pre-copied, at the generation that asked for it. */
  readonly prepared: Readonly<Record<string, number>>;
  /** Key groups released: generation, manifest of the final checkpoint, when counting stopped (ms since the epoch), bytes of the group's state. */
  readonly released: Readonly<Record<string, { readonly generation: number; readonly manifest: string; readonly stoppedAtMs: number; readonly bytes?: number; readonly steps?: ReleaseSteps }>>;
  /** Key groups acquired: generation, when counting resumed (ms since the epoch). */
  readonly acquired: Readonly<Record<string, { readonly generation: number; readonly resumedAtMs: number; readonly steps?: AcquireSteps }>>;
  /** When this worker's last complete checkpoint was written (ms since the epoch); absent before the first. */
  readonly lastCheckpointMs?: number;
  /** This worker's input lag in seconds, when it knows it. */
  readonly inputLagSeconds?: number;
}

/** The job's figures from its workers' reports: the oldest last checkpoint (the whole job is only as recoverable as it), the largest lag. */
export function aggregateProgress(reports: Iterable<WorkerReport>): { lastCheckpointTime?: string; inputLag?: string } {
  let oldest: number | undefined;
  let lag: number | undefined;
  let missingCheckpoint = false;
  for (const r of reports) {
    if (r.lastCheckpointMs === undefined) missingCheckpoint = true;
    else oldest = oldest === undefined ? r.lastCheckpointMs : Math.min(oldest, r.lastCheckpointMs);
    if (r.inputLagSeconds !== undefined) lag = Math.max(lag ?? 0, r.inputLagSeconds);
  }
  return {
    ...(oldest === undefined || missingCheckpoint ? {} : { lastCheckpointTime: new Date(oldest).toISOString().replace(/\.\d{3}Z$/, 'Z') }),
    ...(lag === undefined ? {} : { inputLag: `${Math.round(lag)}s` }),
  };
}

/**
 * When the old owner passed each point of a release (ms since the epoch): it read the
 * document (`seen`), reached a consistent point and began the flush (`stop`: the group's
 * last record is counted), the flush committed (`flushed`), the final checkpoint's manifest
 * was written (`checkpointed`). For the per-move timeline; nothing decides on them.
 */
export interface ReleaseSteps {
  readonly seen: number;
  readonly stop: number;
  readonly flushed: number;
  readonly checkpointed: number;
}

/** When the new owner read the acquire (`seen`), had restored the released manifest (`restored`); resumedAtMs is the end. */
export interface AcquireSteps {
  readonly seen: number;
  readonly restored: number;
}

export const emptyReport = (ordinal: number): WorkerReport => ({ ordinal, generation: 0, prepared: {}, released: {}, acquired: {} });

/** A finished move, for metrics: the pause is from the old owner's stop to the new owner's resume. */
export interface FinishedMove {
  readonly group: number;
  readonly from: number;
  readonly to: number;
  readonly pauseMs: number;
  readonly bytes: number;
  /** Where the pause went, in ms per step (when both workers reported their steps); see moveTimeline. */
  readonly steps?: MoveTimeline;
}

/**
 * A moved group's pause split into its steps: flush (old owner commits and the sink
 * confirms), checkpoint (the final checkpoint of the group up to its manifest), handoff
 * (the old owner's report saved, the operator's reconcile publishing the acquire, the new
 * owner reading it), restore (the released manifest applied over the pre-copy), start (the
 * group indexed, seeked and resumed). They add up to the pause.
 */
export interface MoveTimeline {
  readonly flush: number;
  readonly checkpoint: number;
  readonly handoff: number;
  readonly restore: number;
  readonly start: number;
}

/** The pause of a move (from the old owner's stop to the new owner's resume) and its steps. Pure. */
export function moveTimeline(released: WorkerReport['released'][string] | undefined, acquired: WorkerReport['acquired'][string] | undefined): { pauseMs: number; steps?: MoveTimeline } {
  const stop = released?.steps?.stop ?? released?.stoppedAtMs ?? 0;
  const pauseMs = Math.max(0, (acquired?.resumedAtMs ?? 0) - stop);
  const r = released?.steps;
  const a = acquired?.steps;
  if (r === undefined || a === undefined || acquired === undefined) return { pauseMs };
  return {
    pauseMs,
    steps: { flush: r.flushed - r.stop, checkpoint: r.checkpointed - r.flushed, handoff: a.seen - r.checkpointed, restore: a.restored - a.seen, start: acquired.resumedAtMs - a.restored },
  };
}

/** Starts a hand-over to `replicas` workers; undefined when the current owners already are the plan (nothing moves). */
export function startHandover(current: Assignment, replicas: number, now: Date): Assignment | undefined {
  const owners = ownerMap(current);
  const target = planOwners(owners, replicas);
  const generation = current.generation + 1;
  const moves: Move[] = [];
  target.forEach((to, group) => {
    const from = owners[group];
    if (from === to) return;
    // A group nobody counts (a broken document) has no one to release it: it is acquired from the newest checkpoint.
    if (from === undefined) throw new Error(`key group ${group} has no owner; the assignment document is damaged`);
    moves.push({ group, from, to, phase: 'prepare', since: generation });
  });
  if (moves.length === 0) return undefined;
  const fromReplicas = current.workers.filter((w) => w.ranges.length > 0).length;
  return { ...current, generation, handover: { targetReplicas: replicas, fromReplicas, startedAt: now.toISOString(), total: moves.length, moves } };
}

export interface Advance {
  /** The next document, or the same object when no report moved anything. */
  readonly doc: Assignment;
  /** Moves that finished in this step. */
  readonly finished: readonly FinishedMove[];
  /** True when the hand-over is complete (the document no longer has one). */
  readonly done: boolean;
}

/**
 * One step of the hand-over: every move whose report for its current phase has arrived goes
 * to its next phase; all those changes are published together as one new generation.
 */
export function advanceHandover(doc: Assignment, reports: ReadonlyMap<number, WorkerReport>): Advance {
  const handover = doc.handover;
  if (handover === undefined) return { doc, finished: [], done: true };
  const generation = doc.generation + 1;
  const owners = ownerMap(doc);
  const moves: Move[] = [];
  const finished: FinishedMove[] = [];
  let changed = false;
  for (const m of handover.moves) {
    const next = nextPhase(m, reports, generation);
    if (next === m) {
      moves.push(m);
      continue;
    }
    changed = true;
    if (next === 'done') {
      const released = reports.get(m.from)?.released[m.group];
      const { pauseMs, steps } = moveTimeline(released, reports.get(m.to)?.acquired[m.group]);
      finished.push({ group: m.group, from: m.from, to: m.to, pauseMs, bytes: released?.bytes ?? 0, ...(steps === undefined ? {} : { steps }) });
      continue;
    }
    if (next.phase === 'release') owners[m.group] = undefined;
    if (next.phase === 'acquire') owners[m.group] = m.to;
    moves.push(next);
  }
  if (!changed) return { doc, finished, done: false };
  const ordinals = Math.max(doc.workers.length, handover.targetReplicas);
  const workers = workersFromOwners(owners, ordinals).filter((w) => w.ranges.length > 0 || w.ordinal < handover.targetReplicas);
  if (moves.length === 0) {
    return { doc: { keyGroups: doc.keyGroups, generation, workers }, finished, done: true };
  }
  return { doc: { keyGroups: doc.keyGroups, generation, workers, handover: { ...handover, moves } }, finished, done: false };
}

/** The move after its reports, `'done'` once acquired, or `m` itself when its report has not arrived. */
export function nextPhase(m: Move, reports: ReadonlyMap<number, WorkerReport>, generation: number): Move | 'done' {
  switch (m.phase) {
    case 'prepare': {
      const at = reports.get(m.to)?.prepared[m.group];
      return at !== undefined && at >= m.since ? { group: m.group, from: m.from, to: m.to, phase: 'release', since: generation } : m;
    }
    case 'release': {
      const r = reports.get(m.from)?.released[m.group];
      return r !== undefined && r.generation >= m.since ? { group: m.group, from: m.from, to: m.to, phase: 'acquire', since: generation, manifest: r.manifest } : m;
    }
    case 'acquire': {
      const a = reports.get(m.to)?.acquired[m.group];
      return a !== undefined && a.generation >= m.since ? 'done' : m;
    }
  }
}

/** Key groups moved so far and in total, for the Rescaling condition. */
export function handoverProgress(doc: Assignment): { moved: number; total: number } | undefined {
  const h = doc.handover;
  return h === undefined ? undefined : { moved: h.total - h.moves.length, total: h.total };
}

// --- the worker's side --------------------------------------------------------------------

/** What a worker must do to obey a document, given what it already did (its own report). Pure. */
export interface WorkerDuties {
  /** Groups the document lets this worker count. */
  readonly count: readonly number[];
  /** Moves where this worker must pre-copy (not reported yet for this phase). */
  readonly prepare: readonly Move[];
  /** Moves where this worker must stop and release the group (not reported yet). */
  readonly release: readonly Move[];
  /** Moves where this worker must restore the given manifest before counting (not reported yet). */
  readonly acquire: readonly Move[];
}

export function workerDuties(doc: Assignment, ordinal: number, report: WorkerReport): WorkerDuties {
  const count: number[] = [];
  ownerMap(doc).forEach((owner, g) => {
    if (owner === ordinal) count.push(g);
  });
  const moves = doc.handover?.moves ?? [];
  const at = (n: number | undefined, m: Move) => n !== undefined && n >= m.since;
  return {
    count,
    prepare: moves.filter((m) => m.phase === 'prepare' && m.to === ordinal && !at(report.prepared[m.group], m)),
    release: moves.filter((m) => m.phase === 'release' && m.from === ordinal && !at(report.released[m.group]?.generation, m)),
    acquire: moves.filter((m) => m.phase === 'acquire' && m.to === ordinal && !at(report.acquired[m.group]?.generation, m)),
  };
}

/** Drops report entries for groups the document no longer moves, so the report stays small. */
export function pruneReport(report: WorkerReport, doc: Assignment, generation: number): WorkerReport {
  const moving = new Set((doc.handover?.moves ?? []).map((m) => String(m.group)));
  const keep = <T>(rec: Readonly<Record<string, T>>): Record<string, T> => Object.fromEntries(Object.entries(rec).filter(([g]) => moving.has(g)));
  return { ordinal: report.ordinal, generation, prepared: keep(report.prepared), released: keep(report.released), acquired: keep(report.acquired) };
}

// --- where the document and the reports live ----------------------------------------------

/** ConfigMap that holds a job's assignment document (key assignment.json). */
export const assignmentConfigMapName = (job: string): string => `${job}-assignment`;
/** ConfigMap one worker reports into (key status.json); created by the operator, patched by the worker. */
export const workerStatusConfigMapName = (job: string, ordinal: number): string => `${job}-worker-${ordinal}`;
export const ASSIGNMENT_KEY = 'assignment.json';
export const REPORT_KEY = 'status.json';

/** Parses a worker report; throws with the problem named. */
export function parseReport(json: string): WorkerReport {
  const r = JSON.parse(json) as WorkerReport;
  if (!Number.isInteger(r.ordinal) || !Number.isInteger(r.generation)) throw new Error('worker report: ordinal and generation must be integers');
  const num = (v: unknown): number | undefined => (typeof v === 'number' && Number.isFinite(v) && v >= 0 ? v : undefined);
  const lastCheckpointMs = num((r as { lastCheckpointMs?: unknown }).lastCheckpointMs);
  const inputLagSeconds = num((r as { inputLagSeconds?: unknown }).inputLagSeconds);
  return {
    ordinal: r.ordinal,
    generation: r.generation,
    prepared: r.prepared ?? {},
    released: r.released ?? {},
    acquired: r.acquired ?? {},
    ...(lastCheckpointMs === undefined ? {} : { lastCheckpointMs }),
    ...(inputLagSeconds === undefined ? {} : { inputLagSeconds }),
  };
}
