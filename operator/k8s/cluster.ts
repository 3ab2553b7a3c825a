import type { V1ConfigMap, V1StatefulSet } from '@kubernetes/client-node';
import type { AbacusJob, AbacusJobStatus } from '../api/abacusjob';
import { API_VERSION, KIND } from '../api/abacusjob';
import { FIELD_MANAGER } from '../model/names';
import type { ApplyOutcome, Cluster, KubeObject } from '../reconcile/reconciler';
import { isNotFound, type KubeClient } from './client';
import type { EventRecorder } from './events';
import type { Informer, Obj } from './informer';
import type { OperatorMetrics } from './metrics';
import { RESOURCES, objectPath, resourceOfKind } from './resources';

const APPLY = 'application/apply-patch+yaml';

/**
 * The reconciler's view of the API server. Reads of owned objects come from the informer
 * caches; the job itself is read fresh (its status carries lastApplied). Every write is a
 * server-side apply of the complete object with one field manager, `force` so the operator
 * takes back fields someone else changed.
 */
export class ApiCluster implements Cluster {
  constructor(
    private readonly client: KubeClient,
    private readonly caches: { statefulSets: Informer; configMaps: Informer; [kind: string]: Informer },
    private readonly recorder: EventRecorder,
    private readonly metrics: OperatorMetrics,
  ) {}

  async getJob(namespace: string, name: string): Promise<AbacusJob | undefined> {
    try {
      return await this.client.request<AbacusJob>('GET', objectPath(RESOURCES.abacusJob, namespace, name));
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
    const resource = resourceOfKind(object.apiVersion!, object.kind!);
    const ns = object.metadata!.namespace!;
    const name = object.metadata!.name!;
    const path = objectPath(resource, ns, name);
    let before = this.cacheFor(object.kind!)?.get(ns, name);
    if (before === undefined) {
      before = await this.client.request<Obj>('GET', path).catch((err: unknown) => {
        if (isNotFound(err)) return undefined;
        throw err;
      });
    }
    const after = await this.client.request<Obj>('PATCH', path, {
      query: { fieldManager: FIELD_MANAGER, force: true },
      body: object,
      contentType: APPLY,
    });
    const outcome: ApplyOutcome =
      before === undefined
        ? 'Created'
        : before.metadata.generation !== undefined && after.metadata.generation !== undefined
          ? before.metadata.generation === after.metadata.generation
            ? 'Unchanged'
            : 'Configured'
          : before.metadata.resourceVersion === after.metadata.resourceVersion
            ? 'Unchanged'
            : 'Configured';
    this.metrics.applies.inc({ kind: object.kind, outcome });
    return outcome;
  }

  async applyStatus(job: AbacusJob, status: AbacusJobStatus): Promise<void> {
    await this.client.request('PATCH', objectPath(RESOURCES.abacusJob, job.metadata.namespace, job.metadata.name, 'status'), {
      query: { fieldManager: FIELD_MANAGER, force: true },
      body: { apiVersion: API_VERSION, kind: KIND, metadata: { name: job.metadata.name, namespace: job.metadata.namespace }, status },
      contentType: APPLY,
    });
  }

  event(job: AbacusJob, type: 'Normal' | 'Warning', reason: string, message: string): Promise<void> {
    return this.recorder.record(job, type, reason, message);
  }
}
