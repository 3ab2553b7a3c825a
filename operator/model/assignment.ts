import type { V1ConfigMap } from '@kubernetes/client-node';
import { parseAssignment, type Assignment } from '../../common/assignment';
import type { AbacusJob } from '../api/abacusjob';
import { ASSIGNMENT_KEY } from '../../common/handover';
import { childMeta, names } from './names';

/** Number of workers the assignment gives at least one key group (ordinals are dense). */
export function assignedWorkers(a: Assignment): number {
  return a.workers.filter((w) => w.ranges.length > 0).length;
}

/** Reads the published document from its ConfigMap; undefined if absent or unreadable. */
export function publishedAssignment(cm: V1ConfigMap | undefined): Assignment | undefined {
  const text = cm?.data?.[ASSIGNMENT_KEY];
  if (text === undefined) return undefined;
  try {
    return parseAssignment(text);
  } catch {
    return undefined;
  }
}

export function desiredAssignmentConfigMap(job: AbacusJob, assignment: Assignment): V1ConfigMap {
  return {
    apiVersion: 'v1',
    kind: 'ConfigMap',
    metadata: {
      ...childMeta(job, names.assignment(job.metadata.name), 'assignment'),
      annotations: { 'abacus.dev/assignment-generation': String(assignment.generation) },
    },
    data: { [ASSIGNMENT_KEY]: JSON.stringify(assignment) + '\n' },
  };
}
