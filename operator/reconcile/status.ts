import type { AbacusJob, AbacusJobStatus, Condition, Phase } from '../api/abacusjob';
import { REASONS, getCondition, setCondition, type ConditionInput } from './conditions';

/** What the operator saw of the workers' StatefulSet (its status subresource). */
export interface ObservedWorkers {
  readonly specReplicas: number;
  readonly replicas: number;
  readonly readyReplicas: number;
  readonly updatedReplicas: number;
  readonly currentRevision?: string;
  readonly updateRevision?: string;
  /** StatefulSet .status.observedGeneration vs .metadata.generation: has its controller seen our last apply? */
  readonly observedGeneration?: number;
  readonly generation?: number;
}

export interface StatusInput {
  readonly job: AbacusJob;
  readonly now: Date;
  readonly desiredReplicas: number;
  readonly selector: string;
  readonly workers?: ObservedWorkers;
  /** The spec was refused; nothing was applied. */
  readonly invalid?: { readonly reason: 'InvalidSpec' | 'StateIncompatibleChange'; readonly message: string };
  /** Applied, except for this part. */
  readonly unsupported?: string;
  readonly applyError?: string;
  readonly assignment?: AbacusJobStatus['assignment'];
  readonly lastApplied?: AbacusJobStatus['lastApplied'];
  /** The Rescaling condition from decideRescale. */
  readonly rescaling?: { readonly active: boolean; readonly reason: string; readonly message: string };
}

type RolloutState = 'Creating' | 'Scaling' | 'Updating' | 'Settled';

/** Where the StatefulSet is in carrying out what was applied. Pure. */
export function rolloutState(workers: ObservedWorkers | undefined, desired: number): RolloutState {
  if (workers === undefined) return 'Creating';
  if (workers.generation !== undefined && workers.observedGeneration !== undefined && workers.observedGeneration < workers.generation) {
    return workers.specReplicas !== workers.replicas ? 'Scaling' : 'Updating';
  }
  if (workers.specReplicas !== desired || workers.replicas !== desired) return 'Scaling';
  if ((workers.updateRevision !== undefined && workers.currentRevision !== workers.updateRevision) || workers.updatedReplicas < desired) return 'Updating';
  return 'Settled';
}

/**
 * The whole status from what was observed, written once at the end of a reconcile. Pure:
 * the previous status only matters for lastTransitionTime and for whether a rollout that has
 * not reached readiness yet is still "progressing" rather than "degraded".
 */
export function computeStatus(input: StatusInput): AbacusJobStatus {
  const { job, now, workers, desiredReplicas } = input;
  const generation = job.metadata.generation;
  const previous = job.status ?? {};
  let conditions: Condition[] = [...(previous.conditions ?? [])];
  const set = (c: ConditionInput) => {
    conditions = setCondition(conditions, c, generation, now);
  };
  const ready = workers?.readyReplicas ?? 0;
  const readyMessage = `${ready}/${desiredReplicas} workers ready`;

  if (input.invalid !== undefined) {
    const msg = `${input.invalid.message}. Nothing was applied; the workers keep running the last valid spec.`;
    set({ type: 'Ready', status: 'False', reason: input.invalid.reason, message: msg });
    set({ type: 'Progressing', status: 'False', reason: input.invalid.reason, message: 'Waiting for a valid spec.' });
    set({ type: 'Degraded', status: 'True', reason: input.invalid.reason, message: msg });
  } else {
    const state = rolloutState(workers, desiredReplicas);
    const allReady = ready >= desiredReplicas;
    const wasProgressing = getCondition(previous.conditions, 'Progressing')?.status === 'True' || previous.conditions === undefined;
    const previousReason = getCondition(previous.conditions, 'Progressing')?.reason;
    set(allReady ? { type: 'Ready', status: 'True', reason: REASONS.WorkersReady, message: readyMessage } : { type: 'Ready', status: 'False', reason: REASONS.WorkersNotReady, message: readyMessage });
    let progressingTrue = false;
    // The first rollout stays "Creating" until it settles, whatever the StatefulSet is doing.
    const firstRollout = previous.lastApplied === undefined || (wasProgressing && previousReason === REASONS.Creating);
    if (state !== 'Settled') {
      progressingTrue = true;
      const reason = state === 'Creating' || firstRollout ? REASONS.Creating : state === 'Scaling' ? REASONS.Scaling : REASONS.Updating;
      set({ type: 'Progressing', status: 'True', reason, message: `${reason === REASONS.Creating ? 'Creating' : reason} workers: ${readyMessage}` });
    } else if (!allReady && wasProgressing && previousReason !== REASONS.Stable) {
      // Pods exist with the right template but are not ready yet: still the same rollout.
      progressingTrue = true;
      const reason = previousReason === REASONS.Scaling || previousReason === REASONS.Updating ? previousReason : REASONS.Creating;
      set({ type: 'Progressing', status: 'True', reason, message: `Waiting for workers to become ready: ${readyMessage}` });
    } else {
      set({ type: 'Progressing', status: 'False', reason: REASONS.Stable, message: `Workers match the spec (generation ${generation}).` });
    }
    if (input.applyError !== undefined) {
      set({ type: 'Degraded', status: 'True', reason: REASONS.ApplyFailed, message: input.applyError });
    } else if (input.unsupported !== undefined) {
      set({ type: 'Degraded', status: 'True', reason: REASONS.UnsupportedChange, message: input.unsupported });
    } else if (!allReady && !progressingTrue) {
      set({ type: 'Degraded', status: 'True', reason: REASONS.WorkersNotReady, message: `${readyMessage} after the rollout completed` });
    } else {
      set({ type: 'Degraded', status: 'False', reason: REASONS.AsExpected, message: 'No problems found.' });
    }
  }

  if (input.rescaling !== undefined) {
    set({ type: 'Rescaling', status: input.rescaling.active ? 'True' : 'False', reason: input.rescaling.reason as ConditionInput['reason'], message: input.rescaling.message });
  }

  const status: AbacusJobStatus = {
    ...previous,
    observedGeneration: generation,
    replicas: workers?.replicas ?? 0,
    readyReplicas: ready,
    updatedReplicas: workers?.updatedReplicas ?? 0,
    selector: input.selector,
    conditions,
  };
  if (input.assignment !== undefined) status.assignment = input.assignment;
  if (input.lastApplied !== undefined) status.lastApplied = input.lastApplied;
  status.phase = derivePhase(conditions);
  return status;
}

/** The printer-column summary, derived from the conditions and nothing else. */
export function derivePhase(conditions: readonly Condition[]): Phase {
  const ready = getCondition(conditions, 'Ready');
  const progressing = getCondition(conditions, 'Progressing');
  const degraded = getCondition(conditions, 'Degraded');
  if (getCondition(conditions, 'Rescaling')?.status === 'True' && ready?.reason !== REASONS.InvalidSpec && ready?.reason !== REASONS.StateIncompatibleChange) return 'Scaling';
  if (ready?.reason === REASONS.InvalidSpec || ready?.reason === REASONS.StateIncompatibleChange) return 'Invalid';
  if (progressing?.status === 'True') {
    if (progressing.reason === REASONS.Scaling) return 'Scaling';
    if (progressing.reason === REASONS.Updating) return 'Updating';
    return 'Pending';
  }
  if (degraded?.status === 'True') return 'Degraded';
  return ready?.status === 'True' ? 'Running' : 'Pending';
}
