import type { V1ConfigMap, V1Role, V1RoleBinding, V1ServiceAccount } from '@kubernetes/client-node';
import type { AbacusJob } from '../api/abacusjob';
import { childMeta, names } from './names';
import { cleanupName } from '../../common/cleanup';

/**
 * The workers' identity, least privilege: a worker reads the assignment document and patches
 * its own report ConfigMap, nothing else (no list, no watch, no create, no Secrets). The
 * deletion cleanup runs under the same identity and patches `<job>-cleanup` (model/cleanup.ts). The
 * report ConfigMaps are created by the operator (`create` cannot be limited to names), one
 * per ordinal up to `ordinals`, which is why the Role lists them by name and follows the
 * replica count.
 */
export function desiredWorkerServiceAccount(job: AbacusJob): V1ServiceAccount {
  return { apiVersion: 'v1', kind: 'ServiceAccount', metadata: childMeta(job, names.workerIdentity(job.metadata.name), 'worker') };
}

export function desiredWorkerRole(job: AbacusJob, ordinals: number): V1Role {
  const name = job.metadata.name;
  const reports = Array.from({ length: ordinals }, (_, i) => names.workerStatus(name, i));
  return {
    apiVersion: 'rbac.authorization.k8s.io/v1',
    kind: 'Role',
    metadata: childMeta(job, names.workerIdentity(name), 'worker'),
    rules: [
      // list/watch by name (a metadata.name field selector): the worker is told of a new document at once.
      { apiGroups: [''], resources: ['configmaps'], resourceNames: [names.assignment(name)], verbs: ['get', 'list', 'watch'] },
      { apiGroups: [''], resources: ['configmaps'], resourceNames: [...reports, cleanupName(name)], verbs: ['get', 'patch'] },
    ],
  };
}

export function desiredWorkerRoleBinding(job: AbacusJob): V1RoleBinding {
  const name = names.workerIdentity(job.metadata.name);
  return {
    apiVersion: 'rbac.authorization.k8s.io/v1',
    kind: 'RoleBinding',
    metadata: childMeta(job, name, 'worker'),
    roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'Role', name },
    subjects: [{ kind: 'ServiceAccount', name, namespace: job.metadata.namespace }],
  };
}

/**
 * Worker `ordinal`'s report ConfigMap, without data: the operator's server-side apply owns
 * only the metadata, so re-applying it never touches what the worker wrote.
 */
export function desiredWorkerStatusConfigMap(job: AbacusJob, ordinal: number): V1ConfigMap {
  return { apiVersion: 'v1', kind: 'ConfigMap', metadata: childMeta(job, names.workerStatus(job.metadata.name, ordinal), 'worker-status') };
}
