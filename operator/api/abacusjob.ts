import type { V1Affinity, V1Toleration, V1TopologySpreadConstraint } from '@kubernetes/client-node';
import { DURATION_PATTERN, SIZE_PATTERN } from '../../common/duration';
import { MAX_KEY_GROUPS } from '../../common/keygroups';
import {
  QUANTITY_PATTERN,
  array,
  boolean,
  enumeration,
  integer,
  object,
  opaque,
  quantityMap,
  string,
  stringMap,
  type TypeOf,
} from './schema';

/**
 * The AbacusJob API, written once. `crds/` and the chart's CRD are generated from these
 * schema objects (`npm run gen:crd`, checked by test/unit/operator-crd.test.ts), and the
 * operator's TypeScript types are derived from them below.
 */
export const GROUP = 'abacus.dev';
export const VERSION = 'v1alpha1';
export const API_VERSION = `${GROUP}/${VERSION}`;
export const KIND = 'AbacusJob';
export const PLURAL = 'abacusjobs';
export const SINGULAR = 'abacusjob';
export const SHORT_NAMES = ['abj'];

const DNS_SUBDOMAIN = '^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$';
const CQL_IDENTIFIER = '^[a-zA-Z][a-zA-Z0-9_]{0,47}$';

const secretName = string({ description: 'Name of a Secret in the AbacusJob\'s namespace.', required: true, pattern: DNS_SUBDOMAIN, maxLength: 253 });
const secretKey = (what: string, key: string) =>
  string({ description: `Key in the Secret that holds the ${what}.`, default: key, minLength: 1, maxLength: 253 });

const usernamePasswordSecret = (what: string) =>
  object(
    {
      name: secretName,
      usernameKey: secretKey(`${what} user name`, 'username'),
      passwordKey: secretKey(`${what} password`, 'password'),
    },
    { description: `Secret with the ${what} credentials; the operator passes them to the workers as environment variables, never reads them itself.` },
  );

const duration = (description: string, def: string) =>
  string({ description: `${description} A number and a unit: ms, s, m, h or d (e.g. 500ms, 5m, 7d).`, default: def, pattern: DURATION_PATTERN });
const size = (description: string, def: string) =>
  string({ description: `${description} Bytes, or a number with a unit such as Ki, Mi, Gi, KB, MB (e.g. 64Mi).`, default: def, pattern: SIZE_PATTERN });

export const kafkaSchema = object(
  {
    brokers: array(string({ description: 'host:port', minLength: 1, maxLength: 512 }), {
      description: 'Bootstrap brokers, as host:port.',
      required: true,
      minItems: 1,
      maxItems: 64,
    }),
    topic: string({ description: 'Input topic (any partitioning).', required: true, minLength: 1, maxLength: 249 }),
    keyedTopic: string({ description: 'The job\'s keyed topic, one partition per key group. Defaults to <namespace>.<job>-keyed.', minLength: 1, maxLength: 249 }),
    deadLetterTopic: string({ description: 'Topic for invalid records. Defaults to <namespace>.<job>-dead-letter.', minLength: 1, maxLength: 249 }),
    inputKeyed: boolean({ description: 'True when the input topic is already partitioned by key group, so the route stage is skipped.', default: false }),
    bundles: boolean({ description: 'The route stage writes the events of a key group from a chunk of input as one keyed-topic record. Set false while upgrading from a version before bundles (its workers cannot read them); true once every worker runs this version.', default: true }),
    clientId: string({ description: 'Kafka client id. Defaults to abacus-<namespace>.<job>.', minLength: 1, maxLength: 255 }),
    tls: object(
      {
        enabled: boolean({ description: 'Connect to the brokers with TLS.', default: false }),
        caSecretRef: object(
          {
            name: secretName,
            key: secretKey('PEM CA bundle', 'ca.crt'),
          },
          { description: 'Secret with the CA bundle that signs the brokers\' certificates (mounted and trusted by the worker). Omit to trust the image\'s CAs.' },
        ),
      },
      { description: 'TLS to the brokers.', default: {} },
    ),
    sasl: object(
      {
        mechanism: enumeration(['plain', 'scram-sha-256', 'scram-sha-512'] as const, { description: 'SASL mechanism.', required: true }),
        credentialsSecretRef: { ...usernamePasswordSecret('Kafka SASL'), presence: 'required' as const },
      },
      { description: 'SASL authentication; credentials become ABACUS_KAFKA_USERNAME / ABACUS_KAFKA_PASSWORD in the workers.' },
    ),
  },
  { description: 'Kafka input.', required: true },
);

export const cassandraSchema = object(
  {
    contactPoints: array(string({ description: 'host or host:port', minLength: 1, maxLength: 512 }), {
      description: 'Cassandra contact points.',
      required: true,
      minItems: 1,
      maxItems: 64,
    }),
    localDataCenter: string({ description: 'The data center the workers treat as local.', default: 'datacenter1', minLength: 1 }),
    keyspace: string({ description: 'Keyspace of the counts table.', default: 'abacus', pattern: CQL_IDENTIFIER }),
    table: string({ description: 'Table of final counts. Defaults to one derived from the namespace and job name, so jobs sharing a keyspace never share a table (docs/cassandra.md).', pattern: CQL_IDENTIFIER, maxLength: 48 }),
    consistency: enumeration(['ONE', 'LOCAL_ONE', 'QUORUM', 'LOCAL_QUORUM', 'ALL'] as const, { description: 'Write consistency level.', default: 'LOCAL_QUORUM' }),
    mode: enumeration(['final', 'delta'] as const, {
      description: 'final writes totals (idempotent, the default); delta adds increments to a counter table for legacy readers.',
      default: 'final',
    }),
    createSchema: boolean({ description: 'Create the keyspace and table when missing (development clusters).', default: false }),
    replicationFactor: integer({ description: 'Replication factor used when createSchema creates the keyspace.', default: 1, minimum: 1, maximum: 32 }),
    credentialsSecretRef: usernamePasswordSecret('Cassandra'),
  },
  { description: 'Cassandra output.', required: true },
);

export const checkpointsSchema = object(
  {
    s3: object(
      {
        endpoint: string({ description: 'S3 endpoint URL for S3-compatible stores (omit for AWS).', pattern: '^https?://.+', maxLength: 2048 }),
        region: string({ description: 'S3 region.', default: 'us-east-1', minLength: 1 }),
        bucket: string({ description: 'Bucket that holds the checkpoints.', required: true, minLength: 3, maxLength: 63 }),
        prefix: string({ description: 'Key prefix; the job name is appended. Defaults to "abacus/".', default: 'abacus/', maxLength: 512 }),
        forcePathStyle: boolean({ description: 'Use path-style addressing (most S3-compatible stores need it).', default: true }),
        credentialsSecretRef: object(
          {
            name: secretName,
            accessKeyIdKey: secretKey('access key id', 'AWS_ACCESS_KEY_ID'),
            secretAccessKeyKey: secretKey('secret access key', 'AWS_SECRET_ACCESS_KEY'),
          },
          { description: 'Secret with the S3 credentials; they become AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY in the workers.' },
        ),
      },
      { description: 'S3-compatible object store.', required: true },
    ),
    interval: duration('Time between checkpoints.', '5m'),
    retention: integer({ description: 'Number of completed checkpoints kept; older ones are deleted when nothing references them.', default: 3, minimum: 1, maximum: 1000 }),
  },
  { description: 'Checkpoints: consistent snapshots of every key group\'s state and offsets, from which moved or lost key groups are restored.' },
);

export const specSchema = object(
  {
    image: string({ description: 'Worker container image (runs `abacus worker`).', required: true, minLength: 1, maxLength: 1024 }),
    imagePullPolicy: enumeration(['Always', 'IfNotPresent', 'Never'] as const, { description: 'Image pull policy of the worker container.', default: 'IfNotPresent' }),
    imagePullSecrets: array(
      object({ name: { ...secretName, json: { ...secretName.json, description: 'Secret name.' } } }, { description: 'A pull secret.' }),
      { description: 'Pull secrets for the worker image.', maxItems: 16 },
    ),
    replicas: integer({ description: 'Number of workers. Between 1 and keyGroups; change it with `kubectl scale`.', default: 1, minimum: 1, maximum: MAX_KEY_GROUPS }),
    keyGroups: integer({
      description: 'K, the number of key groups: the unit of state, of keyed-topic partitions and of rescaling. Fixed for the job\'s life.',
      default: 128,
      minimum: 1,
      maximum: MAX_KEY_GROUPS,
      validations: [{ rule: 'self == oldSelf', message: 'keyGroups is immutable: state is partitioned by it; create a new job to change it' }],
    }),
    level: enumeration(['account', 'customer'] as const, {
      description: 'account counts per (company, statistic) and routes by it; customer counts per customer.',
      default: 'account',
    }),
    facets: object(
      {
        include: array(string({ description: 'A top-level field name.', minLength: 1, maxLength: 256 }), {
          description: 'Only these top-level fields are facets.',
          maxItems: 256,
          listType: 'set',
        }),
        exclude: array(string({ description: 'A top-level field name.', minLength: 1, maxLength: 256 }), {
          description: 'Every top-level scalar field except these is a facet.',
          maxItems: 256,
          listType: 'set',
        }),
      },
      {
        description: 'Which event fields are facets. Set include or exclude, not both. Changing it needs a new job.',
        default: {},
        validations: [{ rule: '!(has(self.include) && has(self.exclude))', message: 'facets: set include or exclude, not both' }],
      },
    ),
    granularities: array(enumeration(['hour', 'day', 'month'] as const, { description: 'A time bucket size.' }), {
      description: 'Time buckets counted. Changing them needs a new job.',
      default: ['hour', 'day', 'month'],
      minItems: 1,
      maxItems: 3,
      listType: 'set',
    }),
    window: duration('Processing-time window: how often accumulated changes are flushed to state and sink. Never changes a count.', '1s'),
    maxEventBytes: size('Largest accepted event.', '1Mi'),
    dedup: object({ retention: duration('How long an event identity is remembered for deduplication.', '7d') }, { description: 'Deduplication.', default: {} }),
    uniques: object({ retention: duration('How long a customer is remembered as already counted in a bucket.', '7d') }, { description: 'Uniqueness.', default: {} }),
    engine: enumeration(['records', 'native'] as const, {
      description:
        'Counting engine. records: state records in RocksDB behind a cache, bounded by memoryBudget. native: the Rust counting kernel, several times faster per core, its state in memory, spilling dedup identities and uniqueness markers to RocksDB under memoryBudget (counters and customers stay in memory). Fixed for the job\'s life: the state is written for one engine.',
      default: 'records',
      validations: [{ rule: 'self == oldSelf', message: 'engine is immutable: the state is written for one engine; create a new job to change it' }],
    }),
    stateCacheEntries: integer({ description: 'State records kept in memory across windows. Not used when memoryBudget is set.', default: 2_000_000, minimum: 1000, maximum: 1_000_000_000 }),
    memoryBudget: string({
      description:
        "One size that bounds each worker's memory (512Mi to 1Ti, e.g. 2Gi): the state cache (engine native: the kernel's tables), the Bloom filter, RocksDB's block cache and write buffers and the Node.js young generation are sized from it, so stateCacheEntries, rocksdb.blockCacheSize and rocksdb.writeBufferSize are not used. Must not exceed resources.limits.memory. Bytes, or a number with a unit such as Mi, Gi.",
      pattern: SIZE_PATTERN,
    }),
    source: object({ kafka: kafkaSchema }, { description: 'Where events come from.', required: true }),
    sink: object({ cassandra: cassandraSchema }, { description: 'Where final counts go.', required: true }),
    rocksdb: object(
      {
        blockCacheSize: size('RocksDB block cache.', '256Mi'),
        writeBufferSize: size('RocksDB write buffer (memtable) size.', '64Mi'),
        blockSize: size('RocksDB data block size.', '16Ki'),
        maxOpenFiles: integer({ description: 'RocksDB max open files (-1: unlimited).', default: 1000, minimum: -1, maximum: 1_000_000 }),
      },
      { description: 'RocksDB tuning.', default: {} },
    ),
    storage: object(
      {
        size: string({ description: 'Size of each worker\'s RocksDB volume (a Kubernetes quantity).', default: '10Gi', pattern: QUANTITY_PATTERN }),
        storageClassName: string({ description: 'StorageClass of the volumes; omit for the cluster default.', maxLength: 253 }),
        whenDeleted: enumeration(['Retain', 'Delete'] as const, {
          description: 'What happens to the volumes when the AbacusJob is deleted. Retain (default) keeps local state for a job recreated under the same name.',
          default: 'Retain',
        }),
        whenScaled: enumeration(['Retain', 'Delete'] as const, {
          description: 'What happens to a removed worker\'s volume on scale-down. Delete (default): its key groups were handed over through a checkpoint, so the copy is stale.',
          default: 'Delete',
        }),
      },
      { description: 'Per-worker persistent volume for RocksDB.', default: {} },
    ),
    checkpoints: checkpointsSchema,
    whenDeleted: enumeration(['Retain', 'Delete'] as const, {
      description:
        'What happens to the job\'s state outside Kubernetes when the AbacusJob is deleted: its checkpoints (the job\'s S3 prefix), its keyed topic and its consumer groups. ' +
        'Retain (default) keeps them, so a job recreated under the same name resumes from them. Delete removes them all, after the workers have stopped, before the AbacusJob goes; ' +
        'one setting for all three because checkpoints hold offsets into the keyed topic: keeping one without the other would make a recreated job count twice or lose counts.',
      default: 'Retain',
    }),
    resources: object(
      {
        requests: quantityMap({ description: 'Minimum resources, e.g. cpu: 500m, memory: 1Gi.' }),
        limits: quantityMap({ description: 'Maximum resources.' }),
      },
      { description: 'Worker container resources. Leave room for the RocksDB block cache and write buffers in memory.' },
    ),
    scheduling: object(
      {
        nodeSelector: stringMap({ description: 'Node labels the workers must run on.', maxProperties: 64 }),
        affinity: opaque<V1Affinity>({ description: 'Pod affinity (core/v1 Affinity).' }),
        tolerations: array(opaque<V1Toleration>({ description: 'A core/v1 Toleration.' }), { description: 'Tolerations.', maxItems: 64 }),
        topologySpreadConstraints: array(opaque<V1TopologySpreadConstraint>({ description: 'A core/v1 TopologySpreadConstraint; its labelSelector may be omitted to mean this job\'s workers.' }), {
          description: 'How workers spread over zones and nodes.',
          maxItems: 16,
        }),
        priorityClassName: string({ description: 'PriorityClass of the worker pods.', maxLength: 253 }),
      },
      { description: 'Where the workers run.', default: {} },
    ),
    metrics: object(
      { port: integer({ description: 'Worker HTTP port: /metrics, /healthz, /readyz.', default: 9400, minimum: 1, maximum: 65535 }) },
      { description: 'Worker metrics and health endpoints.', default: {} },
    ),
  },
  {
    description: 'Desired state of an exact-counting job.',
    required: true,
    validations: [
      {
        rule: 'self.replicas <= self.keyGroups',
        // A static message: the API server's cost estimate rejects string-building messageExpressions here.
        message: 'replicas must not exceed keyGroups: every worker needs at least one key group',
        reason: 'FieldValueInvalid',
        fieldPath: '.replicas',
      },
    ],
  },
);

const condition = object(
  {
    type: string({ description: 'Ready, Progressing or Degraded.', required: true, maxLength: 316 }),
    status: enumeration(['True', 'False', 'Unknown'] as const, { description: 'Condition status.', required: true }),
    reason: string({ description: 'CamelCase reason from a closed set (docs/operator.md).', required: true, maxLength: 1024 }),
    message: string({ description: 'Human-readable detail.', required: true, maxLength: 32768 }),
    lastTransitionTime: string({ description: 'When status last changed.', required: true, format: 'date-time' }),
    observedGeneration: integer({ description: 'The .metadata.generation the condition was computed from.', required: true, minimum: 0 }),
  },
  { description: 'A condition.' },
);

export const statusSchema = object(
  {
    observedGeneration: integer({ description: 'The .metadata.generation this status describes.', minimum: 0 }),
    phase: enumeration(['Pending', 'Running', 'Scaling', 'Updating', 'Degraded', 'Invalid'] as const, {
      description: 'Summary for the printer column, derived from the conditions.',
    }),
    replicas: integer({ description: 'Workers that exist (scale subresource statusReplicasPath).', minimum: 0 }),
    readyReplicas: integer({ description: 'Workers that are ready.', minimum: 0 }),
    updatedReplicas: integer({ description: 'Workers running the current pod template.', minimum: 0 }),
    selector: string({ description: 'Label selector of the workers, as a string (scale subresource labelSelectorPath).' }),
    conditions: array(condition, { description: 'Ready, Progressing, Degraded.', listType: 'map', listMapKeys: ['type'], maxItems: 16 }),
    assignment: object(
      {
        generation: integer({ description: 'Generation of the published assignment document.', required: true, minimum: 0 }),
        workers: integer({ description: 'Workers the published assignment gives key groups to.', required: true, minimum: 0 }),
        configMap: string({ description: 'ConfigMap that holds it (key assignment.json).', required: true }),
        targetReplicas: integer({ description: 'While key groups move: the worker count they move to.', minimum: 1 }),
        movedKeyGroups: integer({ description: 'While key groups move: how many have arrived.', minimum: 0 }),
        movingKeyGroups: integer({ description: 'While key groups move: how many this hand-over moves in total.', minimum: 0 }),
        startedAt: string({ description: 'While key groups move: when the hand-over started.', format: 'date-time' }),
      },
      { description: 'The key-group assignment currently published to the workers.' },
    ),
    lastApplied: object(
      {
        generation: integer({ description: 'Spec generation last applied.', required: true, minimum: 0 }),
        replicas: integer({ description: 'Replicas last applied.', required: true, minimum: 0 }),
        image: string({ description: 'Image last applied.', required: true }),
        templateHash: string({ description: 'Hash of the worker pod template last applied.', required: true }),
        configHash: string({ description: 'Hash of the job.yaml last applied.', required: true }),
        stateFingerprint: string({ description: 'Hash of the settings that decide what state means (level, keyGroups, granularities, facets, maxEventBytes, engine).', required: true }),
      },
      { description: 'What the operator last applied: the reference a spec change is classified against.' },
    ),
    inputLag: string({ description: 'Input lag reported by the workers (e.g. 3s).' }),
    lastCheckpointTime: string({ description: 'When the last complete checkpoint was written.', format: 'date-time' }),
  },
  { description: 'Observed state, written by the operator.' },
);

export type AbacusJobSpec = TypeOf<typeof specSchema>;
export type AbacusJobStatus = TypeOf<typeof statusSchema>;
export type KafkaSpec = TypeOf<typeof kafkaSchema>;
export type CassandraSpec = TypeOf<typeof cassandraSchema>;
export type CheckpointsSpec = TypeOf<typeof checkpointsSchema>;
export type Condition = NonNullable<AbacusJobStatus['conditions']>[number];
export type Phase = NonNullable<AbacusJobStatus['phase']>;

export interface ObjectMeta {
  name: string;
  namespace: string;
  uid: string;
  generation: number;
  resourceVersion?: string;
  creationTimestamp?: string;
  deletionTimestamp?: string;
  finalizers?: string[];
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}

export interface AbacusJob {
  apiVersion: typeof API_VERSION;
  kind: typeof KIND;
  metadata: ObjectMeta;
  spec: AbacusJobSpec;
  status?: AbacusJobStatus;
}

export const PRINTER_COLUMNS = [
  { name: 'Replicas', type: 'integer', jsonPath: '.spec.replicas', description: 'Desired workers.' },
  { name: 'Ready', type: 'integer', jsonPath: '.status.readyReplicas', description: 'Ready workers.' },
  { name: 'Phase', type: 'string', jsonPath: '.status.phase', description: 'Summary of the conditions.' },
  { name: 'Input Lag', type: 'string', jsonPath: '.status.inputLag', description: 'Input lag reported by the workers.' },
  { name: 'Last Checkpoint', type: 'date', jsonPath: '.status.lastCheckpointTime', description: 'Last complete checkpoint.' },
  { name: 'Age', type: 'date', jsonPath: '.metadata.creationTimestamp' },
];

/** The CustomResourceDefinition, as a plain object (serialised by gen-crd.ts). */
export function customResourceDefinition(): Record<string, unknown> {
  return {
    apiVersion: 'apiextensions.k8s.io/v1',
    kind: 'CustomResourceDefinition',
    metadata: {
      name: `${PLURAL}.${GROUP}`,
      labels: { 'app.kubernetes.io/name': 'abacus', 'app.kubernetes.io/component': 'crd' },
    },
    spec: {
      group: GROUP,
      names: { kind: KIND, listKind: `${KIND}List`, plural: PLURAL, singular: SINGULAR, shortNames: SHORT_NAMES, categories: ['abacus'] },
      scope: 'Namespaced',
      versions: [
        {
          name: VERSION,
          served: true,
          storage: true,
          schema: {
            openAPIV3Schema: {
              type: 'object',
              description: 'AbacusJob runs a real-time exact-counting job: a StatefulSet of workers that read Kafka, keep state in RocksDB and write counts to Cassandra.',
              properties: {
                apiVersion: { type: 'string', description: 'API version of the object.' },
                kind: { type: 'string', description: 'Kind of the object.' },
                metadata: { type: 'object' },
                spec: specSchema.json,
                status: statusSchema.json,
              },
              required: ['spec'],
              'x-kubernetes-validations': [
                {
                  rule: 'size(self.metadata.name) <= 52',
                  message: 'metadata.name must be at most 52 characters: the workers\' StatefulSet and Services are named after it',
                },
              ],
            },
          },
          subresources: {
            status: {},
            scale: { specReplicasPath: '.spec.replicas', statusReplicasPath: '.status.replicas', labelSelectorPath: '.status.selector' },
          },
          additionalPrinterColumns: PRINTER_COLUMNS,
        },
      ],
    },
  };
}
