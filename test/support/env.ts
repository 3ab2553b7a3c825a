import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';

/**
 * The real servers of the test environment (`npm run test-env -- up kafka cassandra` writes
 * `.test-env/env`). Integration tests call `requireTestEnv()` first: when the environment is
 * missing they FAIL with the command to run — they never skip, so a missing server can't pass
 * for a green run.
 */

export const REPO_ROOT = resolve(__dirname, '..', '..', '..');

/** The test environment's brokers: Kafka 3.9 (`kafka`) and Kafka 4.x (`kafka4`). */
export type KafkaServer = 'kafka' | 'kafka4';

export interface TestEnv {
  /** host:port of the Kafka broker (PLAINTEXT). */
  readonly kafka: string;
  /** Which broker of the environment that is (for serverControl). */
  readonly kafkaServer: KafkaServer;
  /** host:port of Cassandra's native transport. */
  readonly cassandra: string;
}

export function readEnvFile(): Record<string, string> {
  const file = join(REPO_ROOT, '.test-env', 'env');
  const out: Record<string, string> = {};
  if (!existsSync(file)) return out;
  for (const line of readFileSync(file, 'utf8').split('\n')) {
    const m = /^\s*(?:export\s+)?([A-Z0-9_]+)=(.*)$/.exec(line);
    if (m !== null) out[m[1]!] = m[2]!.trim().replace(/^["']|["']$/g, '');
  }
  return out;
}

/**
 * The broker the worker tests run against: `ABACUS_TEST_KAFKA_SERVER=kafka4` selects Kafka 4.x
 * (the `*-kafka4.test.ts` files set it), anything else Kafka 3.9.
 */
export function selectedKafkaServer(): KafkaServer {
  return process.env.ABACUS_TEST_KAFKA_SERVER === 'kafka4' ? 'kafka4' : 'kafka';
}

/** A variable of the test environment: the process environment first, then `.test-env/env`. */
export function testEnvVar(name: string): string | undefined {
  return process.env[name] ?? readEnvFile()[name];
}

export function requireTestEnv(): TestEnv {
  const kafkaServer = selectedKafkaServer();
  const kafkaVar = kafkaServer === 'kafka4' ? 'ABACUS_TEST_KAFKA4' : 'ABACUS_TEST_KAFKA';
  const kafka = testEnvVar(kafkaVar);
  const cassandra = testEnvVar('ABACUS_TEST_CASSANDRA');
  if (kafka === undefined || cassandra === undefined) {
    throw new Error(
      `the integration test environment is not up (no ${kafkaVar} / ABACUS_TEST_CASSANDRA in the environment or in .test-env/env): ` +
        `run \`npm run test-env -- up ${kafkaServer} cassandra\` first`,
    );
  }
  return { kafka, kafkaServer, cassandra };
}

/** The S3 gateway of the test environment, as checkpoint settings for a fresh prefix of its bucket. */
export function requireTestS3(prefix: string): { endpoint: string; region: string; bucket: string; prefix: string; forcePathStyle: true } {
  const file = readEnvFile();
  const get = (name: string): string | undefined => process.env[name] ?? file[name];
  const endpoint = get('ABACUS_TEST_S3_ENDPOINT');
  const access = get('ABACUS_TEST_S3_ACCESS_KEY');
  const secret = get('ABACUS_TEST_S3_SECRET_KEY');
  const bucket = get('ABACUS_TEST_S3_BUCKET');
  if (endpoint === undefined || access === undefined || secret === undefined || bucket === undefined) {
    throw new Error('the S3 of the test environment is not up (no ABACUS_TEST_S3_* in the environment or in .test-env/env): run `npm run test-env -- up s3` first');
  }
  // The SDK's default credential chain reads these; the worker gets them the same way from a Secret.
  process.env.AWS_ACCESS_KEY_ID = access;
  process.env.AWS_SECRET_ACCESS_KEY = secret;
  return { endpoint, region: get('ABACUS_TEST_S3_REGION') ?? 'us-east-1', bucket, prefix, forcePathStyle: true };
}

/**
 * Stops, starts or restarts one server of the test environment through its own script
 * (see test/env/README.md); resolves once the script is done (after a start: the server is
 * ready). The script serialises on a lock, so this may wait for another `test-env` command;
 * on timeout the whole process group is killed so that no late stop/start fires afterwards.
 */
export function serverControl(action: 'stop' | 'start' | 'restart', server: KafkaServer | 'cassandra' | 'cassandra-auth' | 's3', timeoutMs = 600_000): Promise<void> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn('bash', [join(REPO_ROOT, 'test', 'env', 'test-env.sh'), action, server], { cwd: REPO_ROOT, stdio: ['ignore', 'inherit', 'inherit'], detached: true });
    const timer = setTimeout(() => {
      try {
        process.kill(-child.pid!, 'SIGKILL');
      } catch {
        // already gone
      }
      reject(new Error(`test-env ${action} ${server} did not finish within ${timeoutMs} ms`));
    }, timeoutMs);
    child.once('exit', (code) => {
      clearTimeout(timer);
      if (code === 0) resolvePromise();
      else reject(new Error(`test-env ${action} ${server} exited with ${code}`));
    });
  });
}
