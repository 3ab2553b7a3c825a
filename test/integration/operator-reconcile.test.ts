/* eslint-disable @typescript-eslint/no-unsafe-member-access, @typescript-eslint/no-unsafe-assignment, @typescript-eslint/no-unsafe-call, @typescript-eslint/no-unsafe-argument, @typescript-eslint/no-unsafe-return, @typescript-eslint/no-explicit-any -- kubectl's JSON is untyped */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import {
  createNamespace,
  deleteNamespace,
  example,
  getJson,
  installCrd,
  k,
  markPodReady,
  metricValue,
  startOperator,
  waitFor,
  type OperatorProcess,
} from './operator-harness';

/** The operator against the real API server: create, scale, columns, invalid specs, garbage collection. */
let ns = '';
let op: OperatorProcess;

before(() => {
  installCrd();
  ns = createNamespace('abacus-reconcile');
  op = startOperator({ namespace: ns, leaseNamespace: ns, identity: 'reconcile-test' });
});
after(async () => {
  const code = await op.stop();
  deleteNamespace(ns);
  assert.equal(code, 0, `graceful shutdown exits 0; logs:\n${op.logs.slice(-20).join('\n')}`);
});

const job = () => getJson(['get', 'abacusjob', 'accounts', '-n', ns])!;
const cond = (j: any, type: string) => j.status?.conditions?.find((c: any) => c.type === type);

/** Everything the operator creates for the `accounts` example. */
const OWNED = [
  ['statefulset', 'accounts'],
  ['service', 'accounts-workers'],
  ['service', 'accounts-metrics'],
  ['configmap', 'accounts-config'],
  ['configmap', 'accounts-assignment'],
  ['configmap', 'accounts-worker-0'],
  ['serviceaccount', 'accounts-worker'],
  ['role', 'accounts-worker'],
  ['rolebinding', 'accounts-worker'],
  ['poddisruptionbudget', 'accounts'],
] as const;

test('applying the account example creates the StatefulSet and its companions', async () => {
  const t0 = Date.now();
  k(['apply', '-f', '-'], example('account-level.yaml', ns));
  const sts = await waitFor('StatefulSet accounts', () => getJson(['get', 'statefulset', 'accounts', '-n', ns]), 30_000, 50);
  const latencyMs = Date.now() - t0;
  console.log(`# apply → StatefulSet exists: ${latencyMs} ms`);
  assert.equal(sts.spec.replicas, 3);
  assert.equal(sts.spec.serviceName, 'accounts-workers');
  const uid = job().metadata.uid;
  for (const [kind, name] of OWNED) {
    const o = await waitFor(`${kind}/${name}`, () => getJson([`get`, kind, name, '-n', ns, '--show-managed-fields']));
    assert.deepEqual(
      o.metadata.ownerReferences.map((r: any) => [r.kind, r.name, r.uid, r.controller]),
      [['AbacusJob', 'accounts', uid, true]],
      `${kind}/${name} is owned by the job`,
    );
    const manager = o.metadata.managedFields.find((m: any) => m.manager === 'abacus-operator');
    assert.equal(manager?.operation, 'Apply', `${kind}/${name} is server-side applied by abacus-operator`);
  }
  const assignment = JSON.parse(getJson(['get', 'configmap', 'accounts-assignment', '-n', ns])!.data['assignment.json']);
  assert.equal(assignment.keyGroups, 128);
  assert.equal(assignment.workers.length, 3);
  const status = await waitFor('status', () => (job().status?.observedGeneration === 1 ? job().status : undefined));
  assert.equal(status.selector, 'app.kubernetes.io/name=abacus-worker,abacus.dev/job=accounts');
  assert.equal(status.assignment.generation, 1);
  assert.equal(cond(job(), 'Ready').status, 'False');
  assert.equal(cond(job(), 'Progressing').reason, 'Creating');
  // The StatefulSet controller (kube-controller-manager) creates the pods.
  await waitFor('3 pods', () => getJson(['get', 'pods', '-n', ns, '-l', 'abacus.dev/job=accounts'])!.items.length === 3);
  const events = getJson(['get', 'events', '-n', ns, '--field-selector', 'involvedObject.name=accounts,involvedObject.kind=AbacusJob'])!.items;
  assert.ok(events.some((e: any) => e.reason === 'Created' && /StatefulSet accounts/.test(e.message)));
  assert.ok(events.some((e: any) => e.reason === 'AssignmentPublished'));
});

test('workers becoming ready make the job Ready/Running', async () => {
  for (const p of getJson(['get', 'pods', '-n', ns, '-l', 'abacus.dev/job=accounts'])!.items) markPodReady(ns, p.metadata.name);
  const j = await waitFor('Ready=True', () => (cond(job(), 'Ready')?.status === 'True' ? job() : undefined));
  assert.equal(j.status.phase, 'Running');
  assert.equal(j.status.readyReplicas, 3);
  assert.equal(cond(j, 'Progressing').reason, 'Stable');
  assert.equal(cond(j, 'Degraded').status, 'False');
  for (const c of j.status.conditions) assert.equal(c.observedGeneration, j.metadata.generation);
});

test('kubectl get abacusjobs shows the printer columns', () => {
  const out = k(['get', 'abacusjobs', '-n', ns]);
  const [header, row] = out.trim().split('\n');
  assert.match(header!, /^NAME\s+REPLICAS\s+READY\s+PHASE\s+INPUT LAG\s+LAST CHECKPOINT\s+AGE$/);
  assert.match(row!, /^accounts\s+3\s+3\s+Running\s/);
});

test('kubectl scale grows the StatefulSet first; key groups wait for the new workers (none run here); status says so', async () => {
  k(['scale', 'abacusjob/accounts', '-n', ns, '--replicas=5']);
  await waitFor('StatefulSet at 5', () => getJson(['get', 'statefulset', 'accounts', '-n', ns])!.spec.replicas === 5);
  const j = await waitFor('status replicas 5', () => (job().status?.replicas === 5 ? job() : undefined));
  // No worker process runs in this test, so none reports: nothing may move to workers 3 and 4 yet.
  const rescaling = await waitFor('Rescaling condition', () => cond(job(), 'Rescaling'));
  assert.equal(rescaling.status, 'True');
  assert.equal(rescaling.reason, 'WaitingForWorkers');
  assert.match(rescaling.message, /new workers 3, 4/);
  assert.equal(JSON.parse(getJson(['get', 'configmap', 'accounts-assignment', '-n', ns])!.data['assignment.json']).generation, 1);
  for (const o of [0, 1, 2, 3, 4]) assert.ok(getJson(['get', 'configmap', `accounts-worker-${o}`, '-n', ns]), `report ConfigMap of worker ${o}`);
  const role = getJson(['get', 'role', 'accounts-worker', '-n', ns])!;
  // The reports of every worker, and the deletion cleanup's report (it runs as the same identity).
  assert.deepEqual(role.rules[1].resourceNames, ['accounts-worker-0', 'accounts-worker-1', 'accounts-worker-2', 'accounts-worker-3', 'accounts-worker-4', 'accounts-cleanup']);
  assert.equal(j.status.lastApplied.replicas, 5);
  // The scale subresource reads what the operator wrote.
  const scale = JSON.parse(k(['get', '--raw', `/apis/abacus.dev/v1alpha1/namespaces/${ns}/abacusjobs/accounts/scale`]));
  assert.equal(scale.spec.replicas, 5);
  assert.equal(scale.status.replicas, 5);
  assert.equal(scale.status.selector, 'app.kubernetes.io/name=abacus-worker,abacus.dev/job=accounts');
  const events = getJson(['get', 'events', '-n', ns, '--field-selector', 'involvedObject.name=accounts,reason=Scaling'])!.items;
  assert.ok(events.some((e: any) => /replicas 3 → 5/.test(e.message)));
});

test('an invalid spec CEL cannot judge is reported (condition + Warning event) while the last good spec keeps running', async () => {
  const before = getJson(['get', 'statefulset', 'accounts', '-n', ns])!;
  // company_id is a reserved field: the worker's config parser refuses it as a facet.
  k(['patch', 'abacusjob', 'accounts', '-n', ns, '--type=merge', '-p', '{"spec":{"facets":{"exclude":null,"include":["company_id"]},"replicas":4}}']);
  const j = await waitFor('InvalidSpec', () => (cond(job(), 'Ready')?.reason === 'InvalidSpec' && job().status.observedGeneration === job().metadata.generation ? job() : undefined));
  assert.match(cond(j, 'Ready').message, /company_id.*reserved/);
  assert.equal(j.status.phase, 'Invalid');
  const warnings = getJson(['get', 'events', '-n', ns, '--field-selector', 'involvedObject.name=accounts,reason=InvalidSpec'])!.items;
  assert.equal(warnings[0]?.type, 'Warning');
  const afterSts = getJson(['get', 'statefulset', 'accounts', '-n', ns])!;
  assert.equal(afterSts.spec.replicas, 5, 'the invalid spec (with replicas 4) was not applied');
  assert.equal(afterSts.metadata.generation, before.metadata.generation);
  // Fixing the spec (back to the example's facets) resumes reconciliation.
  k(['patch', 'abacusjob', 'accounts', '-n', ns, '--type=merge', '-p', '{"spec":{"facets":{"include":null,"exclude":["session_id","user_agent"]}}}']);
  await waitFor('StatefulSet at 4 after the fix', () => getJson(['get', 'statefulset', 'accounts', '-n', ns])!.spec.replicas === 4);
  await waitFor('no longer invalid', () => job().status.phase !== 'Invalid');
});

test('a state-incompatible change (level) is refused and reported', async () => {
  k(['patch', 'abacusjob', 'accounts', '-n', ns, '--type=merge', '-p', '{"spec":{"level":"customer"}}']);
  const j = await waitFor('StateIncompatibleChange', () => (cond(job(), 'Ready')?.reason === 'StateIncompatibleChange' ? job() : undefined));
  assert.match(cond(j, 'Degraded').message, /create a new AbacusJob/);
  const cfg = getJson(['get', 'configmap', 'accounts-config', '-n', ns])!.data['job.yaml'];
  assert.match(cfg, /level: account/);
  k(['patch', 'abacusjob', 'accounts', '-n', ns, '--type=merge', '-p', '{"spec":{"level":"account"}}']);
  await waitFor('valid again', () => job().status.phase !== 'Invalid');
});

test('an owned object deleted by hand is recreated', async () => {
  k(['delete', 'configmap', 'accounts-config', '-n', ns]);
  await waitFor('config recreated', () => getJson(['get', 'configmap', 'accounts-config', '-n', ns]));
});

test('the operator exposes its metrics', async () => {
  const text = await op.metrics();
  assert.ok(metricValue(text, 'abacus_operator_reconciles_total') > 0);
  assert.equal(metricValue(text, 'abacus_operator_leader'), 1);
  assert.ok(text.includes('abacus_operator_reconcile_duration_seconds_bucket'));
  assert.ok(text.includes('abacus_operator_workqueue_depth'));
  const count = metricValue(text, 'abacus_operator_reconcile_duration_seconds_count');
  const sum = metricValue(text, 'abacus_operator_reconcile_duration_seconds_sum');
  console.log(`# reconciles: ${count}, mean reconcile ${(1000 * sum / count).toFixed(1)} ms`);
});

test('deleting the AbacusJob (whenDeleted: Retain) removes what it owns; the operator lifts its finalizer', async () => {
  assert.deepEqual(getJson(['get', 'abacusjob', 'accounts', '-n', ns])?.metadata?.finalizers, ['abacus.dev/cleanup'], 'the finalizer is on the job');
  k(['delete', 'abacusjob', 'accounts', '-n', ns, '--wait=true', '--timeout=60s']);
  assert.equal(getJson(['get', 'abacusjob', 'accounts', '-n', ns]), undefined);
  for (const [kind, name] of OWNED) {
    await waitFor(`${kind}/${name} deleted`, () => getJson(['get', kind, name, '-n', ns]) === undefined, 60_000, 500);
  }
});
