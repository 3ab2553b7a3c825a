import type { Condition } from '../api/abacusjob';

/**
 * Conditions done the Kubernetes way: keyed by type, reasons from a closed CamelCase set,
 * observedGeneration on each, and lastTransitionTime moved only when the status flips.
 */
export type ConditionType = 'Ready' | 'Progressing' | 'Degraded' | 'Rescaling' | 'Deleting';
export type ConditionStatus = 'True' | 'False' | 'Unknown';

export const REASONS = {
  /** Ready=True: every desired worker is ready. */
  WorkersReady: 'WorkersReady',
  /** Ready=False: some desired workers are not ready (starting, restoring, failing). */
  WorkersNotReady: 'WorkersNotReady',
  /** The spec fails validation; the last good spec keeps running. */
  InvalidSpec: 'InvalidSpec',
  /** The spec changes what state means (level, granularities, facets...): needs a new job. */
  StateIncompatibleChange: 'StateIncompatibleChange',
  /** A change the cluster cannot apply in place (e.g. volume size); the rest was applied. */
  UnsupportedChange: 'UnsupportedChange',
  /** The API server refused or failed an apply; retried with backoff. */
  ApplyFailed: 'ApplyFailed',
  /** Progressing=True: first rollout of the workers. */
  Creating: 'Creating',
  /** Progressing=True: workers being added or removed. */
  Scaling: 'Scaling',
  /** Progressing=True: pods being replaced with a new template. */
  Updating: 'Updating',
  /** Progressing=False: nothing to do. */
  Stable: 'Stable',
  /** Degraded=False. */
  AsExpected: 'AsExpected',
  /** Rescaling=True: key groups are moving between workers ("12/43 key groups moved"). */
  MovingKeyGroups: 'MovingKeyGroups',
  /** Rescaling=True: new workers must start before key groups move to them. */
  WaitingForWorkers: 'WaitingForWorkers',
  /** Rescaling=True: key groups must move but spec.checkpoints is not set. */
  NeedsCheckpoints: 'NeedsCheckpoints',
  /** Rescaling=False: every key group is where the assignment puts it. */
  Settled: 'Settled',
  /** Deleting=True: the workers are being stopped before the job's external state is touched. */
  StoppingWorkers: 'StoppingWorkers',
  /** Deleting=True: whenDeleted=Delete, the cleanup Job removing checkpoints and Kafka topics/groups. */
  DeletingState: 'DeletingState',
  /** Deleting=True: a cleanup attempt failed (S3 or Kafka unreachable, credentials refused); the cleanup retries it. */
  CleanupBlocked: 'CleanupBlocked',
  /** Deleting=True: the cleanup Job itself failed (its pod crashed repeatedly); the message says how to run it again. */
  CleanupFailed: 'CleanupFailed',
} as const;
export type Reason = (typeof REASONS)[keyof typeof REASONS];

export interface ConditionInput {
  readonly type: ConditionType;
  readonly status: ConditionStatus;
  readonly reason: Reason;
  readonly message: string;
}

/** Returns a new list with `input` set; other conditions are kept as they are. */
export function setCondition(conditions: readonly Condition[] | undefined, input: ConditionInput, generation: number, now: Date): Condition[] {
  const list = [...(conditions ?? [])];
  const index = list.findIndex((c) => c.type === input.type);
  const previous = index >= 0 ? list[index] : undefined;
  const next: Condition = {
    type: input.type,
    status: input.status,
    reason: input.reason,
    message: input.message,
    observedGeneration: generation,
    lastTransitionTime: previous !== undefined && previous.status === input.status ? previous.lastTransitionTime : now.toISOString().replace(/\.\d{3}Z$/, 'Z'),
  };
  if (index >= 0) list[index] = next;
  else list.push(next);
  return list.sort((a, b) => ORDER.indexOf(a.type as ConditionType) - ORDER.indexOf(b.type as ConditionType));
}

const ORDER: ConditionType[] = ['Ready', 'Progressing', 'Degraded', 'Rescaling', 'Deleting'];

export function getCondition(conditions: readonly Condition[] | undefined, type: ConditionType): Condition | undefined {
  return conditions?.find((c) => c.type === type);
}

export function isTrue(conditions: readonly Condition[] | undefined, type: ConditionType): boolean {
  return getCondition(conditions, type)?.status === 'True';
}
