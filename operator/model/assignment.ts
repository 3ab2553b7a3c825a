import type { V1ConfigMap } from '@kubernetes/client-node';
import { evenAssignment, parseAssignment, type Assignment } from '../../common/assignment';
import type { AbacusJob } from '../api/abacusjob';
import { childMeta, names } from './names';

export const ASSIGNMENT_KEY = 'assignment.json';

/**
 * The next assignment document to publish. Today this is the even split for the desired
 * replica count; a rescale hand-over will instead return one intermediate step at a time
 * (move a few key groups, wait for the workers to confirm, move the next), which is why the
 * document is computed from the one currently published rather than from the spec alone.
 * The generation only moves when the ownership of some key group changes, so re-applying an
 * unchanged assignment never makes workers reload.
 */
export function nextAssignment(current: Assignment | undefined, keyGroups: number, replicas: number): Assignment {
  const target = evenAssignment(keyGroups, replicas, 0);
  if (current !== undefined && sameOwnership(current, target)) return current;
  return evenAssignment(keyGroups, replicas, (current?.generation ?? 0) + 1);
}

export function sameOwnership(a: Assignment, b: Assignment): boolean {
  if (a.keyGroups !== b.keyGroups) return false;
  const key = (x: Assignment) =>
    JSON.stringify(
      x.workers
        .filter((w) => w.ranges.length > 0)
        .map((w) => ({ o: w.ordinal, r: w.ranges.map((r) => [r.start, r.end]) }))
        .sort((p, q) => p.o - q.o),
    );
  return key(a) === key(b);
}

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
