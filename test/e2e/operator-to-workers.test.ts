import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { readCounts, dropKeyspace } from '../support/cassandra';
import { requireTestEnv } from '../support/env';
import { testInput } from '../support/events';
import { createTopic, produce } from '../support/kafka';
import { referenceRun } from '../support/reference';
import { tempDir } from '../support/local';
import { WorkerProcess } from '../support/workers';
import { createNamespace, deleteNamespace, example, getJson, installCrd, kubeEnv, kubectl, startOperator, waitFor } from '../integration/operator-harness';

/**
 * End to end, the way a platform team runs Abacus: an AbacusJob applied to the real
 * kube-apiserver, reconciled by the operator; the worker processes then run with exactly the
 * job.yaml and assignment.json the operator published (the control plane has no kubelets, so
 * the test plays the kubelet: it starts the pods' command locally with those files), on the
 * real Kafka and Cassandra. The counts in Cassandra must equal the independent reference.
 */

/** The parts of an example AbacusJob this test changes. */
interface ExampleJob {
  metadata: { name: string };
  spec: Record<string, unknown> & { source: Record<string, unknown>; sink: Record<string, unknown> };
}

const env = requireTestEnv();
const { kubeconfig } = kubeEnv();
const run = `e2e${Date.now().toString(36)}`;
const topic = `${run}-events`;
/** Unique per run: the job name also names the keyed topic and consumer groups, which outlive a job on a shared broker. */
const job = `opens-${run}`;
const keyspace = `ks_${run}`;
const work = tempDir('abacus-e2e-');
const namespace = createNamespace('e2e');
const operator = startOperator({ namespace, leaseNamespace: namespace, identity: `${run}-operator` });
const workers: WorkerProcess[] = [];
/** Below the broker's default message size limit, so the oversized malformed record can be produced. */
const MAX_EVENT_BYTES = 64 * 1024;

after(async () => {
  for (const w of workers) await w.stop(30_000);
  await operator.stop();
  deleteNamespace(namespace);
  await dropKeyspace(env.cassandra, keyspace).catch(() => undefined);
});

test('an applied AbacusJob, reconciled by the operator, counts exactly with the published config and assignment', async () => {
  installCrd();
  const manifest = example('account-level.yaml', namespace, (doc: ExampleJob) => {
    doc.metadata.name = job;
    doc.spec.replicas = 2;
    doc.spec.keyGroups = 8;
    doc.spec.source.kafka = { brokers: [env.kafka], topic };
    doc.spec.sink.cassandra = { contactPoints: [env.cassandra], localDataCenter: 'datacenter1', keyspace, table: 'counts', consistency: 'ONE', mode: 'final' };
    delete doc.spec.checkpoints;
    doc.spec.facets = { exclude: ['tags'] };
    doc.spec.maxEventBytes = String(MAX_EVENT_BYTES);
  });
  const applied = kubectl(['apply', '-n', namespace, '-f', '-'], manifest, kubeconfig);
  assert.equal(applied.code, 0, applied.stderr);

  // What the operator publishes for the pods.
  const config = await waitFor('job ConfigMap', () => getJson<{ data: Record<string, string> }>(['get', 'configmap', `${job}-config`, '-n', namespace])?.data, 60_000);
  const assignment = await waitFor('assignment ConfigMap', () => getJson<{ data: Record<string, string> }>(['get', 'configmap', `${job}-assignment`, '-n', namespace])?.data, 60_000);
  const jobYaml = Object.values(config)[0]!;
  const assignmentJson = assignment['assignment.json']!;
  assert.match(jobYaml, new RegExp(`topic: ${topic}`));
  const owners = (JSON.parse(assignmentJson) as { workers: unknown[] }).workers;
  assert.equal(owners.length, 2, 'one assignment entry per replica');

  mkdirSync(join(work, 'etc'), { recursive: true });
  writeFileSync(join(work, 'etc', 'job.yaml'), jobYaml);
  writeFileSync(join(work, 'etc', 'assignment.json'), assignmentJson);

  await createTopic(env.kafka, topic, 4);
  const values = testInput({ seed: 2026, nowSec: Math.floor(Date.now() / 1000), valid: 2000, dupRate: 0.05, maxEventBytes: MAX_EVENT_BYTES, customers: 150 });
  const produced = await produce(env.kafka, topic, values, { partitions: 4, seed: 2026 });

  for (const ordinal of [0, 1]) {
    const w = new WorkerProcess(`${job}-${ordinal}`, [
      '--config', join(work, 'etc', 'job.yaml'),
      '--assignment', join(work, 'etc', 'assignment.json'),
      '--ordinal', String(ordinal),
      '--data-dir', join(work, `data-${ordinal}`),
      '--create-schema',
      '--metrics-port', '0',
    ], join(work, `worker-${ordinal}.log`));
    workers.push(w);
  }
  for (const w of workers) await w.waitReady();

  const expected = referenceRun(produced, { level: 'account', facets: { exclude: ['tags'] }, maxEventBytes: MAX_EVENT_BYTES });
  assert.ok(expected.duplicates > 0 && expected.invalid.length > 0);
  const table = 'counts';
  let got = await readCounts(env.cassandra, keyspace, table, 'account');
  const deadline = Date.now() + 180_000;
  while (JSON.stringify(got) !== JSON.stringify(expected.rows) && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 1000));
    got = await readCounts(env.cassandra, keyspace, table, 'account');
  }
  assert.deepEqual(got, expected.rows);

  // The job's status shows what the operator manages.
  const applied2 = getJson<{ status: { replicas: number; conditions: Array<{ type: string }> } }>(['get', 'abacusjob', job, '-n', namespace]);
  assert.equal(applied2?.status.replicas, 2);
  assert.ok(applied2?.status.conditions.some((c) => c.type === 'Ready'));
});
