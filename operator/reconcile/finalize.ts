import type { AbacusJob } from '../api/abacusjob';
import type { CleanupReport } from '../../common/cleanup';

/**
 * The AbacusJob finalizer. It is added before anything outside the job object exists
 * (StatefulSet, topics, checkpoints), so no job can vanish without its deletion policy
 * (`spec.whenDeleted`) having run; it is removed last, once that policy is done.
 */
export const FINALIZER = 'abacus.dev/cleanup';

export const hasFinalizer = (job: AbacusJob): boolean => (job.metadata.finalizers ?? []).includes(FINALIZER);

/** What the operator sees of the deletion's moving parts. */
export interface DeletionObservation {
  readonly policy: 'Retain' | 'Delete';
  /** The workers' StatefulSet; undefined when it does not exist. */
  readonly workers?: { readonly specReplicas: number; readonly pods: number; readonly observedGeneration?: number; readonly generation?: number };
  /** The cleanup Job; undefined before it is created. */
  readonly cleanupJob?: { readonly succeeded: boolean; readonly failed: boolean; readonly failedPods: number };
  readonly report?: CleanupReport;
  /** Whether the job document (`<job>-config`) exists: without it no worker ever ran, and the cleanup pod could not start. */
  readonly configExists?: boolean;
}

export type DeletionAction =
  | 'removeFinalizer' // Retain, or the cleanup finished
  | 'stopWorkers' //     scale the StatefulSet to 0: a running worker would write new checkpoints and recreate the topic
  | 'startCleanup' //    no worker left: create the cleanup Job (and its report ConfigMap, and the identity it runs as)
  | 'wait'; //           pods stopping, or the cleanup Job running / blocked / failed: requeue

export interface DeletionStep {
  readonly action: DeletionAction;
  /** The Deleting condition to show (none when the finalizer goes). */
  readonly condition?: { readonly reason: 'StoppingWorkers' | 'DeletingState' | 'CleanupBlocked' | 'CleanupFailed'; readonly message: string; readonly warning: boolean };
  /** The cleanup's own summary, for the StateDeleted Event. */
  readonly deleted?: string;
}

/** Names the step's messages need. */
export interface DeletionNames {
  readonly namespace: string;
  readonly job: string;
  readonly statefulSet: string;
  readonly cleanupJob: string;
}

/**
 * The deletion path as a pure function of what is observed: Retain lifts the finalizer at
 * once; Delete stops the workers (scale to 0: owner references and the garbage collector
 * remove the StatefulSet itself after the job), then runs the cleanup Job under the job's
 * own identity and lifts the finalizer when it succeeded. Every waiting step says what it
 * waits for, and a blocked or failed cleanup says what to do.
 */
export function decideDeletion(o: DeletionObservation, n: DeletionNames): DeletionStep {
  if (o.policy === 'Retain') return { action: 'removeFinalizer' };
  const retainHint = `to keep the job's state and let the AbacusJob go instead: kubectl patch abacusjob ${n.job} -n ${n.namespace} --type merge -p '{"spec":{"whenDeleted":"Retain"}}'`;
  const w = o.workers;
  if (w !== undefined && w.specReplicas > 0) {
    return { action: 'stopWorkers', condition: { reason: 'StoppingWorkers', message: `whenDeleted=Delete: scaling the workers (StatefulSet ${n.statefulSet}) to 0 before their checkpoints and Kafka topic are deleted`, warning: false } };
  }
  const settled = w === undefined || w.observedGeneration === undefined || w.generation === undefined || w.observedGeneration >= w.generation;
  if (w !== undefined && (w.pods > 0 || !settled)) {
    return { action: 'wait', condition: { reason: 'StoppingWorkers', message: `whenDeleted=Delete: waiting for ${w.pods} worker pod(s) of StatefulSet ${n.statefulSet} to stop`, warning: false } };
  }
  const c = o.cleanupJob;
  if (c === undefined && w === undefined && o.configExists === false) return { action: 'removeFinalizer', deleted: 'nothing to delete: the job never ran (its spec was never applied)' };
  if (c === undefined) {
    return { action: 'startCleanup', condition: { reason: 'DeletingState', message: `whenDeleted=Delete: workers stopped; starting the cleanup Job ${n.cleanupJob} (the job's image and ServiceAccount) to delete the checkpoints and the job's Kafka topic and groups`, warning: false } };
  }
  if (c.succeeded) return { action: 'removeFinalizer', deleted: o.report?.state === 'done' ? o.report.message : `the cleanup Job ${n.cleanupJob} succeeded` };
  const logs = `kubectl logs job/${n.cleanupJob} -n ${n.namespace}`;
  if (c.failed) {
    const why = o.report === undefined ? 'it wrote no report' : `its last report: ${o.report.message}`;
    return {
      action: 'wait',
      condition: {
        reason: 'CleanupFailed',
        message: `whenDeleted=Delete: the cleanup Job ${n.cleanupJob} failed (${why}; see ${logs}). Fix the cause, then run it again: kubectl delete job ${n.cleanupJob} -n ${n.namespace} (the operator starts a new one); ${retainHint}`,
        warning: true,
      },
    };
  }
  if (o.report?.state === 'blocked') {
    return {
      action: 'wait',
      condition: { reason: 'CleanupBlocked', message: `whenDeleted=Delete: ${o.report.message} (it retries by itself; ${logs}); ${retainHint}`, warning: true },
    };
  }
  const progress = o.report === undefined ? `no report yet${c.failedPods > 0 ? ` (${c.failedPods} pod(s) failed; see ${logs})` : ''}` : o.report.message;
  return { action: 'wait', condition: { reason: 'DeletingState', message: `whenDeleted=Delete: the cleanup Job ${n.cleanupJob} is running: ${progress}`, warning: false } };
}
