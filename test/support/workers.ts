import { ChildProcess, spawn } from 'node:child_process';
import { createWriteStream, WriteStream } from 'node:fs';
import { join } from 'node:path';
import { REPO_ROOT } from './env';

/**
 * Worker child processes for integration tests: `node bin/abacus.js worker ...`, their log
 * (JSON lines on stderr) kept in a file, the HTTP port discovered from the log (tests pass
 * `metrics.port: 0`), and stop (SIGTERM, graceful) / kill (SIGKILL, a crash).
 */

/** The CLI as users run it. */
function entry(): string[] {
  return [join(REPO_ROOT, 'bin', 'abacus.js'), 'worker'];
}

export class WorkerProcess {
  readonly child: ChildProcess;
  readonly exited: Promise<number | null>;
  private readonly log: WriteStream;
  private stderr = '';
  /** The last lines it printed, for a test that fails to say what the worker was doing. */
  private recent: string[] = [];
  port?: number;

  constructor(
    readonly name: string,
    args: readonly string[],
    logFile: string,
    /** Added to the worker's environment (credentials, NODE_EXTRA_CA_CERTS: what the operator sets from Secrets). */
    env: Readonly<Record<string, string>> = {},
  ) {
    this.log = createWriteStream(logFile, { flags: 'a' });
    // ABACUS_TEST_NODE_ARGS: extra node flags for the workers, e.g. `--cpu-prof --cpu-prof-dir=DIR`.
    const nodeArgs = (process.env.ABACUS_TEST_NODE_ARGS ?? '').split(' ').filter((a) => a !== '');
    this.child = spawn(process.execPath, [...nodeArgs, ...entry(), ...args], { cwd: REPO_ROOT, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    this.child.stdout!.pipe(this.log, { end: false });
    this.child.stderr!.on('data', (chunk: Buffer) => {
      this.log.write(chunk);
      this.recent = [...this.recent, ...chunk.toString('utf8').split('\n').filter((l) => l !== '')].slice(-50);
      if (this.port === undefined) {
        this.stderr += chunk.toString('utf8');
        const line = this.stderr.split('\n').slice(0, -1).find((l) => l.includes('"msg":"http listening"'));
        if (line !== undefined) this.port = (JSON.parse(line) as { port: number }).port;
      }
    });
    this.exited = new Promise((resolve) => this.child.once('exit', (code) => resolve(code)));
  }

  /** Waits until /readyz answers 200. */
  async waitReady(timeoutMs = 120_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    let exitCode: number | null | undefined;
    void this.exited.then((c) => (exitCode = c));
    while (Date.now() < deadline) {
      if (exitCode !== undefined) throw new Error(`worker ${this.name} exited with ${exitCode} before becoming ready`);
      if (this.port !== undefined) {
        try {
          const res = await fetch(`http://127.0.0.1:${this.port}/readyz`);
          if (res.status === 200) return;
        } catch {
          // not listening yet
        }
      }
      await new Promise((r) => setTimeout(r, 250));
    }
    throw new Error(`worker ${this.name} not ready after ${timeoutMs} ms`);
  }

  /** Its last `n` log lines (at most 50 are kept). */
  tail(n: number): string[] {
    return this.recent.slice(-n);
  }

  async metrics(): Promise<string> {
    const res = await fetch(`http://127.0.0.1:${this.port}/metrics`);
    return res.text();
  }

  /** A metric's value (summed over labels matching `labels`, e.g. `outcome="invalid"`). */
  async metric(name: string, labels = ''): Promise<number> {
    const text = await this.metrics();
    let sum = 0;
    for (const line of text.split('\n')) {
      if (!line.startsWith(name)) continue;
      const m = /^([a-zA-Z_:]+)(\{[^}]*\})?\s+(\S+)$/.exec(line);
      if (m === null || m[1] !== name) continue;
      if (labels !== '' && !(m[2] ?? '').includes(labels)) continue;
      sum += Number(m[3]);
    }
    return sum;
  }

  /** SIGTERM and wait (SIGKILL after `timeoutMs`). Resolves to the exit code. */
  async stop(timeoutMs = 60_000): Promise<number | null> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return this.child.exitCode;
    this.child.kill('SIGTERM');
    const timer = setTimeout(() => this.child.kill('SIGKILL'), timeoutMs);
    const code = await this.exited;
    clearTimeout(timer);
    this.log.end();
    return code;
  }

  /** SIGKILL: a crash at an arbitrary instant. */
  async kill(): Promise<void> {
    this.child.kill('SIGKILL');
    await this.exited;
    this.log.end();
  }
}
