import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';

/** The CLI entry point, as `npx abacus` runs it. */
export const ABACUS_BIN = join(__dirname, '..', '..', '..', 'bin', 'abacus.js');

export interface CliResult {
  readonly status: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs `abacus ...args` to completion. */
export function abacus(args: readonly string[], timeoutMs = 120_000): CliResult {
  const r = spawnSync(process.execPath, [ABACUS_BIN, ...args], { encoding: 'utf8', timeout: timeoutMs, maxBuffer: 256 * 1024 * 1024 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** Starts `abacus ...args` in the background (for kill tests). */
export function abacusChild(args: readonly string[]): ChildProcess {
  return spawn(process.execPath, [ABACUS_BIN, ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
}

/** Parses JSON-lines output. */
export function jsonLines<T>(text: string): T[] {
  return text
    .split('\n')
    .filter((line) => line.trim() !== '')
    .map((line) => JSON.parse(line) as T);
}
