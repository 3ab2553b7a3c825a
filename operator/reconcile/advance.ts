import type { AbacusJob } from '../api/abacusjob';
import { applyDefaults } from '../api/schema';
import { specSchema } from '../api/abacusjob';
import type { Assignment } from '../../common/assignment';
import { parseReport, REPORT_KEY, type WorkerReport } from '../../common/handover';
import { isConflict } from '../../common/kube-client';
import { assignedWorkers, desiredAssignmentConfigMap, publishedAssignment } from '../model/assignment';
import { names } from '../model/names';
import type { Cluster } from './reconciler';
import { decideRescale, type RescaleDecision } from './rescale';

/**
 * The hand-over's side of a reconcile: what is published, what the workers reported, and
 * the decision (rescale.ts) drawn from them. The document is read uncached: the next step is
 * computed from exactly what is published.
 */
export interface HandoverView {
  readonly current: Assignment | undefined;
  readonly resourceVersion: string | undefined;
  readonly reports: ReadonlyMap<number, WorkerReport>;
  readonly decision: RescaleDecision;
}

export async function readHandover(cluster: Cluster, job: AbacusJob, now: Date): Promise<HandoverView> {
  const namespace = job.metadata.namespace;
  const assignmentCm = await (cluster.readConfigMap ?? cluster.getConfigMap).call(cluster, namespace, names.assignment(job.metadata.name));
  const current = publishedAssignment(assignmentCm);
  const reports = await readReports(cluster, job, current, job.spec.replicas);
  const decision = decideRescale({
    keyGroups: job.spec.keyGroups,
    replicas: job.spec.replicas,
    current,
    reports,
    checkpointsConfigured: job.spec.checkpoints !== undefined,
    now,
  });
  return { current, resourceVersion: assignmentCm?.metadata?.resourceVersion, reports, decision };
}

/** True when the view is a hand-over in progress that the reports move to its next phase. */
export function advances(view: HandoverView): boolean {
  return view.current?.handover !== undefined && view.decision.publish !== undefined;
}

/**
 * Publishes the next phase of a hand-over in progress, then tells (events, hand-over
 * metrics). False when another publisher changed the document since it was read (its
 * resourceVersion precondition failed): that one published this step, or a later one, and
 * told it; the caller decides again from the document now published.
 */
export async function publishAdvance(cluster: Cluster, job: AbacusJob, view: HandoverView): Promise<boolean> {
  const { decision, current } = view;
  try {
    await publishAssignment(cluster, job, decision.publish!, current?.generation, view.resourceVersion);
  } catch (err) {
    if (isConflict(err)) return false;
    throw err;
  }
  for (const e of decision.events) await cluster.event(job, e.type, e.reason, e.message);
  cluster.observeRescale?.(job, decision.finished, decision.completedSeconds);
  return true;
}

/** What advanceHandoverNow did. */
export type AdvanceOutcome = 'published' | 'nothing' | 'conflict';

/**
 * Advances a job's hand-over in progress and nothing else, outside the job's reconcile queue
 * (ADR 5): a worker's report arriving while the job's full reconcile is in flight would wait
 * for all of its applies, and the moved groups are paused until their next phase is
 * published. The full reconcile that follows finds the document advanced. Safe beside it: both
 * publish on the document's resourceVersion, so one of two concurrent publishers fails
 * ('conflict') and decides again.
 */
export async function advanceHandoverNow(cluster: Cluster, namespace: string, name: string, now: () => Date = () => new Date()): Promise<AdvanceOutcome> {
  const raw = await cluster.getJob(namespace, name);
  if (raw === undefined || raw.metadata.deletionTimestamp !== undefined) return 'nothing';
  const job: AbacusJob = { ...raw, spec: applyDefaults(specSchema.json, raw.spec) as AbacusJob['spec'] };
  const view = await readHandover(cluster, job, now());
  if (!advances(view)) return 'nothing';
  return (await publishAdvance(cluster, job, view)) ? 'published' : 'conflict';
}

/** The reports of every worker that may take part (unreadable ones are skipped: the hand-over waits for them). */
async function readReports(cluster: Cluster, job: AbacusJob, current: Assignment | undefined, replicas: number): Promise<Map<number, WorkerReport>> {
  const reports = new Map<number, WorkerReport>();
  const h = current?.handover;
  const ordinals = Math.max(replicas, current?.workers.length ?? 0, h?.targetReplicas ?? 0, h?.fromReplicas ?? 0);
  for (let o = 0; o < ordinals; o++) {
    const text = (await cluster.getConfigMap(job.metadata.namespace, names.workerStatus(job.metadata.name, o)))?.data?.[REPORT_KEY];
    if (text === undefined) continue;
    try {
      const report = parseReport(text);
      if (report.ordinal === o) reports.set(o, report);
    } catch {
      // A damaged report counts as none: the steps it would confirm wait.
    }
  }
  return reports;
}

/**
 * Publishes a document, on condition that the published one is still the one it was computed
 * from (server-side apply checks metadata.resourceVersion): two documents of one generation
 * never exist, even if a stale operator replica wrote meanwhile.
 */
export async function publishAssignment(cluster: Cluster, job: AbacusJob, next: Assignment, previousGeneration: number | undefined, resourceVersion: string | undefined): Promise<void> {
  const cm = desiredAssignmentConfigMap(job, next);
  if (resourceVersion !== undefined) cm.metadata = { ...cm.metadata, resourceVersion };
  await cluster.apply(cm);
  if (previousGeneration !== next.generation) {
    await cluster.event(
      job,
      'Normal',
      'AssignmentPublished',
      `Published key-group assignment generation ${next.generation}: ${job.spec.keyGroups} key groups over ${assignedWorkers(next)} workers${next.handover === undefined ? '' : `, ${next.handover.moves.length} still moving`}`,
    );
  }
}
