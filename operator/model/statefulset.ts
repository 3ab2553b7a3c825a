import { nodeFlags, parseMemoryBudget, planMemory } from '../../common/memory-budget';
import type {
  V1Container,
  V1EnvVar,
  V1PersistentVolumeClaim,
  V1PodSpec,
  V1StatefulSet,
  V1TopologySpreadConstraint,
  V1Volume,
  V1VolumeMount,
} from '@kubernetes/client-node';
import type { AbacusJob } from '../api/abacusjob';
import { CONFIG_KEY, jobYaml, shortHash } from './config';
import { ASSIGNMENT_KEY } from '../../common/handover';
import { WORKER_MALLOC_ENV, workerNodeOptions } from '../../common/node-options';
import { POD_INDEX_LABEL, childMeta, commonLabels, names, selectorLabels } from './names';

export const CONFIG_DIR = '/etc/abacus/config';
export const ASSIGNMENT_DIR = '/etc/abacus/assignment';
export const DATA_DIR = '/var/lib/abacus';
export const KAFKA_CA_DIR = '/etc/abacus/kafka-ca';
export const DATA_VOLUME = 'data';
export const CONFIG_HASH_ANNOTATION = 'abacus.dev/config-hash';

/** The worker command line; `$(POD_INDEX)` is expanded by the kubelet from the env var below. */
export function workerArgs(): string[] {
  return [
    'worker',
    '--config', `${CONFIG_DIR}/${CONFIG_KEY}`,
    '--assignment', `${ASSIGNMENT_DIR}/${ASSIGNMENT_KEY}`,
    '--ordinal', '$(POD_INDEX)',
    '--data-dir', DATA_DIR,
    // The assignment is read through the API server (no kubelet sync delay) and hand-over
    // steps are reported there, with the pod's ServiceAccount (workerRbac in ./rbac.ts).
    '--kube-namespace', '$(POD_NAMESPACE)',
  ];
}

function secretEnv(name: string, secret: string, key: string): V1EnvVar {
  return { name, valueFrom: { secretKeyRef: { name: secret, key } } };
}

function nodeOptions(memoryBudget: string | undefined, engine: 'records' | 'native'): string {
  const unbudgeted = workerNodeOptions(engine);
  if (memoryBudget === undefined) return unbudgeted;
  try {
    return nodeFlags(planMemory(parseMemoryBudget(memoryBudget, 'memoryBudget')), engine).join(' ');
  } catch {
    return unbudgeted; // an unusable budget is an error of the worker config (validation); the worker refuses it
  }
}

/** Pod identity and credentials. Credentials come straight from Secrets: the operator never reads them. */
export function workerEnv(job: AbacusJob): V1EnvVar[] {
  const env: V1EnvVar[] = [
    { name: 'POD_INDEX', valueFrom: { fieldRef: { fieldPath: `metadata.labels['${POD_INDEX_LABEL}']` } } },
    { name: 'POD_NAME', valueFrom: { fieldRef: { fieldPath: 'metadata.name' } } },
    POD_NAMESPACE_ENV,
    { name: 'ABACUS_JOB', value: job.metadata.name },
    // Under a memory budget, the young generation and old-generation cap it allows (common/memory-budget.ts).
    { name: 'NODE_OPTIONS', value: nodeOptions(job.spec.memoryBudget, job.spec.engine) },
    ...Object.entries(WORKER_MALLOC_ENV).map(([name, value]) => ({ name, value })),
  ];
  env.push(...kafkaEnv(job));
  const cass = job.spec.sink.cassandra.credentialsSecretRef;
  if (cass !== undefined) {
    env.push(secretEnv('ABACUS_CASSANDRA_USERNAME', cass.name, cass.usernameKey), secretEnv('ABACUS_CASSANDRA_PASSWORD', cass.name, cass.passwordKey));
  }
  env.push(...checkpointEnv(job));
  return env;
}

export const POD_NAMESPACE_ENV: V1EnvVar = { name: 'POD_NAMESPACE', valueFrom: { fieldRef: { fieldPath: 'metadata.namespace' } } };

/** The Kafka SASL credentials and the brokers' CA, as the workers (and the deletion cleanup) get them. */
export function kafkaEnv(job: AbacusJob): V1EnvVar[] {
  const kafka = job.spec.source.kafka;
  const env: V1EnvVar[] = [];
  if (kafka.sasl !== undefined) {
    const ref = kafka.sasl.credentialsSecretRef;
    env.push(secretEnv('ABACUS_KAFKA_USERNAME', ref.name, ref.usernameKey), secretEnv('ABACUS_KAFKA_PASSWORD', ref.name, ref.passwordKey));
  }
  if (kafka.tls.caSecretRef !== undefined) {
    // Node adds this bundle to its trusted CAs, so the worker's TLS client trusts the brokers.
    env.push({ name: 'NODE_EXTRA_CA_CERTS', value: `${KAFKA_CA_DIR}/ca.crt` });
  }
  return env;
}

/**
 * The S3 credentials of the checkpoints, under the names the AWS SDK reads. Everything else
 * about checkpoints is in the job document (`checkpoints:` in config.ts).
 */
export function checkpointEnv(job: AbacusJob): V1EnvVar[] {
  const ref = job.spec.checkpoints?.s3.credentialsSecretRef;
  if (ref === undefined) return [];
  return [secretEnv('AWS_ACCESS_KEY_ID', ref.name, ref.accessKeyIdKey), secretEnv('AWS_SECRET_ACCESS_KEY', ref.name, ref.secretAccessKeyKey)];
}

/** The mounts every pod of the job has: its job document, /tmp, the brokers' CA when given. */
export function commonMounts(job: AbacusJob): V1VolumeMount[] {
  const mounts: V1VolumeMount[] = [
    { name: 'config', mountPath: CONFIG_DIR, readOnly: true },
    { name: 'tmp', mountPath: '/tmp' },
  ];
  if (job.spec.source.kafka.tls.caSecretRef !== undefined) mounts.push({ name: 'kafka-ca', mountPath: KAFKA_CA_DIR, readOnly: true });
  return mounts;
}

/** The volumes behind commonMounts. */
export function commonVolumes(job: AbacusJob): V1Volume[] {
  const volumes: V1Volume[] = [
    { name: 'config', configMap: { name: names.config(job.metadata.name) } },
    { name: 'tmp', emptyDir: {} },
  ];
  const ca = job.spec.source.kafka.tls.caSecretRef;
  if (ca !== undefined) volumes.push({ name: 'kafka-ca', secret: { secretName: ca.name, items: [{ key: ca.key, path: 'ca.crt' }] } });
  return volumes;
}

/** The image's user (Dockerfile), read-only root, no capabilities: the same for every container of the job. */
export const CONTAINER_SECURITY: V1Container['securityContext'] = { allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: { drop: ['ALL'] } };
export const POD_SECURITY: V1PodSpec['securityContext'] = {
  runAsNonRoot: true, runAsUser: 10001, runAsGroup: 10001, fsGroup: 10001, fsGroupChangePolicy: 'OnRootMismatch', seccompProfile: { type: 'RuntimeDefault' },
};

export function workerContainer(job: AbacusJob): V1Container {
  const spec = job.spec;
  const [config, ...rest] = commonMounts(job);
  const mounts: V1VolumeMount[] = [
    config!,
    // The whole ConfigMap, not a subPath: only directory mounts see updates, and the worker
    // follows assignment changes without restarting.
    { name: 'assignment', mountPath: ASSIGNMENT_DIR, readOnly: true },
    { name: DATA_VOLUME, mountPath: DATA_DIR },
    ...rest,
  ];
  const container: V1Container = {
    name: 'worker',
    image: spec.image,
    imagePullPolicy: spec.imagePullPolicy,
    command: ['abacus'],
    args: workerArgs(),
    env: workerEnv(job),
    ports: [{ name: 'http', containerPort: spec.metrics.port, protocol: 'TCP' }],
    livenessProbe: { httpGet: { path: '/healthz', port: 'http' }, periodSeconds: 10, timeoutSeconds: 5, failureThreshold: 6 },
    readinessProbe: { httpGet: { path: '/readyz', port: 'http' }, periodSeconds: 5, timeoutSeconds: 5, failureThreshold: 3 },
    volumeMounts: mounts,
    securityContext: CONTAINER_SECURITY,
  };
  if (spec.resources !== undefined) container.resources = spec.resources as V1Container['resources'];
  return container;
}

/** Fills in this job's workers as the selector of a spread constraint that gives none. */
export function spreadConstraints(job: AbacusJob): V1TopologySpreadConstraint[] | undefined {
  const list = job.spec.scheduling.topologySpreadConstraints;
  if (list === undefined) return undefined;
  return list.map((c) => (c.labelSelector === undefined ? { ...c, labelSelector: { matchLabels: selectorLabels(job.metadata.name) } } : c));
}

export function workerPodSpec(job: AbacusJob): V1PodSpec {
  const name = job.metadata.name;
  const [config, ...rest] = commonVolumes(job);
  const volumes: V1Volume[] = [config!, { name: 'assignment', configMap: { name: names.assignment(name) } }, ...rest];
  const pod: V1PodSpec = {
    serviceAccountName: names.workerIdentity(name),
    containers: [workerContainer(job)],
    volumes,
    // Room for the worker to finish its window and commit before SIGKILL.
    terminationGracePeriodSeconds: 60,
    enableServiceLinks: false,
    // The image's user (Dockerfile); a volume's files belong to its group.
    securityContext: POD_SECURITY,
  };
  return withScheduling(job, pod);
}

/** The job's scheduling settings and pull secrets, on any pod spec of the job. */
export function withScheduling(job: AbacusJob, pod: V1PodSpec): V1PodSpec {
  const spec = job.spec;
  const sched = spec.scheduling;
  if (sched.nodeSelector !== undefined) pod.nodeSelector = sched.nodeSelector;
  if (sched.affinity !== undefined) pod.affinity = sched.affinity;
  if (sched.tolerations !== undefined) pod.tolerations = sched.tolerations;
  const spread = spreadConstraints(job);
  if (spread !== undefined) pod.topologySpreadConstraints = spread;
  if (sched.priorityClassName !== undefined) pod.priorityClassName = sched.priorityClassName;
  if (spec.imagePullSecrets !== undefined) pod.imagePullSecrets = spec.imagePullSecrets;
  return pod;
}

export function volumeClaimTemplate(job: AbacusJob): V1PersistentVolumeClaim {
  const storage = job.spec.storage;
  return {
    apiVersion: 'v1',
    kind: 'PersistentVolumeClaim',
    metadata: { name: DATA_VOLUME, labels: commonLabels(job.metadata.name, 'worker') },
    spec: {
      accessModes: ['ReadWriteOnce'],
      resources: { requests: { storage: storage.size } },
      ...(storage.storageClassName === undefined ? {} : { storageClassName: storage.storageClassName }),
    },
  };
}

/** Hash of the pod template: the reference for classifying a spec change as a rolling update. */
export function templateHash(sts: V1StatefulSet): string {
  return shortHash(JSON.stringify(sts.spec?.template));
}

/**
 * The workers' StatefulSet. `replicas` is passed in rather than read from the spec because
 * the rescale phase decides when the StatefulSet follows the spec (see reconcile/phases.ts).
 */
export function desiredStatefulSet(job: AbacusJob, replicas: number): V1StatefulSet {
  const name = job.metadata.name;
  return {
    apiVersion: 'apps/v1',
    kind: 'StatefulSet',
    metadata: childMeta(job, names.statefulSet(name), 'worker'),
    spec: {
      replicas,
      serviceName: names.headlessService(name),
      // Workers are independent (each obeys its own slice of the assignment), so pods start
      // and stop in parallel instead of one after another.
      podManagementPolicy: 'Parallel',
      selector: { matchLabels: selectorLabels(name) },
      updateStrategy: { type: 'RollingUpdate', rollingUpdate: { partition: 0 } },
      persistentVolumeClaimRetentionPolicy: { whenDeleted: job.spec.storage.whenDeleted, whenScaled: job.spec.storage.whenScaled },
      template: {
        metadata: {
          labels: commonLabels(name, 'worker'),
          annotations: {
            // Config changes roll the pods; assignment changes deliberately do not.
            [CONFIG_HASH_ANNOTATION]: shortHash(jobYaml(job)),
            'prometheus.io/scrape': 'true',
            'prometheus.io/port': String(job.spec.metrics.port),
            'prometheus.io/path': '/metrics',
          },
        },
        spec: workerPodSpec(job),
      },
      volumeClaimTemplates: [volumeClaimTemplate(job)],
    },
  };
}
