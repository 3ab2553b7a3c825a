/**
 * The Cassandra sink's writes on the test environment's real Cassandra: a window of rows cut
 * into multi-partition UNLOGGED batches (worker/io/cassandra-sink.ts, replicaBatches) reads
 * back exactly as written, rewrites overwrite, a new table says it holds no counter (so
 * nothing is hydrated from it), and the routing key the sink hashes to find a
 * row's replicas is the one Cassandra's own token() hashes.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { resolveJobConfig } from '../../common/job-config';
import { CassandraSink, MAX_BATCH_BYTES, rowBatchBytes, routingKeyOf } from '../../worker/io/cassandra-sink';
import type { CounterRow } from '../../worker/io/types';
import { cassandraClient } from '../support/cassandra';
import { requireTestEnv } from '../support/env';

const KEYSPACE = 'abacus_test';

/** Rows of many partitions, some with several buckets, some with non-ASCII and long values. */
function windowRows(round: number): CounterRow[] {
  const hour = 1_700_000_000 - (1_700_000_000 % 3600);
  const rows: CounterRow[] = [];
  for (let i = 0; i < 3000; i++) {
    const value = i % 97 === 0 ? `長い値-${'ü'.repeat(400)}-${i}` : `campaign-${i}`;
    const buckets = i % 10 === 0 ? 3 : 1;
    for (let b = 0; b < buckets; b++) {
      rows.push({ scope: `company-${i % 7}`, statisticId: i % 2 === 0 ? 'opened_email' : 'placed_order', granularity: 'hour', bucket: hour + b * 3600, facet: 'campaign', value, count: round * 10_000 + i + b, uniques: i });
    }
  }
  return rows;
}

test('a window of rows in multi-partition batches reads back exactly; a second window overwrites it; only a new table holds no counters', { timeout: 120_000 }, async () => {
  const env = requireTestEnv();
  const name = `sink-batches-${Date.now().toString(36)}`;
  const config = resolveJobConfig({ name, level: 'account', cassandra: { contactPoints: [env.cassandra], keyspace: KEYSPACE, createSchema: true, consistency: 'ONE' } });
  const sink = await CassandraSink.open({ config: config.cassandra!, level: 'account', job: name, log: () => undefined });
  const client = cassandraClient(env.cassandra);
  await client.connect();
  try {
    // A new table holds no counter: a task opening over it hydrates nothing.
    assert.equal(await sink.holdsNoCounters(), true);
    const expected = new Map<string, number[]>();
    for (const round of [1, 2]) {
      const rows = windowRows(round);
      // The window is far over one batch: it must have been cut.
      assert.ok(rows.reduce((a, r) => a + rowBatchBytes(r), 0) > 50 * MAX_BATCH_BYTES);
      await sink.write(rows);
      for (const r of rows) expected.set(`${r.scope}|${r.statisticId}|${r.value}|${r.bucket}`, [r.count, r.uniques!]);
    }
    const rs = await client.execute(`SELECT scope, statistic_id, value, bucket, count, uniques FROM ${KEYSPACE}.${config.cassandra!.table}`, [], { prepare: true, fetchSize: 5000 });
    const actual = new Map<string, number[]>();
    for await (const row of rs) {
      actual.set(`${row.get('scope')}|${row.get('statistic_id')}|${row.get('value')}|${(row.get('bucket') as Date).getTime() / 1000}`, [Number(row.get('count')), Number(row.get('uniques'))]);
    }
    assert.equal(await sink.holdsNoCounters(), false);
    assert.equal(actual.size, expected.size);
    assert.deepEqual(actual, expected);

    // The partition key the sink serialises for the driver's token map is Cassandra's own.
    const tokenizer = (client.metadata as unknown as { tokenizer: { hash(key: Buffer): { getValue(): { toString(): string } } } }).tokenizer;
    for (const r of windowRows(1).filter((_, i) => i % 500 === 0)) {
      const t = await client.execute(
        `SELECT token(scope, statistic_id, granularity, facet, value) AS t FROM ${KEYSPACE}.${config.cassandra!.table} WHERE scope = ? AND statistic_id = ? AND granularity = ? AND facet = ? AND value = ? LIMIT 1`,
        [r.scope, r.statisticId, r.granularity, r.facet, r.value],
        { prepare: true },
      );
      assert.equal(tokenizer.hash(routingKeyOf(r)).getValue().toString(), String(t.first().get('t')), `token of ${r.value.slice(0, 20)}`);
    }
  } finally {
    await client.shutdown();
    await sink.close();
  }
});
