/* eslint-disable @typescript-eslint/no-explicit-any -- kubectl's JSON is untyped */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { readEnvFile } from './env';

/**
 * The end-to-end tests' hands on the real node: the test environment's variables (failing,
 * never skipping, when the node is missing), and kubectl / helm / promtool run as a user
 * types them.
 */

const file = readEnvFile();
export function need(name: string): string {
  const v = process.env[name] ?? file[name];
  if (v === undefined || v === '') {
    throw new Error(`${name} is not set: this test needs the real node; run \`npm run test-env -- up\` (it brings up kafka cassandra s3 kube node prometheus) and source .test-env/env`);
  }
  return v;
}

/** The port of a host:port or URL. */
export const port = (hostPort: string): string => hostPort.slice(hostPort.lastIndexOf(':') + 1);

export function sh(cmd: string, args: string[], input?: string): { code: number; out: string; err: string } {
  const r = spawnSync(cmd, args, { input, encoding: 'utf8', timeout: 300_000, env: { ...process.env, KUBECONFIG: need('ABACUS_TEST_KUBECONFIG') } });
  if (r.error) throw r.error;
  return { code: r.status ?? -1, out: r.stdout, err: r.stderr };
}

/** kubectl / helm / promtool from the test environment; fails the test with stderr unless it succeeds. */
export function cli(tool: 'kubectl' | 'helm' | 'promtool', args: string[], input?: string): string {
  const r = sh(join(need('ABACUS_TEST_BIN'), tool), args, input);
  assert.equal(r.code, 0, `${tool} ${args.join(' ')}\n${r.out}\n${r.err}`);
  return r.out;
}
export const kubectl = (...args: string[]): string => cli('kubectl', args);
export const json = (...args: string[]): any => JSON.parse(kubectl(...args, '-o', 'json'));
/** The object, or undefined when kubectl says it does not exist. */
export function jsonOrNone(...args: string[]): any {
  const r = sh(join(need('ABACUS_TEST_BIN'), 'kubectl'), [...args, '-o', 'json']);
  if (r.code !== 0 && /NotFound|not found/.test(r.err)) return undefined;
  assert.equal(r.code, 0, `kubectl ${args.join(' ')}\n${r.err}`);
  return JSON.parse(r.out);
}

/** Polls `fn` every second until it returns something other than undefined/false/null, or fails with what it waited for. */
export async function until<T>(what: string, fn: () => T | Promise<T>, timeoutMs = 180_000): Promise<Exclude<T, undefined | false | null>> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v !== undefined && v !== false && v !== null) return v as Exclude<T, undefined | false | null>;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs / 1000}s waiting for ${what}${last instanceof Error ? `: ${last.message}` : ''}`);
    await new Promise((r) => setTimeout(r, 1000));
  }
}
