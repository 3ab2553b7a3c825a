import assert from 'node:assert/strict';
import { test } from 'node:test';
import { MAX_BATCH_BYTES, replicaBatches, rowBatchBytes, routingKeyOf } from '../../worker/io/cassandra-sink';
import type { CounterKey } from '../../worker/io/types';

/**
 * How the Cassandra sink cuts a window's rows into UNLOGGED batches
 * (worker/io/cassandra-sink.ts, replicaBatches): every row exactly once, rows of one batch on
 * the same replicas, no batch over the byte limit unless it is one row, and each replica
 * group's rows in their order.
 */

/** A small deterministic generator (xorshift), so failures reproduce. */
function rng(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s / 2 ** 32;
  };
}

test('every row lands in exactly one batch, with rows of its replicas only, under the byte limit', () => {
  const r = rng(7);
  for (let round = 0; round < 50; round++) {
    const replicaSets = 1 + Math.floor(r() * 4);
    const rows = Array.from({ length: Math.floor(r() * 400) }, (_, i) => ({ i, replicas: `node-${Math.floor(r() * replicaSets)}`, bytes: 1 + Math.floor(r() * (r() < 0.05 ? 900 : 120)) }));
    const max = 300;
    const batches = replicaBatches(rows, (x) => x.replicas, (x) => x.bytes, max);
    assert.deepEqual(
      batches.flat().map((x) => x.i).sort((a, b) => a - b),
      rows.map((x) => x.i),
      'each row once',
    );
    for (const b of batches) {
      assert.ok(b.length > 0, 'no empty batch');
      assert.equal(new Set(b.map((x) => x.replicas)).size, 1, 'one replica set a batch');
      const bytes = b.reduce((a, x) => a + x.bytes, 0);
      assert.ok(b.length === 1 || bytes <= max, `a batch of ${b.length} rows holds ${bytes} bytes, over ${max}`);
    }
    // Within a replica set, batches are consecutive runs of the rows in input order.
    for (let s = 0; s < replicaSets; s++) {
      const order = batches.flat().filter((x) => x.replicas === `node-${s}`).map((x) => x.i);
      assert.deepEqual(order, [...order].sort((a, b) => a - b));
    }
  }
});

test('a batch is cut only where the next row would not fit', () => {
  const rows = [60, 60, 60, 60, 60].map((bytes, i) => ({ i, bytes }));
  assert.deepEqual(
    replicaBatches(rows, () => '', (x) => x.bytes, 150).map((b) => b.map((x) => x.i)),
    [[0, 1], [2, 3], [4]],
  );
  assert.deepEqual(replicaBatches([], () => '', () => 1, 10), []);
});

const key = (value: string): CounterKey => ({ scope: 'acme', statisticId: 'opened_email', granularity: 'hour', bucket: 0, facet: 'campaign', value });

test('a row counts its UTF-8 bytes, so batches of non-ASCII values stay under the limit too', () => {
  const ascii = rowBatchBytes(key('x'.repeat(30)));
  const kana = rowBatchBytes(key('ア'.repeat(30))); // three bytes each in UTF-8
  assert.equal(kana - ascii, 60);
  const rows = Array.from({ length: 200 }, (_, i) => key(`${'ア'.repeat(20)}-${i}`));
  for (const b of replicaBatches(rows, () => '', rowBatchBytes, MAX_BATCH_BYTES)) {
    const utf8 = b.reduce((a, row) => a + Buffer.byteLength(row.scope + row.statisticId + row.granularity + row.facet + row.value), 0);
    assert.ok(utf8 <= MAX_BATCH_BYTES);
  }
});

test('the routing key is the composite partition key: each column as length, UTF-8 bytes and a zero', () => {
  const k = routingKeyOf({ scope: 'a', statisticId: 'é', granularity: 'day', bucket: 0, facet: '', value: 'v' });
  assert.deepEqual([...k], [0, 1, 0x61, 0, 0, 2, 0xc3, 0xa9, 0, 0, 3, 0x64, 0x61, 0x79, 0, 0, 0, 0, 0, 1, 0x76, 0]);
});
