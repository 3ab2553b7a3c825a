import type { V1ConfigMap, V1Job } from '@kubernetes/client-node';
import type { AbacusJob } from '../api/abacusjob';
import { cleanupName } from '../../common/cleanup';
import { CONFIG_KEY } from './config';
import { childMeta, FIELD_MANAGER, JOB_LABEL, MANAGED_BY, names } from './names';
import { checkpointEnv, commonMounts, commonVolumes, CONFIG_DIR, CONTAINER_SECURITY, kafkaEnv, POD_NAMESPACE_ENV, POD_SECURITY, withScheduling } from './statefulset';

/**
 * The deletion cleanup (spec.whenDeleted: Delete) as a Kubernetes Job: `abacus cleanup` from
 * the job's own image, under the workers' ServiceAccount, with the job document and exactly
 * the S3 and Kafka credentials the workers get (not Cassandra's: it touches no counts). So
 * the operator reads no Secret and holds no S3 or Kafka right (docs/adr/0010).
 *
 * Its pods carry their own name label (`abacus-cleanup`), never the workers' selector
 * labels: the StatefulSet, the PodDisruptionBudget and the metrics Service must not count them.
 */
export function desiredCleanupJob(job: AbacusJob): V1Job {
  const name = job.metadata.name;
  const spec = job.spec;
  return {
    apiVersion: 'batch/v1',
    kind: 'Job',
    metadata: childMeta(job, cleanupName(name), 'cleanup'),
    spec: {
      // The command retries S3 and Kafka failures itself (reporting each); pod restarts are
      // only for crashes. A failed Job is reported with what to do (reconcile/finalize.ts).
      backoffLimit: 3,
      template: {
        metadata: {
          labels: { 'app.kubernetes.io/name': 'abacus-cleanup', [JOB_LABEL]: name, 'app.kubernetes.io/component': 'cleanup', 'app.kubernetes.io/part-of': 'abacus', [MANAGED_BY]: FIELD_MANAGER },
        },
        spec: withScheduling(job, {
          serviceAccountName: names.workerIdentity(name),
          restartPolicy: 'Never',
          enableServiceLinks: false,
          securityContext: POD_SECURITY,
          volumes: commonVolumes(job),
          containers: [
            {
              name: 'cleanup',
              image: spec.image,
              imagePullPolicy: spec.imagePullPolicy,
              command: ['abacus'],
              args: ['cleanup', '--config', `${CONFIG_DIR}/${CONFIG_KEY}`, '--kube-namespace', '$(POD_NAMESPACE)', '--report', cleanupName(name)],
              env: [POD_NAMESPACE_ENV, ...kafkaEnv(job), ...checkpointEnv(job)],
              volumeMounts: commonMounts(job),
              securityContext: CONTAINER_SECURITY,
            },
          ],
        }),
      },
    },
  };
}

/** The cleanup's report ConfigMap, without data: the cleanup pod writes cleanup.json (common/cleanup.ts). */
export function desiredCleanupReportConfigMap(job: AbacusJob): V1ConfigMap {
  return { apiVersion: 'v1', kind: 'ConfigMap', metadata: childMeta(job, cleanupName(job.metadata.name), 'cleanup') };
}
