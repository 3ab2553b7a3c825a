/* eslint-disable @typescript-eslint/no-unsafe-member-access, @typescript-eslint/no-unsafe-assignment, @typescript-eslint/no-unsafe-call, @typescript-eslint/no-explicit-any -- kubectl's JSON is untyped */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parse as parseYaml, stringify } from 'yaml';
import { repoRoot } from '../../operator/api/gen-crd';

/**
 * Shared pieces of the operator integration tests: they run against the real control plane
 * that `npm run test-env -- up kube` starts (etcd, kube-apiserver, kube-controller-manager;
 * no scheduler or kubelet, so pods are created but never run — tests mark them ready through
 * the pods' status subresource where readiness matters).
 */
export const ROOT = repoRoot();

function envFromFile(): Record<string, string> {
  const file = join(ROOT, '.test-env', 'env');
  if (!existsSync(file)) return {};
  const out: Record<string, string> = {};
  for (const line of readFileSync(file, 'utf8').split('\n')) {
    const m = /^(?:export\s+)?([A-Z0-9_]+)=(.*)$/.exec(line.trim());
    if (m) out[m[1]!] = m[2]!.replace(/^["']|["']$/g, '');
  }
  return out;
}

/** Fails loudly (never skips) when the environment is missing. */
export function kubeEnv(): { kubeconfig: string; bin: string } {
  const fileEnv = envFromFile();
  const kubeconfig = process.env.ABACUS_TEST_KUBECONFIG ?? fileEnv.ABACUS_TEST_KUBECONFIG;
  const bin = process.env.ABACUS_TEST_BIN ?? fileEnv.ABACUS_TEST_BIN;
  if (kubeconfig === undefined || !existsSync(kubeconfig)) {
    throw new Error('ABACUS_TEST_KUBECONFIG is not set (or the file is gone): start the control plane with `npm run test-env -- up kube` and source .test-env/env');
  }
  if (bin === undefined) throw new Error('ABACUS_TEST_BIN is not set: it must name the directory holding kubectl and helm (see .test-env/env)');
  return { kubeconfig, bin };
}

export interface RunResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

export function run(cmd: string, args: string[], input?: string, extraEnv: Record<string, string> = {}): RunResult {
  const r = spawnSync(cmd, args, { input, encoding: 'utf8', env: { ...process.env, ...extraEnv }, timeout: 120_000 });
  if (r.error) throw r.error;
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

export function kubectl(args: string[], input?: string, kubeconfig = kubeEnv().kubeconfig): RunResult {
  return run(join(kubeEnv().bin, 'kubectl'), ['--kubeconfig', kubeconfig, ...args], input);
}

/** kubectl that must succeed; returns stdout. */
export function k(args: string[], input?: string): string {
  const r = kubectl(args, input);
  if (r.code !== 0) throw new Error(`kubectl ${args.join(' ')} failed (${r.code}): ${r.stderr}`);
  return r.stdout;
}

export function getJson<T = Record<string, any>>(args: string[]): T | undefined {
  const r = kubectl([...args, '-o', 'json']);
  if (r.code !== 0) {
    if (/NotFound|not found/.test(r.stderr)) return undefined;
    throw new Error(`kubectl ${args.join(' ')}: ${r.stderr}`);
  }
  return JSON.parse(r.stdout) as T;
}

export function installCrd(): void {
  k(['apply', '--server-side', '--force-conflicts', '--field-manager=abacus-tests', '-f', join(ROOT, 'crds')]);
  k(['wait', '--for=condition=Established', '--timeout=60s', 'crd/abacusjobs.abacus.dev']);
}

let counter = 0;
export function createNamespace(prefix: string): string {
  const ns = `${prefix}-${process.pid}-${Date.now().toString(36)}-${counter++}`.slice(0, 63);
  k(['create', 'namespace', ns]);
  return ns;
}

export function deleteNamespace(ns: string): void {
  // The operator is stopped by now: drop its finalizer (abacus.dev/cleanup) so the jobs, and
  // with them the namespace, can go (test jobs use whenDeleted: Retain; nothing external to clean).
  for (const job of kubectl(['get', 'abacusjobs', '-n', ns, '-o', 'name']).stdout.split('\n').filter((l) => l !== '')) {
    kubectl(['patch', job, '-n', ns, '--type=merge', '-p', '{"metadata":{"finalizers":null}}']);
  }
  kubectl(['delete', 'namespace', ns, '--wait=false', '--ignore-not-found']);
}

/** An example as a document, retargeted to a namespace, optionally changed. */
export function example(file: string, namespace: string, change: (doc: any) => void = () => undefined): string {
  const doc = parseYaml(readFileSync(join(ROOT, 'examples', file), 'utf8'));
  doc.metadata.namespace = namespace;
  change(doc);
  return stringify(doc);
}

export async function waitFor<T>(what: string, fn: () => T | Promise<T>, timeoutMs = 30_000, everyMs = 200): Promise<Exclude<T, undefined | false>> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v !== undefined && v !== false) return v as Exclude<T, undefined | false>;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs}ms waiting for ${what}${last instanceof Error ? `: ${last.message}` : ''}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

export interface OperatorProcess {
  readonly child: ChildProcess;
  readonly logs: string[];
  metricsPort(): Promise<number>;
  metrics(): Promise<string>;
  /** SIGTERM and wait; returns the exit code. */
  stop(): Promise<number | null>;
  kill(): Promise<void>;
  exited: Promise<number | null>;
}

export function startOperator(opts: { namespace?: string; leaseNamespace: string; identity: string; kubeconfig?: string; extraArgs?: string[] }): OperatorProcess {
  const args = [
    join(ROOT, 'dist', 'operator', 'main-cli.js'),
    '--kubeconfig', opts.kubeconfig ?? kubeEnv().kubeconfig,
    '--lease-namespace', opts.leaseNamespace,
    '--identity', opts.identity,
    '--metrics-port', '0',
    ...(opts.namespace === undefined ? [] : ['--namespace', opts.namespace]),
    ...(opts.extraArgs ?? []),
  ];
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ABACUS_LOG_LEVEL: 'debug' } });
  const logs: string[] = [];
  const collect = (chunk: Buffer) => logs.push(...chunk.toString('utf8').split('\n').filter((l) => l !== ''));
  child.stdout.on('data', collect);
  child.stderr.on('data', collect);
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  const metricsPort = () =>
    waitFor('operator metrics port', () => {
      for (const l of logs) {
        const m = /"metricsPort":(\d+)/.exec(l);
        if (m) return Number(m[1]);
      }
      return undefined;
    }, 15_000);
  return {
    child,
    logs,
    exited,
    metricsPort,
    async metrics() {
      const port = await metricsPort();
      const res = await fetch(`http://127.0.0.1:${port}/metrics`);
      return res.text();
    },
    async stop() {
      if (child.exitCode === null) child.kill('SIGTERM');
      return exited;
    },
    async kill() {
      if (child.exitCode === null) child.kill('SIGKILL');
      await exited;
    },
  };
}

/** Value of a counter or gauge in Prometheus text, summed over label sets matching `labels`. */
export function metricValue(text: string, name: string, labels = ''): number {
  let sum = 0;
  for (const line of text.split('\n')) {
    if (line.startsWith(name) && (line[name.length] === ' ' || line[name.length] === '{') && line.includes(labels)) sum += Number(line.split(' ').pop());
  }
  return sum;
}

/** Marks a pod Running and Ready through its status subresource (no kubelet in the test env). */
export function markPodReady(namespace: string, pod: string): void {
  const now = new Date().toISOString().replace(/\.\d{3}Z$/, 'Z');
  const status = {
    status: {
      phase: 'Running',
      conditions: [
        { type: 'PodScheduled', status: 'True', lastTransitionTime: now },
        { type: 'Initialized', status: 'True', lastTransitionTime: now },
        { type: 'ContainersReady', status: 'True', lastTransitionTime: now },
        { type: 'Ready', status: 'True', lastTransitionTime: now },
      ],
    },
  };
  k(['patch', 'pod', pod, '-n', namespace, '--subresource=status', '--type=merge', '-p', JSON.stringify(status)]);
}

/** A kubeconfig authenticating as a ServiceAccount (to test the chart's RBAC). */
export function serviceAccountKubeconfig(namespace: string, serviceAccount: string): string {
  const admin = parseYaml(readFileSync(kubeEnv().kubeconfig, 'utf8'));
  const token = k(['create', 'token', serviceAccount, '-n', namespace, '--duration=1h']).trim();
  const ctx = admin.contexts.find((c: any) => c.name === admin['current-context']) ?? admin.contexts[0];
  const cluster = admin.clusters.find((c: any) => c.name === ctx.context.cluster);
  const cfg = {
    apiVersion: 'v1',
    kind: 'Config',
    clusters: [cluster],
    users: [{ name: 'sa', user: { token } }],
    contexts: [{ name: 'sa', context: { cluster: cluster.name, user: 'sa', namespace } }],
    'current-context': 'sa',
  };
  const file = join(mkdtempSync(join(tmpdir(), 'abacus-sa-')), 'kubeconfig');
  writeFileSync(file, stringify(cfg));
  return file;
}

export const repoPath = (...p: string[]) => resolve(ROOT, ...p);
