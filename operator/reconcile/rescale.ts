import { evenAssignment, ownerMap, planOwners, type Assignment } from '../../common/assignment';
import { advanceHandover, handoverProgress, startHandover, type FinishedMove, type WorkerReport } from '../../common/handover';

/**
 * reconcileRescale, the decision half (pure): from the published document, the workers'
 * reports and the spec, what to publish, how many pods the StatefulSet should have now, and
 * what to tell. All progress lives in the document and the reports, so an operator restarted
 * mid-hand-over computes the same next step (docs/adr/0005-rescale-hand-over.md).
 *
 * - No document yet: the even split, and the StatefulSet at spec.replicas.
 * - A hand-over in progress: advance it by the reports; the StatefulSet keeps every pod that
 *   gives or receives groups (max of the two sizes) until it is done.
 * - Settled but not the plan for spec.replicas: scale-up first grows the StatefulSet and
 *   waits until every new worker has reported the current generation (its state is open and
 *   it obeys the document), then starts the hand-over; scale-down starts it at once and
 *   shrinks the StatefulSet only after the last group left.
 */
export interface RescaleInput {
  readonly keyGroups: number;
  readonly replicas: number;
  readonly current: Assignment | undefined;
  readonly reports: ReadonlyMap<number, WorkerReport>;
  /** Key groups can only move through checkpoints. */
  readonly checkpointsConfigured: boolean;
  readonly now: Date;
}

export interface RescaleDecision {
  /** A new document to publish; undefined = keep the current one. */
  readonly publish?: Assignment;
  /** The document in force after this step. */
  readonly doc: Assignment;
  readonly statefulSetReplicas: number;
  /** Report ConfigMaps (and Role entries) for ordinals 0..n-1. */
  readonly reportOrdinals: number;
  readonly events: ReadonlyArray<{ readonly type: 'Normal' | 'Warning'; readonly reason: string; readonly message: string }>;
  readonly finished: readonly FinishedMove[];
  /** Set when the hand-over finished in this step. */
  readonly completedSeconds?: number;
  /** The Rescaling condition: True while groups move or wait to move. */
  readonly rescaling: { readonly active: boolean; readonly reason: string; readonly message: string };
}

/** Ordinals that count a group or take part in a move. */
export function ordinalsInUse(doc: Assignment): number {
  let n = 0;
  for (const w of doc.workers) if (w.ranges.length > 0) n = Math.max(n, w.ordinal + 1);
  for (const m of doc.handover?.moves ?? []) n = Math.max(n, m.from + 1, m.to + 1);
  return n;
}

export function decideRescale(input: RescaleInput): RescaleDecision {
  const { keyGroups, replicas, current, reports, now } = input;
  if (current === undefined) {
    const doc = evenAssignment(keyGroups, replicas, 1);
    return { publish: doc, doc, statefulSetReplicas: replicas, reportOrdinals: replicas, events: [], finished: [], rescaling: settled(doc) };
  }
  const inUse = ordinalsInUse(current);
  if (current.handover !== undefined) {
    const h = current.handover;
    const step = advanceHandover(current, reports);
    const doc = step.doc;
    const publish = doc === current ? undefined : doc;
    const pods = Math.max(h.fromReplicas, h.targetReplicas, inUse);
    if (step.done) {
      const seconds = (now.getTime() - Date.parse(h.startedAt)) / 1000;
      const events = [{ type: 'Normal' as const, reason: 'RescaleFinished', message: `Moved ${h.total} key groups from ${h.fromReplicas} to ${h.targetReplicas} workers in ${seconds.toFixed(1)} s (assignment generation ${doc.generation})` }];
      // The next reconcile starts another hand-over if spec.replicas changed meanwhile.
      return { publish, doc, statefulSetReplicas: Math.max(h.targetReplicas, replicas), reportOrdinals: pods, events, finished: step.finished, completedSeconds: seconds, rescaling: settled(doc) };
    }
    const p = handoverProgress(doc)!;
    const waiting = describeWaiting(doc);
    return {
      publish,
      doc,
      statefulSetReplicas: Math.max(pods, replicas),
      reportOrdinals: Math.max(pods, replicas),
      events: [],
      finished: step.finished,
      rescaling: { active: true, reason: 'MovingKeyGroups', message: `${p.moved}/${p.total} key groups moved to ${h.targetReplicas} workers (assignment generation ${doc.generation}); ${waiting}` },
    };
  }
  const target = planOwners(ownerMap(current), replicas);
  const owners = ownerMap(current);
  const moves = target.filter((o, g) => owners[g] !== o).length;
  if (moves === 0) {
    return { doc: current, statefulSetReplicas: replicas, reportOrdinals: Math.max(replicas, inUse), events: [], finished: [], rescaling: settled(current) };
  }
  const pods = Math.max(replicas, inUse);
  if (!input.checkpointsConfigured) {
    return {
      doc: current,
      statefulSetReplicas: inUse,
      reportOrdinals: pods,
      events: [{ type: 'Warning', reason: 'RescaleNeedsCheckpoints', message: `Cannot move ${moves} key groups to ${replicas} workers: key groups move through checkpoints, and spec.checkpoints is not set. Set spec.checkpoints, or scale back to ${inUse}.` }],
      finished: [],
      rescaling: { active: true, reason: 'NeedsCheckpoints', message: `Waiting: ${moves} key groups must move to reach ${replicas} workers, which needs spec.checkpoints` },
    };
  }
  if (replicas > inUse) {
    const missing: number[] = [];
    for (let o = inUse; o < replicas; o++) if ((reports.get(o)?.generation ?? -1) < current.generation) missing.push(o);
    if (missing.length > 0) {
      return {
        doc: current,
        statefulSetReplicas: pods,
        reportOrdinals: pods,
        events: [],
        finished: [],
        rescaling: { active: true, reason: 'WaitingForWorkers', message: `Waiting for new workers ${missing.join(', ')} to start before moving ${moves} key groups to them` },
      };
    }
  }
  const doc = startHandover(current, replicas, now)!;
  const events = [{ type: 'Normal' as const, reason: 'RescaleStarted', message: `Moving ${doc.handover!.total} of ${keyGroups} key groups from ${doc.handover!.fromReplicas} to ${replicas} workers (assignment generation ${doc.generation})` }];
  return {
    publish: doc,
    doc,
    statefulSetReplicas: pods,
    reportOrdinals: pods,
    events,
    finished: [],
    rescaling: { active: true, reason: 'MovingKeyGroups', message: `0/${doc.handover!.total} key groups moved to ${replicas} workers (assignment generation ${doc.generation})` },
  };
}

function settled(doc: Assignment): RescaleDecision['rescaling'] {
  return { active: false, reason: 'Settled', message: `Key groups are where the assignment (generation ${doc.generation}) puts them.` };
}

/** Which phase the slowest moves wait in, e.g. "3 waiting for release by worker 1". */
export function describeWaiting(doc: Assignment): string {
  const by = new Map<string, number>();
  for (const m of doc.handover?.moves ?? []) {
    const who = m.phase === 'release' ? `release by worker ${m.from}` : m.phase === 'prepare' ? `pre-copy by worker ${m.to}` : `acquire by worker ${m.to}`;
    by.set(who, (by.get(who) ?? 0) + 1);
  }
  return [...by].map(([who, n]) => `${n} waiting for ${who}`).join(', ');
}
