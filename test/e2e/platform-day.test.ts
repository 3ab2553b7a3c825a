/* eslint-disable @typescript-eslint/no-unsafe-member-access, @typescript-eslint/no-unsafe-assignment, @typescript-eslint/no-unsafe-call, @typescript-eslint/no-unsafe-argument, @typescript-eslint/no-unsafe-return, @typescript-eslint/no-explicit-any -- kubectl's JSON is untyped */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { parseAllDocuments } from 'yaml';
import { dropKeyspace, readCounts } from '../support/cassandra';
import { REPO_ROOT, serverControl } from '../support/env';
import { cli, json, kubectl, need, port, sh, until } from '../support/node-cluster';
import { listS3 } from '../support/s3';
import { testInput } from '../support/events';
import { createTopic, produce, type Produced } from '../support/kafka';
import { referenceRun } from '../support/reference';
import { tempDir } from '../support/local';

/**
 * The platform team's day on a real Kubernetes node, driven only through helm, kubectl and
 * the Prometheus API, with the image built from this checkout (`npm run test-env -- up`
 * builds it and imports it into the node's containerd): install the chart, run an
 * account-level AbacusJob against the test Kafka, Cassandra and S3, watch it, lose a pod,
 * stop a worker while Cassandra is down, scale, monitor, uninstall. The README's platform
 * section shows these same commands. It fails, never skips, when the node is missing.
 */

const IMAGE = need('ABACUS_TEST_IMAGE');
const NODE_IP = need('ABACUS_TEST_NODE_IP');
const BIN = need('ABACUS_TEST_BIN');
const KAFKA = need('ABACUS_TEST_KAFKA');
const CASSANDRA = need('ABACUS_TEST_CASSANDRA');
const PROMETHEUS = need('ABACUS_TEST_PROMETHEUS');
const RULES_DIR = need('ABACUS_TEST_PROMETHEUS_RULES_DIR');
const S3_ENDPOINT = need('ABACUS_TEST_S3_ENDPOINT');
const S3_BUCKET = need('ABACUS_TEST_S3_BUCKET');
const S3_ACCESS_KEY = need('ABACUS_TEST_S3_ACCESS_KEY');
const S3_SECRET_KEY = need('ABACUS_TEST_S3_SECRET_KEY');

const run = Date.now().toString(36);
const release = 'abacus';
const opNs = `abacus-system-${run}`;
const ns = `counting-${run}`;
const job = `accounts-${run}`;
const topic = `events-${run}`;
const keyspace = `platform_${run}`;
const MAX = 64 * 1024;
const CHART = join(REPO_ROOT, 'charts', 'abacus');
const [imageRepo, imageTag] = [IMAGE.slice(0, IMAGE.lastIndexOf(':')), IMAGE.slice(IMAGE.lastIndexOf(':') + 1)];
const work = tempDir('abacus-platform-');
const produced: Produced[] = [];

async function promQuery(expr: string): Promise<any[]> {
  const res = await fetch(`${PROMETHEUS}/api/v1/query?query=${encodeURIComponent(expr)}`);
  const body = (await res.json()) as any;
  assert.equal(body.status, 'success', `${expr}: ${JSON.stringify(body)}`);
  return body.data.result;
}

const readyPods = (): string[] =>
  json('get', 'pods', '-n', ns, '-l', `app.kubernetes.io/instance=${job}`)
    .items.filter((p: any) => p.metadata.deletionTimestamp === undefined && p.status.conditions?.some((c: any) => c.type === 'Ready' && c.status === 'True'))
    .map((p: any) => p.metadata.name)
    .sort();

async function produceMore(seed: number, valid: number): Promise<void> {
  const values = testInput({ seed, nowSec: Math.floor(Date.now() / 1000), valid, dupRate: 0.05, maxEventBytes: MAX, customers: 120 });
  produced.push(...(await produce(KAFKA, topic, values, { partitions: 4, seed })));
}

/** Cassandra's counts in `table` equal the independent reference of `records` (default: everything produced to the main job so far). */
async function countsExact(records: Parameters<typeof referenceRun>[0] = produced, table = 'counts'): Promise<void> {
  const expected = referenceRun(records, { level: 'account', maxEventBytes: MAX }).rows;
  let got: unknown = [];
  await until(
    `the Cassandra counts in ${table} to equal the reference`,
    async () => {
      got = await readCounts(CASSANDRA, keyspace, table, 'account');
      return JSON.stringify(got) === JSON.stringify(expected);
    },
    240_000,
  ).catch(() => assert.deepEqual(got, expected));
}

after(async () => {
  // Leave the cluster as found even when a step failed (the last test checks the normal path).
  sh(join(BIN, 'kubectl'), ['delete', 'abacusjob', job, '-n', ns, '--ignore-not-found', '--wait=false']);
  sh(join(BIN, 'helm'), ['uninstall', release, '-n', opNs, '--wait']);
  sh(join(BIN, 'kubectl'), ['delete', 'namespace', ns, opNs, '--ignore-not-found', '--wait=false']);
  await dropKeyspace(CASSANDRA, keyspace).catch(() => undefined);
  rmSync(join(RULES_DIR, `abacus-${run}.yml`), { force: true });
  await fetch(`${PROMETHEUS}/-/reload`, { method: 'POST' }).catch(() => undefined);
});

test('helm install: CRD, two operator pods from the image (one leads), RBAC, metrics Service, dashboard, alert rules', async () => {
  const node = json('get', 'node');
  assert.ok(node.items.some((n: any) => n.status.conditions.some((c: any) => c.type === 'Ready' && c.status === 'True')), 'a Ready node');
  // The team's namespace first: the operator is installed to manage only that one.
  kubectl('create', 'namespace', ns);
  cli('helm', ['install', release, CHART, '--namespace', opNs, '--create-namespace',
    '--set', `image.repository=${imageRepo}`, '--set', `image.tag=${imageTag}`,
    '--set', `watchNamespace=${ns}`, '--set', 'alerts.workersNotReadyFor=10s',
    '--wait', '--timeout', '5m']);
  kubectl('wait', '--for=condition=Established', 'crd/abacusjobs.abacus.dev');
  const pods = json('get', 'pods', '-n', opNs, '-l', 'app.kubernetes.io/name=abacus-operator').items;
  assert.equal(pods.length, 2);
  for (const p of pods) {
    assert.equal(p.spec.containers[0].image, IMAGE);
    assert.ok(p.status.conditions.some((c: any) => c.type === 'Ready' && c.status === 'True'), `${p.metadata.name} Ready`);
  }
  const lease = await until('a leader', () => json('get', 'lease', 'abacus-operator', '-n', opNs).spec.holderIdentity);
  assert.ok(pods.some((p: any) => p.metadata.name === lease), `the Lease is held by an operator pod (${lease})`);
  const endpoints = await until('both operator pods behind the metrics Service', () => {
    const eps = json('get', 'endpoints', `${release}-metrics`, '-n', opNs);
    const n = (eps.subsets ?? []).flatMap((s: any) => s.addresses ?? []).length;
    return n === 2 ? n : undefined;
  });
  assert.equal(endpoints, 2);
  assert.ok(json('get', 'configmap', `${release}-dashboard`, '-n', opNs).data['abacus.json'].length > 1000);
  assert.match(json('get', 'configmap', `${release}-alerts`, '-n', opNs).data['abacus.rules.yml'], /alert: AbacusWorkersNotReady/);
});

test('pods run as the image user, read-only, without capabilities, under RuntimeDefault seccomp', () => {
  const pod = json('get', 'pods', '-n', opNs, '-l', 'app.kubernetes.io/name=abacus-operator').items[0].metadata.name;
  const probe = kubectl('exec', '-n', opNs, pod, '--', 'node', '-e', `
    const fs = require('fs');
    const status = fs.readFileSync('/proc/1/status', 'utf8');
    const field = (k) => status.match(new RegExp('^' + k + ':\\\\s*(\\\\S+)', 'm'))[1];
    let rootWritable = true;
    try { fs.writeFileSync('/probe', 'x'); } catch (e) { rootWritable = e.code !== 'EROFS'; }
    fs.writeFileSync('/tmp/probe', 'x');
    console.log(JSON.stringify({ uid: process.getuid(), gid: process.getgid(), capEff: field('CapEff'), seccomp: field('Seccomp'), noNewPrivs: field('NoNewPrivs'), rootWritable, node: process.version }));`);
  const got = JSON.parse(probe);
  assert.deepEqual(got, { uid: 10001, gid: 10001, capEff: '0000000000000000', seccomp: '2', noNewPrivs: '1', rootWritable: false, node: got.node });
  assert.match(got.node, /^v24\./, 'Node.js 24 LTS');
});

test('kubectl apply an account-level AbacusJob with credentials from Secrets: workers run as pods with volumes and count exactly', async () => {
  kubectl('create', 'secret', 'generic', 's3-abacus', '-n', ns, `--from-literal=AWS_ACCESS_KEY_ID=${S3_ACCESS_KEY}`, `--from-literal=AWS_SECRET_ACCESS_KEY=${S3_SECRET_KEY}`);
  const manifest = {
    apiVersion: 'abacus.dev/v1alpha1',
    kind: 'AbacusJob',
    metadata: { name: job, namespace: ns },
    spec: {
      image: IMAGE,
      imagePullPolicy: 'IfNotPresent',
      replicas: 2,
      keyGroups: 8,
      level: 'account',
      window: '1s',
      maxEventBytes: String(MAX),
      source: { kafka: { brokers: [`${NODE_IP}:${port(KAFKA)}`], topic } },
      sink: { cassandra: { contactPoints: [`${NODE_IP}:${port(CASSANDRA)}`], localDataCenter: 'datacenter1', keyspace, table: 'counts', consistency: 'ONE', mode: 'final', createSchema: true } },
      storage: { size: '1Gi', whenDeleted: 'Delete', whenScaled: 'Retain' },
      checkpoints: { s3: { endpoint: `http://${NODE_IP}:${port(S3_ENDPOINT)}`, bucket: S3_BUCKET, forcePathStyle: true, credentialsSecretRef: { name: 's3-abacus' } }, interval: '1m', retention: 2 },
    },
  };
  // The input topic exists before the job reads it (as in production).
  await createTopic(KAFKA, topic, 4);
  const manifestFile = join(work, 'job.yaml');
  writeFileSync(manifestFile, JSON.stringify(manifest));
  kubectl('apply', '-f', manifestFile);
  await until('2 worker pods Ready', () => readyPods().length === 2, 240_000);
  const pvcs = json('get', 'pvc', '-n', ns).items;
  assert.equal(pvcs.length, 2);
  assert.ok(pvcs.every((c: any) => c.status.phase === 'Bound'), 'each worker has its bound volume');
  const sts = json('get', 'statefulset', job, '-n', ns);
  const env = sts.spec.template.spec.containers[0].env;
  for (const name of ['AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY']) {
    const e = env.find((x: any) => x.name === name);
    assert.equal(e?.valueFrom?.secretKeyRef?.name, 's3-abacus', `${name} comes from the Secret`);
    assert.equal(e.value, undefined);
  }

  await produceMore(1, 1500);
  await countsExact();
});

test('an AbacusJob with engine: native and a memoryBudget runs its worker as a pod from the image (the Rust kernel inside) and counts exactly', async () => {
  const nativeJob = `native-${run}`;
  const nativeTopic = `events-native-${run}`;
  const manifest = {
    apiVersion: 'abacus.dev/v1alpha1',
    kind: 'AbacusJob',
    metadata: { name: nativeJob, namespace: ns },
    spec: {
      image: IMAGE,
      imagePullPolicy: 'IfNotPresent',
      engine: 'native',
      memoryBudget: '512Mi',
      replicas: 1,
      keyGroups: 4,
      level: 'account',
      window: '1s',
      maxEventBytes: String(MAX),
      source: { kafka: { brokers: [`${NODE_IP}:${port(KAFKA)}`], topic: nativeTopic } },
      sink: { cassandra: { contactPoints: [`${NODE_IP}:${port(CASSANDRA)}`], localDataCenter: 'datacenter1', keyspace, table: 'native_counts', consistency: 'ONE', mode: 'final', createSchema: true } },
      storage: { size: '1Gi', whenDeleted: 'Delete', whenScaled: 'Delete' },
    },
  };
  await createTopic(KAFKA, nativeTopic, 2);
  const manifestFile = join(work, 'native-job.yaml');
  writeFileSync(manifestFile, JSON.stringify(manifest));
  kubectl('apply', '-f', manifestFile);
  const pods = (): any[] => json('get', 'pods', '-n', ns, '-l', `app.kubernetes.io/instance=${nativeJob}`).items;
  await until('the native worker pod Ready', () => pods().some((p: any) => p.status.conditions?.some((c: any) => c.type === 'Ready' && c.status === 'True')), 240_000);
  const container = json('get', 'statefulset', nativeJob, '-n', ns).spec.template.spec.containers[0];
  assert.match(container.env.find((e: any) => e.name === 'NODE_OPTIONS')?.value, /^--max-semi-space-size=32 --max-old-space-size=\d+$/, "the native engine's young generation, and the budget's heap cap");

  const values = testInput({ seed: 77, nowSec: Math.floor(Date.now() / 1000), valid: 1500, dupRate: 0.05, maxEventBytes: MAX, customers: 80 });
  const sent = await produce(KAFKA, nativeTopic, values, { partitions: 2, seed: 77 });
  await countsExact(sent, 'native_counts');
  // The pod's own log says which engine counted.
  const pod = pods()[0].metadata.name;
  assert.match(kubectl('logs', pod, '-n', ns), /"engine":"native"/);
  kubectl('delete', 'abacusjob', nativeJob, '-n', ns, '--wait=true', '--timeout=120s');
});

test('kubectl get abacusjobs shows replicas, ready, phase, lag, checkpoint; describe explains with conditions and Events', async () => {
  const header = kubectl('get', 'abacusjobs', '-n', ns).split('\n')[0]!;
  assert.match(header, /NAME\s+REPLICAS\s+READY\s+PHASE\s+INPUT LAG\s+LAST CHECKPOINT\s+AGE/);
  const row = await until('the job Running with 2 of 2 ready', () => {
    const line = kubectl('get', 'abacusjob', job, '-n', ns, '--no-headers');
    return /\s2\s+2\s+Running\s/.test(line) ? line : undefined;
  });
  assert.ok(row.startsWith(job));
  const described = kubectl('describe', 'abacusjob', job, '-n', ns);
  assert.match(described, /Conditions:/);
  assert.match(described, /Type:\s+Ready/);
  assert.match(described, /Events:/);
  assert.doesNotMatch(described, /Events:\s+<none>/, 'the operator recorded Events');
});

test('a deleted worker pod comes back with its volume, and the counts stay exact', async () => {
  const pod = `${job}-1`;
  const volumeBefore = json('get', 'pvc', `data-${pod}`, '-n', ns).spec.volumeName;
  const uidBefore = json('get', 'pod', pod, '-n', ns).metadata.uid;
  kubectl('delete', 'pod', pod, '-n', ns);
  await until('the pod back and Ready', () => json('get', 'pod', pod, '-n', ns).metadata.uid !== uidBefore && readyPods().includes(pod));
  assert.equal(json('get', 'pvc', `data-${pod}`, '-n', ns).spec.volumeName, volumeBefore, 'same volume');
  await produceMore(2, 800);
  await countsExact();
});

test('a worker stops within its grace period even with Cassandra down; nothing is lost', async (t) => {
  const pod = `${job}-0`;
  const grace = json('get', 'pod', pod, '-n', ns).spec.terminationGracePeriodSeconds;
  await produceMore(3, 400);
  await serverControl('stop', 'cassandra');
  try {
    await new Promise((r) => setTimeout(r, 3000));
    const t0 = Date.now();
    kubectl('delete', 'pod', pod, '-n', ns, '--wait=true', '--timeout=120s');
    const seconds = (Date.now() - t0) / 1000;
    t.diagnostic(`pod deleted with Cassandra down in ${seconds.toFixed(1)} s (grace period ${grace} s)`);
    assert.ok(seconds < grace, `the pod was gone after ${seconds.toFixed(1)} s, within its ${grace} s grace period (not killed at the end of it)`);
  } finally {
    await serverControl('start', 'cassandra');
  }
  await until('2 workers Ready again', () => readyPods().length === 2, 240_000);
  await countsExact();
});

test('every endpoint passes promtool check metrics', () => {
  const pods = [
    ...json('get', 'pods', '-n', opNs, '-l', 'app.kubernetes.io/name=abacus-operator').items,
    ...json('get', 'pods', '-n', ns, '-l', `app.kubernetes.io/instance=${job}`).items,
  ];
  assert.equal(pods.length, 4);
  for (const p of pods) {
    const c = p.spec.containers[0];
    const metricsPort = c.ports.find((x: any) => x.name === 'metrics' || x.name === 'http').containerPort;
    const r = spawnSync('curl', ['-sf', `http://${p.status.podIP}:${metricsPort}/metrics`], { encoding: 'utf8' });
    assert.equal(r.status, 0, `scrape ${p.metadata.name}`);
    const lint = sh(join(BIN, 'promtool'), ['check', 'metrics'], r.stdout);
    assert.equal(lint.code, 0, `${p.metadata.name}: ${lint.out}${lint.err}`);
  }
});

test('the shipped alert rules pass their unit tests (promtool test rules)', () => {
  const rendered = cli('helm', ['template', release, CHART, '--namespace', opNs]);
  const cm = parseAllDocuments(rendered).map((d) => d.toJS()).find((d: any) => d?.kind === 'ConfigMap' && d.metadata.name === `${release}-alerts`);
  writeFileSync(join(work, 'abacus.rules.yml'), cm.data['abacus.rules.yml']);
  copyFileSync(join(REPO_ROOT, 'test', 'alerts', 'abacus.rules.test.yml'), join(work, 'abacus.rules.test.yml'));
  cli('promtool', ['check', 'rules', join(work, 'abacus.rules.yml')]);
  const out = cli('promtool', ['test', 'rules', join(work, 'abacus.rules.test.yml')]);
  assert.match(out, /SUCCESS/);
});

test('Prometheus discovers operator and worker pods through the API server; every dashboard query returns data', async () => {
  await until('operator and worker targets up', async () => {
    const up = await promQuery(`up{namespace=~"${opNs}|${ns}"}`);
    return up.length === 4 && up.every((s) => s.value[1] === '1');
  });
  // Enough samples for rates over the dashboard's interval.
  await produceMore(4, 300);
  await new Promise((r) => setTimeout(r, 20_000));
  const dashboard = JSON.parse(json('get', 'configmap', `${release}-dashboard`, '-n', opNs).data['abacus.json']);
  const exprs: string[] = dashboard.panels.flatMap((p: any) => (p.targets ?? []).map((t: any) => t.expr));
  assert.ok(exprs.length >= 20, `${exprs.length} queries`);
  const empty: string[] = [];
  for (const raw of exprs) {
    const expr = raw.replaceAll('$namespace', ns).replaceAll('$job', job).replaceAll('$__rate_interval', '30s');
    if ((await promQuery(expr)).length === 0) empty.push(expr);
  }
  assert.deepEqual(empty, [], 'dashboard queries without data');
});

test('kubectl get abacusjobs shows the input lag and the last checkpoint the workers report, and S3 holds that checkpoint', async () => {
  // The job checkpoints every minute; by now at least one complete checkpoint per worker exists.
  const row = await until('INPUT LAG and LAST CHECKPOINT filled in', () => {
    const line = kubectl('get', 'abacusjob', job, '-n', ns, '--no-headers');
    // NAME REPLICAS READY PHASE INPUT-LAG LAST-CHECKPOINT AGE
    const cols = line.trim().split(/\s+/);
    return cols.length === 7 && /^\d+s$/.test(cols[4]!) && /^\d+[smh]/.test(cols[5]!) ? cols : undefined;
  }, 180_000);
  // The status equals the aggregate of what the workers reported in their ConfigMaps (oldest
  // checkpoint, largest lag) — read at the same moment, so retried while a report changes.
  const figures = await until('status = the workers\' reports', () => {
    const reports = [0, 1].map((o) => JSON.parse(json('get', 'configmap', `${job}-worker-${o}`, '-n', ns).data['status.json']));
    const status = json('get', 'abacusjob', job, '-n', ns).status;
    const oldest = Math.min(...reports.map((r: any) => r.lastCheckpointMs));
    const lag = Math.max(...reports.map((r: any) => r.inputLagSeconds));
    const expected = { lastCheckpointTime: new Date(Math.floor(oldest / 1000) * 1000).toISOString().replace('.000Z', 'Z'), inputLag: `${Math.round(lag)}s` };
    return status.lastCheckpointTime === expected.lastCheckpointTime && status.inputLag === expected.inputLag ? { ...expected, oldest } : undefined;
  }, 90_000);
  assert.match(row[4]!, /^\d+s$/);
  // That checkpoint is really in S3: a manifest of each worker written no earlier than it.
  const objects = await listS3(`abacus/${ns}/${job}/`);
  for (const w of ['w0', 'w1']) {
    const manifests = objects.filter((o) => o.key.startsWith(`abacus/${ns}/${job}/${w}/manifests/`));
    assert.ok(manifests.some((m) => m.lastModified.getTime() >= figures.oldest - 2000), `a manifest of ${w} in S3 at or after ${figures.lastCheckpointTime}: ${manifests.map((m) => m.key).join(', ')}`);
  }
});

test('kubectl scale abacusjob --replicas=3: the StatefulSet, the assignment and the status follow', async () => {
  kubectl('scale', `abacusjob/${job}`, '-n', ns, '--replicas=3');
  await until('3 worker pods Ready', () => readyPods().length === 3, 240_000);
  // The new pod is Ready before key groups move to it (ADR 0005): the document follows.
  const assignment = await until('the assignment published for 3 workers', () => {
    const doc = JSON.parse(json('get', 'configmap', `${job}-assignment`, '-n', ns).data['assignment.json']);
    return doc.workers.length === 3 ? doc : undefined;
  }, 120_000);
  assert.equal(assignment.workers.length, 3);
  const groups = assignment.workers.flatMap((w: any) => w.keyGroups ?? w.ranges ?? []);
  assert.ok(groups.length > 0, 'the key groups are divided among the 3 workers');
  assert.equal(json('get', 'statefulset', job, '-n', ns).spec.replicas, 3);
  await until('status 3 ready', () => json('get', 'abacusjob', job, '-n', ns).status?.readyReplicas === 3);
});

test('a stopped worker fires the shipped alert in the real Prometheus', async () => {
  const rules = json('get', 'configmap', `${release}-alerts`, '-n', opNs).data['abacus.rules.yml'];
  writeFileSync(join(RULES_DIR, `abacus-${run}.yml`), rules);
  const reload = await fetch(`${PROMETHEUS}/-/reload`, { method: 'POST' });
  assert.equal(reload.status, 200);
  // A worker stops and cannot come back: its node is cordoned (maintenance) and the pod deleted.
  const node = json('get', 'nodes').items[0].metadata.name;
  kubectl('cordon', node);
  try {
    kubectl('delete', 'pod', `${job}-2`, '-n', ns, '--wait=false');
    const alert = await until('AbacusWorkersNotReady firing', async () => {
      const res = (await (await fetch(`${PROMETHEUS}/api/v1/alerts`)).json()) as any;
      return res.data.alerts.find((a: any) => a.labels.alertname === 'AbacusWorkersNotReady' && a.labels.abacusjob === job && a.labels.job_namespace === ns && a.state === 'firing');
    }, 180_000);
    assert.equal(alert.labels.severity, 'warning');
    assert.match(alert.annotations.summary, new RegExp(`${ns}/${job}: fewer workers ready than desired`));
  } finally {
    sh(join(BIN, 'kubectl'), ['uncordon', node]);
  }
  await until('3 workers Ready again', () => readyPods().length === 3, 240_000);
});

test("the operator's ServiceAccount may do what it needs and nothing more", () => {
  const sa = `system:serviceaccount:${opNs}:${release}`;
  const can = (verb: string, resource: string, namespace = ns): boolean => {
    const [kind, sub] = resource.split('#');
    const r = sh(join(BIN, 'kubectl'), ['auth', 'can-i', verb, kind!, ...(sub === undefined ? [] : [`--subresource=${sub}`]), '-n', namespace, '--as', sa]);
    return r.out.trim() === 'yes';
  };
  // create/get jobs.batch: the whenDeleted=Delete cleanup Job (the job's own image and
  // ServiceAccount, docs/adr/0010) — no more power than creating StatefulSets already gives.
  for (const [verb, resource] of [['list', 'abacusjobs.abacus.dev'], ['patch', 'abacusjobs.abacus.dev#status'], ['patch', 'abacusjobs.abacus.dev'], ['create', 'statefulsets.apps'], ['patch', 'configmaps'], ['create', 'services'], ['create', 'events'], ['create', 'jobs.batch'], ['get', 'jobs.batch']]) {
    assert.ok(can(verb!, resource!), `may ${verb} ${resource}`);
  }
  assert.ok(can('update', 'leases.coordination.k8s.io/abacus-operator', opNs), 'may renew its Lease');
  for (const [verb, resource, where] of [
    ['get', 'secrets', ns], ['list', 'secrets', ns], ['create', 'pods', ns], ['delete', 'statefulsets.apps', ns], ['delete', 'persistentvolumeclaims', ns],
    ['delete', 'jobs.batch', ns], ['patch', 'jobs.batch', ns], ['list', 'jobs.batch', ns],
    ['create', 'leases.coordination.k8s.io', opNs], ['update', 'abacusjobs.abacus.dev', ns], ['list', 'abacusjobs.abacus.dev', 'default'], ['create', 'clusterrolebindings', ns],
  ]) {
    assert.ok(!can(verb!, resource!, where), `may not ${verb} ${resource} in ${where}`);
  }
});

test('no credential in ConfigMaps, logs or status', () => {
  const places: Array<[string, string]> = [
    ['configmaps', kubectl('get', 'configmaps', '-n', ns, '-o', 'yaml') + kubectl('get', 'configmaps', '-n', opNs, '-o', 'yaml')],
    ['status', kubectl('get', 'abacusjob', job, '-n', ns, '-o', 'yaml')],
    ['events', kubectl('get', 'events', '-n', ns, '-o', 'yaml')],
  ];
  for (const p of json('get', 'pods', '-n', ns).items.concat(json('get', 'pods', '-n', opNs).items)) {
    places.push([`logs of ${p.metadata.name}`, kubectl('logs', '-n', p.metadata.namespace, p.metadata.name)]);
  }
  for (const [where, text] of places) assert.ok(!text.includes(S3_SECRET_KEY), `the S3 secret key appears in ${where}`);
});

test('helm uninstall and deleting the job leave nothing behind', async () => {
  kubectl('delete', 'abacusjob', job, '-n', ns, '--wait=true', '--timeout=120s');
  cli('helm', ['uninstall', release, '-n', opNs, '--wait', '--timeout', '2m']);
  const leftovers = (): string[] => {
    const jobSide = json('get', 'statefulsets,services,configmaps,pods,pvc,poddisruptionbudgets', '-n', ns).items
      .filter((o: any) => !(o.kind === 'ConfigMap' && o.metadata.name === 'kube-root-ca.crt'));
    const opSide = json('get', 'deployments,services,configmaps,pods,serviceaccounts,roles,rolebindings,leases', '-n', opNs).items
      .filter((o: any) => !(o.kind === 'ConfigMap' && o.metadata.name === 'kube-root-ca.crt') && !(o.kind === 'ServiceAccount' && o.metadata.name === 'default'));
    const cluster = json('get', 'clusterroles,clusterrolebindings', '-l', `app.kubernetes.io/instance=${release}`).items;
    return [...jobSide, ...opSide, ...cluster].map((o: any) => `${o.kind}/${o.metadata.name}`);
  };
  let left: string[] = [];
  await until('nothing left', () => (left = leftovers()).length === 0, 120_000).catch(() => assert.deepEqual(left, []));
  kubectl('delete', 'namespace', ns, opNs, '--wait=false');
});
