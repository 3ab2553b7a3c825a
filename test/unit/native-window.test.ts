import assert from 'node:assert/strict';
import { test } from 'node:test';
import { counterId, type CounterKey } from '../../common/counter-id';
import { AbacusError } from '../../common/errors';
import { NativeWindow } from '../../worker/engine/native-state';

/**
 * A native window's totals travel in columns (ids as UTF-8 bytes back to back) and, between
 * a commit and the sink's confirmation, as the commit's outbox. These check the columns
 * against counter keys built here with counterId, including ids that are not ASCII.
 */

const KEYS: CounterKey[] = [
  { scope: 'acme', statisticId: 'email_open', granularity: 'hour', bucket: 1_795_000_000, facet: '*', value: '' },
  { scope: 'acme', statisticId: 'email_open', granularity: 'day', bucket: 1_794_960_000, facet: 'country', value: 'Ü𝄞' },
  { scope: 'b|o"rk', statisticId: 'order', granularity: 'month', bucket: 1_793_491_200, facet: 'campaign', value: 'x,y\n' },
];

function windowOf(keys: readonly CounterKey[], counts: number[], uniques: number[] | undefined): NativeWindow {
  const bytes = keys.map((k) => Buffer.from(counterId(k)));
  let end = 0;
  const idEnds = Uint32Array.from(bytes, (b) => (end += b.length));
  const n = keys.length;
  return new NativeWindow(Buffer.concat(bytes), idEnds, Float64Array.from(counts), uniques === undefined ? undefined : Float64Array.from(uniques), new Uint32Array(n), new Uint8Array(n));
}

function rowsOf(w: NativeWindow): Array<[CounterKey, string, number, number | undefined]> {
  return w.rows().map((r) => [{ scope: r.scope, statisticId: r.statisticId, granularity: r.granularity, bucket: r.bucket, facet: r.facet, value: r.value }, r.id, r.count, r.uniques]);
}

test('a window gives each counter its id, fields and totals', () => {
  const w = windowOf(KEYS, [3, 1, 2 ** 53 - 1], [1, 1, 7]);
  assert.equal(w.length, 3);
  assert.deepEqual(
    rowsOf(w),
    KEYS.map((k, i) => [k, counterId(k), [3, 1, 2 ** 53 - 1][i], [1, 1, 7][i]]),
  );
  assert.deepEqual([0, 1, 2].map((i) => w.id(i)), KEYS.map(counterId));
});

test('the outbox gives back the same totals, with and without uniques, and an empty window', () => {
  for (const [account, uniques] of [
    [true, [1, 0, 5]],
    [false, undefined],
  ] as const) {
    const w = windowOf(KEYS, [4, 9, 1], uniques === undefined ? undefined : [...uniques]);
    const back = NativeWindow.fromOutbox(w.toOutbox(), account);
    assert.deepEqual(rowsOf(back), rowsOf(w));
  }
  assert.equal(NativeWindow.fromOutbox(windowOf([], [], []).toOutbox(), true).length, 0);
});

test('a damaged outbox is refused with the fix, not read as other totals', () => {
  const good = Buffer.from(windowOf(KEYS, [4, 9, 1], [1, 0, 5]).toOutbox(), 'base64');
  const damaged = [
    good.subarray(0, 2),
    good.subarray(0, good.length - 1),
    Buffer.concat([good, Buffer.from('x')]),
    Buffer.from(good).fill(0xff, 0, 4),
  ];
  for (const b of damaged) {
    assert.throws(
      () => NativeWindow.fromOutbox(b.toString('base64'), true),
      (err: unknown) => err instanceof AbacusError && err.code === 'StateCorrupt' && /outbox/.test(err.message) && /checkpoint|fresh --data-dir/.test(err.message),
    );
  }
});
