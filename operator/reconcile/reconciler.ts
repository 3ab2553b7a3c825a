import type { V1ConfigMap, V1StatefulSet } from '@kubernetes/client-node';
import type { AbacusJob, AbacusJobStatus } from '../api/abacusjob';
import { applyDefaults } from '../api/schema';
import { specSchema } from '../api/abacusjob';
import { assignedWorkers, desiredAssignmentConfigMap, nextAssignment, publishedAssignment } from '../model/assignment';
import { desiredConfigMap, jobYaml, shortHash, stateFingerprintHash } from '../model/config';
import { names, selectorString } from '../model/names';
import { desiredHeadlessService, desiredMetricsService, desiredPodDisruptionBudget } from '../model/services';
import { desiredStatefulSet, templateHash } from '../model/statefulset';
import { classifySpecChange, type Applied, type Classification } from './classify';
import { getCondition } from './conditions';
import { computeStatus, type ObservedWorkers } from './status';
import { describeProblems, validateJob } from './validate';

/**
 * One reconcile of one AbacusJob: read the job and what exists, drive the world to the
 * desired state, write status once at the end. It never asks what event caused it.
 *
 * Everything it knows of the cluster comes through `Cluster`, implemented in operator/k8s/
 * (the only code that talks to the API server).
 */
export interface KubeObject {
  apiVersion?: string;
  kind?: string;
  metadata?: { name?: string; namespace?: string; resourceVersion?: string };
}

export type ApplyOutcome = 'Created' | 'Configured' | 'Unchanged';
export type OwnedKind = 'StatefulSet' | 'ConfigMap';

export interface Cluster {
  getJob(namespace: string, name: string): Promise<AbacusJob | undefined>;
  getStatefulSet(namespace: string, name: string): Promise<V1StatefulSet | undefined>;
  getConfigMap(namespace: string, name: string): Promise<V1ConfigMap | undefined>;
  /** Server-side apply of the complete object with the operator's one field manager. */
  apply(object: KubeObject): Promise<ApplyOutcome>;
  applyStatus(job: AbacusJob, status: AbacusJobStatus): Promise<void>;
  event(job: AbacusJob, type: 'Normal' | 'Warning', reason: string, message: string): Promise<void>;
}

export interface ReconcileResult {
  /** Look again after this long even if nothing changes (a rollout in progress). */
  readonly requeueAfterMs?: number;
}

export const PROGRESS_REQUEUE_MS = 15_000;

/** The ordered phases, each with the constraint that fixes its place. */
export const PHASES = [
  'loadJob', //             first: a deleted job needs nothing (the garbage collector removes its children)
  'validateSpec', //        before any apply: an invalid spec must never reach the cluster
  'classifyChange', //      before any apply: a state-incompatible change is refused like an invalid spec
  'reconcileConfig', //     before the StatefulSet: its pod template carries the config hash
  'reconcileServices', //   before the StatefulSet: pods need their governing Service for DNS
  'reconcileScale', //      assignment and StatefulSet, ordered by scale direction (see below)
  'reconcileDisruptionBudget', // after the StatefulSet it protects
  'updateStatus', //        last, once, through the status subresource
] as const;

export async function reconcile(cluster: Cluster, namespace: string, name: string, now: () => Date = () => new Date()): Promise<ReconcileResult> {
  // loadJob
  const raw = await cluster.getJob(namespace, name);
  if (raw === undefined || raw.metadata.deletionTimestamp !== undefined) return {};
  const job: AbacusJob = { ...raw, spec: applyDefaults(specSchema.json, raw.spec) as AbacusJob['spec'] };
  const selector = selectorString(name);
  const sts = await cluster.getStatefulSet(namespace, names.statefulSet(name));
  const workers = observeWorkers(sts);

  // validateSpec
  const validation = validateJob(job);
  if (validation.errors.length > 0) {
    const message = describeProblems(validation.errors);
    await reportOnce(cluster, job, 'InvalidSpec', message);
    await cluster.applyStatus(job, computeStatus({ job, now: now(), desiredReplicas: job.spec.replicas, selector, workers, invalid: { reason: 'InvalidSpec', message } }));
    return {};
  }
  for (const w of validation.warnings) await cluster.event(job, 'Warning', 'SpecWarning', `${w.field}: ${w.message}`);

  // classifyChange
  const desiredSts = desiredStatefulSet(job, job.spec.replicas);
  const applied: Applied = {
    replicas: job.spec.replicas,
    image: job.spec.image,
    configHash: shortHash(jobYaml(job)),
    templateHash: templateHash(desiredSts),
    stateFingerprint: stateFingerprintHash(job),
  };
  const change = classifySpecChange(job.status?.lastApplied, applied);
  if (change.kind === 'StateIncompatible') {
    const message = `${change.details.join('; ')} — revert the change, or create a new AbacusJob with the new settings`;
    await reportOnce(cluster, job, 'StateIncompatibleChange', message);
    await cluster.applyStatus(job, computeStatus({ job, now: now(), desiredReplicas: job.spec.replicas, selector, workers, invalid: { reason: 'StateIncompatibleChange', message } }));
    return {};
  }
  await announce(cluster, job, change);

  try {
    // reconcileConfig
    await applyAndRecord(cluster, job, desiredConfigMap(job));
    // reconcileServices
    await applyAndRecord(cluster, job, desiredHeadlessService(job));
    await applyAndRecord(cluster, job, desiredMetricsService(job));

    // reconcileScale. Growing: the new pods exist before the assignment gives them key groups.
    // Shrinking: the assignment takes key groups away before the pods that held them go.
    // (The rescale hand-over will wait for the workers' confirmation between the two steps.)
    const assignmentCm = await cluster.getConfigMap(namespace, names.assignment(name));
    const current = publishedAssignment(assignmentCm);
    const next = nextAssignment(current, job.spec.keyGroups, job.spec.replicas);
    const unsupported = keepImmutableClaims(desiredSts, sts);
    const growing = current === undefined || job.spec.replicas >= assignedWorkers(current);
    if (growing) {
      await applyAndRecord(cluster, job, desiredSts);
      await publishAssignment(cluster, job, next, current?.generation);
    } else {
      await publishAssignment(cluster, job, next, current?.generation);
      await applyAndRecord(cluster, job, desiredSts);
    }

    // reconcileDisruptionBudget
    await applyAndRecord(cluster, job, desiredPodDisruptionBudget(job));

    // updateStatus
    const fresh = await cluster.getStatefulSet(namespace, names.statefulSet(name));
    const status = computeStatus({
      job,
      now: now(),
      desiredReplicas: job.spec.replicas,
      selector,
      workers: observeWorkers(fresh) ?? workers,
      unsupported,
      assignment: { generation: next.generation, workers: assignedWorkers(next), configMap: names.assignment(name) },
      lastApplied: { generation: job.metadata.generation, ...applied },
    });
    if (unsupported !== undefined) await reportOnce(cluster, job, 'UnsupportedChange', unsupported);
    await cluster.applyStatus(job, status);
    return getCondition(status.conditions, 'Progressing')?.status === 'True' ? { requeueAfterMs: PROGRESS_REQUEUE_MS } : {};
  } catch (err) {
    const message = `apply failed: ${(err as Error).message}`;
    await cluster.event(job, 'Warning', 'ApplyFailed', message).catch(() => undefined);
    await cluster
      .applyStatus(job, computeStatus({ job, now: now(), desiredReplicas: job.spec.replicas, selector, workers, applyError: message }))
      .catch(() => undefined);
    throw err;
  }
}

export function observeWorkers(sts: V1StatefulSet | undefined): ObservedWorkers | undefined {
  if (sts === undefined) return undefined;
  const s = sts.status;
  return {
    specReplicas: sts.spec?.replicas ?? 1,
    replicas: s?.replicas ?? 0,
    readyReplicas: s?.readyReplicas ?? 0,
    updatedReplicas: s?.updatedReplicas ?? 0,
    currentRevision: s?.currentRevision,
    updateRevision: s?.updateRevision,
    observedGeneration: s?.observedGeneration,
    generation: sts.metadata?.generation,
  };
}

/**
 * A StatefulSet's volumeClaimTemplates cannot change in place. When the spec asks for a
 * different volume, keep the existing claim (so everything else still applies) and say so.
 */
export function keepImmutableClaims(desired: V1StatefulSet, existing: V1StatefulSet | undefined): string | undefined {
  const was = existing?.spec?.volumeClaimTemplates?.[0]?.spec;
  const want = desired.spec?.volumeClaimTemplates?.[0]?.spec;
  if (was === undefined || want === undefined) return undefined;
  const wasSize = was.resources?.requests?.storage;
  const wantSize = want.resources?.requests?.storage;
  const sameClass = (was.storageClassName ?? '') === (want.storageClassName ?? '') || want.storageClassName === undefined;
  if (wasSize === wantSize && sameClass) return undefined;
  want.resources = { requests: { storage: wasSize ?? wantSize ?? '' } };
  if (was.storageClassName !== undefined) want.storageClassName = was.storageClassName;
  else delete want.storageClassName;
  return `storage.size/storageClassName cannot change on existing workers (StatefulSet volume claims are immutable); keeping ${wasSize ?? '?'}${was.storageClassName === undefined ? '' : ` on ${was.storageClassName}`}. Expand the PVCs directly, or recreate the job`;
}

async function applyAndRecord(cluster: Cluster, job: AbacusJob, object: KubeObject): Promise<ApplyOutcome> {
  const outcome = await cluster.apply(object);
  if (outcome !== 'Unchanged') {
    await cluster.event(job, 'Normal', outcome, `${outcome} ${object.kind} ${object.metadata?.name ?? ''}`);
  }
  return outcome;
}

async function publishAssignment(cluster: Cluster, job: AbacusJob, next: ReturnType<typeof nextAssignment>, previousGeneration: number | undefined): Promise<void> {
  await cluster.apply(desiredAssignmentConfigMap(job, next));
  if (previousGeneration !== next.generation) {
    await cluster.event(
      job,
      'Normal',
      'AssignmentPublished',
      `Published key-group assignment generation ${next.generation}: ${job.spec.keyGroups} key groups over ${assignedWorkers(next)} workers`,
    );
  }
}

async function announce(cluster: Cluster, job: AbacusJob, change: Classification): Promise<void> {
  if (change.kind === 'Scale' || change.kind === 'ScaleAndUpdate') await cluster.event(job, 'Normal', 'Scaling', `Scaling workers: ${change.details.join('; ')}`);
  if (change.kind === 'Update' || change.kind === 'ScaleAndUpdate') await cluster.event(job, 'Normal', 'Updating', `Rolling update: ${change.details.join('; ')}`);
}

/** A Warning event when a problem first appears or changes, not on every resync. */
async function reportOnce(cluster: Cluster, job: AbacusJob, reason: string, message: string): Promise<void> {
  const degraded = getCondition(job.status?.conditions, 'Degraded');
  if (degraded?.reason === reason && degraded.message.startsWith(message)) return;
  await cluster.event(job, 'Warning', reason, message);
}
