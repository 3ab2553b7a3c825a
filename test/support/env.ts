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
 * (see test/env/README.md); resolves once the script is done (after a start: the server is
 * ready). The script serialises on a lock, so this may wait for another `test-env` command;
 * on timeout the whole process group is killed so that no late stop/start fires afterwards.
 */
export function serverControl(action: 'stop' | 'start' | 'restart', server: 'kafka' | 'cassandra', timeoutMs = 600_000): Promise<void> {
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
