import { KeyGroupRange, rangeForWorker } from './keygroups';

/**
 * The key-group assignment the operator publishes and workers obey.
 *
 * Workers do not derive their key groups from the replica count: they read this document
 * (a ConfigMap `<job>-assignment`, key `assignment.json`, mounted at
 * `/etc/abacus/assignment/assignment.json`, or a file given by `--assignment`). That is what
 * lets a rescale hand key groups over one step at a time: the operator changes the document,
 * and a worker starts or stops exactly the groups the document gives it.
 */
export interface Assignment {
  /** K, fixed for the job's life. */
  readonly keyGroups: number;
  /** Bumped on every change, so a worker can tell a newer assignment from an older one. */
  readonly generation: number;
  /** One entry per worker ordinal, in ordinal order. */
  readonly workers: readonly WorkerAssignment[];
}

export interface WorkerAssignment {
  readonly ordinal: number;
  readonly ranges: readonly KeyGroupRange[];
}

/** The plain even split: ordinal i of n owns rangeForWorker(K, n, i). */
export function evenAssignment(keyGroups: number, replicas: number, generation: number): Assignment {
  const workers: WorkerAssignment[] = [];
  for (let ordinal = 0; ordinal < replicas; ordinal++) {
    workers.push({ ordinal, ranges: [rangeForWorker(keyGroups, replicas, ordinal)] });
  }
  return { keyGroups, generation, workers };
}

/** The key groups one ordinal owns under an assignment (empty when it owns none). */
export function keyGroupsOfOrdinal(assignment: Assignment, ordinal: number): number[] {
  const entry = assignment.workers.find((w) => w.ordinal === ordinal);
  const groups: number[] = [];
  for (const range of entry?.ranges ?? []) {
    for (let g = range.start; g <= range.end; g++) groups.push(g);
  }
  return groups;
}

/** Parses and checks an assignment document; throws with the problem named. */
export function parseAssignment(json: string): Assignment {
  const doc = JSON.parse(json) as Assignment;
  if (!Number.isInteger(doc.keyGroups) || doc.keyGroups < 1) throw new Error('assignment.keyGroups must be a positive integer');
  if (!Number.isInteger(doc.generation)) throw new Error('assignment.generation must be an integer');
  const workers: unknown = doc.workers;
  if (!Array.isArray(workers)) throw new Error('assignment.workers must be a list');
  const owner = new Map<number, number>();
  for (const worker of workers as WorkerAssignment[]) {
    for (const r of worker.ranges) {
      if (!(Number.isInteger(r.start) && Number.isInteger(r.end) && r.start >= 0 && r.end < doc.keyGroups && r.start <= r.end)) {
        throw new Error(`assignment: ordinal ${worker.ordinal} has a bad range ${JSON.stringify(r)}`);
      }
      for (let g = r.start; g <= r.end; g++) {
        const previous = owner.get(g);
        if (previous !== undefined) throw new Error(`assignment: key group ${g} is owned by both ${previous} and ${worker.ordinal}`);
        owner.set(g, worker.ordinal);
      }
    }
  }
  return doc;
}
