import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { parse } from 'yaml';
import { specSchema, type AbacusJob, type AbacusJobStatus } from '../../operator/api/abacusjob';
import type { Cluster, KubeObject } from '../../operator/reconcile/reconciler';
import type { V1Job } from '@kubernetes/client-node';
import { FINALIZER } from '../../operator/reconcile/finalize';
import { repoRoot } from '../../operator/api/gen-crd';
import { applyDefaults } from '../../operator/api/schema';

/** An example as the API server would store it: defaults applied, metadata filled in. */
export function loadExample(file: string, namespace = 'team-a'): AbacusJob {
  const doc = parse(readFileSync(resolve(repoRoot(), 'examples', file), 'utf8')) as AbacusJob;
  return withDefaults({ ...doc, metadata: { ...doc.metadata, namespace, uid: `uid-${doc.metadata.name}`, generation: 1 } });
}

export function withDefaults(job: AbacusJob): AbacusJob {
  return { ...job, spec: applyDefaults(specSchema.json, job.spec) as AbacusJob['spec'] };
}

/** The smallest valid job, defaulted. */
export function minimalJob(spec: Record<string, unknown> = {}, name = 'j'): AbacusJob {
  return withDefaults({
    apiVersion: 'abacus.dev/v1alpha1',
    kind: 'AbacusJob',
    metadata: { name, namespace: 'ns', uid: 'uid-1', generation: 1 },
    spec: {
      image: 'abacus:test',
      source: { kafka: { brokers: ['k:9092'], topic: 'events' } },
      sink: { cassandra: { contactPoints: ['c'] } },
      ...spec,
    } as unknown as AbacusJob['spec'],
  });
}

/** A Cluster that keeps applied objects in memory and records applies, events and status. */
export class RecordingCluster implements Cluster {
  readonly applied: string[] = [];
  readonly events: string[] = [];
  status?: AbacusJobStatus;
  readonly objects = new Map<string, KubeObject>();
  constructor(public job: AbacusJob) {}
  getJob() {
    return Promise.resolve(this.job);
  }
  getStatefulSet(_ns: string, name: string) {
    return Promise.resolve(this.objects.get(`StatefulSet/${name}`));
  }
  getConfigMap(_ns: string, name: string) {
    return Promise.resolve(this.objects.get(`ConfigMap/${name}`));
  }
  apply(o: KubeObject) {
    const key = `${o.kind}/${o.metadata!.name}`;
    const had = this.objects.has(key);
    this.objects.set(key, o);
    this.applied.push(key);
    return Promise.resolve(had ? ('Configured' as const) : ('Created' as const));
  }
  applyStatus(_j: AbacusJob, s: AbacusJobStatus) {
    this.status = s;
    this.job = { ...this.job, status: s };
    return Promise.resolve();
  }
  event(_j: AbacusJob, type: string, reason: string) {
    this.events.push(`${type}/${reason}`);
    return Promise.resolve();
  }
  setFinalizer(_j: AbacusJob, present: boolean) {
    const rest = (this.job.metadata.finalizers ?? []).filter((f) => f !== FINALIZER);
    this.job = { ...this.job, metadata: { ...this.job.metadata, finalizers: present ? [...rest, FINALIZER] : rest } };
    this.applied.push(`Finalizer/${present ? 'add' : 'remove'}`);
    return Promise.resolve();
  }
  stopWorkers(_ns: string, name: string) {
    const sts = this.objects.get(`StatefulSet/${name}`);
    if (sts !== undefined) this.objects.set(`StatefulSet/${name}`, { ...sts, spec: { ...(sts as { spec?: object }).spec, replicas: 0 } } as KubeObject);
    this.applied.push(`Scale0/StatefulSet/${name}`);
    return Promise.resolve();
  }
  getCleanupJob(_ns: string, name: string) {
    return Promise.resolve(this.objects.get(`Job/${name}`));
  }
  createCleanupJob(job: V1Job) {
    const key = `Job/${job.metadata!.name}`;
    if (!this.objects.has(key)) this.objects.set(key, job);
    this.applied.push(`Create/${key}`);
    return Promise.resolve();
  }
}
