import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { V1StatefulSet } from '@kubernetes/client-node';
import type { AbacusJob, AbacusJobStatus, Condition } from '../../operator/api/abacusjob';
import { classifySpecChange, type Applied } from '../../operator/reconcile/classify';
import { setCondition } from '../../operator/reconcile/conditions';
import { reconcile } from '../../operator/reconcile/reconciler';
import { computeStatus, derivePhase, rolloutState, type ObservedWorkers } from '../../operator/reconcile/status';
import { validateJob } from '../../operator/reconcile/validate';
import { WorkQueue } from '../../operator/k8s/queue';
import { minimalJob, RecordingCluster } from './operator-fixtures';

const T0 = new Date('2025-01-01T00:00:00Z');
const T1 = new Date('2025-01-01T00:05:00Z');

test('setCondition: lastTransitionTime moves only when the status flips', () => {
  let c = setCondition([], { type: 'Ready', status: 'False', reason: 'WorkersNotReady', message: '0/1' }, 1, T0);
  assert.equal(c[0]!.lastTransitionTime, '2025-01-01T00:00:00Z');
  c = setCondition(c, { type: 'Ready', status: 'False', reason: 'WorkersNotReady', message: '0/2' }, 2, T1);
  assert.equal(c[0]!.lastTransitionTime, '2025-01-01T00:00:00Z');
  assert.equal(c[0]!.message, '0/2');
  assert.equal(c[0]!.observedGeneration, 2);
  c = setCondition(c, { type: 'Ready', status: 'True', reason: 'WorkersReady', message: '2/2' }, 2, T1);
  assert.equal(c[0]!.lastTransitionTime, '2025-01-01T00:05:00Z');
  c = setCondition(c, { type: 'Degraded', status: 'False', reason: 'AsExpected', message: '' }, 2, T1);
  c = setCondition(c, { type: 'Progressing', status: 'False', reason: 'Stable', message: '' }, 2, T1);
  assert.deepEqual(c.map((x) => x.type), ['Ready', 'Progressing', 'Degraded']);
});

test('validateJob: errors block, warnings do not', () => {
  const cases: { name: string; job: AbacusJob; errors: RegExp[]; warnings?: RegExp[] }[] = [
    { name: 'minimal', job: minimalJob(), errors: [] },
    { name: 'replicas > keyGroups', job: minimalJob({ replicas: 9, keyGroups: 8 }), errors: [/spec.replicas: 9 is outside 1..keyGroups \(8\)/] },
    { name: 'replicas 0', job: minimalJob({ replicas: 0 }), errors: [/spec.replicas/] },
    { name: 'long name', job: minimalJob({}, 'x'.repeat(53)), errors: [/metadata.name/] },
    { name: 'reserved facet', job: minimalJob({ facets: { include: ['company_id'] } }), errors: [/facets.include.*reserved/] },
    { name: 'both include and exclude', job: minimalJob({ facets: { include: ['a'], exclude: ['b'] } }), errors: [/sets both include and exclude/] },
    { name: 'malformed duration', job: minimalJob({ window: '5 minutes' }), errors: [/window.*not a duration/] },
    { name: 'zero window', job: minimalJob({ window: '0s' }), errors: [/window.*greater than zero/] },
    {
      name: 'memory below RocksDB needs',
      job: minimalJob({ resources: { limits: { memory: '256Mi' } } }),
      errors: [],
      warnings: [/limits.memory.*RocksDB/],
    },
    {
      name: 'SASL plain without TLS',
      job: minimalJob({ source: { kafka: { brokers: ['a:1'], topic: 't', sasl: { mechanism: 'plain', credentialsSecretRef: { name: 's' } } } } }),
      errors: [],
      warnings: [/clear text/],
    },
  ];
  for (const c of cases) {
    const v = validateJob(c.job);
    assert.equal(v.errors.length, c.errors.length, `${c.name}: ${JSON.stringify(v.errors)}`);
    c.errors.forEach((re, i) => assert.match(`${v.errors[i]!.field}: ${v.errors[i]!.message}`, re, c.name));
    (c.warnings ?? []).forEach((re, i) => assert.match(`${v.warnings[i]!.field}: ${v.warnings[i]!.message}`, re, c.name));
  }
});

test('classifySpecChange', () => {
  const base: Applied = { replicas: 3, image: 'a:1', configHash: 'c1', templateHash: 't1', stateFingerprint: 'f1' };
  const last = { generation: 1, ...base };
  const cases: [Partial<Applied>, string][] = [
    [{}, 'None'],
    [{ replicas: 5 }, 'Scale'],
    [{ image: 'a:2', templateHash: 't2' }, 'Update'],
    [{ configHash: 'c2', templateHash: 't2' }, 'Update'],
    [{ replicas: 1, templateHash: 't2' }, 'ScaleAndUpdate'],
    [{ stateFingerprint: 'f2', replicas: 9 }, 'StateIncompatible'],
  ];
  for (const [change, kind] of cases) assert.equal(classifySpecChange(last, { ...base, ...change }).kind, kind, JSON.stringify(change));
  assert.equal(classifySpecChange(undefined, base).kind, 'Initial');
  assert.deepEqual(classifySpecChange(last, { ...base, replicas: 5 }).details, ['replicas 3 → 5']);
});

const workers = (w: Partial<ObservedWorkers>): ObservedWorkers => ({
  specReplicas: 3, replicas: 3, readyReplicas: 3, updatedReplicas: 3, currentRevision: 'r1', updateRevision: 'r1', observedGeneration: 2, generation: 2, ...w,
});

test('rolloutState', () => {
  assert.equal(rolloutState(undefined, 3), 'Creating');
  assert.equal(rolloutState(workers({}), 3), 'Settled');
  assert.equal(rolloutState(workers({}), 5), 'Scaling');
  assert.equal(rolloutState(workers({ replicas: 2 }), 3), 'Scaling');
  assert.equal(rolloutState(workers({ updateRevision: 'r2', updatedReplicas: 1 }), 3), 'Updating');
  assert.equal(rolloutState(workers({ observedGeneration: 1 }), 3), 'Updating');
});

function statusOf(job: AbacusJob, extra: Partial<Parameters<typeof computeStatus>[0]> = {}): AbacusJobStatus {
  const lastApplied = { generation: 1, replicas: job.spec.replicas, image: 'i', configHash: 'c', templateHash: 't', stateFingerprint: 'f' };
  return computeStatus({ job, now: T0, desiredReplicas: job.spec.replicas, selector: 's', lastApplied, ...extra });
}
const cond = (s: AbacusJobStatus, type: string) => s.conditions!.find((c) => c.type === type)!;

test('computeStatus: first rollout, ready, lost worker, invalid, apply failure', () => {
  const job = minimalJob({ replicas: 3 });
  const creating = statusOf(job);
  assert.equal(creating.phase, 'Pending');
  assert.equal(cond(creating, 'Progressing').reason, 'Creating');
  assert.equal(creating.observedGeneration, 1);
  assert.equal(creating.selector, 's');

  const firstScaleUp = computeStatus({ job, now: T0, desiredReplicas: 3, selector: 's', workers: workers({ replicas: 0, readyReplicas: 0, updatedReplicas: 0 }) });
  assert.equal(cond(firstScaleUp, 'Progressing').reason, 'Creating', 'the first rollout is Creating even while the StatefulSet adds pods');

  const waiting = statusOf({ ...job, status: creating }, { workers: workers({ readyReplicas: 1 }) });
  assert.equal(cond(waiting, 'Progressing').status, 'True', 'still the first rollout while pods get ready');
  assert.equal(cond(waiting, 'Ready').message, '1/3 workers ready');

  const ready = statusOf({ ...job, status: waiting }, { workers: workers({}) });
  assert.equal(ready.phase, 'Running');
  assert.equal(cond(ready, 'Ready').status, 'True');
  assert.equal(cond(ready, 'Progressing').reason, 'Stable');
  assert.equal(cond(ready, 'Degraded').status, 'False');
  assert.equal(ready.readyReplicas, 3);

  const lost = statusOf({ ...job, status: ready }, { workers: workers({ readyReplicas: 2 }) });
  assert.equal(cond(lost, 'Degraded').status, 'True');
  assert.equal(lost.phase, 'Degraded');

  const scaling = statusOf({ ...job, spec: { ...job.spec, replicas: 5 }, status: ready }, { workers: workers({}), desiredReplicas: 5 });
  assert.equal(scaling.phase, 'Scaling');

  const invalid = statusOf({ ...job, status: ready }, { workers: workers({}), invalid: { reason: 'InvalidSpec', message: 'spec.window: bad' } });
  assert.equal(invalid.phase, 'Invalid');
  assert.equal(cond(invalid, 'Ready').status, 'False');
  assert.match(cond(invalid, 'Ready').message, /spec.window: bad.*last valid spec/);
  assert.equal(cond(invalid, 'Degraded').reason, 'InvalidSpec');
  assert.deepEqual(invalid.lastApplied, ready.lastApplied, 'lastApplied is kept');

  const failed = statusOf({ ...job, status: ready }, { workers: workers({}), applyError: 'boom' });
  assert.equal(cond(failed, 'Degraded').reason, 'ApplyFailed');
});

test('derivePhase follows the conditions only', () => {
  const c = (type: string, status: string, reason: string): Condition => ({ type, status: status as 'True', reason, message: '', lastTransitionTime: '', observedGeneration: 1 });
  assert.equal(derivePhase([c('Ready', 'True', 'WorkersReady'), c('Progressing', 'False', 'Stable'), c('Degraded', 'False', 'AsExpected')]), 'Running');
  assert.equal(derivePhase([c('Ready', 'False', 'WorkersNotReady'), c('Progressing', 'True', 'Updating')]), 'Updating');
  assert.equal(derivePhase([c('Ready', 'False', 'StateIncompatibleChange')]), 'Invalid');
});

/** An in-memory recorder of what reconcile asks for: enough to check phase ordering. */
test('reconcile: phase order, scale direction, invalid spec applies nothing, state-incompatible refused', async () => {
  const cluster = new RecordingCluster(minimalJob({ replicas: 3 }));
  await reconcile(cluster, 'ns', 'j', () => T0);
  assert.deepEqual(cluster.applied, [
    'Finalizer/add', 'ConfigMap/j-config', 'Service/j-workers', 'Service/j-metrics',
    'ServiceAccount/j-worker', 'Role/j-worker', 'RoleBinding/j-worker', 'ConfigMap/j-worker-0', 'ConfigMap/j-worker-1', 'ConfigMap/j-worker-2',
    'ConfigMap/j-assignment', 'StatefulSet/j', 'PodDisruptionBudget/j',
  ]);
  assert.equal(cluster.status!.assignment!.generation, 1);
  assert.equal(cluster.status!.lastApplied!.replicas, 3);

  // scale down without checkpoints: nothing moves, and the status says why
  cluster.applied.length = 0;
  cluster.job = { ...cluster.job, metadata: { ...cluster.job.metadata, generation: 2 }, spec: { ...cluster.job.spec, replicas: 2 } };
  await reconcile(cluster, 'ns', 'j', () => T0);
  assert.ok(cluster.events.includes('Normal/Scaling'));
  assert.ok(cluster.events.includes('Warning/RescaleNeedsCheckpoints'));
  assert.equal(cluster.status!.assignment!.generation, 1);
  assert.equal((cluster.objects.get('StatefulSet/j') as V1StatefulSet).spec!.replicas, 3, 'pods stay while they own key groups');
  assert.equal(cluster.status!.conditions!.find((c) => c.type === 'Rescaling')!.reason, 'NeedsCheckpoints');

  // invalid: nothing applied, warning event, Ready=False
  cluster.applied.length = 0;
  cluster.job = { ...cluster.job, metadata: { ...cluster.job.metadata, generation: 3 }, spec: { ...cluster.job.spec, window: 'soon' } };
  await reconcile(cluster, 'ns', 'j', () => T0);
  assert.deepEqual(cluster.applied, []);
  assert.ok(cluster.events.includes('Warning/InvalidSpec'));
  assert.equal(cluster.status!.phase, 'Invalid');
  const eventsBefore = cluster.events.length;
  await reconcile(cluster, 'ns', 'j', () => T0);
  assert.equal(cluster.events.length, eventsBefore, 'the same problem is not re-announced on every resync');

  // state-incompatible: refused the same way
  cluster.job = { ...cluster.job, metadata: { ...cluster.job.metadata, generation: 4 }, spec: { ...cluster.job.spec, window: '1s', level: 'customer' } };
  await reconcile(cluster, 'ns', 'j', () => T0);
  assert.deepEqual(cluster.applied, []);
  assert.equal(cluster.status!.conditions!.find((c) => c.type === 'Ready')!.reason, 'StateIncompatibleChange');
});

test('reconcile: a changed volume size keeps the existing claim and reports UnsupportedChange', async () => {
  const cluster = new RecordingCluster(minimalJob());
  await reconcile(cluster, 'ns', 'j', () => T0);
  cluster.job = { ...cluster.job, spec: { ...cluster.job.spec, storage: { ...cluster.job.spec.storage, size: '50Gi' } } };
  await reconcile(cluster, 'ns', 'j', () => T0);
  const sts = cluster.objects.get('StatefulSet/j') as V1StatefulSet;
  assert.equal(sts.spec!.volumeClaimTemplates![0]!.spec!.resources!.requests!.storage, '10Gi');
  assert.equal(cluster.status!.conditions!.find((c) => c.type === 'Degraded')!.reason, 'UnsupportedChange');
});

test('WorkQueue: dedup, no concurrent processing of a key, re-add while processing, backoff', async () => {
  const q = new WorkQueue({ baseDelayMs: 10, maxDelayMs: 40 });
  q.add('a');
  q.add('a');
  q.add('b');
  assert.equal(q.length, 2);
  const k1 = await q.get();
  assert.equal(k1, 'a');
  q.add('a'); // while processing: deferred
  assert.equal(q.length, 1);
  assert.equal(await q.get(), 'b');
  q.done('a');
  assert.equal(await q.get(), 'a');
  q.done('a');
  q.done('b');
  assert.equal(q.backoffFor('x'), 10);
  q.addRateLimited('x');
  q.addRateLimited('x');
  assert.equal(q.backoffFor('x'), 40);
  q.addRateLimited('x');
  assert.equal(q.backoffFor('x'), 40, 'capped');
  q.forget('x');
  assert.equal(q.backoffFor('x'), 10);
  q.addAfter('y', 500);
  q.addAfter('y', 1); // the earlier requeue wins
  assert.equal(await q.get(), 'y');
  q.done('y');
  assert.equal(await q.get(), 'x', 'x comes back after its backoff');
  q.done('x');
  const pending = q.get();
  q.shutDown();
  assert.equal(await pending, undefined);
});
