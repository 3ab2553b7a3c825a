import { KeyGroupRange, rangeForWorker } from './keygroups';

/**
 * The key-group assignment the operator publishes and workers obey.
 *
 * Workers do not derive their key groups from the replica count: they read this document
 * (a ConfigMap `<job>-assignment`, key `assignment.json`, read through the API server or
 * mounted at `/etc/abacus/assignment/assignment.json`, or a file given by `--assignment`).
 * That is what lets a rescale hand key groups over one step at a time: the operator changes
 * the document, and a worker starts or stops exactly the groups the document gives it.
 *
 * `workers` says who COUNTS each group: a worker counts a group if and only if the document
 * it last read lists the group under its ordinal. A group in the middle of a hand-over may be
 * listed under nobody (between release and acquire). `handover` (docs/adr/0005) describes
 * the moves in progress; see common/handover.ts for the phases.
 */
export interface Assignment {
  /** K, fixed for the job's life. */
  readonly keyGroups: number;
  /** Bumped on every change of the document: the ownership epoch that fences late writers. */
  readonly generation: number;
  /** One entry per worker ordinal, in ordinal order. */
  readonly workers: readonly WorkerAssignment[];
  /** Present while key groups are moving between workers. */
  readonly handover?: Handover;
}

export interface WorkerAssignment {
  readonly ordinal: number;
  readonly ranges: readonly KeyGroupRange[];
}

export type MovePhase = 'prepare' | 'release' | 'acquire';

/** One key group moving from one worker to another. */
export interface Move {
  readonly group: number;
  readonly from: number;
  readonly to: number;
  readonly phase: MovePhase;
  /** The generation at which the current phase was published; a report for this phase must be at least this new. */
  readonly since: number;
  /** acquire only: the manifest of the old owner's final checkpoint of the group. */
  readonly manifest?: string;
}

export interface Handover {
  /** The replica count this hand-over moves to. */
  readonly targetReplicas: number;
  /** The replica count it started from. */
  readonly fromReplicas: number;
  /** When it started (RFC 3339), for the duration metric and status. */
  readonly startedAt: string;
  /** Moves planned in total; moved = total − moves still listed. */
  readonly total: number;
  /** Moves not finished yet. */
  readonly moves: readonly Move[];
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

/** Owner ordinal of every key group (undefined = nobody counts it right now). */
export function ownerMap(assignment: Assignment): Array<number | undefined> {
  const owners: Array<number | undefined> = new Array<number | undefined>(assignment.keyGroups).fill(undefined);
  for (const w of assignment.workers) {
    for (const r of w.ranges) for (let g = r.start; g <= r.end; g++) owners[g] = w.ordinal;
  }
  return owners;
}

/** The document's `workers` list from an owner per group: sorted, adjacent groups merged into ranges. */
export function workersFromOwners(owners: ReadonlyArray<number | undefined>, ordinals: number): WorkerAssignment[] {
  const ranges: KeyGroupRange[][] = Array.from({ length: ordinals }, () => []);
  owners.forEach((owner, g) => {
    if (owner === undefined) return;
    while (ranges.length <= owner) ranges.push([]);
    const list = ranges[owner]!;
    const last = list[list.length - 1];
    if (last !== undefined && last.end === g - 1) list[list.length - 1] = { start: last.start, end: g };
    else list.push({ start: g, end: g });
  });
  return ranges.map((r, ordinal) => ({ ordinal, ranges: r }));
}

/**
 * The target owner of every key group for `replicas` workers, moving as few groups as
 * possible from `current` while every worker ends with ⌊K/N⌋ or ⌈K/N⌉ groups.
 *
 * Why it is minimal: a balanced target gives K mod N workers ⌈K/N⌉ groups and the rest
 * ⌊K/N⌋; a worker keeps at most min(held, quota) of its groups, so at least
 * Σ max(0, held − quota) groups plus every group of a leaving worker (or of nobody) must
 * move. Giving the larger quotas to the workers that hold the most maximises what stays, and
 * the plan moves exactly that lower bound. A worker gives up its highest-numbered groups and
 * a receiving worker takes the lowest free ones, so ranges stay as contiguous as they can.
 * From an even N-split, N → N+1 moves exactly the new worker's quota (about K/(N+1)), and
 * scale-down moves the leaving workers' groups (plus, when K mod N forces it, a few more to
 * keep the ±1 balance). Deterministic and idempotent: planning a planned assignment again
 * moves nothing.
 */
export function planOwners(current: ReadonlyArray<number | undefined>, replicas: number): number[] {
  const K = current.length;
  if (!Number.isInteger(replicas) || replicas < 1 || replicas > K) throw new RangeError(`replicas must be an integer in 1..${K}, got ${replicas}`);
  const held: number[][] = Array.from({ length: replicas }, () => []);
  const pool: number[] = [];
  current.forEach((owner, g) => {
    if (owner !== undefined && owner < replicas) held[owner]!.push(g);
    else pool.push(g);
  });
  const base = Math.floor(K / replicas);
  const larger = K % replicas;
  // The largest holders get the larger quota (ties: lower ordinal), so the fewest groups leave them.
  const byHeld = [...held.keys()].sort((a, b) => held[b]!.length - held[a]!.length || a - b);
  const quota = new Array<number>(replicas).fill(base);
  byHeld.slice(0, larger).forEach((ordinal) => (quota[ordinal] = base + 1));
  const target = new Array<number>(K);
  for (let ordinal = 0; ordinal < replicas; ordinal++) {
    const groups = held[ordinal]!;
    const keep = Math.min(groups.length, quota[ordinal]!);
    for (const g of groups.slice(0, keep)) target[g] = ordinal;
    pool.push(...groups.slice(keep));
  }
  pool.sort((a, b) => a - b);
  let next = 0;
  for (let ordinal = 0; ordinal < replicas; ordinal++) {
    for (let n = Math.min(held[ordinal]!.length, quota[ordinal]!); n < quota[ordinal]!; n++) target[pool[next++]!] = ordinal;
  }
  return target;
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
  if (doc.handover !== undefined) checkHandover(doc, owner);
  return doc;
}

/** A hand-over must agree with `workers`: a group being released or acquired is counted by exactly the right side. */
function checkHandover(doc: Assignment, owner: ReadonlyMap<number, number>): void {
  const moves: unknown = doc.handover?.moves;
  if (!Array.isArray(moves)) throw new Error('assignment.handover.moves must be a list');
  const seen = new Set<number>();
  for (const m of moves as Move[]) {
    if (!Number.isInteger(m.group) || m.group < 0 || m.group >= doc.keyGroups) throw new Error(`assignment.handover: bad key group ${JSON.stringify(m.group)}`);
    if (seen.has(m.group)) throw new Error(`assignment.handover: key group ${m.group} moves twice`);
    seen.add(m.group);
    const counted = owner.get(m.group);
    const expected = m.phase === 'prepare' ? m.from : m.phase === 'release' ? undefined : m.phase === 'acquire' ? m.to : null;
    if (expected === null) throw new Error(`assignment.handover: key group ${m.group} has an unknown phase ${JSON.stringify(m.phase)}`);
    if (counted !== expected) {
      throw new Error(`assignment.handover: key group ${m.group} is in phase ${m.phase} but is counted by ${counted ?? 'nobody'} (expected ${expected ?? 'nobody'})`);
    }
    if (m.phase === 'acquire' && typeof m.manifest !== 'string') throw new Error(`assignment.handover: key group ${m.group} is acquired without a manifest`);
  }
}
