import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
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

test('ISO parsing gives the whole second from the integer parts and applies offsets; rejects impossible dates', () => {
  assert.equal(parseIsoSeconds('2018-12-07T22:00:00.250Z'), iso('2018-12-07T22:00:00Z'));
  assert.equal(parseIsoSeconds('2018-12-08T00:00+02:00'), iso('2018-12-07T22:00:00Z'));
  // Years below 100 are not shifted to the 1900s.
  assert.equal(parseIsoSeconds('0099-01-01T00:00:00Z'), Date.parse('0099-01-01T00:00:00Z') / 1000);
  for (const badText of ['2019-02-29T00:00:00Z', '2018-04-31T00:00:00Z', '2018-12-07T22:00:60Z', '2018-12-07T22:00:00+24:00', '2018-12-07', '2018-12-07T22:00:00', '20181207T220000Z', '2018-12-07T22:00:00+053', '2018-12-07T22:00:00+05:3', '2018-12-07T22:00:00+0560', '2018-12-07T22:00:00 Z', '2018-12-07T22:00:00Z ']) {
    assert.ok(Number.isNaN(parseIsoSeconds(badText)), badText);
  }
});

test('RFC 3339 spellings and the offsets producers write: t/z in either case, a space, ±hhmm, ±hh', () => {
  const at = iso('2018-12-07T22:00:00Z');
  const table: Array<[string, number]> = [
    ['2018-12-07t22:00:00z', at],
    ['2018-12-07 22:00:00Z', at],
    ['2018-12-08T03:30:00+0530', at],
    ['2018-12-08T03:00:00+05', at],
    ['2018-12-07T20:30:00-0130', at],
    ['2018-12-07T22:00:00-00:00', at],
  ];
  for (const [text, seconds] of table) assert.equal(parseIsoSeconds(text), seconds, text);
});

test('fractional digits of any length are dropped, never rounded (issue 11 #3)', () => {
  const table: Array<[string, string]> = [
    ['2018-12-01T09:59:59.9999999Z', '2018-12-01T09:59:59Z'], // 7 digits, as .NET writes
    ['2018-11-30T23:59:59.999999999Z', '2018-11-30T23:59:59Z'],
    ['2018-11-30T23:59:59.99999999999999999999999999Z', '2018-11-30T23:59:59Z'],
    ['2018-12-01T10:00:00.0000001Z', '2018-12-01T10:00:00Z'],
    ['9999-12-31T23:59:59.999999Z', '9999-12-31T23:59:59Z'],
    ['1970-01-01T00:00:00.5Z', '1970-01-01T00:00:00Z'],
    ['2018-12-01T11:29:59.999+01:30', '2018-12-01T09:59:59Z'],
    ['1970-01-01T00:30:00.999+00:30', '1970-01-01T00:00:00Z'],
    ['2020-02-29T23:59:59.9999Z', '2020-02-29T23:59:59Z'],
  ];
  for (const [text, whole] of table) assert.equal(parseIsoSeconds(text), iso(whole), text);
  assert.ok(Number.isNaN(parseIsoSeconds('2018-12-01T10:00.5Z')), 'a fraction needs seconds');
  assert.ok(Number.isNaN(parseIsoSeconds('2018-12-01T10:00:00.Z')), 'a fraction needs digits');
});

test('property: any whole second in 1970..9999, written with any fraction and offset, parses to exactly that second', () => {
  const pad = (n: number, w = 2): string => String(Math.abs(n)).padStart(w, '0');
  fc.assert(
    fc.property(
      fc.integer({ min: 0, max: 253402300799 }),
      fc.string({ unit: fc.constantFrom('0', '1', '5', '9'), maxLength: 30 }),
      fc.integer({ min: -(23 * 60 + 59), max: 23 * 60 + 59 }),
      fc.boolean(),
      (second, fraction, offsetMin, zulu) => {
        const offset = zulu ? 0 : offsetMin;
        // The local wall-clock fields, from Date (an independent computation of the calendar).
        const local = new Date((second + offset * 60) * 1000);
        const year = local.getUTCFullYear();
        fc.pre(year >= 1 && year <= 9999);
        const zone = zulu ? 'Z' : `${offset < 0 ? '-' : '+'}${pad(Math.floor(Math.abs(offset) / 60))}:${pad(Math.abs(offset) % 60)}`;
        const text = `${pad(year, 4)}-${pad(local.getUTCMonth() + 1)}-${pad(local.getUTCDate())}T${pad(local.getUTCHours())}:${pad(local.getUTCMinutes())}:${pad(local.getUTCSeconds())}${fraction === '' ? '' : `.${fraction}`}${zone}`;
        assert.equal(parseIsoSeconds(text), second, text);
      },
    ),
    { numRuns: 2000 },
  );
});
