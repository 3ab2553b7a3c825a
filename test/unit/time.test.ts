import assert from 'node:assert/strict';
import { test } from 'node:test';
import { bucketEnd, bucketStart, formatBucket, parseIsoSeconds } from '../../worker/engine/time';

const iso = (s: string): number => Date.parse(s) / 1000;

test('calendar buckets in UTC', () => {
  const t = iso('2018-12-07T22:15:30Z');
  assert.equal(formatBucket(bucketStart('hour', t)), '2018-12-07T22:00:00Z');
  assert.equal(formatBucket(bucketStart('day', t)), '2018-12-07T00:00:00Z');
  assert.equal(formatBucket(bucketStart('month', t)), '2018-12-01T00:00:00Z');
  assert.equal(formatBucket(bucketStart('month', iso('2020-02-29T23:59:59Z'))), '2020-02-01T00:00:00Z');
  assert.equal(formatBucket(bucketStart('hour', 0)), '1970-01-01T00:00:00Z');
  assert.equal(formatBucket(bucketStart('month', iso('9999-12-31T23:59:59Z'))), '9999-12-01T00:00:00Z');
});

test('bucket ends: hours, days, and months of every length', () => {
  assert.equal(bucketEnd('hour', iso('2018-12-07T22:00:00Z')), iso('2018-12-07T23:00:00Z'));
  assert.equal(bucketEnd('day', iso('2018-12-31T00:00:00Z')), iso('2019-01-01T00:00:00Z'));
  assert.equal(bucketEnd('month', iso('2020-02-01T00:00:00Z')), iso('2020-03-01T00:00:00Z'));
  assert.equal(bucketEnd('month', iso('2018-12-01T00:00:00Z')), iso('2019-01-01T00:00:00Z'));
});

test('ISO parsing keeps fractions and applies offsets; rejects impossible dates', () => {
  assert.equal(parseIsoSeconds('2018-12-07T22:00:00.250Z'), iso('2018-12-07T22:00:00Z') + 0.25);
  assert.equal(parseIsoSeconds('2018-12-08T00:00+02:00'), iso('2018-12-07T22:00:00Z'));
  // Years below 100 are not shifted to the 1900s.
  assert.equal(parseIsoSeconds('0099-01-01T00:00:00Z'), Date.parse('0099-01-01T00:00:00Z') / 1000);
  for (const badText of ['2019-02-29T00:00:00Z', '2018-04-31T00:00:00Z', '2018-12-07 22:00:00Z', '2018-12-07T22:00:60Z', '2018-12-07T22:00:00+24:00', '2018-12-07']) {
    assert.ok(Number.isNaN(parseIsoSeconds(badText)), badText);
  }
});
