import type { V1ConfigMap, V1Job, V1StatefulSet } from '@kubernetes/client-node';
import type { AbacusJob, AbacusJobStatus } from '../api/abacusjob';
import { applyDefaults } from '../api/schema';
import { specSchema } from '../api/abacusjob';
import { aggregateProgress, type FinishedMove } from '../../common/handover';
import type { Assignment } from '../../common/assignment';
import { assignedWorkers } from '../model/assignment';
import { desiredWorkerRole, desiredWorkerRoleBinding, desiredWorkerServiceAccount, desiredWorkerStatusConfigMap } from '../model/rbac';
import { advances, publishAdvance, publishAssignment, readHandover } from './advance';
import { decideDeletion, hasFinalizer } from './finalize';
import { CLEANUP_KEY, cleanupName, parseCleanupReport } from '../../common/cleanup';
import { desiredCleanupJob, desiredCleanupReportConfigMap } from '../model/cleanup';
import { setCondition } from './conditions';
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
  /** Uncached read (the assignment document: the next step is computed from exactly what is published). */
  readConfigMap?(namespace: string, name: string): Promise<V1ConfigMap | undefined>;
  /** Server-side apply of the complete object with the operator's one field manager. */
  apply(object: KubeObject): Promise<ApplyOutcome>;
  applyStatus(job: AbacusJob, status: AbacusJobStatus): Promise<void>;
  event(job: AbacusJob, type: 'Normal' | 'Warning', reason: string, message: string): Promise<void>;
  /** Adds or removes the job's finalizer (a metadata patch guarded by resourceVersion). */
  setFinalizer(job: AbacusJob, present: boolean): Promise<void>;
  /** Sets the StatefulSet's spec.replicas to 0 (a merge patch: the rest of the object stays as applied). */
  stopWorkers(namespace: string, name: string): Promise<void>;
  /** The cleanup Job (batch/v1), undefined when absent. */
  getCleanupJob(namespace: string, name: string): Promise<V1Job | undefined>;
  /** Creates the cleanup Job; one that already exists is left as it is. */
  createCleanupJob(job: V1Job): Promise<void>;
  /** Hand-over metrics: moves finished in this reconcile, and the whole hand-over's duration when it finished. */
  observeRescale?(job: AbacusJob, finished: readonly FinishedMove[], completedSeconds: number | undefined): void;
}

export interface ReconcileResult {
  /** Look again after this long even if nothing changes (a rollout in progress). */
  readonly requeueAfterMs?: number;
}

export const PROGRESS_REQUEUE_MS = 15_000;
/** While key groups move: reports also trigger reconciles (their ConfigMaps are watched); this is the backstop. */
export const RESCALE_REQUEUE_MS = 2_000;

/** The ordered phases, each with the constraint that fixes its place. */
export const PHASES = [
  'loadJob', //             first
  'finalize', //            a deleted job: spec.whenDeleted (Delete: workers to 0, then the cleanup Job), then drop the finalizer
  'ensureFinalizer', //     before any apply: nothing external may exist without the finalizer that cleans it up
  'validateSpec', //        before any apply: an invalid spec must never reach the cluster
  'classifyChange', //      before any apply: a state-incompatible change is refused like an invalid spec
  'reconcileConfig', //     before the StatefulSet: its pod template carries the config hash
  'reconcileServices', //   before the StatefulSet: pods need their governing Service for DNS
  'reconcileWorkerIdentity', // before the StatefulSet: pods need their ServiceAccount; reports need their ConfigMaps
  'reconcileRescale', //    assignment and StatefulSet: the hand-over of key groups (rescale.ts)
  'reconcileDisruptionBudget', // after the StatefulSet it protects
  'updateStatus', //        last, once, through the status subresource
] as const;

export async function reconcile(cluster: Cluster, namespace: string, name: string, now: () => Date = () => new Date()): Promise<ReconcileResult> {
  // loadJob
  const raw = await cluster.getJob(namespace, name);
  if (raw === undefined) return {};
  const job: AbacusJob = { ...raw, spec: applyDefaults(specSchema.json, raw.spec) as AbacusJob['spec'] };
  const selector = selectorString(name);
  // finalize
  if (raw.metadata.deletionTimestamp !== undefined) return hasFinalizer(raw) ? finalize(cluster, job, now) : {};
  // ensureFinalizer
  if (!hasFinalizer(raw)) await cluster.setFinalizer(job, true);
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
  const desiredSts = desiredStatefulSet(job, job.spec.replicas); // for classifying the spec change; the replicas applied come from decideRescale
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
    // The hand-over's next step is decided first (from the document read uncached and the
    // reports): while one is in progress, every child object it needs already exists (the
    // reconcile that started it applied them), and a moved group is paused until its next
    // phase is published, so publishing waits for nothing else (ADR 0005).
    const view = await readHandover(cluster, job, now());
    const { current, decision } = view;
    const advancing = advances(view);
    // Published meanwhile by the controller's fast lane (advance.ts): decide again from that document.
    if (advancing && !(await publishAdvance(cluster, job, view))) return { requeueAfterMs: 0 };

    // reconcileConfig
    await applyAndRecord(cluster, job, desiredConfigMap(job));
    // reconcileServices
    await applyAndRecord(cluster, job, desiredHeadlessService(job));
    await applyAndRecord(cluster, job, desiredMetricsService(job));

    // reconcileWorkerIdentity + reconcileRescale. Growing: the new pods exist and report
    // before key groups move to them. Shrinking: key groups leave before the pods that held
    // them go. Both decided by decideRescale from the document and the workers' reports.
    await applyAndRecord(cluster, job, desiredWorkerServiceAccount(job));
    await applyAndRecord(cluster, job, desiredWorkerRole(job, decision.reportOrdinals));
    await applyAndRecord(cluster, job, desiredWorkerRoleBinding(job));
    for (let o = 0; o < decision.reportOrdinals; o++) await cluster.apply(desiredWorkerStatusConfigMap(job, o));
    const scaledSts = desiredStatefulSet(job, decision.statefulSetReplicas);
    const unsupported = keepImmutableClaims(scaledSts, sts);
    if (decision.publish !== undefined && !advancing) await publishAssignment(cluster, job, decision.publish, current?.generation, view.resourceVersion);
    await applyAndRecord(cluster, job, scaledSts);
    if (!advancing) for (const e of decision.events) await cluster.event(job, e.type, e.reason, e.message);
    const next = decision.doc;

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
      assignment: assignmentStatus(next, name),
      rescaling: decision.rescaling,
      lastApplied: { generation: job.metadata.generation, ...applied },
    });
    if (unsupported !== undefined) await reportOnce(cluster, job, 'UnsupportedChange', unsupported);
    await cluster.applyStatus(job, { ...status, ...aggregateProgress(view.reports.values()) });
    if (decision.rescaling.active) return { requeueAfterMs: RESCALE_REQUEUE_MS };
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

function assignmentStatus(doc: Assignment, job: string): AbacusJobStatus['assignment'] {
  const h = doc.handover;
  return {
    generation: doc.generation,
    workers: assignedWorkers(doc),
    configMap: names.assignment(job),
    ...(h === undefined ? {} : { targetReplicas: h.targetReplicas, movedKeyGroups: h.total - h.moves.length, movingKeyGroups: h.total, startedAt: h.startedAt }),
  };
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

/** Requeue while deletion waits on pods or on Kafka/S3. */
export const DELETION_REQUEUE_MS = 5_000;

/**
 * The deletion path (decideDeletion in finalize.ts decides; this performs): Retain lifts the
 * finalizer; Delete scales the workers to 0, runs the cleanup Job under the job's own
 * identity, and lifts the finalizer last, once it succeeded — so a failure anywhere leaves
 * the job visible with a Deleting condition (and an Event) saying what blocks it and what to do.
 */
async function finalize(cluster: Cluster, job: AbacusJob, now: () => Date): Promise<ReconcileResult> {
  const { namespace, name } = job.metadata;
  const stsName = names.statefulSet(name);
  const observed = job.spec.whenDeleted === 'Retain' ? undefined : await observeDeletion(cluster, job);
  const step = decideDeletion({ policy: job.spec.whenDeleted, ...observed }, { namespace, job: name, statefulSet: stsName, cleanupJob: cleanupName(name) });
  if (step.action === 'stopWorkers') await cluster.stopWorkers(namespace, stsName);
  if (step.action === 'startCleanup') {
    // The identity the cleanup runs as (a job whose spec never applied has none yet) and the ConfigMap it reports into.
    await applyAndRecord(cluster, job, desiredWorkerServiceAccount(job));
    await applyAndRecord(cluster, job, desiredWorkerRole(job, Math.max(1, job.spec.replicas)));
    await applyAndRecord(cluster, job, desiredWorkerRoleBinding(job));
    await cluster.apply(desiredCleanupReportConfigMap(job));
    await cluster.createCleanupJob(desiredCleanupJob(job));
  }
  if (step.condition !== undefined) {
    const c = step.condition;
    const previous = getCondition(job.status?.conditions, 'Deleting');
    if (previous?.reason !== c.reason || previous.message !== c.message) await cluster.event(job, c.warning ? 'Warning' : 'Normal', c.reason, c.message);
    const conditions = setCondition(job.status?.conditions, { type: 'Deleting', status: 'True', reason: c.reason, message: c.message }, job.metadata.generation, now());
    await cluster.applyStatus(job, { ...job.status, conditions });
  }
  if (step.action !== 'removeFinalizer') return { requeueAfterMs: DELETION_REQUEUE_MS };
  if (step.deleted !== undefined) await cluster.event(job, 'Normal', 'StateDeleted', `whenDeleted=Delete: ${step.deleted}`);
  await cluster.setFinalizer(job, false);
  return {};
}

async function observeDeletion(cluster: Cluster, job: AbacusJob) {
  const { namespace, name } = job.metadata;
  const sts = observeWorkers(await cluster.getStatefulSet(namespace, names.statefulSet(name)));
  const cj = await cluster.getCleanupJob(namespace, cleanupName(name));
  const report = parseCleanupReport((await (cluster.readConfigMap ?? cluster.getConfigMap).call(cluster, namespace, cleanupName(name)))?.data?.[CLEANUP_KEY]);
  const jobCondition = (type: string) => (cj?.status?.conditions ?? []).some((c) => c.type === type && c.status === 'True');
  return {
    ...(sts === undefined ? {} : { workers: { specReplicas: sts.specReplicas, pods: sts.replicas, observedGeneration: sts.observedGeneration, generation: sts.generation } }),
    ...(cj === undefined ? {} : { cleanupJob: { succeeded: jobCondition('Complete') || (cj.status?.succeeded ?? 0) > 0, failed: jobCondition('Failed'), failedPods: cj.status?.failed ?? 0 } }),
    ...(report === undefined ? {} : { report }),
    configExists: (await cluster.getConfigMap(namespace, names.config(name))) !== undefined,
  };
}
