/**
 * The reference counter (test/support/reference.ts) checked against counts worked out by
 * hand from semantics.md, so the integration tests compare the system against something
 * known to be right. No servers needed.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { referenceRun, RefRow } from '../support/reference';

const T = 1544220900; // 2018-12-07T22:15:00Z
const ingest = (T + 600) * 1000; // ingested ten minutes after the event time

function ev(o: Record<string, unknown>, ingestTimeMs = ingest): { value: string; ingestTimeMs: number } {
  return { value: JSON.stringify(o), ingestTimeMs };
}

function row(rows: RefRow[], g: string, facet: string, value: string, scope = 'acme'): RefRow | undefined {
  return rows.find((r) => r.scope === scope && r.granularity === g && r.facet === facet && r.value === value);
}

test('reference: buckets, facets, uniques and fan-out by hand', () => {
  const { rows, counted, invalid } = referenceRun(
    [
      ev({ company_id: 'acme', statistic_id: 'email open', customer_id: 'ann', timestamp: T, campaign: 'holiday sales', amount: 12.5, vip: true, note: '', tags: ['x'], meta: {}, nothing: null }),
      ev({ company_id: 'acme', statistic_id: 'email open', customer_id: 'ann', timestamp: T + 60, campaign: 'holiday sales' }),
      ev({ company_id: 'acme', statistic_id: 'email open', customer_id: 'bob', timestamp: '2018-12-07T23:30:00+01:00', campaign: 'holiday sales' }),
    ],
    { level: 'account' },
  );
  assert.equal(counted, 3);
  assert.equal(invalid.length, 0);
  // Event 1: 3 granularities x (total + campaign + amount + vip) = 12 counters; events 2 and 3
  // only add campaign; 23:30+01:00 is 22:30Z, the same hour.
  assert.deepEqual(row(rows, 'hour', '*', '*'), { scope: 'acme', statistic_id: 'email open', granularity: 'hour', facet: '*', value: '*', bucket: '2018-12-07T22:00:00Z', count: 3, uniques: 2 });
  assert.equal(row(rows, 'day', 'campaign', 'holiday sales')?.bucket, '2018-12-07T00:00:00Z');
  assert.equal(row(rows, 'month', 'campaign', 'holiday sales')?.bucket, '2018-12-01T00:00:00Z');
  assert.equal(row(rows, 'month', 'campaign', 'holiday sales')?.uniques, 2);
  assert.equal(row(rows, 'hour', 'amount', '12.5')?.count, 1);
  assert.equal(row(rows, 'hour', 'vip', 'true')?.count, 1);
  assert.equal(row(rows, 'hour', 'note', ''), undefined);
  assert.equal(rows.length, 12);
});

test('reference: beyond the uniqueness horizon a customer counts as new (the job’s documented choice)', () => {
  const late = (T + 30 * 86400) * 1000; // a month later: past the hour bucket's end + 7 days
  const { rows } = referenceRun(
    [ev({ company_id: 'acme', statistic_id: 's', customer_id: 'ann', timestamp: T }), ev({ company_id: 'acme', statistic_id: 's', customer_id: 'ann', timestamp: T + 1, event_id: 'x' }, late)],
    { level: 'account', granularities: ['hour', 'month'] },
  );
  assert.equal(row(rows, 'hour', '*', '*')?.uniques, 2); // horizon passed: overcounts
  assert.equal(row(rows, 'month', '*', '*')?.uniques, 1); // the month bucket ends 2018-12-31: still exact
});

test('reference: identity with and without event_id, duplicates dropped', () => {
  const base = { company_id: 'acme', statistic_id: 's', customer_id: 'ann' };
  const { rows, counted, duplicates } = referenceRun(
    [
      ev({ ...base, timestamp: T, event_id: 'e1' }),
      ev({ ...base, timestamp: T + 3600, event_id: 'e1' }), // same id: a duplicate, whatever its time
      ev({ ...base, timestamp: T + 0.5 }), // no id: the second stands in
      ev({ ...base, timestamp: T + 0.9, event_id: null }), // null id = absent: same second, duplicate
      ev({ ...base, timestamp: T, event_id: 7 }), // numeric id "7"
      ev({ ...base, timestamp: T, event_id: '7' }), // the same id as text
      ev({ ...base, customer_id: 'bob', timestamp: T, event_id: 'e1' }), // another customer: another event
    ],
    { level: 'customer', granularities: ['hour'] },
  );
  assert.equal(counted, 4);
  assert.equal(duplicates, 3);
  assert.deepEqual(
    rows.map((r) => [r.scope, r.count, r.uniques]),
    [
      ['ann', 3, undefined],
      ['bob', 1, undefined],
    ],
  );
});

test('reference: the contract’s invalid events', () => {
  const ok = { company_id: 'a', statistic_id: 's', customer_id: 'c', timestamp: T };
  const { invalid, counted } = referenceRun(
    [
      { value: 'nope', ingestTimeMs: ingest },
      { value: '[1]', ingestTimeMs: ingest },
      ev({ ...ok, company_id: '' }),
      ev({ ...ok, customer_id: 1 }),
      ev({ ...ok, timestamp: '2018-12-07T22:15:00' }), // no zone
      ev({ ...ok, timestamp: '2018-02-30T00:00:00Z' }),
      ev({ ...ok, timestamp: 253402300800 }),
      ev({ ...ok, pad: 'x'.repeat(100) }),
      ev({ ...ok, timestamp: '9999-12-31T23:59:59Z' }),
    ],
    { level: 'account', maxEventBytes: 100 },
  );
  assert.deepEqual(
    invalid.map((i) => i.index),
    [0, 1, 2, 3, 4, 5, 6, 7],
  );
  assert.equal(counted, 1);
});
