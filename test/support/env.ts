import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';

/**
 * The real servers of the test environment (`npm run test-env -- up kafka cassandra` writes
 * `.test-env/env`). Integration tests call `requireTestEnv()` first: when the environment is
 * missing they FAIL with the command to run — they never skip, so a missing server can't pass
 * for a green run.
 */

export const REPO_ROOT = resolve(__dirname, '..', '..', '..');

export interface TestEnv {
  /** host:port of the Kafka broker. */
  readonly kafka: string;
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

export function requireTestEnv(): TestEnv {
  const file = readEnvFile();
  const kafka = process.env.ABACUS_TEST_KAFKA ?? file.ABACUS_TEST_KAFKA;
  const cassandra = process.env.ABACUS_TEST_CASSANDRA ?? file.ABACUS_TEST_CASSANDRA;
  if (kafka === undefined || cassandra === undefined) {
    throw new Error(
      'the integration test environment is not up (no ABACUS_TEST_KAFKA / ABACUS_TEST_CASSANDRA in the environment or in .test-env/env): ' +
        'run `npm run test-env -- up kafka cassandra` first',
    );
  }
  return { kafka, cassandra };
}

/**
 * Stops, starts or restarts one server of the test environment through its own script
 * (see test/env/README.md), synchronously.
 */
export function serverControl(action: 'stop' | 'start' | 'restart', server: 'kafka' | 'cassandra'): void {
  execFileSync('npm', ['run', '--silent', 'test-env', '--', action, server], { cwd: REPO_ROOT, stdio: ['ignore', 'inherit', 'inherit'], timeout: 180_000 });
}
