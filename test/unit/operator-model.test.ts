import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parse } from 'yaml';
import { evenAssignment, parseAssignment } from '../../common/assignment';
import { resolveJobConfig } from '../../common/job-config';
import { assignedWorkers, desiredAssignmentConfigMap, publishedAssignment } from '../../operator/model/assignment';
import { CONFIG_KEY, desiredConfigMap, stateFingerprintHash } from '../../operator/model/config';
import { selectorString } from '../../operator/model/names';
import { desiredHeadlessService, desiredMetricsService, desiredPodDisruptionBudget } from '../../operator/model/services';
import { CONFIG_HASH_ANNOTATION, desiredStatefulSet } from '../../operator/model/statefulset';
import { loadExample, minimalJob } from './operator-fixtures';

const examples = ['account-level.yaml', 'customer-level.yaml'];

for (const file of examples) {
  test(`${file}: job.yaml round-trips through the worker's resolveJobConfig`, () => {
    const job = loadExample(file);
    const cm = desiredConfigMap(job);
    const config = resolveJobConfig(parse(cm.data![CONFIG_KEY]!) as Record<string, unknown>);
    assert.equal(config.name, job.metadata.name);
    assert.equal(config.level, job.spec.level);
    assert.equal(config.keyGroups, job.spec.keyGroups);
    assert.deepEqual([...config.granularities].sort(), [...job.spec.granularities].sort());
    assert.equal(config.kafka?.topic, job.spec.source.kafka.topic);
    assert.equal(config.kafka?.inputKeyed, job.spec.source.kafka.inputKeyed);
    assert.equal(config.kafka?.tls, job.spec.source.kafka.tls.enabled);
    assert.equal(config.cassandra?.mode, job.spec.sink.cassandra.mode);
    assert.equal(config.cassandra?.table, job.spec.sink.cassandra.table);
    assert.equal(config.metricsPort, job.spec.metrics.port);
  });
}

test('job.yaml: facets, retention, rocksdb and window map field by field', () => {
  const cases: { spec: Record<string, unknown>; check: (c: ReturnType<typeof resolveJobConfig>) => void }[] = [
    { spec: { facets: { include: ['country'] } }, check: (c) => assert.deepEqual(c.facets, { include: ['country'], exclude: [] }) },
    { spec: { facets: { exclude: ['x'] } }, check: (c) => assert.deepEqual(c.facets, { exclude: ['x'] }) },
    { spec: {}, check: (c) => assert.deepEqual(c.facets, { exclude: [] }) },
    { spec: { window: '250ms' }, check: (c) => assert.equal(c.windowMs, 250) },
    { spec: { dedup: { retention: '2d' } }, check: (c) => assert.equal(c.dedupRetentionMs, 2 * 86_400_000) },
    { spec: { rocksdb: { blockCacheSize: '1Gi' } }, check: (c) => assert.equal(c.rocksdb.blockCacheSize, 2 ** 30) },
    { spec: { level: 'customer' }, check: (c) => assert.equal(c.level, 'customer') },
    { spec: {}, check: (c) => assert.equal(c.engine, 'records') },
    { spec: { engine: 'native' }, check: (c) => assert.equal(c.engine, 'native') },
    { spec: { memoryBudget: '2Gi' }, check: (c) => assert.equal(c.memory?.budget, 2 * 2 ** 30) },
    {
      spec: { checkpoints: { s3: { endpoint: 'http://s3:9000', bucket: 'ckpt', prefix: 'abacus', region: 'eu-west-1', forcePathStyle: true }, interval: '30s', retention: 5 } },
      check: (c) =>
        assert.deepEqual(c.checkpoints, {
          intervalMs: 30_000,
          retention: 5,
          s3: { endpoint: 'http://s3:9000', region: 'eu-west-1', bucket: 'ckpt', prefix: 'abacus/ns/j/', forcePathStyle: true },
        }),
    },
    {
      spec: { source: { kafka: { brokers: ['a:1'], topic: 't', sasl: { mechanism: 'plain', credentialsSecretRef: { name: 's' } } } } },
      check: (c) => assert.equal(c.kafka?.saslMechanism, 'plain'),
    },
  ];
  for (const { spec, check } of cases) {
    const job = minimalJob(spec);
    check(resolveJobConfig(parse(desiredConfigMap(job).data![CONFIG_KEY]!) as Record<string, unknown>));
  }
});

test('StatefulSet: worker command, pod identity, probes, volumes, claim template, owner', () => {
  const job = loadExample('account-level.yaml');
  const sts = desiredStatefulSet(job, 3);
  const spec = sts.spec!;
  assert.equal(spec.replicas, 3);
  assert.equal(spec.serviceName, 'accounts-workers');
  assert.equal(spec.podManagementPolicy, 'Parallel');
  assert.deepEqual(spec.persistentVolumeClaimRetentionPolicy, { whenDeleted: 'Retain', whenScaled: 'Delete' });
  const c = spec.template.spec!.containers[0]!;
  assert.deepEqual(
    [...c.command!, ...c.args!].join(' '),
    'abacus worker --config /etc/abacus/config/job.yaml --assignment /etc/abacus/assignment/assignment.json --ordinal $(POD_INDEX) --data-dir /var/lib/abacus --kube-namespace $(POD_NAMESPACE)',
  );
  const env = new Map(c.env!.map((e) => [e.name, e]));
  assert.equal(env.get('POD_INDEX')!.valueFrom!.fieldRef!.fieldPath, "metadata.labels['apps.kubernetes.io/pod-index']");
  assert.deepEqual(env.get('ABACUS_KAFKA_USERNAME')!.valueFrom!.secretKeyRef, { name: 'kafka-abacus', key: 'username' });
  assert.deepEqual(env.get('ABACUS_KAFKA_PASSWORD')!.valueFrom!.secretKeyRef, { name: 'kafka-abacus', key: 'password' });
  assert.deepEqual(env.get('ABACUS_CASSANDRA_PASSWORD')!.valueFrom!.secretKeyRef, { name: 'cassandra-abacus', key: 'password' });
  assert.deepEqual(env.get('AWS_ACCESS_KEY_ID')!.valueFrom!.secretKeyRef, { name: 's3-abacus', key: 'AWS_ACCESS_KEY_ID' });
  assert.deepEqual(env.get('AWS_SECRET_ACCESS_KEY')!.valueFrom!.secretKeyRef, { name: 's3-abacus', key: 'AWS_SECRET_ACCESS_KEY' });
  assert.equal(env.has('ABACUS_CHECKPOINT_URL'), false, 'checkpoint settings travel in the job document, not as env vars');
  assert.equal(env.get('NODE_EXTRA_CA_CERTS')!.value, '/etc/abacus/kafka-ca/ca.crt');
  assert.deepEqual(c.livenessProbe!.httpGet, { path: '/healthz', port: 'http' });
  assert.deepEqual(c.readinessProbe!.httpGet, { path: '/readyz', port: 'http' });
  assert.deepEqual(c.ports, [{ name: 'http', containerPort: 9400, protocol: 'TCP' }]);
  assert.deepEqual(c.resources, { requests: { cpu: '1', memory: '2Gi' }, limits: { memory: '2Gi' } });
  const mounts = new Map(c.volumeMounts!.map((m) => [m.name, m.mountPath]));
  assert.equal(mounts.get('assignment'), '/etc/abacus/assignment');
  assert.equal(mounts.get('data'), '/var/lib/abacus');
  const vols = new Map(spec.template.spec!.volumes!.map((v) => [v.name, v]));
  assert.equal(vols.get('assignment')!.configMap!.name, 'accounts-assignment');
  assert.equal(vols.get('config')!.configMap!.name, 'accounts-config');
  assert.deepEqual(spec.volumeClaimTemplates![0]!.spec!.resources, { requests: { storage: '20Gi' } });
  assert.deepEqual(spec.template.spec!.topologySpreadConstraints![0]!.labelSelector, { matchLabels: spec.selector.matchLabels });
  assert.deepEqual(sts.metadata!.ownerReferences, [
    { apiVersion: 'abacus.dev/v1alpha1', kind: 'AbacusJob', name: 'accounts', uid: 'uid-accounts', controller: true, blockOwnerDeletion: true },
  ]);
  assert.equal(selectorString('accounts'), 'app.kubernetes.io/name=abacus-worker,abacus.dev/job=accounts');
  for (const [k, v] of Object.entries(spec.selector.matchLabels!)) assert.equal(spec.template.metadata!.labels![k], v);
});

test("StatefulSet: the workers' NODE_OPTIONS follow the engine and the memory budget", () => {
  const nodeOptions = (spec: Record<string, unknown>): string | undefined =>
    desiredStatefulSet(minimalJob(spec), 1).spec!.template.spec!.containers[0]!.env!.find((e) => e.name === 'NODE_OPTIONS')?.value;
  assert.equal(nodeOptions({}), '--max-semi-space-size=128');
  // The native engine allocates nothing per event on the JavaScript side: a small young generation (ADR 7).
  assert.equal(nodeOptions({ engine: 'native' }), '--max-semi-space-size=32');
  assert.match(nodeOptions({ memoryBudget: '2Gi' })!, /^--max-semi-space-size=\d+ --max-old-space-size=\d+$/);
});

test('StatefulSet: optional credentials are absent when not configured', () => {
  const job = loadExample('customer-level.yaml');
  const env = desiredStatefulSet(job, 2).spec!.template.spec!.containers[0]!.env!.map((e) => e.name);
  for (const absent of ['ABACUS_KAFKA_USERNAME', 'ABACUS_CASSANDRA_USERNAME', 'AWS_ACCESS_KEY_ID', 'ABACUS_CHECKPOINT_URL', 'NODE_EXTRA_CA_CERTS']) {
    assert.ok(!env.includes(absent), absent);
  }
  const pod = desiredStatefulSet(job, 2).spec!.template.spec!;
  assert.deepEqual(pod.nodeSelector, { 'kubernetes.io/os': 'linux' });
  assert.equal(pod.tolerations![0]!.key, 'dedicated');
});

test('config changes roll the pods (hash annotation); replicas and assignment do not', () => {
  const a = minimalJob();
  const hash = (j: typeof a, n = 1) => desiredStatefulSet(j, n).spec!.template.metadata!.annotations![CONFIG_HASH_ANNOTATION];
  assert.equal(hash(a, 1), hash(a, 5));
  assert.notEqual(hash(a), hash(minimalJob({ window: '5s' })));
  assert.equal(stateFingerprintHash(a), stateFingerprintHash(minimalJob({ window: '5s' })));
  assert.notEqual(stateFingerprintHash(a), stateFingerprintHash(minimalJob({ level: 'customer' })));
});

test('services and PDB select the workers', () => {
  const job = minimalJob();
  const sel = desiredStatefulSet(job, 1).spec!.selector.matchLabels;
  const headless = desiredHeadlessService(job);
  assert.equal(headless.spec!.clusterIP, 'None');
  assert.equal(headless.spec!.publishNotReadyAddresses, true);
  assert.deepEqual(headless.spec!.selector, sel);
  const metrics = desiredMetricsService(job);
  assert.equal(metrics.metadata!.name, 'j-metrics');
  assert.equal(metrics.metadata!.labels!['app.kubernetes.io/component'], 'metrics');
  assert.deepEqual(metrics.spec!.ports, [{ name: 'metrics', port: 9400, targetPort: 'http', protocol: 'TCP' }]);
  const pdb = desiredPodDisruptionBudget(job);
  assert.equal(pdb.spec!.maxUnavailable, 1);
  assert.deepEqual(pdb.spec!.selector!.matchLabels, sel);
});

test('assignment ConfigMap: the document round-trips; a damaged one reads as none', () => {
  const a3 = evenAssignment(128, 2, 3);
  assert.equal(assignedWorkers(a3), 2);
  const cm = desiredAssignmentConfigMap(minimalJob(), a3);
  assert.equal(cm.metadata!.name, 'j-assignment');
  const parsed = parseAssignment(cm.data!['assignment.json']!);
  assert.deepEqual(parsed, a3);
  assert.deepEqual(publishedAssignment(cm), a3);
  assert.equal(publishedAssignment(undefined), undefined);
  assert.equal(publishedAssignment({ data: { 'assignment.json': '{' } }), undefined);
  // every key group owned exactly once
  const owned = parsed.workers.flatMap((w) => w.ranges.flatMap((r) => Array.from({ length: r.end - r.start + 1 }, (_, i) => r.start + i)));
  assert.deepEqual(owned, Array.from({ length: 128 }, (_, i) => i));
});

test('job.yaml carries the namespace: same-named jobs of two namespaces get their own topics, groups and table', () => {
  const configOf = (namespace: string) => {
    const job = minimalJob({}, 'opens');
    job.metadata.namespace = namespace;
    return resolveJobConfig(parse(desiredConfigMap(job).data![CONFIG_KEY]!) as Record<string, unknown>);
  };
  const [a, b] = [configOf('team-a'), configOf('team-b')];
  assert.equal(a.name, 'opens', 'the job name itself stays (it names the job\'s ConfigMaps)');
  assert.equal(a.namespace, 'team-a');
  assert.equal(a.kafka?.keyedTopic, 'team-a.opens-keyed');
  assert.equal(b.kafka?.routeGroup, 'team-b.opens-route');
  assert.notEqual(a.cassandra?.table, b.cassandra?.table);
  assert.match(a.cassandra?.table ?? '', /^team_a_opens_[0-9a-f]{12}_counts$/);
});
