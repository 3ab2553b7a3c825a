import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { V1ConfigMap, V1StatefulSet } from '@kubernetes/client-node';
import { ownerMap, parseAssignment, planOwners, type Assignment } from '../../common/assignment';
import { emptyReport, parseReport, pruneReport, REPORT_KEY, workerDuties, type WorkerReport } from '../../common/handover';
import { reconcile, type KubeObject } from '../../operator/reconcile/reconciler';
import { decideRescale } from '../../operator/reconcile/rescale';
import { advanceHandoverNow } from '../../operator/reconcile/advance';
import { ApiError } from '../../common/kube-client';
import { minimalJob, RecordingCluster } from './operator-fixtures';

const T0 = new Date('2025-01-01T00:00:00Z');
const CHECKPOINTS = { checkpoints: { s3: { bucket: 'ckpt', prefix: 'j' } } };

/** An applied object as its kind's type. */
function applied<T>(cluster: RecordingCluster, key: string): T | undefined {
  return cluster.objects.get(key) as unknown as T | undefined;
}
function doc(cluster: RecordingCluster): Assignment {
  return parseAssignment(applied<V1ConfigMap>(cluster, 'ConfigMap/j-assignment')!.data!['assignment.json']!);
}
const stsReplicas = (cluster: RecordingCluster) => applied<V1StatefulSet>(cluster, 'StatefulSet/j')!.spec!.replicas!;
const rescaling = (cluster: RecordingCluster) => cluster.status!.conditions!.find((c) => c.type === 'Rescaling')!;

/** Plays worker `ordinal`: reads the published document, does its duties, writes its report ConfigMap (as HandoverAgent does). */
function workerActs(cluster: RecordingCluster, ordinal: number, clockMs: number): void {
  const d = doc(cluster);
  const cm = applied<V1ConfigMap>(cluster, `ConfigMap/j-worker-${ordinal}`);
  assert.ok(cm !== undefined, `the operator created worker ${ordinal}'s report ConfigMap`);
  const text = cm.data?.[REPORT_KEY];
  const before: WorkerReport = text === undefined ? emptyReport(ordinal) : parseReport(text);
  const duties = workerDuties(d, ordinal, before);
  const r = pruneReport(before, d, d.generation);
  const report: WorkerReport = {
    ...r,
    prepared: { ...r.prepared, ...Object.fromEntries(duties.prepare.map((m) => [m.group, d.generation])) },
    released: { ...r.released, ...Object.fromEntries(duties.release.map((m) => [m.group, { generation: d.generation, manifest: `m${m.group}`, stoppedAtMs: clockMs, bytes: 100 }])) },
    acquired: { ...r.acquired, ...Object.fromEntries(duties.acquire.map((m) => [m.group, { generation: d.generation, resumedAtMs: clockMs + 250 }])) },
  };
  cluster.objects.set(`ConfigMap/j-worker-${ordinal}`, { ...cm, data: { [REPORT_KEY]: JSON.stringify(report) } } as KubeObject);
}

test('reconcileRescale: scale-up waits for the new workers, moves the planned groups, then settles; restart-safe', async () => {
  const cluster = new RecordingCluster(minimalJob({ replicas: 2, keyGroups: 12, ...CHECKPOINTS }));
  await reconcile(cluster, 'ns', 'j', () => T0);
  const initial = doc(cluster);
  assert.equal(stsReplicas(cluster), 2);
  workerActs(cluster, 0, 0);
  workerActs(cluster, 1, 0);

  cluster.job = { ...cluster.job, metadata: { ...cluster.job.metadata, generation: 2 }, spec: { ...cluster.job.spec, replicas: 3 } };
  await reconcile(cluster, 'ns', 'j', () => T0);
  assert.equal(stsReplicas(cluster), 3, 'the new pod is created first');
  assert.equal(doc(cluster).generation, initial.generation, 'nothing moves before the new worker reports');
  assert.equal(rescaling(cluster).reason, 'WaitingForWorkers');

  workerActs(cluster, 2, 0);
  await reconcile(cluster, 'ns', 'j', () => T0);
  assert.ok(cluster.events.includes('Normal/RescaleStarted'));
  assert.equal(doc(cluster).handover!.total, 4);
  assert.match(rescaling(cluster).message, /^0\/4 key groups moved/);
  assert.equal(cluster.status!.phase, 'Scaling');

  // Workers and operator take turns (the "operator" is a fresh reconcile each time: nothing lives in memory).
  for (let round = 0; round < 6 && doc(cluster).handover !== undefined; round++) {
    for (const o of [0, 1, 2]) workerActs(cluster, o, round * 1000);
    await reconcile(cluster, 'ns', 'j', () => T0);
  }
  const final = doc(cluster);
  assert.equal(final.handover, undefined);
  assert.deepEqual(ownerMap(final), planOwners(ownerMap(initial), 3));
  assert.ok(cluster.events.includes('Normal/RescaleFinished'));
  assert.equal(rescaling(cluster).status, 'False');
  assert.equal(stsReplicas(cluster), 3);
});

test('reconcileRescale: scale-down moves groups off first and shrinks the StatefulSet last', async () => {
  const cluster = new RecordingCluster(minimalJob({ replicas: 3, keyGroups: 9, ...CHECKPOINTS }));
  await reconcile(cluster, 'ns', 'j', () => T0);
  for (const o of [0, 1, 2]) workerActs(cluster, o, 0);
  cluster.job = { ...cluster.job, metadata: { ...cluster.job.metadata, generation: 2 }, spec: { ...cluster.job.spec, replicas: 1 } };
  await reconcile(cluster, 'ns', 'j', () => T0);
  assert.equal(doc(cluster).handover!.total, 6);
  for (let round = 0; round < 6 && doc(cluster).handover !== undefined; round++) {
    assert.equal(stsReplicas(cluster), 3, 'no pod goes while it holds or receives key groups');
    for (const o of [0, 1, 2]) workerActs(cluster, o, round * 1000);
    await reconcile(cluster, 'ns', 'j', () => T0);
  }
  assert.equal(doc(cluster).handover, undefined);
  assert.deepEqual(ownerMap(doc(cluster)), new Array(9).fill(0));
  assert.equal(stsReplicas(cluster), 1);
});

test('decideRescale: a dead old owner stalls its moves (never a second counter) and the status names it', () => {
  const current = parseAssignment(JSON.stringify({ keyGroups: 4, generation: 3, workers: [{ ordinal: 0, ranges: [{ start: 0, end: 1 }] }, { ordinal: 1, ranges: [{ start: 3, end: 3 }] }], handover: { targetReplicas: 2, fromReplicas: 1, startedAt: T0.toISOString(), total: 1, moves: [{ group: 2, from: 0, to: 1, phase: 'release', since: 3 }] } }));
  const d = decideRescale({ keyGroups: 4, replicas: 2, current, reports: new Map(), checkpointsConfigured: true, now: T0 });
  assert.equal(d.publish, undefined);
  assert.match(d.rescaling.message, /1 waiting for release by worker 0/);
  assert.equal(d.statefulSetReplicas, 2);
});

/** Scales a settled 2-worker job to 3 and lets the operator start the hand-over; the workers have not acted on it. */
async function handoverStarted(): Promise<RecordingCluster> {
  const cluster = new RecordingCluster(minimalJob({ replicas: 2, keyGroups: 12, ...CHECKPOINTS }));
  await reconcile(cluster, 'ns', 'j', () => T0);
  for (const o of [0, 1]) workerActs(cluster, o, 0);
  cluster.job = { ...cluster.job, metadata: { ...cluster.job.metadata, generation: 2 }, spec: { ...cluster.job.spec, replicas: 3 } };
  await reconcile(cluster, 'ns', 'j', () => T0);
  workerActs(cluster, 2, 0);
  await reconcile(cluster, 'ns', 'j', () => T0);
  assert.ok(doc(cluster).handover !== undefined);
  return cluster;
}

test('advanceHandoverNow: a report advances the hand-over alone (no child applied, no status written), and a full reconcile then finds nothing to publish', async () => {
  const cluster = await handoverStarted();
  for (const o of [0, 1, 2]) workerActs(cluster, o, 0);
  const before = doc(cluster);
  const applied = cluster.applied.length;
  const status = cluster.status;
  assert.equal(await advanceHandoverNow(cluster, 'ns', 'j', () => T0), 'published');
  assert.ok(doc(cluster).generation > before.generation, 'the next phase is published');
  assert.deepEqual(cluster.applied.slice(applied), ['ConfigMap/j-assignment'], 'only the document');
  assert.equal(cluster.status, status, 'no status write');
  assert.equal(await advanceHandoverNow(cluster, 'ns', 'j', () => T0), 'nothing', 'the same reports move nothing further');

  // Played to the end by the fast lane alone, the hand-over finishes with its event.
  for (let round = 0; round < 6 && doc(cluster).handover !== undefined; round++) {
    for (const o of [0, 1, 2]) workerActs(cluster, o, round * 1000);
    await advanceHandoverNow(cluster, 'ns', 'j', () => T0);
  }
  assert.equal(doc(cluster).handover, undefined);
  assert.ok(cluster.events.includes('Normal/RescaleFinished'));
  await reconcile(cluster, 'ns', 'j', () => T0);
  assert.equal(rescaling(cluster).status, 'False');
  assert.equal(stsReplicas(cluster), 3);
});

test('a reconcile whose publish loses to another publisher (409 on the resourceVersion) tells nothing and decides again at once', async () => {
  const cluster = await handoverStarted();
  for (const o of [0, 1, 2]) workerActs(cluster, o, 0);
  const before = doc(cluster);
  const events = cluster.events.length;
  const apply = cluster.apply.bind(cluster);
  cluster.apply = (o: KubeObject) => (o.metadata?.name === 'j-assignment' ? Promise.reject(new ApiError(409, 'Conflict', 'the object has been modified')) : apply(o));
  assert.deepEqual(await reconcile(cluster, 'ns', 'j', () => T0), { requeueAfterMs: 0 });
  assert.equal(await advanceHandoverNow(cluster, 'ns', 'j', () => T0), 'conflict');
  assert.deepEqual(cluster.events.slice(events), [], 'no event for a step it did not publish');
  assert.equal(doc(cluster).generation, before.generation);
  cluster.apply = apply;
  await reconcile(cluster, 'ns', 'j', () => T0);
  assert.ok(doc(cluster).generation > before.generation);
});
