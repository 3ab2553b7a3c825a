import assert from 'node:assert/strict';
import { test } from 'node:test';
import { segmentKey } from '../../worker/state/keys';
import { SegmentLog } from '../../worker/state/segment-log';

/**
 * The native engine's segment bookkeeping (worker/state/segment-log.ts): one sequence per
 * group shared by its counter (T) and state (S) segments, so that the store's key order of
 * each kind and the merge by sequence give the order they were written; a sweep's segment
 * deletes exactly the live segments of its kind.
 */

const G = 5;
const key = (seq: number, kind: 'S' | 'T'): string => segmentKey('0005', seq, kind);

test('appends share one sequence; a replacement deletes the live segments of its kind only', () => {
  const log = new SegmentLog();
  assert.equal(log.append(G, 'T', 10), key(0, 'T'));
  assert.equal(log.append(G, 'S', 20), key(1, 'S'));
  assert.equal(log.append(G, 'S', 30), key(2, 'S'));
  assert.equal(log.append(G, 'T', 40), key(3, 'T'));
  assert.deepEqual(log.size(G), { S: { segments: 2, bytes: 50 }, T: { segments: 2, bytes: 50 }, countersInState: false });
  // A state sweep: the pending counters first (appended), then the state segment replacing the old ones.
  assert.equal(log.append(G, 'T', 5), key(4, 'T'));
  assert.deepEqual(log.replace(G, 'S', 25), { key: key(5, 'S'), deletes: [key(1, 'S'), key(2, 'S')] });
  assert.deepEqual(log.size(G), { S: { segments: 1, bytes: 25 }, T: { segments: 3, bytes: 55 }, countersInState: false });
  // A full sweep: counters, then state.
  assert.deepEqual(log.replace(G, 'T', 60), { key: key(6, 'T'), deletes: [key(0, 'T'), key(3, 'T'), key(4, 'T')] });
  assert.deepEqual(log.replace(G, 'S', 0), { key: undefined, deletes: [key(5, 'S')] });
  assert.deepEqual(log.size(G), { S: { segments: 0, bytes: 0 }, T: { segments: 1, bytes: 60 }, countersInState: false });
  assert.equal(log.append(G, 'S', 1), key(7, 'S'), 'the sequence never goes back');
  assert.deepEqual(log.size(6), { S: { segments: 0, bytes: 0 }, T: { segments: 0, bytes: 0 }, countersInState: false });
  log.forget(G);
  assert.deepEqual(log.size(G), { S: { segments: 0, bytes: 0 }, T: { segments: 0, bytes: 0 }, countersInState: false });
});

test('a loaded log continues after its last segment, and state segments holding counters need a full sweep', () => {
  const log = new SegmentLog();
  log.loaded(G, [
    { kind: 'S', seq: 3, bytes: 100, holdsCounters: true }, // written before counters had segments of their own
    { kind: 'T', seq: 9, bytes: 7, holdsCounters: true },
    { kind: 'S', seq: 10, bytes: 8, holdsCounters: false },
  ]);
  assert.deepEqual(log.size(G), { S: { segments: 2, bytes: 108 }, T: { segments: 1, bytes: 7 }, countersInState: true });
  assert.equal(log.append(G, 'T', 1), key(11, 'T'));
  assert.deepEqual(log.replace(G, 'T', 50).deletes, [key(9, 'T'), key(11, 'T')]);
  assert.equal(log.size(G).countersInState, false, 'the full sweep wrote every counter to its counter segment');
  assert.deepEqual(log.replace(G, 'S', 20), { key: key(13, 'S'), deletes: [key(3, 'S'), key(10, 'S')] });
  // Loading again starts over from what the store holds.
  log.loaded(G, []);
  assert.deepEqual(log.size(G), { S: { segments: 0, bytes: 0 }, T: { segments: 0, bytes: 0 }, countersInState: false });
  assert.equal(log.append(G, 'S', 1), key(0, 'S'));
});
