import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { requireTestEnv, requireTestS3 } from './env';
import { createTopic, produce, type Produced } from './kafka';
import { tempDir } from './local';
import { ProcessKubelet } from './process-kubelet';
import { createNamespace, deleteNamespace, example, getJson, installCrd, kubeEnv, kubectl, startOperator, waitFor, type OperatorProcess } from '../integration/operator-harness';
import { parseAssignment, type Assignment } from '../../common/assignment';
import { ASSIGNMENT_KEY, parseReport, REPORT_KEY, workerStatusConfigMapName, type MoveTimeline, type WorkerReport } from '../../common/handover';
import { dropKeyspace } from './cassandra';

/**
 * A namespace on the test kube-apiserver with the operator, jobs with checkpoints on the test
 * S3 whose "pods" are worker processes (ProcessKubelet), and the steps of a rescale:
 * `kubectl scale`, wait until settled, the published assignment, input that keeps flowing.
 * Shared by test/e2e/rescale.test.ts and bench/rescale.ts.
 */

interface ExampleJob {
  metadata: { name: string };
  spec: Record<string, unknown> & { source: Record<string, unknown>; sink: Record<string, unknown> };
}

interface JobStatus {
  status?: {
    assignment?: { generation: number; workers: number; movedKeyGroups?: number };
    conditions?: Array<{ type: string; status: string; reason: string; message: string }>;
  };
}

/** Below the broker's default message size limit, so the oversized malformed record can be produced. */
export const MAX_EVENT_BYTES = 64 * 1024;

export interface RescaleJob {
  readonly job: string;
  readonly topic: string;
  readonly keyspace: string;
  readonly kubelet: ProcessKubelet;
}

export class RescaleCluster {
  readonly env = requireTestEnv();
  readonly run = `rs${Date.now().toString(36)}`;
  readonly namespace = createNamespace('rescale');
  /** The operator processes; the last one is the live one (a test kills and replaces it). */
  readonly operators: OperatorProcess[] = [startOperator({ namespace: this.namespace, leaseNamespace: this.namespace, identity: `${this.run}-op1` })];
  private readonly kubelets: ProcessKubelet[] = [];
  private readonly keyspaces: string[] = [];
  /** Also puts the S3 credentials in this process's env, which the workers inherit (a Secret would in a pod). */
  readonly s3 = requireTestS3(`${this.run}/`);

  get operator(): OperatorProcess {
    return this.operators[this.operators.length - 1]!;
  }

  /** Kills the live operator (SIGKILL) and starts another. */
  async replaceOperator(pauseMs: number): Promise<void> {
    await this.operator.kill();
    await new Promise((r) => setTimeout(r, pauseMs));
    this.operators.push(startOperator({ namespace: this.namespace, leaseNamespace: this.namespace, identity: `${this.run}-op${this.operators.length + 1}` }));
  }

  async close(): Promise<void> {
    for (const k of this.kubelets) await k.stop();
    for (const op of this.operators) await op.stop();
    deleteNamespace(this.namespace);
    for (const ks of this.keyspaces) await dropKeyspace(this.env.cassandra, ks).catch(() => undefined);
  }

  /** A job of `replicas` workers with checkpoints on the test S3, its input topic, and a kubelet stand-in running its pods; resolves when they are ready. */
  async setUpJob(name: string, replicas: number, keyGroups: number, checkpointInterval = '3s'): Promise<RescaleJob> {
    const { env, namespace, s3 } = this;
    const job = `${name}-${this.run}`;
    const topic = `${job}-events`;
    const keyspace = `ks_${job.replace(/-/g, '_')}`;
    this.keyspaces.push(keyspace);
    installCrd();
    const manifest = example('account-level.yaml', namespace, (doc: ExampleJob) => {
      doc.metadata.name = job;
      doc.spec.replicas = replicas;
      doc.spec.keyGroups = keyGroups;
      doc.spec.source.kafka = { brokers: [env.kafka], topic };
      doc.spec.sink.cassandra = { contactPoints: [env.cassandra], localDataCenter: 'datacenter1', keyspace, table: 'counts', consistency: 'ONE', mode: 'final', createSchema: true };
      doc.spec.checkpoints = { s3: { endpoint: s3.endpoint, bucket: s3.bucket, prefix: s3.prefix, region: s3.region }, interval: checkpointInterval, retention: 3 };
      doc.spec.facets = { exclude: ['tags'] };
      doc.spec.maxEventBytes = String(MAX_EVENT_BYTES);
      delete doc.spec.resources;
      delete doc.spec.scheduling;
    });
    const applied = kubectl(['apply', '-n', namespace, '-f', '-'], manifest, kubeEnv().kubeconfig);
    assert.equal(applied.code, 0, applied.stderr);
    await createTopic(env.kafka, topic, 4);
    await waitFor('StatefulSet', () => getJson(['get', 'statefulset', job, '-n', namespace]), 60_000);
    const kubelet = new ProcessKubelet(namespace, job, tempDir(`abacus-${name}-`));
    this.kubelets.push(kubelet);
    kubelet.start();
    await waitFor(`${replicas} workers ready`, async () => {
      if (kubelet.workers.size < replicas) return false;
      for (const w of kubelet.workers.values()) await w.waitReady(120_000);
      return true;
    }, 180_000, 1000);
    return { job, topic, keyspace, kubelet };
  }

  status(job: string): JobStatus['status'] {
    return getJson<JobStatus>(['get', 'abacusjob', job, '-n', this.namespace])?.status;
  }

  /** `kubectl scale` through the scale subresource. */
  scale(job: string, replicas: number): void {
    const r = kubectl(['scale', `abacusjob/${job}`, '-n', this.namespace, `--replicas=${replicas}`], undefined, kubeEnv().kubeconfig);
    assert.equal(r.code, 0, r.stderr);
  }

  /** Waits until the hand-over to `replicas` is done: Rescaling=False and the assignment gives groups to exactly `replicas` workers. Resolves with the time waited. */
  async settled(job: string, replicas: number, timeoutMs = 240_000): Promise<number> {
    const started = Date.now();
    try {
      await waitFor(`${job} settled on ${replicas} workers`, () => {
        const s = this.status(job);
        const rescaling = s?.conditions?.find((c) => c.type === 'Rescaling');
        return rescaling?.status === 'False' && s?.assignment?.workers === replicas && getJson<{ spec: { replicas: number } }>(['get', 'statefulset', job, '-n', this.namespace])?.spec.replicas === replicas;
      }, timeoutMs, 500);
    } catch (err) {
      throw new Error(`${(err as Error).message}\n${this.whereItStands(job)}`);
    }
    return Date.now() - started;
  }

  /** What a stuck hand-over looks like: the job's conditions, the moves in progress, the operator's last log lines and each worker's. */
  whereItStands(job: string): string {
    const s = this.status(job);
    const lines = [`status.assignment: ${JSON.stringify(s?.assignment)}`];
    for (const c of s?.conditions ?? []) lines.push(`condition ${c.type}=${c.status} (${c.reason}): ${c.message}`);
    const published = this.publishedAssignment(job);
    lines.push(`published assignment generation ${published?.generation}: moves ${JSON.stringify(published?.handover?.moves.map((m) => ({ group: m.group, phase: m.phase, from: m.from, to: m.to })))}`);
    lines.push('operator log (last 25 lines):', ...this.operator.logs.slice(-25));
    for (const kubelet of this.kubelets) {
      for (const [ordinal, w] of kubelet.workers) lines.push(`worker ${ordinal} log (last 15 lines):`, ...w.tail(15));
    }
    return lines.join('\n');
  }

  publishedAssignment(job: string): Assignment | undefined {
    const cm = getJson<{ data?: Record<string, string> }>(['get', 'configmap', `${job}-assignment`, '-n', this.namespace]);
    const text = cm?.data?.['assignment.json'];
    return text === undefined ? undefined : parseAssignment(text);
  }

  /**
   * The first published assignment that satisfies `predicate`, seen through a watch: every
   * generation the operator publishes arrives, where polling with `kubectl get` (hundreds of
   * milliseconds a call on a loaded machine) can miss a phase that lasts less than that.
   */
  untilAssignment(job: string, what: string, predicate: (a: Assignment) => boolean, timeoutMs: number): Promise<Assignment> {
    return this.untilConfigMap(`${job}-assignment`, ASSIGNMENT_KEY, parseAssignment, what, predicate, timeoutMs);
  }

  /** The first report of worker `ordinal` that satisfies `predicate`, seen through a watch (as untilAssignment). */
  untilReport(job: string, ordinal: number, what: string, predicate: (r: WorkerReport) => boolean, timeoutMs: number): Promise<WorkerReport> {
    return this.untilConfigMap(workerStatusConfigMapName(job, ordinal), REPORT_KEY, parseReport, what, predicate, timeoutMs);
  }

  private untilConfigMap<T>(name: string, key: string, parse: (text: string) => T, what: string, predicate: (value: T) => boolean, timeoutMs: number): Promise<T> {
    const { bin, kubeconfig } = kubeEnv();
    const args = ['--kubeconfig', kubeconfig, 'get', 'configmap', name, '-n', this.namespace, '--watch', '-o', `jsonpath={.data.${key.replace(/\./g, '\\.')}}{"\\n"}`];
    const watch = spawn(join(bin, 'kubectl'), args, { stdio: ['ignore', 'pipe', 'pipe'] });
    return new Promise<T>((resolve, reject) => {
      let buffered = '';
      let stderr = '';
      const done = (err: Error | undefined, value?: T) => {
        clearTimeout(timer);
        watch.kill();
        if (err !== undefined) reject(err);
        else resolve(value!);
      };
      const timer = setTimeout(() => done(new Error(`timed out after ${timeoutMs}ms waiting for ${what} (watching ${name})`)), timeoutMs);
      watch.stdout.on('data', (chunk: Buffer) => {
        buffered += chunk.toString('utf8');
        const lines = buffered.split('\n');
        buffered = lines.pop()!;
        for (const line of lines) {
          if (line.trim() === '') continue;
          const value = parse(line);
          if (predicate(value)) return done(undefined, value);
        }
      });
      watch.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString('utf8')));
      watch.on('exit', (code) => done(new Error(`kubectl watch of ${name} ended (${code}) before ${what}: ${stderr.trim()}`)));
    });
  }

  /** The moves the operator logged ("key group moved"), in order, with the steps of each pause when the workers reported them. */
  static moves(operator: OperatorProcess): Array<{ group: number; pauseMs: number; bytes: number; stepsMs?: MoveTimeline }> {
    return operator.logs.filter((l) => l.includes('"msg":"key group moved"')).map((l) => JSON.parse(l) as { group: number; pauseMs: number; bytes: number; stepsMs?: MoveTimeline });
  }

  /** "flush p50/p99/max ms, checkpoint …": where the moved groups' pauses went. */
  static stepSummary(moves: ReadonlyArray<{ stepsMs?: MoveTimeline }>): string {
    const timed = moves.flatMap((m) => (m.stepsMs === undefined ? [] : [m.stepsMs]));
    if (timed.length === 0) return 'no step timeline reported';
    const names = Object.keys(timed[0]!) as Array<keyof MoveTimeline>;
    return names
      .map((n) => {
        const p = percentiles(timed.map((t) => t[n]));
        return `${n} ${p.p50}/${p.p99}/${p.max}`;
      })
      .join(', ') + ` ms (p50/p99/max over ${timed.length} moves)`;
  }
}

/** p50 / p99 / max of a list. */
export function percentiles(values: readonly number[]): { p50: number; p99: number; max: number } {
  const v = [...values].sort((a, b) => a - b);
  const at = (q: number) => v[Math.min(v.length - 1, Math.floor(q * v.length))] ?? 0;
  return { p50: at(0.5), p99: at(0.99), max: v[v.length - 1] ?? 0 };
}

/** Produces the input in slices, one slice every `everyMs`, until finish(); then the rest. */
export class Feeder {
  readonly produced: Produced[] = [];
  private next = 0;
  private done = false;
  private readonly loop: Promise<void>;
  constructor(
    private readonly broker: string,
    private readonly topic: string,
    private readonly values: readonly string[],
    sliceSize: number,
    everyMs: number,
  ) {
    this.loop = (async () => {
      while (!this.done && this.next < this.values.length) {
        await this.slice(sliceSize);
        await new Promise((r) => setTimeout(r, everyMs));
      }
    })();
  }
  private async slice(n: number): Promise<void> {
    const part = this.values.slice(this.next, this.next + n);
    this.next += part.length;
    if (part.length > 0) this.produced.push(...(await produce(this.broker, this.topic, part, { partitions: 4, seed: this.next })));
  }
  /** Stops the flow and produces what is left; resolves with everything produced, in order. */
  async finish(): Promise<Produced[]> {
    this.done = true;
    await this.loop;
    await this.slice(this.values.length);
    return this.produced;
  }
}
