import { KIND } from '../api/abacusjob';
import { log } from '../log';
import { MANAGED_BY, FIELD_MANAGER } from '../model/names';
import { reconcile } from '../reconcile/reconciler';
import { advanceHandoverNow } from '../reconcile/advance';
import { workerStatusConfigMapName } from '../../common/handover';
import { ApiCluster } from './cluster';
import type { KubeClient } from '../../common/kube-client';
import { EventRecorder } from './events';
import { Informer, type Obj } from './informer';
import type { OperatorMetrics } from './metrics';
import { WorkQueue } from './queue';
import { RESOURCES } from './resources';

export interface ControllerOptions {
  /** Watch one namespace; all namespaces when undefined. */
  readonly namespace?: string;
  readonly workers?: number;
  /** Every job is reconciled at least this often even if nothing changes. */
  readonly resyncMs?: number;
  readonly identity: string;
}

/**
 * Watches feed keys (namespace/name of an AbacusJob) into the work queue; a few workers take
 * keys and reconcile them. Events on owned objects enqueue their controlling owner, so a
 * StatefulSet status change or a deleted ConfigMap brings the job back to its desired state.
 */
export class Controller {
  readonly queue: WorkQueue;
  private readonly informers: Informer[];
  private readonly jobs: Informer;
  private readonly cluster: ApiCluster;
  private inFlight = 0;
  /** Jobs whose hand-over is being advanced outside the queue; true: a report came meanwhile (advanceOnReport). */
  private readonly advancing = new Map<string, boolean>();

  constructor(
    client: KubeClient,
    private readonly metrics: OperatorMetrics,
    private readonly options: ControllerOptions,
  ) {
    this.queue = new WorkQueue({ onDepth: (d) => metrics.queueDepth.set(d) });
    const ns = options.namespace;
    const count = (resource: string) => () => metrics.watchEvents.inc({ resource });
    this.jobs = new Informer(client, RESOURCES.abacusJob, { namespace: ns }, (_t, obj) => this.enqueue(obj), count('abacusjobs'));
    const owned = (plural: string, r: (typeof RESOURCES)[keyof typeof RESOURCES]) =>
      new Informer(client, r, { namespace: ns, labelSelector: `${MANAGED_BY}=${FIELD_MANAGER}` }, (_t, obj) => this.enqueueOwner(obj), count(plural));
    const statefulSets = owned('statefulsets', RESOURCES.statefulSet);
    const configMaps = new Informer(
      client,
      RESOURCES.configMap,
      { namespace: ns, labelSelector: `${MANAGED_BY}=${FIELD_MANAGER}` },
      (_t, obj) => {
        const busy = this.reconciling(obj); // before enqueueing: an idle worker would take the key at once
        this.enqueueOwner(obj);
        if (busy) this.advanceOnReport(obj);
      },
      count('configmaps'),
    );
    const services = owned('services', RESOURCES.service);
    const pdbs = owned('poddisruptionbudgets', RESOURCES.podDisruptionBudget);
    this.informers = [this.jobs, statefulSets, configMaps, services, pdbs];
    this.cluster = new ApiCluster(client, { statefulSets, configMaps, services, pdbs }, new EventRecorder(client, options.identity), metrics);
  }

  private enqueue(obj: Obj): void {
    this.queue.add(`${obj.metadata.namespace}/${obj.metadata.name}`);
  }

  private enqueueOwner(obj: Obj): void {
    const owner = ownerOf(obj);
    if (owner !== undefined) this.queue.add(`${obj.metadata.namespace}/${owner}`);
  }

  /** True while the reconcile of the object's owning job is in flight. */
  private reconciling(obj: Obj): boolean {
    const owner = ownerOf(obj);
    return owner !== undefined && this.queue.isProcessing(`${obj.metadata.namespace}/${owner}`);
  }

  /**
   * A worker's report while its job's reconcile is in flight (otherwise the queue runs the
   * reconcile at once, and it advances the hand-over first): the hand-over's next phase is
   * published now (advance.ts), not after that reconcile's applies — the moved key groups are
   * paused meanwhile. One at a time per job; a report arriving during one runs it again.
   */
  private advanceOnReport(obj: Obj): void {
    const owner = ownerOf(obj);
    if (owner === undefined || !isWorkerReport(obj.metadata.name, owner)) return;
    const key = `${obj.metadata.namespace}/${owner}`;
    if (this.advancing.has(key)) {
      this.advancing.set(key, true);
      return;
    }
    this.advancing.set(key, false);
    void (async () => {
      try {
        // Again when a report came meanwhile, or when the reconcile published first (a
        // conflict): the report that woke this one may not be in what it published.
        for (let conflicts = 0; ; ) {
          this.advancing.set(key, false);
          const outcome = await advanceHandoverNow(this.cluster, obj.metadata.namespace!, owner);
          if (outcome === 'published') this.metrics.reconciles.inc({ result: 'advance' });
          if (outcome === 'conflict' && ++conflicts <= MAX_ADVANCE_CONFLICTS) continue;
          if (this.advancing.get(key) !== true) break;
        }
      } catch (err) {
        // The queued reconcile (the report enqueued it) advances it instead.
        log('warn', 'advancing the hand-over on a report failed; the next reconcile will', { job: key, error: (err as Error).message });
      } finally {
        this.advancing.delete(key);
      }
    })();
  }

  /** Runs until `signal` aborts, then lets in-flight reconciles finish. */
  async run(signal: AbortSignal): Promise<void> {
    const watches = this.informers.map((i) => i.run(signal));
    await Promise.race([Promise.all(this.informers.map((i) => i.synced)), new Promise((r) => signal.addEventListener('abort', r, { once: true }))]);
    if (signal.aborted) {
      await Promise.all(watches);
      return;
    }
    log('info', 'caches synced; reconciling', { namespace: this.options.namespace ?? '(all)', jobs: this.jobs.list().length });
    const resync = setInterval(() => {
      for (const job of this.jobs.list()) this.enqueue(job);
      this.updateJobGauge();
    }, this.options.resyncMs ?? 300_000);
    // The job gauges follow the informer's cache every few seconds (alerts on not-ready
    // workers should not wait for the next resync).
    this.updateJobGauge();
    const gauges = setInterval(() => this.updateJobGauge(), 5000);
    signal.addEventListener('abort', () => {
      clearInterval(gauges);
      clearInterval(resync);
      this.queue.shutDown();
    }, { once: true });
    const workers = Array.from({ length: this.options.workers ?? 2 }, () => this.work());
    await Promise.all(workers);
    await Promise.all(watches);
  }

  private async work(): Promise<void> {
    for (;;) {
      const key = await this.queue.get();
      if (key === undefined) return;
      this.inFlight++;
      try {
        await this.processItem(key);
      } finally {
        this.inFlight--;
        this.queue.done(key);
      }
    }
  }

  private async processItem(key: string): Promise<void> {
    const [namespace, name] = key.split('/') as [string, string];
    const end = this.metrics.reconcileDuration.startTimer();
    try {
      const result = await reconcile(this.cluster, namespace, name);
      this.queue.forget(key);
      if (result.requeueAfterMs !== undefined) {
        this.queue.addAfter(key, result.requeueAfterMs);
        this.metrics.reconciles.inc({ result: 'requeue' });
      } else {
        this.metrics.reconciles.inc({ result: 'success' });
      }
    } catch (err) {
      const delay = this.queue.addRateLimited(key);
      this.metrics.reconciles.inc({ result: 'error' });
      this.metrics.reconcileErrors.inc();
      log('error', 'reconcile failed; retrying', { job: key, error: (err as Error).message, retryInMs: delay });
    } finally {
      const seconds = end();
      log('debug', 'reconciled', { job: key, seconds });
    }
  }

  private updateJobGauge(): void {
    this.metrics.jobs.reset();
    this.metrics.jobWorkers.reset();
    for (const job of this.jobs.list()) {
      const status = job.status as { phase?: string; readyReplicas?: number } | undefined;
      this.metrics.jobs.inc({ phase: status?.phase ?? 'Unknown' });
      const labels = { job_namespace: job.metadata?.namespace ?? '', abacusjob: job.metadata?.name ?? '' };
      this.metrics.jobWorkers.set({ ...labels, state: 'desired' }, (job.spec as { replicas?: number } | undefined)?.replicas ?? 0);
      this.metrics.jobWorkers.set({ ...labels, state: 'ready' }, status?.readyReplicas ?? 0);
    }
  }

  get busy(): number {
    return this.inFlight;
  }
}

/** A fast-lane advance that lost this many resourceVersion races in a row leaves the step to the queued reconcile. */
const MAX_ADVANCE_CONFLICTS = 3;

function ownerOf(obj: Obj): string | undefined {
  return obj.metadata.ownerReferences?.find((o) => o.controller === true && o.kind === KIND)?.name;
}

/** A worker's report ConfigMap of job `owner` (`<job>-worker-<ordinal>`). */
function isWorkerReport(name: string | undefined, owner: string): boolean {
  const prefix = workerStatusConfigMapName(owner, 0).slice(0, -1);
  return name !== undefined && name.startsWith(prefix) && /^\d+$/.test(name.slice(prefix.length));
}
