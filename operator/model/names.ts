import type { V1OwnerReference } from '@kubernetes/client-node';
import { API_VERSION, KIND, type AbacusJob } from '../api/abacusjob';
import { assignmentConfigMapName, workerStatusConfigMapName } from '../../common/handover';

/**
 * Deterministic names and labels of everything the operator creates for a job. Names derive
 * from the job name alone, so a restarted operator finds what an earlier one created.
 */
export const FIELD_MANAGER = 'abacus-operator';
export const JOB_LABEL = 'abacus.dev/job';
export const MANAGED_BY = 'app.kubernetes.io/managed-by';
export const POD_INDEX_LABEL = 'apps.kubernetes.io/pod-index';

export const names = {
  statefulSet: (job: string) => job,
  headlessService: (job: string) => `${job}-workers`,
  metricsService: (job: string) => `${job}-metrics`,
  config: (job: string) => `${job}-config`,
  assignment: assignmentConfigMapName,
  /** Where worker `ordinal` reports its hand-over steps (the worker patches it; the operator creates it). */
  workerStatus: workerStatusConfigMapName,
  /** The workers' ServiceAccount, Role and RoleBinding: read the assignment, patch their own report. */
  workerIdentity: (job: string) => `${job}-worker`,
  pdb: (job: string) => job,
};

/** The StatefulSet selector: immutable once created, so it never includes anything that can change. */
export function selectorLabels(job: string): Record<string, string> {
  return { 'app.kubernetes.io/name': 'abacus-worker', [JOB_LABEL]: job };
}

/** The selector as the string the scale subresource's labelSelectorPath points at. */
export function selectorString(job: string): string {
  return Object.entries(selectorLabels(job))
    .map(([k, v]) => `${k}=${v}`)
    .join(',');
}

export function commonLabels(job: string, component: string): Record<string, string> {
  return {
    ...selectorLabels(job),
    'app.kubernetes.io/instance': job,
    'app.kubernetes.io/component': component,
    'app.kubernetes.io/part-of': 'abacus',
    [MANAGED_BY]: FIELD_MANAGER,
  };
}

/** Owner reference with controller: true, so the garbage collector deletes children with the job. */
export function ownerReference(job: AbacusJob): V1OwnerReference {
  return { apiVersion: API_VERSION, kind: KIND, name: job.metadata.name, uid: job.metadata.uid, controller: true, blockOwnerDeletion: true };
}

export function childMeta(job: AbacusJob, name: string, component: string) {
  return {
    name,
    namespace: job.metadata.namespace,
    labels: commonLabels(job.metadata.name, component),
    ownerReferences: [ownerReference(job)],
  };
}
