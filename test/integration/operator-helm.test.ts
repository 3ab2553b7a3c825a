/* eslint-disable @typescript-eslint/no-unsafe-member-access, @typescript-eslint/no-unsafe-assignment, @typescript-eslint/no-unsafe-call, @typescript-eslint/no-unsafe-argument, @typescript-eslint/no-unsafe-return, @typescript-eslint/no-explicit-any -- kubectl's JSON is untyped */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { parseAllDocuments } from 'yaml';
import {
  createNamespace,
  deleteNamespace,
  example,
  getJson,
  installCrd,
  k,
  kubeEnv,
  repoPath,
  run,
  serviceAccountKubeconfig,
  startOperator,
  waitFor,
  type OperatorProcess,
} from './operator-harness';

/** The chart: lint, render, install on the real API server, and run the operator with the chart's RBAC. */
const chart = repoPath('charts', 'abacus');
const helm = (args: string[]) => run(join(kubeEnv().bin, 'helm'), ['--kubeconfig', kubeEnv().kubeconfig, ...args]);
const release = `abacus-${Date.now().toString(36)}`;
let opNs = '';
let jobNs = '';
let op: OperatorProcess | undefined;

before(() => {
  installCrd();
  opNs = createNamespace('abacus-system');
  jobNs = createNamespace('abacus-helm-jobs');
});
after(async () => {
  await op?.stop();
  helm(['uninstall', release, '-n', opNs]);
  deleteNamespace(jobNs);
  deleteNamespace(opNs);
});

test('helm lint is clean', () => {
  const r = helm(['lint', '--strict', chart]);
  assert.equal(r.code, 0, r.stdout + r.stderr);
  assert.doesNotMatch(r.stdout, /\[(ERROR|WARNING)\]/);
});

test('the chart renders every optional piece', () => {
  const r = helm(['template', 'x', chart, '--kube-version', '1.34.0', '--namespace', 'ops', '--set', 'serviceMonitor.enabled=true', '--set', 'watchNamespace=team-a']);
  assert.equal(r.code, 0, r.stderr);
  const docs = parseAllDocuments(r.stdout).map((d) => d.toJS()).filter((d) => d !== null);
  const kinds = docs.map((d) => `${d.kind}/${d.metadata.name}`);
  for (const want of ['ServiceMonitor/x-abacus', 'ServiceMonitor/x-abacus-workers', 'Role/x-abacus', 'RoleBinding/x-abacus', 'ConfigMap/x-abacus-dashboard', 'ConfigMap/x-abacus-alerts', 'Lease/abacus-operator', 'Deployment/x-abacus']) {
    assert.ok(kinds.includes(want), `${want} in ${kinds.join(', ')}`);
  }
  assert.ok(!kinds.some((kd) => kd.startsWith('ClusterRole')), 'a namespace-scoped install creates nothing cluster-wide');
  const dep = docs.find((d) => d.kind === 'Deployment');
  assert.ok(dep.spec.template.spec.containers[0].args.includes('--namespace=team-a'));
  const dash = JSON.parse(docs.find((d) => d.kind === 'ConfigMap' && d.metadata.name === 'x-abacus-dashboard').data['abacus.json']);
  const exprs = JSON.stringify(dash.panels);
  for (const metric of ['abacus_events_in_total', 'abacus_input_lag_seconds', 'abacus_window_flush_duration_seconds_bucket', 'abacus_state_size_bytes', 'abacus_operator_reconciles_total', 'abacus_operator_workqueue_depth']) {
    assert.ok(exprs.includes(metric), `dashboard shows ${metric}`);
  }
});

test('the chart installs on the real API server and the operator reconciles an example with the chart\'s RBAC', async () => {
  const r = helm(['install', release, chart, '--namespace', opNs, '--set', 'replicaCount=1']);
  assert.equal(r.code, 0, r.stdout + r.stderr);
  const dep = await waitFor('operator Deployment', () => getJson(['get', 'deployment', release, '-n', opNs]));
  assert.equal(dep.spec.template.spec.serviceAccountName, release);
  assert.ok(getJson(['get', 'clusterrole', release]));
  assert.ok(getJson(['get', 'role', `${release}-leader-election`, '-n', opNs]));
  assert.ok(getJson(['get', 'configmap', `${release}-dashboard`, '-n', opNs])!.metadata.labels.grafana_dashboard === '1');

  // No kubelet runs the Deployment's pod here, so run the same command outside the cluster
  // with the ServiceAccount's token: every API call goes through the chart's RBAC.
  const kubeconfig = serviceAccountKubeconfig(opNs, release);
  op = startOperator({ kubeconfig, leaseNamespace: opNs, identity: 'chart-sa', namespace: jobNs, extraArgs: ['--lease-name', 'abacus-operator'] });
  k(['apply', '-f', '-'], example('account-level.yaml', jobNs));
  await waitFor('StatefulSet via the chart RBAC', () => getJson(['get', 'statefulset', 'accounts', '-n', jobNs]), 60_000);
  const job = await waitFor('status written', () => {
    const j = getJson(['get', 'abacusjob', 'accounts', '-n', jobNs])!;
    return j.status?.observedGeneration === 1 ? j : undefined;
  });
  assert.equal(job.status.assignment.workers, 3);
  assert.ok(getJson(['get', 'poddisruptionbudget', 'accounts', '-n', jobNs]));
  const forbidden = op.logs.filter((l) => /forbidden/i.test(l));
  assert.deepEqual(forbidden, [], 'no RBAC denials');
  const events = getJson(['get', 'events', '-n', jobNs])!.items;
  assert.ok(events.some((e: any) => e.reason === 'Created'), 'events were recorded with the chart RBAC');
});
