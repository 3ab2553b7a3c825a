/* eslint-disable @typescript-eslint/no-unsafe-member-access -- kubectl's JSON is untyped */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { createNamespace, deleteNamespace, example, getJson, installCrd, k, metricValue, startOperator, waitFor, type OperatorProcess } from './operator-harness';

/** Leader election and crash recovery, with real processes killed for real. */
let ns = '';
const started: OperatorProcess[] = [];
const start = (identity: string) => {
  const p = startOperator({ namespace: ns, leaseNamespace: ns, identity });
  started.push(p);
  return p;
};
/** Whether the job ConfigMap the operator writes holds `text` (in any of its files). */
const jobConfigHas = (text: string) => Object.values((getJson(['get', 'configmap', 'customers-config', '-n', ns])?.data ?? {}) as Record<string, string>).some((v) => v.includes(text));
const holder = () => getJson(['get', 'lease', 'abacus-operator', '-n', ns])?.spec?.holderIdentity as string | undefined;

before(() => {
  installCrd();
  ns = createNamespace('abacus-ha');
});
after(async () => {
  for (const p of started) await p.kill();
  deleteNamespace(ns);
});

test('an operator killed mid-reconcile converges after restart', async () => {
  const first = start('crashy');
  await waitFor('leader', () => holder() === 'crashy');
  k(['apply', '-f', '-'], example('customer-level.yaml', ns));
  // Kill it as soon as it has started applying, before it can finish the reconcile.
  await waitFor('first apply', () => getJson(['get', 'configmap', 'customers-config', '-n', ns]), 30_000, 10);
  await first.kill();
  // Meanwhile the world drifts: an owned object disappears, the spec changes.
  k(['delete', 'configmap', 'customers-config', '-n', ns, '--ignore-not-found']);
  k(['scale', 'abacusjob/customers', '-n', ns, '--replicas=3']);
  // Same identity: it may take its own lease back at once.
  start('crashy');
  await waitFor('converged', () => {
    const j = getJson(['get', 'abacusjob', 'customers', '-n', ns])!;
    const sts = getJson(['get', 'statefulset', 'customers', '-n', ns]);
    const cm = getJson(['get', 'configmap', 'customers-config', '-n', ns]);
    const pdb = getJson(['get', 'poddisruptionbudget', 'customers', '-n', ns]);
    return j.status?.observedGeneration === j.metadata.generation && sts?.spec.replicas === 3 && cm !== undefined && pdb !== undefined;
  }, 60_000);
});

test('of two operator replicas only the leader acts; the standby takes over when the leader dies', async () => {
  for (const p of started) await p.stop();
  const a = start('replica-a');
  await waitFor('replica-a leads', () => holder() === 'replica-a', 40_000);
  const b = start('replica-b');
  await waitFor('replica-b waiting', () => b.logs.some((l) => l.includes('waiting for leadership')), 20_000);

  // A spec change only the leader can carry into the world. (Not replicas: without running
  // workers a scale waits for them, see docs/adr/0005-rescale-hand-over.md.)
  k(['patch', 'abacusjob/customers', '-n', ns, '--type=merge', '-p', '{"spec":{"window":"3s"}}']);
  await waitFor('leader applied the change', () => jobConfigHas('window: 3s'), 30_000);
  const bMetrics = await b.metrics();
  assert.equal(metricValue(bMetrics, 'abacus_operator_leader'), 0);
  assert.equal(metricValue(bMetrics, 'abacus_operator_reconciles_total'), 0, 'the standby reconciled nothing');
  assert.equal(metricValue(await a.metrics(), 'abacus_operator_leader'), 1);

  const t0 = Date.now();
  await a.kill(); // no graceful release: the standby must wait for the lease to expire
  k(['patch', 'abacusjob/customers', '-n', ns, '--type=merge', '-p', '{"spec":{"window":"4s"}}']);
  await waitFor('replica-b took over', () => holder() === 'replica-b', 40_000);
  await waitFor('new leader applied the change', () => jobConfigHas('window: 4s'), 30_000);
  console.log(`# failover after SIGKILL of the leader: ${Date.now() - t0} ms (lease duration 15 s)`);

  // A graceful stop releases the lease, so a successor takes over without waiting for expiry.
  const c = start('replica-c');
  await waitFor('replica-c waiting', () => c.logs.some((l) => l.includes('waiting for leadership')), 20_000);
  const t1 = Date.now();
  assert.equal(await b.stop(), 0);
  await waitFor('replica-c leads', () => holder() === 'replica-c', 20_000);
  console.log(`# hand-over after graceful stop: ${Date.now() - t1} ms`);
  assert.ok(Date.now() - t1 < 12_000, 'released lease is taken without waiting for expiry');
});
