import { test } from 'node:test';
import assert from 'node:assert/strict';
import { reconcile, type KubeObject } from '../../operator/reconcile/reconciler';
import { decideDeletion, FINALIZER, type DeletionObservation } from '../../operator/reconcile/finalize';
import { jobKafkaObjects } from '../../worker/io/kafka-client';
import { desiredCleanupJob } from '../../operator/model/cleanup';
import { desiredWorkerRole } from '../../operator/model/rbac';
import { CLEANUP_KEY } from '../../common/cleanup';
import { minimalJob, RecordingCluster } from './operator-fixtures';

const T0 = new Date('2026-01-01T00:00:00Z');

const N = { namespace: 'ns', job: 'j', statefulSet: 'j', cleanupJob: 'j-cleanup' };

test('decideDeletion: Retain lifts the finalizer at once, whatever runs', () => {
  assert.deepEqual(decideDeletion({ policy: 'Retain', workers: { specReplicas: 3, pods: 3 } }, N), { action: 'removeFinalizer' });
});

test('decideDeletion, Delete: workers to 0, their pods gone, then the cleanup Job; the finalizer only after it succeeded', () => {
  const d = (o: Omit<DeletionObservation, 'policy'>) => decideDeletion({ policy: 'Delete', ...o }, N);
  assert.equal(d({ workers: { specReplicas: 2, pods: 2 } }).action, 'stopWorkers');
  const stopping = d({ workers: { specReplicas: 0, pods: 1, observedGeneration: 4, generation: 4 } });
  assert.equal(stopping.action, 'wait');
  assert.match(stopping.condition!.message, /1 worker pod\(s\)/);
  assert.equal(d({ workers: { specReplicas: 0, pods: 0, observedGeneration: 3, generation: 4 } }).action, 'wait', 'the StatefulSet controller has not seen the scale yet');
  assert.equal(d({ workers: { specReplicas: 0, pods: 0, observedGeneration: 4, generation: 4 } }).action, 'startCleanup');
  assert.equal(d({ configExists: true }).action, 'startCleanup', 'no StatefulSet at all: nothing to stop');
  assert.equal(d({ configExists: false }).action, 'removeFinalizer', 'never applied (invalid spec): no worker ever ran, and a cleanup pod could not mount the job document');
  const running = d({ cleanupJob: { succeeded: false, failed: false, failedPods: 0 } });
  assert.deepEqual([running.action, running.condition!.reason], ['wait', 'DeletingState']);
  const blocked = d({ cleanupJob: { succeeded: false, failed: false, failedPods: 0 }, report: { state: 'blocked', message: 'attempt 2 failed: cannot delete the checkpoints under s3://b/p/: connect ECONNREFUSED; retrying', attempts: 2, atMs: 0 } });
  assert.deepEqual([blocked.action, blocked.condition!.reason, blocked.condition!.warning], ['wait', 'CleanupBlocked', true]);
  assert.match(blocked.condition!.message, /ECONNREFUSED/);
  assert.match(blocked.condition!.message, /whenDeleted":"Retain"/, 'says how to give up and keep the state');
  const failed = d({ cleanupJob: { succeeded: false, failed: true, failedPods: 4 } });
  assert.deepEqual([failed.action, failed.condition!.reason], ['wait', 'CleanupFailed']);
  assert.match(failed.condition!.message, /kubectl delete job j-cleanup -n ns/, 'says how to run it again');
  const done = d({ cleanupJob: { succeeded: true, failed: false, failedPods: 0 }, report: { state: 'done', message: 'deleted 12 checkpoint objects', attempts: 1, atMs: 0 } });
  assert.deepEqual(done, { action: 'removeFinalizer', deleted: 'deleted 12 checkpoint objects' });
});

test('jobKafkaObjects: the keyed topic and only this job\'s groups', () => {
  const kafka = { keyedTopic: 'team.orders-keyed', inputKeyed: false, routeGroup: 'team.orders-route', countGroupPrefix: 'team.orders-count' };
  const groups = ['team.orders-route', 'team.orders-count-0-ab12cd34', 'team.orders-count-12-ff', 'team.orders-2-route', 'team.orders-count-x', 'other.orders-route', 'orders-route', 'team.orders-counter-0-aa', 'other.orders-count-0-ab'];
  assert.deepEqual(jobKafkaObjects(kafka, groups), { topics: ['team.orders-keyed'], groups: ['team.orders-route', 'team.orders-count-0-ab12cd34', 'team.orders-count-12-ff'] });
  assert.deepEqual(jobKafkaObjects({ ...kafka, keyedTopic: 'events', inputKeyed: true }, []).topics, [], 'a keyed input topic is the user\'s, never deleted');
});

test('the cleanup Job runs the job\'s image as the worker identity, with S3 and Kafka credentials from the Secrets and nothing of Cassandra', () => {
  const job = minimalJob({
    whenDeleted: 'Delete',
    source: { kafka: { brokers: ['k:9092'], topic: 'events', sasl: { mechanism: 'scram-sha-512', credentialsSecretRef: { name: 'kafka-user' } } } },
    sink: { cassandra: { contactPoints: ['c'], credentialsSecretRef: { name: 'cass' } } },
    checkpoints: { s3: { bucket: 'ckpt', credentialsSecretRef: { name: 's3' } } },
  });
  const cj = desiredCleanupJob(job);
  const pod = cj.spec!.template.spec!;
  assert.equal(pod.serviceAccountName, 'j-worker');
  assert.equal(pod.containers[0]!.image, 'abacus:test');
  assert.deepEqual(pod.containers[0]!.args!.slice(0, 1), ['cleanup']);
  const env = pod.containers[0]!.env!;
  assert.deepEqual(env.filter((e) => e.valueFrom?.secretKeyRef !== undefined).map((e) => `${e.name}<-${e.valueFrom!.secretKeyRef!.name}`).sort(), [
    'ABACUS_KAFKA_PASSWORD<-kafka-user', 'ABACUS_KAFKA_USERNAME<-kafka-user', 'AWS_ACCESS_KEY_ID<-s3', 'AWS_SECRET_ACCESS_KEY<-s3',
  ]);
  assert.ok(env.every((e) => e.value === undefined || !/secret|password/i.test(e.name)), 'no credential value inline');
  assert.equal(cj.metadata!.ownerReferences![0]!.uid, 'uid-1', 'goes with the AbacusJob (garbage collector)');
  assert.notEqual(cj.spec!.template.metadata!.labels!['app.kubernetes.io/name'], 'abacus-worker', 'never selected as a worker');
  const role = desiredWorkerRole(job, 2);
  assert.ok(role.rules!.some((r) => r.resourceNames!.includes('j-cleanup') && r.verbs.includes('patch')), 'the worker identity may write the cleanup report');
});

test('reconcile: the finalizer is added before anything is applied, once', async () => {
  const cluster = new RecordingCluster(minimalJob());
  await reconcile(cluster, 'ns', 'j', () => T0);
  assert.equal(cluster.applied[0], 'Finalizer/add');
  assert.deepEqual(cluster.job.metadata.finalizers, [FINALIZER]);
  cluster.applied.length = 0;
  await reconcile(cluster, 'ns', 'j', () => T0);
  assert.ok(!cluster.applied.includes('Finalizer/add'));
});

const deleted = (cluster: RecordingCluster) => {
  cluster.job = { ...cluster.job, metadata: { ...cluster.job.metadata, deletionTimestamp: T0.toISOString() } };
};

test('reconcile deletion, Retain: the finalizer goes, nothing external is touched', async () => {
  const cluster = new RecordingCluster(minimalJob());
  await reconcile(cluster, 'ns', 'j', () => T0);
  deleted(cluster);
  cluster.applied.length = 0;
  await reconcile(cluster, 'ns', 'j', () => T0);
  assert.deepEqual(cluster.applied, ['Finalizer/remove']);
});

test('reconcile deletion, Delete: scale to 0, wait for the pods, the cleanup Job, its report as the condition, finalizer last', async () => {
  const cluster = new RecordingCluster(minimalJob({ whenDeleted: 'Delete' }));
  await reconcile(cluster, 'ns', 'j', () => T0);
  deleted(cluster);
  cluster.applied.length = 0;
  const setSts = (pods: number) => {
    const sts = cluster.objects.get('StatefulSet/j')!;
    cluster.objects.set('StatefulSet/j', { ...sts, metadata: { ...sts.metadata, generation: 2 }, status: { replicas: pods, observedGeneration: 2 } } as KubeObject);
  };
  const reason = () => cluster.status!.conditions!.find((c) => c.type === 'Deleting')!.reason;
  const r1 = await reconcile(cluster, 'ns', 'j', () => T0);
  assert.ok(r1.requeueAfterMs !== undefined);
  assert.deepEqual(cluster.applied, ['Scale0/StatefulSet/j'], 'never a delete: the garbage collector removes the StatefulSet after the job');
  assert.equal(reason(), 'StoppingWorkers');
  setSts(1);
  await reconcile(cluster, 'ns', 'j', () => T0);
  assert.ok(!cluster.applied.some((a) => a.startsWith('Create/')), 'no cleanup while a worker pod runs');
  setSts(0);
  await reconcile(cluster, 'ns', 'j', () => T0);
  assert.ok(cluster.applied.includes('Create/Job/j-cleanup'));
  assert.ok(cluster.applied.includes('ConfigMap/j-cleanup'), 'the report ConfigMap exists before the pod writes it');
  assert.equal(reason(), 'DeletingState');
  const report = (r: object) => cluster.objects.set('ConfigMap/j-cleanup', { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'j-cleanup' }, data: { [CLEANUP_KEY]: JSON.stringify(r) } } as KubeObject);
  report({ state: 'blocked', message: 'attempt 1 failed: cannot delete the checkpoints under s3://b/ns/j/: S3 unreachable; retrying', attempts: 1, atMs: 1 });
  await reconcile(cluster, 'ns', 'j', () => T0);
  assert.equal(reason(), 'CleanupBlocked');
  assert.ok(cluster.events.includes('Warning/CleanupBlocked'));
  assert.deepEqual(cluster.job.metadata.finalizers, [FINALIZER], 'kept while anything is left');
  report({ state: 'done', message: 'deleted 3 checkpoint objects', attempts: 2, atMs: 2 });
  const cj = cluster.objects.get('Job/j-cleanup')!;
  cluster.objects.set('Job/j-cleanup', { ...cj, status: { succeeded: 1, conditions: [{ type: 'Complete', status: 'True' }] } } as KubeObject);
  const last = await reconcile(cluster, 'ns', 'j', () => T0);
  assert.deepEqual(last, {});
  assert.equal(cluster.applied.at(-1), 'Finalizer/remove');
  assert.deepEqual(cluster.job.metadata.finalizers, []);
  assert.ok(cluster.events.includes('Normal/StateDeleted'));
  assert.equal(cluster.applied.filter((a) => a === 'Create/Job/j-cleanup').length, 1, 'one cleanup Job');
});

test('aggregateProgress: oldest checkpoint only when every worker has one, largest lag', async () => {
  const { aggregateProgress, emptyReport } = await import('../../common/handover');
  const r = (o: number, cp?: number, lag?: number) => ({ ...emptyReport(o), ...(cp === undefined ? {} : { lastCheckpointMs: cp }), ...(lag === undefined ? {} : { inputLagSeconds: lag }) });
  assert.deepEqual(aggregateProgress([r(0, Date.UTC(2026, 0, 1, 0, 5), 2.4), r(1, Date.UTC(2026, 0, 1, 0, 3), 7.6)]), { lastCheckpointTime: '2026-01-01T00:03:00Z', inputLag: '8s' });
  assert.deepEqual(aggregateProgress([r(0, Date.UTC(2026, 0, 1)), r(1)]), {}, 'a worker without a checkpoint: the job has none complete');
  assert.deepEqual(aggregateProgress([]), {});
});

test('parseCleanupReport: a foreign or half-written value is no report, never an exception', async () => {
  const { parseCleanupReport } = await import('../../common/cleanup');
  assert.equal(parseCleanupReport(undefined), undefined);
  assert.equal(parseCleanupReport('{"state":"blocked"'), undefined);
  assert.equal(parseCleanupReport('{"state":"gone","message":"x"}'), undefined);
  assert.equal(parseCleanupReport('[]'), undefined);
  assert.deepEqual(parseCleanupReport('{"state":"done","message":"deleted 3 checkpoint objects","attempts":2,"atMs":5}'), { state: 'done', message: 'deleted 3 checkpoint objects', attempts: 2, atMs: 5 });
});
