import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { evenAssignment, ownerMap, parseAssignment, planOwners, type Assignment } from '../../common/assignment';
import { preCopy, PRE_COPY_MAX_ROUNDS } from '../../worker/runtime/handover-agent';
import { advanceHandover, emptyReport, handoverProgress, moveTimeline, nextPhase, pruneReport, startHandover, workerDuties, type WorkerReport } from '../../common/handover';

const NOW = new Date('2026-11-30T12:00:00Z');

/** A worker as the protocol sees it: the document it last read, and its report. */
interface SimWorker {
  view: Assignment;
  report: WorkerReport;
}

/** The worker's side: read `doc`, carry out its duties, report (the real worker does the I/O in between). */
function workerStep(w: SimWorker, doc: Assignment, ordinal: number, clock: number): void {
  const duties = workerDuties(doc, ordinal, w.report);
  const r = pruneReport(w.report, doc, doc.generation);
  const prepared = { ...r.prepared };
  const released = { ...r.released };
  const acquired = { ...r.acquired };
  for (const m of duties.prepare) prepared[m.group] = doc.generation;
  for (const m of duties.release) released[m.group] = { generation: doc.generation, manifest: `ckpt-${m.group}-${doc.generation}`, stoppedAtMs: clock };
  for (const m of duties.acquire) {
    // The new owner restores exactly the manifest the old owner released for this group.
    assert.match(m.manifest ?? '', new RegExp(`^ckpt-${m.group}-\\d+$`));
    acquired[m.group] = { generation: doc.generation, resumedAtMs: clock + 5 };
  }
  w.view = doc;
  w.report = { ordinal, generation: doc.generation, prepared, released, acquired };
}

/** Each worker counts what ITS view of the document gives it: no group may be counted by two at once. */
function assertSingleCounter(workers: ReadonlyMap<number, SimWorker>, K: number): void {
  const counter = new Map<number, number>();
  for (const [ordinal, w] of workers) {
    for (const g of workerDuties(w.view, ordinal, w.report).count) {
      const other = counter.get(g);
      assert.equal(other, undefined, `key group ${g} counted by ${other} and ${ordinal} at once`);
      counter.set(g, ordinal);
    }
  }
  assert.ok(counter.size <= K);
}

/**
 * Model check: an operator and workers that read the document late, in any order
 * (fast-check picks the schedule), every step re-checked.
 */
test('hand-over: whatever the schedule, a group is never counted by two workers, and it ends at the plan', () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 24 }),
      fc.integer({ min: 1, max: 6 }),
      fc.integer({ min: 1, max: 6 }),
      fc.array(fc.integer({ min: -1, max: 5 }), { minLength: 400, maxLength: 400 }),
      (K, n0, m0, schedule) => {
        const n = Math.min(n0, K);
        const m = Math.min(m0, K);
        const initial = evenAssignment(K, n, 1);
        let doc = startHandover(initial, m, NOW) ?? initial;
        parseAssignment(JSON.stringify(doc));
        const workers = new Map<number, SimWorker>();
        for (let o = 0; o < Math.max(n, m); o++) workers.set(o, { view: initial, report: emptyReport(o) });
        let clock = 0;
        let moved = 0;
        // -1 = the operator advances; i = worker i (mod the pool) reads the document and acts.
        for (const step of [...schedule, ...Array.from({ length: 200 }, (_, i) => (i % (workers.size + 1)) - 1)]) {
          clock += 10;
          if (step === -1) {
            const reports = new Map([...workers].map(([o, w]) => [o, w.report]));
            const before = doc.generation;
            const next = advanceHandover(doc, reports);
            moved += next.finished.length;
            for (const f of next.finished) assert.ok(f.pauseMs >= 0);
            if (next.doc !== doc) assert.equal(next.doc.generation, before + 1, 'every published change is a new generation');
            doc = next.doc;
            parseAssignment(JSON.stringify(doc)); // never two owners, phases agree with owners
          } else {
            const ordinal = step % workers.size;
            workerStep(workers.get(ordinal)!, doc, ordinal, clock);
          }
          assertSingleCounter(workers, K);
        }
        assert.equal(doc.handover, undefined, 'the hand-over finished');
        assert.deepEqual(ownerMap(doc), planOwners(ownerMap(initial), m));
        assert.equal(moved, ownerMap(initial).filter((o, g) => o !== planOwners(ownerMap(initial), m)[g]).length);
      },
    ),
    { numRuns: 200 },
  );
});

test('hand-over: a report from an earlier move of the same group does not advance a later one', () => {
  const move = { group: 3, from: 0, to: 1, phase: 'release' as const, since: 10 };
  const stale: WorkerReport = { ...emptyReport(0), generation: 7, released: { 3: { generation: 7, manifest: 'old', stoppedAtMs: 1 } } };
  assert.equal(nextPhase(move, new Map([[0, stale]]), 11), move);
  const fresh: WorkerReport = { ...emptyReport(0), generation: 10, released: { 3: { generation: 10, manifest: 'new', stoppedAtMs: 2 } } };
  assert.deepEqual(nextPhase(move, new Map([[0, fresh]]), 11), { group: 3, from: 0, to: 1, phase: 'acquire', since: 11, manifest: 'new' });
});

test('hand-over: phases in order, the group counted by nobody between release and acquire, progress counted', () => {
  const initial = evenAssignment(4, 1, 5);
  const d1 = startHandover(initial, 2, NOW)!;
  assert.equal(d1.generation, 6);
  assert.deepEqual(d1.handover!.moves.map((m) => [m.group, m.phase]), [[2, 'prepare'], [3, 'prepare']]);
  assert.deepEqual(handoverProgress(d1), { moved: 0, total: 2 });
  assert.equal(advanceHandover(d1, new Map()).doc, d1, 'no report, no change');
  const prepared = new Map<number, WorkerReport>([[1, { ...emptyReport(1), generation: 6, prepared: { 2: 6, 3: 6 } }]]);
  const d2 = advanceHandover(d1, prepared).doc;
  assert.deepEqual(ownerMap(d2), [0, 0, undefined, undefined]);
  const released = new Map([...prepared, [0, { ...emptyReport(0), generation: 7, released: { 2: { generation: 7, manifest: 'm2', stoppedAtMs: 100 } } }]]);
  const d3 = advanceHandover(d2, released).doc;
  assert.deepEqual(ownerMap(d3), [0, 0, 1, undefined]);
  assert.equal(d3.handover!.moves.find((m) => m.group === 2)!.manifest, 'm2');
  const acquired = new Map([...released, [1, { ...emptyReport(1), generation: 8, acquired: { 2: { generation: 8, resumedAtMs: 400 } } }]]);
  const step = advanceHandover(d3, acquired);
  assert.deepEqual(step.finished, [{ group: 2, from: 0, to: 1, pauseMs: 300, bytes: 0 }]);
  assert.deepEqual(handoverProgress(step.doc), { moved: 1, total: 2 });
});

test('hand-over: nothing to move starts nothing', () => {
  assert.equal(startHandover(evenAssignment(8, 2, 1), 2, NOW), undefined);
});

test('the parser refuses a hand-over that disagrees with the owners', () => {
  const doc = { ...evenAssignment(4, 2, 1), handover: { targetReplicas: 2, fromReplicas: 2, startedAt: '', total: 1, moves: [{ group: 0, from: 0, to: 1, phase: 'acquire', since: 1, manifest: 'x' }] } };
  assert.throws(() => parseAssignment(JSON.stringify(doc)), /key group 0 is in phase acquire but is counted by 0 \(expected 1\)/);
});

test('a move\'s timeline: its steps add up to the pause, from the old owner\'s stop to the new owner\'s resume', () => {
  fc.assert(
    fc.property(fc.array(fc.integer({ min: 0, max: 5000 }), { minLength: 7, maxLength: 7 }), (gaps) => {
      const at: number[] = [];
      gaps.reduce((t, d) => (at.push(t + d), t + d), 1_700_000_000_000);
      const [seen, stop, flushed, checkpointed, seenByNew, restored, resumed] = at as [number, number, number, number, number, number, number];
      const released = { generation: 3, manifest: 'w0/1', stoppedAtMs: flushed, steps: { seen, stop, flushed, checkpointed } };
      const acquired = { generation: 4, resumedAtMs: resumed, steps: { seen: seenByNew, restored } };
      const t = moveTimeline(released, acquired);
      assert.equal(t.pauseMs, resumed - stop);
      const st = t.steps!;
      assert.equal(st.flush + st.checkpoint + st.handoff + st.restore + st.start, t.pauseMs);
    }),
  );
  // Reports of workers that do not record steps: the pause as before, no steps.
  assert.deepEqual(moveTimeline({ generation: 1, manifest: 'm', stoppedAtMs: 100 }, { generation: 2, resumedAtMs: 350 }), { pauseMs: 250 });
});

test('pre-copy rounds go on while a round still takes a second or more, at least 2 and at most PRE_COPY_MAX_ROUNDS', async () => {
  const rounds = async (durationsMs: readonly number[]): Promise<number> => {
    let now = 0;
    let made = 0;
    const n = await preCopy(() => {
      now += durationsMs[Math.min(made++, durationsMs.length - 1)]!;
      return Promise.resolve();
    }, () => now);
    assert.equal(n, made, 'the count returned is the rounds made');
    return n;
  };
  assert.equal(await rounds([40_000, 200]), 2, 'a short second round: converged');
  assert.equal(await rounds([100, 100]), 2, 'never fewer than two rounds');
  assert.equal(await rounds([40_000, 8_000, 2_500, 999]), 4, 'rounds shrink until one is under a second');
  assert.equal(await rounds([40_000, 30_000]), PRE_COPY_MAX_ROUNDS, 'rounds that never converge stop at the maximum');
});
