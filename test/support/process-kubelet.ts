import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { V1ConfigMap, V1EnvVar, V1StatefulSet } from '@kubernetes/client-node';
import { getJson, kubeEnv } from '../integration/operator-harness';
import { WorkerProcess } from './workers';

/**
 * Plays the kubelet for a job's StatefulSet when the test environment has no node: every
 * second it reads the StatefulSet and keeps one worker process per ordinal below
 * spec.replicas, started with the pod template's own command line and plain env values
 * (the ConfigMap volumes become files; $(POD_INDEX)/$(POD_NAMESPACE) are expanded), each with
 * its own data dir that survives restarts like a PVC. A worker that exits is restarted
 * (restartPolicy Always); ordinals at or above spec.replicas get SIGTERM (the pod deleted).
 */
export class ProcessKubelet {
  readonly workers = new Map<number, WorkerProcess>();
  /** Every process ever started, for clean-up and logs. */
  readonly started: WorkerProcess[] = [];
  private timer?: NodeJS.Timeout;
  private busy = false;
  private stopped = false;
  /** Ordinals not restarted while set (a test holds a killed worker down). */
  readonly held = new Set<number>();

  constructor(
    private readonly namespace: string,
    private readonly job: string,
    readonly dir: string,
    /** Env the Secrets would have filled (e.g. S3 credentials). */
    private readonly extraEnv: Record<string, string> = {},
  ) {}

  start(): void {
    this.timer = setInterval(() => void this.sync(), 1000);
  }

  /** One pass: match the processes to the StatefulSet. */
  async sync(): Promise<void> {
    if (this.busy || this.stopped) return;
    this.busy = true;
    try {
      const sts = getJson<V1StatefulSet>(['get', 'statefulset', this.job, '-n', this.namespace]);
      if (sts === undefined) return;
      const replicas = sts.spec?.replicas ?? 0;
      for (const [ordinal, w] of this.workers) {
        if (ordinal >= replicas) {
          this.workers.delete(ordinal);
          await w.stop(60_000);
        } else if (w.child.exitCode !== null || w.child.signalCode !== null) {
          this.workers.delete(ordinal); // restarted below
        }
      }
      for (let ordinal = 0; ordinal < replicas; ordinal++) {
        if (!this.workers.has(ordinal) && !this.held.has(ordinal)) this.launch(sts, ordinal);
      }
    } finally {
      this.busy = false;
    }
  }

  private launch(sts: V1StatefulSet, ordinal: number): void {
    const container = sts.spec!.template.spec!.containers[0]!;
    const etc = join(this.dir, 'etc');
    mkdirSync(etc, { recursive: true });
    const config = getJson<V1ConfigMap>(['get', 'configmap', `${this.job}-config`, '-n', this.namespace])!;
    const configFile = join(etc, 'job.yaml');
    writeFileSync(configFile, Object.values(config.data!)[0]!);
    const vars: Record<string, string> = { POD_INDEX: String(ordinal), POD_NAMESPACE: this.namespace, POD_NAME: `${this.job}-${ordinal}` };
    const expand = (s: string) => s.replace(/\$\(([A-Z_]+)\)/g, (_, v: string) => vars[v] ?? '');
    const args = (container.args ?? []).map(expand);
    // Volumes and ports as files and free ports on this machine.
    const replace = (flag: string, value: string) => {
      const i = args.indexOf(flag);
      if (i >= 0) args[i + 1] = value;
      else args.push(flag, value);
    };
    replace('--config', configFile);
    replace('--data-dir', join(this.dir, `data-${ordinal}`));
    const assignmentAt = args.indexOf('--assignment');
    if (assignmentAt >= 0) args.splice(assignmentAt, 2); // read through the API server (--kube-namespace) instead of the mounted file
    args.push('--metrics-port', '0', '--kubeconfig', kubeEnv().kubeconfig, '--assignment-poll', '500');
    const env: Record<string, string> = {};
    for (const e of container.env ?? ([] as V1EnvVar[])) if (e.value !== undefined) env[e.name] = expand(e.value);
    Object.assign(env, vars, this.extraEnv);
    const w = new WorkerProcess(`${this.job}-${ordinal}`, args.slice(1), join(this.dir, `worker-${ordinal}.log`), env);
    this.workers.set(ordinal, w);
    this.started.push(w);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer !== undefined) clearInterval(this.timer);
    for (const w of this.workers.values()) await w.stop(60_000);
  }
}
