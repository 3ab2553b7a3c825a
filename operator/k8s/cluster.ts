import { PatchStrategy, setHeaderOptions, type KubernetesObject, type V1ConfigMap, type V1StatefulSet } from '@kubernetes/client-node';
import type { AbacusJob, AbacusJobStatus } from '../api/abacusjob';
import { API_VERSION, KIND } from '../api/abacusjob';
import { FIELD_MANAGER } from '../model/names';
import type { ApplyOutcome, Cluster, KubeObject } from '../reconcile/reconciler';
import { call, isNotFound, type KubeClient } from './client';
import type { EventRecorder } from './events';
import type { Informer } from './informer';
import type { OperatorMetrics } from './metrics';
import { RESOURCES } from './resources';

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

  event(job: AbacusJob, type: 'Normal' | 'Warning', reason: string, message: string): Promise<void> {
    return this.recorder.record(job, type, reason, message);
  }
}
