/* eslint-disable @typescript-eslint/no-unsafe-member-access, @typescript-eslint/no-unsafe-assignment, @typescript-eslint/no-unsafe-call, @typescript-eslint/no-unsafe-argument, @typescript-eslint/no-unsafe-return, @typescript-eslint/no-explicit-any -- kubectl's JSON is untyped */
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { dropKeyspace } from '../support/cassandra';
import { REPO_ROOT, serverControl } from '../support/env';
import { testInput } from '../support/events';
import { createTopic, kafkaClient, produce } from '../support/kafka';
import { tempDir } from '../support/local';
import { cli, json, jsonOrNone, kubectl, need, port, sh, until } from '../support/node-cluster';
import { listS3 } from '../support/s3';

/**
 * Deleting an AbacusJob on the real node, with the operator installed by the chart (its
 * least-privilege RBAC: no Secrets, no deletes): `whenDeleted: Retain` keeps the checkpoints
 * in S3 and the job's Kafka topic and groups; `whenDeleted: Delete` removes them through the
 * cleanup Job, and with S3 down it says so (condition and Event) and retries until S3 is
 * back. What is left is listed in S3 and Kafka themselves, never taken from the operator.
 */

const IMAGE = need('ABACUS_TEST_IMAGE');
const NODE_IP = need('ABACUS_TEST_NODE_IP');
const KAFKA = need('ABACUS_TEST_KAFKA');
const CASSANDRA = need('ABACUS_TEST_CASSANDRA');
const S3_ENDPOINT = need('ABACUS_TEST_S3_ENDPOINT');
const S3_BUCKET = need('ABACUS_TEST_S3_BUCKET');

const run = Date.now().toString(36);
const opNs = `abacus-system-del-${run}`;
const ns = `deletion-${run}`;
const keep = `keep-${run}`;
const drop = `drop-${run}`;
const topic = `events-del-${run}`;
const keyspace = `deletion_${run}`;
const work = tempDir('abacus-deletion-');
const [imageRepo, imageTag] = [IMAGE.slice(0, IMAGE.lastIndexOf(':')), IMAGE.slice(IMAGE.lastIndexOf(':') + 1)];
const MAX_EVENT = 4096;
const root = (job: string) => `abacus/${ns}/${job}/`;

/** Kafka names derive from `<namespace>.<job>` (docs/worker.md): an independent restatement, not the code's. */
const kafkaPrefix = (job: string) => `${ns}.${job}`;

/** What Kafka really holds of a job: its keyed topic, its route and count groups. */
async function kafkaObjects(job: string): Promise<{ topic: boolean; groups: string[] }> {
  const admin = kafkaClient(KAFKA).admin();
  await admin.connect();
  try {
    const topics = await admin.listTopics();
    const groups = (await admin.listGroups()).groups.map((g) => g.groupId).filter((g) => g === `${kafkaPrefix(job)}-route` || g.startsWith(`${kafkaPrefix(job)}-count-`));
    return { topic: topics.includes(`${kafkaPrefix(job)}-keyed`), groups };
  } finally {
    await admin.disconnect();
  }
}

function manifest(name: string, whenDeleted: 'Retain' | 'Delete'): object {
  return {
    apiVersion: 'abacus.dev/v1alpha1',
    kind: 'AbacusJob',
    metadata: { name, namespace: ns },
    spec: {
      image: IMAGE,
      imagePullPolicy: 'IfNotPresent',
      replicas: 1,
      keyGroups: 4,
      level: 'account',
      window: '1s',
      // Small events: this test is about deletion, not about the largest values the sink takes.
      maxEventBytes: String(MAX_EVENT),
      whenDeleted,
      source: { kafka: { brokers: [`${NODE_IP}:${port(KAFKA)}`], topic } },
      sink: { cassandra: { contactPoints: [`${NODE_IP}:${port(CASSANDRA)}`], localDataCenter: 'datacenter1', keyspace, table: `counts_${name.replaceAll('-', '_')}`, consistency: 'ONE', mode: 'final', createSchema: true } },
      storage: { size: '1Gi', whenDeleted: 'Delete', whenScaled: 'Retain' },
      checkpoints: { s3: { endpoint: `http://${NODE_IP}:${port(S3_ENDPOINT)}`, bucket: S3_BUCKET, forcePathStyle: true, credentialsSecretRef: { name: 's3-abacus' } }, interval: '5s', retention: 2 },
    },
  };
}

before(() => {
  kubectl('create', 'namespace', ns);
  cli('helm', ['install', 'abacus', join(REPO_ROOT, 'charts', 'abacus'), '--namespace', opNs, '--create-namespace',
    '--set', `image.repository=${imageRepo}`, '--set', `image.tag=${imageTag}`, '--set', `watchNamespace=${ns}`, '--set', 'replicaCount=1',
    '--wait', '--timeout', '5m']);
});

after(async () => {
  await serverControl('start', 's3').catch(() => undefined);
  for (const j of [keep, drop]) sh(join(need('ABACUS_TEST_BIN'), 'kubectl'), ['delete', 'abacusjob', j, '-n', ns, '--ignore-not-found', '--wait=true', '--timeout=120s']);
  sh(join(need('ABACUS_TEST_BIN'), 'helm'), ['uninstall', 'abacus', '-n', opNs, '--wait']);
  sh(join(need('ABACUS_TEST_BIN'), 'kubectl'), ['delete', 'namespace', ns, opNs, '--ignore-not-found', '--wait=false']);
  const admin = kafkaClient(KAFKA).admin();
  await admin.connect().then(() => admin.deleteTopics({ topics: [topic, `${kafkaPrefix(keep)}-keyed`, `${kafkaPrefix(keep)}-dead-letter`, `${kafkaPrefix(drop)}-dead-letter`] })).catch(() => undefined);
  await admin.disconnect().catch(() => undefined);
  await dropKeyspace(CASSANDRA, keyspace).catch(() => undefined);
});

test('two jobs count and checkpoint: S3 objects, keyed topics and groups exist; kubectl get shows lag and last checkpoint', async () => {
  kubectl('create', 'secret', 'generic', 's3-abacus', '-n', ns, `--from-literal=AWS_ACCESS_KEY_ID=${need('ABACUS_TEST_S3_ACCESS_KEY')}`, `--from-literal=AWS_SECRET_ACCESS_KEY=${need('ABACUS_TEST_S3_SECRET_KEY')}`);
  await createTopic(KAFKA, topic, 2);
  for (const [name, policy] of [[keep, 'Retain'], [drop, 'Delete']] as const) {
    const file = join(work, `${name}.json`);
    writeFileSync(file, JSON.stringify(manifest(name, policy)));
    kubectl('apply', '-f', file);
  }
  await produce(KAFKA, topic, testInput({ seed: 7, nowSec: Math.floor(Date.now() / 1000), valid: 300, dupRate: 0.05, maxEventBytes: MAX_EVENT, customers: 20 }), { partitions: 2, seed: 7 });
  for (const job of [keep, drop]) {
    assert.deepEqual(json('get', 'abacusjob', job, '-n', ns).metadata.finalizers, ['abacus.dev/cleanup']);
    await until(`${job}: a manifest in S3`, async () => (await listS3(root(job))).some((o) => o.key.includes('/manifests/')), 240_000);
    await until(`${job}: keyed topic and groups in Kafka`, async () => {
      const k = await kafkaObjects(job);
      return k.topic && k.groups.includes(`${kafkaPrefix(job)}-route`) && k.groups.some((g) => g.startsWith(`${kafkaPrefix(job)}-count-0-`));
    }, 120_000);
    const cols = await until(`${job}: INPUT LAG and LAST CHECKPOINT in kubectl get`, () => {
      const c = kubectl('get', 'abacusjob', job, '-n', ns, '--no-headers').trim().split(/\s+/);
      return /^\d+s$/.test(c[4] ?? '') && /^\d+[smh]/.test(c[5] ?? '') ? c : undefined;
    }, 120_000);
    assert.equal(cols[0], job);
  }
});

test('whenDeleted: Retain — the job goes at once; its checkpoints, keyed topic and groups stay', async () => {
  const objectsBefore = (await listS3(root(keep))).length;
  const t0 = Date.now();
  kubectl('delete', 'abacusjob', keep, '-n', ns, '--wait=true', '--timeout=90s');
  console.log(`# Retain: AbacusJob gone in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  assert.equal(jsonOrNone('get', 'abacusjob', keep, '-n', ns), undefined);
  const left = await listS3(root(keep));
  assert.ok(left.length > 0 && left.some((o) => o.key.includes('/manifests/')), `checkpoints kept (${left.length} objects; ${objectsBefore} before)`);
  const k = await kafkaObjects(keep);
  assert.ok(k.topic, 'keyed topic kept');
  assert.ok(k.groups.includes(`${kafkaPrefix(keep)}-route`), 'route group kept');
  assert.equal(jsonOrNone('get', 'job', `${keep}-cleanup`, '-n', ns), undefined, 'no cleanup Job for Retain');
});

test('whenDeleted: Delete with S3 down — CleanupBlocked says why and retries; once S3 is back everything is gone', async () => {
  const existing = await listS3(root(drop));
  assert.ok(existing.some((o) => o.key.includes('/manifests/')), `checkpoints to delete exist (${existing.length} objects)`);
  assert.ok((await kafkaObjects(drop)).topic, 'a keyed topic to delete exists');
  await serverControl('stop', 's3');
  let blockedAt = 0;
  const t0 = Date.now();
  try {
    kubectl('delete', 'abacusjob', drop, '-n', ns, '--wait=false');
    const condition = await until('Deleting=CleanupBlocked', () => {
      const c = json('get', 'abacusjob', drop, '-n', ns).status?.conditions?.find((x: any) => x.type === 'Deleting');
      return c?.reason === 'CleanupBlocked' ? c : undefined;
    }, 240_000);
    blockedAt = Date.now();
    console.log(`# Delete: CleanupBlocked after ${((blockedAt - t0) / 1000).toFixed(1)} s: ${condition.message}`);
    assert.match(condition.message, /cannot delete the checkpoints under s3:\/\//);
    assert.match(condition.message, /retr/);
    assert.match(condition.message, /whenDeleted":"Retain"/);
    const events = json('get', 'events', '-n', ns, '--field-selector', `involvedObject.name=${drop}`).items;
    assert.ok(events.some((e: any) => e.type === 'Warning' && e.reason === 'CleanupBlocked'), 'a Warning Event');
    assert.deepEqual(json('get', 'abacusjob', drop, '-n', ns).metadata.finalizers, ['abacus.dev/cleanup'], 'the finalizer holds while S3 is down');
    assert.equal(json('get', 'statefulset', drop, '-n', ns).spec.replicas, 0, 'the workers were stopped first');
  } finally {
    await serverControl('start', 's3');
  }
  await until('the AbacusJob gone', () => jsonOrNone('get', 'abacusjob', drop, '-n', ns) === undefined, 240_000);
  console.log(`# Delete: AbacusJob gone ${((Date.now() - blockedAt) / 1000).toFixed(1)} s after S3 was started again`);
  assert.deepEqual(await listS3(root(drop)), [], `no object left under the job's checkpoint root (${existing.length} before)`);
  const k = await kafkaObjects(drop);
  assert.equal(k.topic, false, 'keyed topic deleted');
  assert.deepEqual(k.groups, [], 'route and count groups deleted');
  // The other job's state is untouched by this one's deletion.
  assert.ok((await listS3(root(keep))).length > 0);
  assert.ok((await kafkaObjects(keep)).topic);
  // The garbage collector removes the workers' StatefulSet and the cleanup Job with the job.
  await until('StatefulSet and cleanup Job gone', () => jsonOrNone('get', 'statefulset', drop, '-n', ns) === undefined && jsonOrNone('get', 'job', `${drop}-cleanup`, '-n', ns) === undefined, 120_000);
});
