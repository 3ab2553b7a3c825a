/**
 * Smoke tests of the real-server test environment (`npm run test-env -- up`): one per
 * server, each through the client the project itself uses. A missing ABACUS_TEST_*
 * variable fails the test (never a skip): the servers are part of the test run.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { promisify } from 'node:util';

import {
  CreateBucketCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  HeadBucketCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
} from '@aws-sdk/client-s3';
import type * as k8s from '@kubernetes/client-node';
import { Client as CassandraClient } from 'cassandra-driver';
import { Kafka, logLevel } from 'kafkajs';

import { ApiError, isNotFound, KubeClient, loadKubeconfig, WatchEvent } from '../../common/kube-client';

const run = promisify(execFile);
const runId = `${Date.now().toString(36)}${Math.floor(Math.random() * 1e6).toString(36)}`;

function requireEnv(name: string): string {
  const v = process.env[name];
  if (v === undefined || v === '') {
    assert.fail(
      `${name} is not set: bring the servers up with \`npm run test-env -- up\` and ` +
        '`source .test-env/env` (test/env/README.md)',
    );
  }
  return v;
}

function hostPort(v: string): { host: string; port: number } {
  const i = v.lastIndexOf(':');
  return { host: v.slice(0, i), port: Number(v.slice(i + 1)) };
}

async function eventually<T>(what: string, fn: () => Promise<T | undefined>, timeoutMs = 60_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v !== undefined) return v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out waiting for ${what}${last instanceof Error ? `: ${last.message}` : ''}`);
    }
    await new Promise((r) => setTimeout(r, 250));
  }
}

function statusCode(e: unknown): number | undefined {
  return e instanceof ApiError ? e.status : undefined;
}

async function rejectsWith(p: Promise<unknown>, code: number, bodyMatch?: RegExp): Promise<void> {
  try {
    await p;
  } catch (e) {
    assert.equal(statusCode(e), code, `expected HTTP ${code}, got ${String(e)}`);
    if (bodyMatch) {
      assert.match(e instanceof Error ? e.message : '', bodyMatch);
    }
    return;
  }
  assert.fail(`expected the request to be rejected with HTTP ${code}`);
}

void test('kafka: produce and consume through a consumer group', async () => {
  const broker = requireEnv('ABACUS_TEST_KAFKA');
  const kafka = new Kafka({ clientId: 'env-smoke', brokers: [broker], logLevel: logLevel.NOTHING });
  const topic = `env-smoke-${runId}`;
  const admin = kafka.admin();
  await admin.connect();
  try {
    assert.equal(await admin.createTopics({ topics: [{ topic, numPartitions: 2 }], waitForLeaders: true }), true);
    const producer = kafka.producer();
    await producer.connect();
    const sent = ['a', 'b', 'c'].map((k) => ({ key: k, value: `value-${k}` }));
    await producer.send({ topic, messages: sent });
    await producer.disconnect();

    const consumer = kafka.consumer({ groupId: `env-smoke-${runId}` });
    await consumer.connect();
    await consumer.subscribe({ topic, fromBeginning: true });
    const got: string[] = [];
    const done = new Promise<void>((resolve) => {
      void consumer.run({
        eachMessage: ({ message }) => {
          got.push(`${message.key?.toString() ?? ''}=${message.value?.toString() ?? ''}`);
          if (got.length === sent.length) resolve();
          return Promise.resolve();
        },
      });
    });
    await Promise.race([
      done,
      new Promise((_, rej) => setTimeout(() => rej(new Error(`consumed only ${got.length}`)), 60_000)),
    ]);
    await consumer.disconnect();
    assert.deepEqual(got.sort(), ['a=value-a', 'b=value-b', 'c=value-c']);
    await admin.deleteTopics({ topics: [topic] });
  } finally {
    await admin.disconnect();
  }
});

void test('cassandra: 5.0 server, schema, write and read', async () => {
  const { host, port } = hostPort(requireEnv('ABACUS_TEST_CASSANDRA'));
  const client = new CassandraClient({
    contactPoints: [host],
    protocolOptions: { port },
    localDataCenter: process.env.ABACUS_TEST_CASSANDRA_DC ?? 'datacenter1',
  });
  await client.connect();
  try {
    const version = await client.execute('SELECT release_version FROM system.local');
    assert.match(String(version.first()?.get('release_version')), /^5\.0\./);
    const ks = `env_smoke_${runId}`;
    await client.execute(
      `CREATE KEYSPACE ${ks} WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}`,
    );
    await client.execute(`CREATE TABLE ${ks}.counts (k text PRIMARY KEY, n bigint)`);
    await client.execute(`INSERT INTO ${ks}.counts (k, n) VALUES (?, ?)`, ['x', 42], { prepare: true });
    const rs = await client.execute(`SELECT n FROM ${ks}.counts WHERE k = ?`, ['x'], { prepare: true });
    assert.equal(String(rs.first()?.get('n')), '42');
    await client.execute(`DROP KEYSPACE ${ks}`);
  } finally {
    await client.shutdown();
  }
});

void test('s3: put, get, list and delete in the test bucket', async () => {
  const endpoint = requireEnv('ABACUS_TEST_S3_ENDPOINT');
  const accessKeyId = requireEnv('ABACUS_TEST_S3_ACCESS_KEY');
  const secretAccessKey = requireEnv('ABACUS_TEST_S3_SECRET_KEY');
  const Bucket = requireEnv('ABACUS_TEST_S3_BUCKET');
  const s3 = new S3Client({
    endpoint,
    region: process.env.ABACUS_TEST_S3_REGION ?? 'us-east-1',
    credentials: { accessKeyId, secretAccessKey },
    forcePathStyle: true,
  });
  try {
    await s3.send(new HeadBucketCommand({ Bucket }));
    const prefix = `env-smoke/${runId}/`;
    const body = Buffer.from(`checkpoint ${runId}`);
    await s3.send(new PutObjectCommand({ Bucket, Key: `${prefix}a.bin`, Body: body }));
    await s3.send(new PutObjectCommand({ Bucket, Key: `${prefix}b.bin`, Body: Buffer.alloc(3 * 1024 * 1024, 7) }));
    const got = await s3.send(new GetObjectCommand({ Bucket, Key: `${prefix}a.bin` }));
    assert.ok(got.Body);
    assert.deepEqual(Buffer.from(await got.Body.transformToByteArray()), body);
    const listed = await s3.send(new ListObjectsV2Command({ Bucket, Prefix: prefix }));
    assert.deepEqual(
      (listed.Contents ?? []).map((o) => [o.Key, o.Size]),
      [
        [`${prefix}a.bin`, body.length],
        [`${prefix}b.bin`, 3 * 1024 * 1024],
      ],
    );
    for (const k of ['a.bin', 'b.bin']) {
      await s3.send(new DeleteObjectCommand({ Bucket, Key: `${prefix}${k}` }));
    }
    const after = await s3.send(new ListObjectsV2Command({ Bucket, Prefix: prefix }));
    assert.equal(after.KeyCount ?? 0, 0);
    // A second bucket can be created too (a fresh store per test is possible).
    const extra = `env-smoke-${runId}`;
    await s3.send(new CreateBucketCommand({ Bucket: extra }));
    await s3.send(new HeadBucketCommand({ Bucket: extra }));
  } finally {
    s3.destroy();
  }
});

const group = 'smoke.abacus.test';
// Plain JSON (sent as is by the REST client), so the schema keys keep their wire names.
const crd = {
  apiVersion: 'apiextensions.k8s.io/v1',
  kind: 'CustomResourceDefinition',
  metadata: { name: `widgets.${group}` },
  spec: {
    group,
    scope: 'Namespaced',
    names: { plural: 'widgets', singular: 'widget', kind: 'Widget', listKind: 'WidgetList' },
    versions: [
      {
        name: 'v1',
        served: true,
        storage: true,
        subresources: { status: {} },
        schema: {
          openAPIV3Schema: {
            type: 'object',
            properties: {
              spec: {
                type: 'object',
                required: ['size'],
                properties: {
                  size: { type: 'integer', minimum: 1 },
                  maxSize: { type: 'integer' },
                },
                'x-kubernetes-validations': [{ rule: '!has(self.maxSize) || self.size <= self.maxSize', message: 'size must not exceed maxSize' }],
              },
              status: { type: 'object', properties: { ready: { type: 'integer' } } },
            },
          },
        },
      },
    ],
  },
};

void test('kube: CRD schema + CEL + status subresource, RBAC, watch, StatefulSet controller, GC, kubectl, helm', async () => {
  const kubeconfig = requireEnv('ABACUS_TEST_KUBECONFIG');
  const bin = requireEnv('ABACUS_TEST_BIN');
  const kubectl = join(bin, 'kubectl');
  const helm = join(bin, 'helm');
  assert.ok(existsSync(kubectl), `${kubectl} missing`);
  assert.ok(existsSync(helm), `${helm} missing`);

  // Through operator/k8s/client.ts, the operator's layer over @kubernetes/client-node 1.4.
  const kube = new KubeClient(loadKubeconfig(kubeconfig));
  const ns = `env-smoke-${runId}`;
  const crdPath = `/apis/apiextensions.k8s.io/v1/customresourcedefinitions/${crd.metadata.name}`;
  const widgets = `/apis/${group}/v1/namespaces/${ns}/widgets`;
  const absent = async (path: string) => {
    try {
      await kube.request('GET', path);
      return undefined;
    } catch (e) {
      return isNotFound(e) ? true : undefined;
    }
  };
  try {
    await kube.request('POST', '/api/v1/namespaces', { body: { metadata: { name: ns } } });

    // Watch: a ConfigMap created after the watch starts arrives as ADDED.
    const abort = new AbortController();
    const events: WatchEvent[] = [];
    const seen = new Promise<void>((resolve, reject) => {
      kube
        .watch(
          `/api/v1/namespaces/${ns}/configmaps`,
          {},
          (e) => {
            events.push(e);
            const meta = e.object.metadata as k8s.V1ObjectMeta | undefined;
            if (e.type === 'ADDED' && meta?.name === 'watched') resolve();
          },
          abort.signal,
        )
        .then(() => reject(new Error('watch ended before the ADDED event')), reject);
    });
    await new Promise((r) => setTimeout(r, 500));
    const cm: k8s.V1ConfigMap = { metadata: { name: 'watched' }, data: { a: 'b' } };
    await kube.request('POST', `/api/v1/namespaces/${ns}/configmaps`, { body: cm });
    await Promise.race([
      seen,
      new Promise((_, rej) => setTimeout(() => rej(new Error('no watch event in 30 s')), 30_000)),
    ]);
    abort.abort();
    assert.ok(events.some((e) => e.type === 'ADDED'));

    // A CRD with a structural schema, a CEL rule and the status subresource.
    if (!(await absent(crdPath))) {
      await kube.request('DELETE', crdPath);
      await eventually('old CRD gone', () => absent(crdPath));
    }
    await kube.request('POST', '/apis/apiextensions.k8s.io/v1/customresourcedefinitions', { body: crd });
    await eventually('CRD established', async () => {
      const c = await kube.request<k8s.V1CustomResourceDefinition>('GET', crdPath);
      return c.status?.conditions?.some((x) => x.type === 'Established' && x.status === 'True') ? true : undefined;
    });
    const widget = (name: string, spec: Record<string, unknown>) => ({
      apiVersion: `${group}/v1`,
      kind: 'Widget',
      metadata: { name },
      spec,
    });
    await eventually('CRD served', () => kube.request('GET', widgets));
    await kube.request('POST', widgets, { body: widget('ok', { size: 2, maxSize: 3 }) });
    await rejectsWith(kube.request('POST', widgets, { body: widget('bad1', { size: 0 }) }), 422, /size/);
    await rejectsWith(kube.request('POST', widgets, { body: widget('bad2', { size: 'big' }) }), 422, /size/);
    await rejectsWith(
      kube.request('POST', widgets, { body: widget('bad3', { size: 5, maxSize: 3 }) }),
      422,
      /size must not exceed maxSize/,
    );
    // Status subresource: /status writes status only; the main resource ignores status.
    type Widget = { metadata: { resourceVersion: string }; spec: { size: number }; status?: { ready?: number } };
    const cur = await kube.request<Widget>('GET', `${widgets}/ok`);
    await kube.request('PUT', `${widgets}/ok/status`, {
      body: { ...widget('ok', { size: 3, maxSize: 3 }), metadata: { name: 'ok', resourceVersion: cur.metadata.resourceVersion }, status: { ready: 1 } },
    });
    const afterStatus = await kube.request<Widget>('GET', `${widgets}/ok`);
    assert.equal(afterStatus.status?.ready, 1);
    assert.equal(afterStatus.spec.size, 2);
    await kube.request('PUT', `${widgets}/ok`, {
      body: { ...widget('ok', { size: 3, maxSize: 3 }), metadata: { name: 'ok', resourceVersion: afterStatus.metadata.resourceVersion }, status: { ready: 9 } },
    });
    const afterSpec = await kube.request<Widget>('GET', `${widgets}/ok`);
    assert.equal(afterSpec.spec.size, 3);
    assert.equal(afterSpec.status?.ready, 1);

    // RBAC is enforced: a service account without bindings may not list pods,
    // and may once a RoleBinding grants it.
    await kube.request('POST', `/api/v1/namespaces/${ns}/serviceaccounts`, { body: { metadata: { name: 'nobody' } } });
    const asNobody = ['--kubeconfig', kubeconfig, '--as', `system:serviceaccount:${ns}:nobody`];
    const denied = await run(kubectl, [...asNobody, 'auth', 'can-i', 'list', 'pods', '-n', ns]).catch(
      (e: { stdout?: string }) => ({ stdout: e.stdout ?? '' }),
    );
    assert.equal(denied.stdout.trim(), 'no');
    const forbidden = await run(kubectl, [...asNobody, 'get', 'pods', '-n', ns]).then(
      () => '',
      (e: { stderr?: string }) => e.stderr ?? '',
    );
    assert.match(forbidden, /forbidden/i);
    const binding: k8s.V1RoleBinding = {
      metadata: { name: 'nobody-view' },
      roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: 'view' },
      subjects: [{ kind: 'ServiceAccount', name: 'nobody', namespace: ns }],
    };
    await kube.request('POST', `/apis/rbac.authorization.k8s.io/v1/namespaces/${ns}/rolebindings`, { body: binding });
    await eventually('RBAC grant effective', async () => {
      const { stdout } = await run(kubectl, [...asNobody, 'auth', 'can-i', 'list', 'pods', '-n', ns]);
      return stdout.trim() === 'yes' ? true : undefined;
    });

    // The StatefulSet controller creates pods (no kubelet: they stay Pending) and
    // the garbage collector deletes them with their owner.
    const sts: k8s.V1StatefulSet = {
      metadata: { name: 'web' },
      spec: {
        serviceName: 'web',
        replicas: 2,
        selector: { matchLabels: { app: 'web' } },
        template: {
          metadata: { labels: { app: 'web' } },
          spec: { containers: [{ name: 'c', image: 'example.invalid/none:1' }] },
        },
      },
    };
    await kube.request('POST', `/apis/apps/v1/namespaces/${ns}/statefulsets`, { body: sts });
    const pod = await eventually('StatefulSet pod web-0', async () => {
      const list = await kube.request<k8s.V1PodList>('GET', `/api/v1/namespaces/${ns}/pods`, {
        query: { labelSelector: 'app=web' },
      });
      return list.items.find((p) => p.metadata?.name === 'web-0');
    });
    assert.equal(pod.metadata?.ownerReferences?.[0]?.kind, 'StatefulSet');
    await kube.request('DELETE', `/apis/apps/v1/namespaces/${ns}/statefulsets/web`, {
      body: { kind: 'DeleteOptions', apiVersion: 'v1', propagationPolicy: 'Background' },
    });
    await eventually('garbage collector deleted the pods', async () => {
      const list = await kube.request<k8s.V1PodList>('GET', `/api/v1/namespaces/${ns}/pods`, {
        query: { labelSelector: 'app=web' },
      });
      return list.items.length === 0 ? true : undefined;
    });

    // kubectl and helm talk to the same cluster.
    const { stdout: ver } = await run(kubectl, ['--kubeconfig', kubeconfig, 'version', '-o', 'json']);
    const parsed = JSON.parse(ver) as { serverVersion?: { gitVersion?: string } };
    assert.match(parsed.serverVersion?.gitVersion ?? '', /^v1\.\d+\.\d+$/);
    const { stdout: names } = await run(kubectl, ['--kubeconfig', kubeconfig, 'get', 'widgets', '-n', ns, '-o', 'name']);
    assert.equal(names.trim(), `widget.${group}/ok`);
    const { stdout: helmVer } = await run(helm, ['version', '--short']);
    assert.match(helmVer, /^v3\./);
    const { stdout: releases } = await run(helm, ['--kubeconfig', kubeconfig, 'list', '-n', ns, '-o', 'json']);
    assert.deepEqual(JSON.parse(releases), []);
  } finally {
    await kube.request('DELETE', crdPath).catch(() => undefined);
    await kube.request('DELETE', `/api/v1/namespaces/${ns}`).catch(() => undefined);
    kube.close();
  }
});

void test('prometheus: query API answers and scrapes itself', async () => {
  const base = requireEnv('ABACUS_TEST_PROMETHEUS');
  const up = await eventually('up{job="prometheus"} == 1', async () => {
    const res = await fetch(`${base}/api/v1/query?query=${encodeURIComponent('up{job="prometheus"}')}`);
    assert.equal(res.status, 200);
    const body = (await res.json()) as {
      status: string;
      data: { result: { value: [number, string] }[] };
    };
    assert.equal(body.status, 'success');
    return body.data.result[0]?.value[1];
  });
  assert.equal(up, '1');
  const info = (await (await fetch(`${base}/api/v1/status/buildinfo`)).json()) as { data: { version: string } };
  assert.match(info.data.version, /^2\./);
});
