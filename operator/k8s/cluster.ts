import type { FinishedMove } from '../../common/handover';
import { log } from '../log';
import { PatchStrategy, setHeaderOptions, type KubernetesObject, type V1ConfigMap, type V1Job, type V1StatefulSet } from '@kubernetes/client-node';
import type { AbacusJob, AbacusJobStatus } from '../api/abacusjob';
import { API_VERSION, KIND } from '../api/abacusjob';
import { FIELD_MANAGER } from '../model/names';
import type { ApplyOutcome, Cluster, KubeObject } from '../reconcile/reconciler';
import { call, isConflict, isNotFound, type KubeClient } from '../../common/kube-client';
import type { EventRecorder } from './events';
import type { Informer } from './informer';
import type { OperatorMetrics } from './metrics';
import { RESOURCES } from './resources';
import { FINALIZER } from '../reconcile/finalize';

/** Server-side apply, for the typed clients that would otherwise send a JSON patch. */
const APPLY = setHeaderOptions('Content-Type', PatchStrategy.ServerSideApply);

/**
 * The reconciler's view of the API server. Reads of owned objects come from the informer
 * caches; the job itself is read fresh (its status carries lastApplied). Every write is a
 * server-side apply of the complete object with one field manager, `force` so the operator
 * takes back fields someone else changed: owned objects through the library's
 * KubernetesObjectApi (which finds each kind's resource by discovery), the job's status
 * through its status subresource.
 */
export class ApiCluster implements Cluster {
  constructor(
    private readonly client: KubeClient,
    private readonly caches: { statefulSets: Informer; configMaps: Informer; [kind: string]: Informer },
    private readonly recorder: EventRecorder,
    private readonly metrics: OperatorMetrics,
  ) {}

  async getJob(namespace: string, name: string): Promise<AbacusJob | undefined> {
    const { group, version, plural } = RESOURCES.abacusJob;
    try {
      return await call(`get ${plural} ${namespace}/${name}`, () =>
        this.client.customObjects.getNamespacedCustomObject({ group, version, plural, namespace, name }) as Promise<AbacusJob>,
      );
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw err;
    }
  }

  getStatefulSet(namespace: string, name: string): Promise<V1StatefulSet | undefined> {
    return Promise.resolve(this.caches.statefulSets.get(namespace, name) as V1StatefulSet | undefined);
  }

  observeRescale(job: AbacusJob, finished: readonly FinishedMove[], completedSeconds: number | undefined): void {
    for (const f of finished) {
      log('info', 'key group moved', { job: `${job.metadata.namespace}/${job.metadata.name}`, group: f.group, from: f.from, to: f.to, pauseMs: f.pauseMs, bytes: f.bytes, ...(f.steps === undefined ? {} : { stepsMs: f.steps }) });
      this.metrics.handoverGroups.inc();
      this.metrics.handoverBytes.inc(f.bytes);
      this.metrics.handoverPause.observe(f.pauseMs / 1000);
    }
    if (completedSeconds !== undefined) this.metrics.handoverSeconds.observe(completedSeconds);
  }

  /** Straight from the API server, not the cache: the hand-over must advance from the document as published. */
  async readConfigMap(namespace: string, name: string): Promise<V1ConfigMap | undefined> {
    try {
      return await call(`get configmap ${namespace}/${name}`, () => this.client.core.readNamespacedConfigMap({ name, namespace }));
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw err;
    }
  }

  getConfigMap(namespace: string, name: string): Promise<V1ConfigMap | undefined> {
    return Promise.resolve(this.caches.configMaps.get(namespace, name) as V1ConfigMap | undefined);
  }

  private cacheFor(kind: string): Informer | undefined {
    return Object.values(this.caches).find((i) => i.resource.kind === kind);
  }

  async apply(object: KubeObject): Promise<ApplyOutcome> {
    const ns = object.metadata!.namespace!;
    const name = object.metadata!.name!;
    const what = `${object.kind} ${ns}/${name}`;
    const header = { apiVersion: object.apiVersion!, kind: object.kind!, metadata: { name, namespace: ns } };
    let before: KubernetesObject | undefined = this.cacheFor(object.kind!)?.get(ns, name);
    if (before === undefined) {
      before = await call(`get ${what}`, () => this.client.objects.read(header)).catch((err: unknown) => {
        if (isNotFound(err)) return undefined;
        throw err;
      });
    }
    const after = await call(`apply ${what}`, () =>
      this.client.objects.patch<KubernetesObject>(object, undefined, undefined, FIELD_MANAGER, true, PatchStrategy.ServerSideApply),
    );
    const outcome: ApplyOutcome =
      before === undefined
        ? 'Created'
        : before.metadata?.generation !== undefined && after.metadata?.generation !== undefined
          ? before.metadata.generation === after.metadata.generation
            ? 'Unchanged'
            : 'Configured'
          : before.metadata?.resourceVersion === after.metadata?.resourceVersion
            ? 'Unchanged'
            : 'Configured';
    this.metrics.applies.inc({ kind: object.kind, outcome });
    return outcome;
  }

  async applyStatus(job: AbacusJob, status: AbacusJobStatus): Promise<void> {
    const { group, version, plural } = RESOURCES.abacusJob;
    const { namespace, name } = job.metadata;
    await call(`apply ${plural} ${namespace}/${name} status`, () =>
      this.client.customObjects.patchNamespacedCustomObjectStatus(
        {
          group,
          version,
          plural,
          namespace,
          name,
          body: { apiVersion: API_VERSION, kind: KIND, metadata: { name, namespace }, status },
          fieldManager: FIELD_MANAGER,
          force: true,
        },
        APPLY,
      ),
    );
  }

  /** A JSON patch of metadata.finalizers, guarded by a test of resourceVersion so a concurrent change is never overwritten. */
  async setFinalizer(job: AbacusJob, present: boolean): Promise<void> {
    const { group, version, plural } = RESOURCES.abacusJob;
    const { namespace, name, resourceVersion } = job.metadata;
    const current = job.metadata.finalizers ?? [];
    const finalizers = present ? [...current.filter((f) => f !== FINALIZER), FINALIZER] : current.filter((f) => f !== FINALIZER);
    const body = [
      { op: 'test', path: '/metadata/resourceVersion', value: resourceVersion },
      { op: current.length === 0 && present ? 'add' : 'replace', path: '/metadata/finalizers', value: finalizers },
    ];
    await call(`${present ? 'add' : 'remove'} finalizer on ${plural} ${namespace}/${name}`, () =>
      this.client.customObjects.patchNamespacedCustomObject({ group, version, plural, namespace, name, body }, setHeaderOptions('Content-Type', PatchStrategy.JsonPatch)),
    );
  }

  /** A merge patch of spec.replicas alone (the `patch` the operator holds already; no `delete`). */
  async stopWorkers(namespace: string, name: string): Promise<void> {
    try {
      await call(`scale statefulset ${namespace}/${name} to 0`, () =>
        this.client.objects.patch({ apiVersion: 'apps/v1', kind: 'StatefulSet', metadata: { name, namespace }, spec: { replicas: 0 } } as KubernetesObject, undefined, undefined, FIELD_MANAGER, undefined, PatchStrategy.MergePatch),
      );
    } catch (err) {
      if (!isNotFound(err)) throw err;
    }
  }

  async getCleanupJob(namespace: string, name: string): Promise<V1Job | undefined> {
    try {
      return await call(`get job ${namespace}/${name}`, () => this.client.objects.read<V1Job>({ apiVersion: 'batch/v1', kind: 'Job', metadata: { name, namespace } }));
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw err;
    }
  }

  /** A plain create (`create` on jobs, no `patch`): the Job is never changed afterwards. */
  async createCleanupJob(job: V1Job): Promise<void> {
    try {
      await call(`create job ${job.metadata!.namespace}/${job.metadata!.name}`, () => this.client.objects.create(job));
    } catch (err) {
      if (!isConflict(err)) throw err;
    }
  }

  event(job: AbacusJob, type: 'Normal' | 'Warning', reason: string, message: string): Promise<void> {
    return this.recorder.record(job, type, reason, message);
  }
}
