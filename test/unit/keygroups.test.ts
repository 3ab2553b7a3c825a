import assert from 'node:assert/strict';
import { test } from 'node:test';
import { evenAssignment, keyGroupsOfOrdinal, parseAssignment } from '../../common/assignment';
import { keyGroupOf, murmur3_32, rangeForWorker, routingKey, workerForKeyGroup } from '../../common/keygroups';

const utf8 = (s: string): Uint8Array => new TextEncoder().encode(s);

// Golden vectors: MurmurHash3 x86_32 as computed by an independent implementation (the
// Python `mmh3` package). Checkpoints and keyed topics depend on these never changing.
const VECTORS: Array<[string, number, number]> = [
  ['', 0, 0x00000000],
  ['', 1, 0x514e28b7],
  ['', 0xffffffff, 0x81f16f39],
  ['\0\0\0\0', 0, 0x2362f9de],
  ['aaaa', 0x9747b28c, 0x5a97808a],
  ['abc', 0, 0xb3dd93fa],
  ['Hello, world!', 0x9747b28c, 0x24884cba],
  ['The quick brown fox jumps over the lazy dog', 0x9747b28c, 0x2fa826cd],
  ['hello', 0, 0x248bfa47],
  ['company-1\u0000email open', 0, 0xe828586e],
  ['ünïcödé', 0, 0x7b5af2c4],
];

test('murmur3_32 matches the golden vectors', () => {
  for (const [input, seed, expected] of VECTORS) {
    assert.equal(murmur3_32(utf8(input), seed), expected, `${JSON.stringify(input)} seed ${seed}`);
  }
});

test('keyGroupOf is the hash modulo K', () => {
  assert.equal(keyGroupOf('company-1\u0000email open', 128), 0xe828586e % 128);
  assert.equal(keyGroupOf('hello', 7), 0x248bfa47 % 7);
});

test('routing key: account level by (company, statistic), customer level by customer', () => {
  assert.equal(routingKey('account', 'c1', 's1', 'u1'), 'c1\u0000s1');
  assert.equal(routingKey('customer', 'c1', 's1', 'u1'), 'u1');
  assert.notEqual(routingKey('account', 'a', 'bc', 'x'), routingKey('account', 'ab', 'c', 'x'));
});

test('worker ranges: contiguous, disjoint, covering, and consistent with workerForKeyGroup', () => {
  for (const [K, N] of [[1, 1], [128, 1], [128, 3], [128, 128], [10, 3], [7, 5], [32768, 17]] as const) {
    let next = 0;
    for (let i = 0; i < N; i++) {
      const r = rangeForWorker(K, N, i);
      assert.equal(r.start, next, `K=${K} N=${N} i=${i} starts where the previous ended`);
      assert.ok(r.end >= r.start, 'non-empty');
      for (const g of [r.start, r.end]) assert.equal(workerForKeyGroup(K, N, g), i);
      next = r.end + 1;
    }
    assert.equal(next, K, 'every group owned');
  }
});

test('worker ranges: a table of known splits', () => {
  assert.deepEqual([0, 1, 2].map((i) => rangeForWorker(10, 3, i)), [
    { start: 0, end: 3 },
    { start: 4, end: 6 },
    { start: 7, end: 9 },
  ]);
});

test('bad parallelism is refused with the allowed range named', () => {
  assert.throws(() => rangeForWorker(8, 9, 0), /replicas must be an integer in 1\.\.keyGroups \(8\)/);
  assert.throws(() => rangeForWorker(8, 2, 2), /worker index 2 is outside 0\.\.1/);
  assert.throws(() => rangeForWorker(0, 1, 0), /keyGroups must be/);
});

test('assignment documents: even split round-trips, overlaps are refused', () => {
  const a = evenAssignment(10, 3, 4);
  assert.deepEqual(keyGroupsOfOrdinal(parseAssignment(JSON.stringify(a)), 1), [4, 5, 6]);
  assert.deepEqual(keyGroupsOfOrdinal(a, 7), []);
  const bad = { keyGroups: 4, generation: 1, workers: [{ ordinal: 0, ranges: [{ start: 0, end: 2 }] }, { ordinal: 1, ranges: [{ start: 2, end: 3 }] }] };
  assert.throws(() => parseAssignment(JSON.stringify(bad)), /key group 2 is owned by both 0 and 1/);
});
