/**
 * The worker with credentials, on REAL servers (`npm run test-env -- up kafka4 cassandra-auth`):
 * Kafka 4.x over TLS with SASL/SCRAM-SHA-512 (the environment's own CA, its SCRAM user) and a
 * Cassandra node with PasswordAuthenticator. Each job is an AbacusJob whose Secret references
 * (source.kafka.tls.caSecretRef, source.kafka.sasl, sink.cassandra.credentialsSecretRef) go
 * through the operator's own model: the worker's job file is the ConfigMap document
 * (jobDocument) and its environment is the pod's (workerEnv), with each secretKeyRef resolved
 * from the test's "Secrets" as the kubelet would, and the CA Secret's mount directory standing
 * for the environment's CA directory. Counts must equal test/support/reference.ts; a wrong
 * password or an untrusted certificate must stop the worker with an error that names the
 * problem, and no password may appear in its log.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { after, before, test } from 'node:test';
import { stringify } from 'yaml';
import { specSchema, type AbacusJob } from '../../operator/api/abacusjob';
import { applyDefaults } from '../../operator/api/schema';
import { jobDocument } from '../../operator/model/config';
import { KAFKA_CA_DIR, workerEnv } from '../../operator/model/statefulset';
import { cassandraClient, CassandraLogin, dropKeyspace, readCounts } from '../support/cassandra';
import { testEnvVar } from '../support/env';
import { testInput } from '../support/events';
import { createTopic, produce } from '../support/kafka';
import { referenceRun, RefRow } from '../support/reference';
import { WorkerProcess } from '../support/workers';

const KEYSPACE = 'abacus_it_secure';
const PARTITIONS = 3;
const MAX_EVENT_BYTES = 2048;
const WORKER_ROLE: CassandraLogin = { username: 'abacus_worker', password: 'abacus-worker-cql-secret' };

interface SecureEnv {
  /** PLAINTEXT listener of the Kafka 4 broker (the test produces through it). */
  readonly plaintext: string;
  readonly ssl: string;
  readonly saslSsl: string;
  readonly caFile: string;
  readonly scram: CassandraLogin;
  readonly cassandra: string;
  readonly superuser: CassandraLogin;
}

function requireSecureEnv(): SecureEnv {
  const names = [
    'ABACUS_TEST_KAFKA4',
    'ABACUS_TEST_KAFKA4_SSL',
    'ABACUS_TEST_KAFKA4_SASL_SSL',
    'ABACUS_TEST_KAFKA4_CA',
    'ABACUS_TEST_KAFKA4_SCRAM_USERNAME',
    'ABACUS_TEST_KAFKA4_SCRAM_PASSWORD',
    'ABACUS_TEST_CASSANDRA_AUTH',
    'ABACUS_TEST_CASSANDRA_AUTH_SUPERUSER',
    'ABACUS_TEST_CASSANDRA_AUTH_SUPERUSER_PASSWORD',
  ];
  const v = Object.fromEntries(names.map((n) => [n, testEnvVar(n)]));
  const missing = names.filter((n) => v[n] === undefined);
  if (missing.length > 0) throw new Error(`the secure test servers are not up (missing ${missing.join(', ')}): run \`npm run test-env -- up kafka4 cassandra-auth\` first`);
  return {
    plaintext: v.ABACUS_TEST_KAFKA4!,
    ssl: v.ABACUS_TEST_KAFKA4_SSL!,
    saslSsl: v.ABACUS_TEST_KAFKA4_SASL_SSL!,
    caFile: v.ABACUS_TEST_KAFKA4_CA!,
    scram: { username: v.ABACUS_TEST_KAFKA4_SCRAM_USERNAME!, password: v.ABACUS_TEST_KAFKA4_SCRAM_PASSWORD! },
    cassandra: v.ABACUS_TEST_CASSANDRA_AUTH!,
    superuser: { username: v.ABACUS_TEST_CASSANDRA_AUTH_SUPERUSER!, password: v.ABACUS_TEST_CASSANDRA_AUTH_SUPERUSER_PASSWORD! },
  };
}

let env: SecureEnv;
const running = new Set<WorkerProcess>();
const runId = Date.now().toString(36);
const scratch = mkdtempSync(join(tmpdir(), 'abacus-it-secure-'));

before(async () => {
  env = requireSecureEnv(); // fails loudly when the servers are not up
  await dropKeyspace(env.cassandra, KEYSPACE, env.superuser);
  // The worker's own role: it may create keyspaces (and so owns the one it creates), nothing more.
  const admin = cassandraClient(env.cassandra, env.superuser);
  await admin.connect();
  try {
    await admin.execute(`CREATE ROLE IF NOT EXISTS ${WORKER_ROLE.username} WITH LOGIN = true AND PASSWORD = '${WORKER_ROLE.password}'`);
    await admin.execute(`ALTER ROLE ${WORKER_ROLE.username} WITH PASSWORD = '${WORKER_ROLE.password}'`);
    await admin.execute(`GRANT CREATE ON ALL KEYSPACES TO ${WORKER_ROLE.username}`);
  } finally {
    await admin.shutdown();
  }
});

after(async () => {
  await Promise.all([...running].map((w) => w.kill()));
});

/** The job's Secrets, as `kubectl create secret generic` would hold them. */
type Secrets = Record<string, Record<string, string>>;

function secrets(over: Partial<Record<'kafkaPassword' | 'cassandraPassword', string>> = {}): Secrets {
  return {
    'kafka-login': { username: env.scram.username, password: over.kafkaPassword ?? env.scram.password },
    'cassandra-login': { username: WORKER_ROLE.username, password: over.cassandraPassword ?? WORKER_ROLE.password },
  };
}

interface SecureJob {
  readonly job: AbacusJob;
  readonly topic: string;
  readonly configPath: string;
}

/** What the Kafka side of a job says about TLS and SASL. */
interface KafkaSecurity {
  readonly listener: 'ssl' | 'saslSsl';
  /** source.kafka.tls.caSecretRef given (the CA mounted and trusted). */
  readonly trustCa: boolean;
}

function job(name: string, topic: string, kafka: KafkaSecurity, cassandraLogin = true): SecureJob {
  const fullName = `${name}-${runId}`;
  const spec = {
    image: 'abacus:test',
    level: 'account',
    keyGroups: 6,
    window: '500ms',
    maxEventBytes: MAX_EVENT_BYTES,
    source: {
      kafka: {
        brokers: [kafka.listener === 'ssl' ? env.ssl : env.saslSsl],
        topic,
        tls: { enabled: true, ...(kafka.trustCa ? { caSecretRef: { name: 'kafka-ca', key: basename(env.caFile) } } : {}) },
        ...(kafka.listener === 'saslSsl' ? { sasl: { mechanism: 'scram-sha-512', credentialsSecretRef: { name: 'kafka-login' } } } : {}),
      },
    },
    sink: {
      cassandra: {
        contactPoints: [env.cassandra],
        keyspace: KEYSPACE,
        table: `${fullName.replace(/-/g, '_')}_counts`,
        createSchema: true,
        ...(cassandraLogin ? { credentialsSecretRef: { name: 'cassandra-login' } } : {}),
      },
    },
  };
  const abacusJob: AbacusJob = {
    apiVersion: 'abacus.dev/v1alpha1',
    kind: 'AbacusJob',
    metadata: { name: fullName, namespace: 'default', uid: `uid-${fullName}`, generation: 1 },
    spec: applyDefaults(specSchema.json, spec) as AbacusJob['spec'],
  };
  // The ConfigMap's document, with a free metrics port for a process outside a pod.
  const doc = { ...jobDocument(fullName, abacusJob.spec, abacusJob.metadata.namespace), metrics: { port: 0 } };
  const configPath = join(scratch, `${fullName}.yaml`);
  writeFileSync(configPath, stringify(doc));
  return { job: abacusJob, topic, configPath };
}

/** The pod's environment for `job`: plain values, and secretKeyRefs resolved from `secretValues` (a missing one fails, as the kubelet would). */
function podEnv(job: AbacusJob, secretValues: Secrets): Record<string, string> {
  const out: Record<string, string> = {};
  for (const e of workerEnv(job)) {
    const ref = e.valueFrom?.secretKeyRef;
    // The CA Secret's mount (its key as ca.crt) is the environment's CA directory here.
    if (e.value !== undefined) out[e.name] = e.value.replace(KAFKA_CA_DIR, dirname(env.caFile));
    else if (ref !== undefined) {
      const value = secretValues[ref.name ?? '']?.[ref.key];
      if (value === undefined) throw new Error(`the pod of ${job.metadata.name} needs key ${ref.key} of Secret ${ref.name ?? "?"}`);
      out[e.name] = value;
    }
    // fieldRefs (pod name, index) only exist in a pod; the worker gets its ordinal as a flag.
  }
  return out;
}

function startWorker(j: SecureJob, secretValues: Secrets): { worker: WorkerProcess; logFile: string } {
  const name = j.job.metadata.name;
  const logFile = join(scratch, `${name}.log`);
  const args = ['--config', j.configPath, '--ordinal', '0', '--replicas', '1', '--data-dir', join(scratch, `${name}-data`)];
  const worker = new WorkerProcess(name, args, logFile, podEnv(j.job, secretValues));
  running.add(worker);
  void worker.exited.then(() => running.delete(worker));
  return { worker, logFile };
}

const SCRAM: KafkaSecurity = { listener: 'saslSsl', trustCa: true };

async function newTopic(name: string): Promise<string> {
  const topic = `secure-${name}-${runId}-in`;
  await createTopic(env.plaintext, topic, PARTITIONS);
  return topic;
}

/** Waits for the worker to exit on its own; returns its exit code and log. */
async function exitOf(worker: WorkerProcess, logFile: string, timeoutMs = 120_000): Promise<{ code: number | null; log: string }> {
  const timer = setTimeout(() => void worker.kill(), timeoutMs);
  const code = await worker.exited;
  clearTimeout(timer);
  await new Promise((r) => setTimeout(r, 200)); // the log stream's last write
  return { code, log: readFileSync(logFile, 'utf8') };
}

function failure(log: string): string {
  const line = log.split('\n').find((l) => l.includes('"msg":"worker failed"'));
  assert.ok(line !== undefined, `the worker logged why it failed:\n${log.slice(-2000)}`);
  return (JSON.parse(line) as { error: string }).error;
}

function assertNoPasswords(log: string, ...passwords: string[]): void {
  for (const p of passwords) assert.ok(!log.includes(p), 'a password appeared in the worker log');
}

test('TLS + SASL/SCRAM-SHA-512 Kafka 4 into password-protected Cassandra: counts equal the reference', { timeout: 300_000 }, async () => {
  const topic = await newTopic('count');
  const j = job('secure', topic, SCRAM);
  const { worker, logFile } = startWorker(j, secrets());
  await worker.waitReady();
  const input = testInput({ seed: 41, valid: 3000, dupRate: 0.25, maxEventBytes: MAX_EVENT_BYTES, nowSec: Math.floor(Date.now() / 1000) - 60, spanSec: 86400 });
  const produced = await produce(env.plaintext, topic, input, { partitions: PARTITIONS, seed: 42 });
  const want = referenceRun(produced, { level: 'account', maxEventBytes: MAX_EVENT_BYTES }).rows;
  const deadline = Date.now() + 180_000;
  let got: RefRow[] = [];
  while (Date.now() < deadline) {
    got = await readCounts(env.cassandra, KEYSPACE, j.job.spec.sink.cassandra.table!, 'account', env.superuser);
    if (JSON.stringify(got) === JSON.stringify(want)) break;
    await new Promise((r) => setTimeout(r, 1000));
  }
  assert.equal(got.length, want.length, 'as many counter rows as the reference');
  assert.deepEqual(got, want);
  assert.equal(await worker.stop(), 0);
  assertNoPasswords(readFileSync(logFile, 'utf8'), env.scram.password, WORKER_ROLE.password);
});

test('a wrong Kafka password stops the worker with an error naming the credentials', { timeout: 180_000 }, async () => {
  const wrong = 'not-the-scram-password';
  const j = job('badkafka', await newTopic('badkafka'), SCRAM);
  const { worker, logFile } = startWorker(j, secrets({ kafkaPassword: wrong }));
  const { code, log } = await exitOf(worker, logFile);
  assert.equal(code, 2, 'a configuration error: exit code 2');
  const error = failure(log);
  assert.match(error, /ABACUS_KAFKA_USERNAME\/ABACUS_KAFKA_PASSWORD: the Kafka brokers refused the scram-sha-512 credentials of user "abacus-test"/);
  assert.match(error, /spec\.source\.kafka\.sasl\.credentialsSecretRef/);
  assertNoPasswords(log, wrong, env.scram.password, WORKER_ROLE.password);
});

test('a broker certificate the worker does not trust stops it with an error naming the CA setting', { timeout: 180_000 }, async () => {
  const j = job('untrusted', await newTopic('untrusted'), { listener: 'ssl', trustCa: false });
  const { worker, logFile } = startWorker(j, secrets());
  const { code, log } = await exitOf(worker, logFile);
  assert.equal(code, 2);
  const error = failure(log);
  assert.match(error, /kafka\.tls: the Kafka brokers' TLS certificate does not verify \(SELF_SIGNED_CERT_IN_CHAIN/);
  assert.match(error, /spec\.source\.kafka\.tls\.caSecretRef/);
});

test('the TLS listener without SASL, with the CA trusted, works', { timeout: 180_000 }, async () => {
  const j = job('tls', await newTopic('tls'), { listener: 'ssl', trustCa: true });
  const { worker } = startWorker(j, secrets());
  await worker.waitReady();
  assert.equal(await worker.stop(), 0);
});

test('a wrong or missing Cassandra password stops the worker with an error naming the credentials', { timeout: 180_000 }, async () => {
  const wrong = 'not-the-cql-password';
  const topic = await newTopic('badcass');
  const bad = startWorker(job('badcass', topic, SCRAM), secrets({ cassandraPassword: wrong }));
  const refused = await exitOf(bad.worker, bad.logFile);
  assert.equal(refused.code, 2);
  assert.match(failure(refused.log), /ABACUS_CASSANDRA_USERNAME\/ABACUS_CASSANDRA_PASSWORD: Cassandra refused the credentials of user "abacus_worker" .*spec\.sink\.cassandra\.credentialsSecretRef/);
  assertNoPasswords(refused.log, wrong, WORKER_ROLE.password);

  const none = startWorker(job('nocass', topic, SCRAM, false), secrets());
  const missing = await exitOf(none.worker, none.logFile);
  assert.equal(missing.code, 2);
  assert.match(failure(missing.log), /Cassandra requires a user name and password, and none were given.*spec\.sink\.cassandra\.credentialsSecretRef/);
});
