import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { evenAssignment, ownerMap, parseAssignment, planOwners, workersFromOwners } from '../../common/assignment';

/** Counts per ordinal of an owner list. */
function counts(owners: ReadonlyArray<number | undefined>, n: number): number[] {
  const c = new Array<number>(n).fill(0);
  for (const o of owners) if (o !== undefined && o < n) c[o]!++;
  return c;
}

const moved = (a: ReadonlyArray<number | undefined>, b: ReadonlyArray<number | undefined>) => b.filter((o, g) => a[g] !== o).length;

/**
 * The fewest moves any balanced target could make, found by brute force over every balanced
 * target (independent of the planner's greedy reasoning). Small K and N only.
 */
function bruteForceMinimum(current: ReadonlyArray<number | undefined>, n: number): number {
  const K = current.length;
  let best = Infinity;
  const target = new Array<number>(K).fill(0);
  const c = new Array<number>(n).fill(0);
  const lo = Math.floor(K / n);
  const hi = Math.ceil(K / n);
  const visit = (g: number, moves: number): void => {
    if (moves >= best) return;
    if (g === K) {
      if (c.every((x) => x >= lo && x <= hi)) best = moves;
      return;
    }
    for (let o = 0; o < n; o++) {
      if (c[o]! >= hi) continue;
      target[g] = o;
      c[o]!++;
      visit(g + 1, moves + (current[g] === o ? 0 : 1));
      c[o]!--;
    }
  };
  visit(0, 0);
  return best;
}

/** Any current assignment: each group owned by one of `m` ordinals (or, rarely, nobody). */
const currentArb = fc.integer({ min: 1, max: 7 }).chain((m) =>
  fc.tuple(fc.array(fc.integer({ min: 0, max: m - 1 }), { minLength: 1, maxLength: 9 }), fc.integer({ min: 1, max: 9 })),
);

test('planner: balanced (±1), every group exactly one owner in range, and minimal movement (vs brute force)', () => {
  fc.assert(
    fc.property(currentArb, ([current, n0]) => {
      const K = current.length;
      const n = Math.min(n0, K);
      const target = planOwners(current, n);
      assert.equal(target.length, K);
      for (const o of target) assert.ok(Number.isInteger(o) && o >= 0 && o < n, `owner ${o} outside 0..${n - 1}`);
      const c = counts(target, n);
      assert.ok(Math.max(...c) - Math.min(...c) <= 1, `unbalanced ${c.join(',')}`);
      assert.equal(moved(current, target), bruteForceMinimum(current, n));
    }),
    { numRuns: 300 },
  );
});

test('planner: idempotent (planning a plan moves nothing) and deterministic', () => {
  fc.assert(
    fc.property(currentArb, ([current, n0]) => {
      const n = Math.min(n0, current.length);
      const target = planOwners(current, n);
      assert.deepEqual(planOwners(target, n), target);
      assert.deepEqual(planOwners(current, n), target);
    }),
  );
});

test('planner: from an even split, N → N+1 moves only the new worker\'s share, and scale-down only what must leave', () => {
  fc.assert(
    fc.property(fc.integer({ min: 1, max: 600 }), fc.integer({ min: 1, max: 40 }), fc.integer({ min: 1, max: 40 }), (K, n0, m0) => {
      const n = Math.min(n0, K);
      const m = Math.min(m0, K);
      const current = ownerMap(evenAssignment(K, n, 1));
      const target = planOwners(current, m);
      const c = moved(current, target);
      if (m === n + 1) {
        // Exactly what the new worker receives; nobody else trades groups.
        assert.equal(c, target.filter((o) => o === n).length);
        assert.ok(c <= Math.ceil(K / m));
      }
      if (m > n) {
        // Scale-up: every moved group goes to a new worker.
        target.forEach((o, g) => assert.ok(o === current[g] || o >= n, `group ${g} moved between staying workers`));
      }
      if (m < n) {
        // Scale-down: every group of a leaving worker moves, and staying workers only receive.
        const leaving = current.filter((o) => o! >= m).length;
        assert.ok(c >= leaving);
        // From an even split, a staying worker never gives a group away.
        target.forEach((o, g) => assert.ok(current[g]! >= m || o === current[g], `group ${g} left staying worker ${current[g]}`));
        assert.equal(c, leaving);
      }
    }),
    { numRuns: 500 },
  );
});

test('planner: 128 groups 2 → 3 moves 42 or 43 of them, not a reshuffle of contiguous ranges', () => {
  const current = ownerMap(evenAssignment(128, 2, 1));
  const target = planOwners(current, 3);
  const c = moved(current, target);
  assert.ok(c === 42 || c === 43, `moved ${c}`);
  // The contiguous re-split would have moved more.
  assert.ok(moved(current, ownerMap(evenAssignment(128, 3, 1))) > c);
});

test('workersFromOwners merges adjacent groups into ranges and round-trips through the parser', () => {
  fc.assert(
    fc.property(fc.array(fc.integer({ min: 0, max: 4 }), { minLength: 1, maxLength: 64 }), (owners) => {
      const doc = { keyGroups: owners.length, generation: 1, workers: workersFromOwners(owners, 5) };
      const parsed = parseAssignment(JSON.stringify(doc));
      assert.deepEqual(ownerMap(parsed), owners);
      for (const w of parsed.workers) for (let i = 1; i < w.ranges.length; i++) assert.ok(w.ranges[i]!.start > w.ranges[i - 1]!.end + 1, 'ranges not merged');
    }),
  );
});

test('planner refuses an impossible replica count', () => {
  assert.throws(() => planOwners([0, 0, 1], 4), /replicas must be an integer in 1\.\.3, got 4/);
  assert.throws(() => planOwners([0, 0, 1], 0), /replicas/);
});
