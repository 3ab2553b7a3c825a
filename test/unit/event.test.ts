import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseEvent, type ParseOptions, type ParseResult } from '../../worker/engine/event';

const base = { company_id: 'c1', statistic_id: 'email open', customer_id: 'u1', timestamp: 1544220000 };
const opts: ParseOptions = { maxEventBytes: 1024 * 1024, facets: { exclude: [] } };
const parse = (doc: unknown, o = opts): ParseResult => parseEvent(Buffer.from(typeof doc === 'string' ? doc : JSON.stringify(doc)), o);

function ok(doc: unknown, o = opts) {
  const r = parse(doc, o);
  assert.ok(r.ok, `expected valid: ${JSON.stringify(doc)} → ${r.ok ? '' : r.reason}`);
  return r.event;
}

function bad(doc: unknown, code: string, reason: RegExp, o = opts): void {
  const r = parse(doc, o);
  assert.ok(!r.ok, `expected invalid: ${JSON.stringify(doc)}`);
  assert.equal(r.code, code);
  assert.match(r.reason, reason);
}

test('timestamps: Unix seconds with fractions, ISO-8601 with Z or an offset', () => {
  assert.equal(ok({ ...base, timestamp: 1544220000.75 }).seconds, 1544220000);
  assert.equal(ok({ ...base, timestamp: '2018-12-07T22:00:00Z' }).seconds, 1544220000);
  assert.equal(ok({ ...base, timestamp: '2018-12-07T23:30:00.5+01:30' }).seconds, 1544220000);
  assert.equal(ok({ ...base, timestamp: '2018-12-07T17:00:00-05:00' }).seconds, 1544220000);
  assert.equal(ok({ ...base, timestamp: 0 }).seconds, 0);
  assert.equal(ok({ ...base, timestamp: '9999-12-31T23:59:59Z' }).seconds, 253402300799);
});

test('timestamps outside 1970-9999 or malformed are invalid, naming the problem', () => {
  bad({ ...base, timestamp: -1 }, 'timestamp_out_of_range', /1970 through 9999/);
  bad({ ...base, timestamp: 253402300800 }, 'timestamp_out_of_range', /1970 through 9999/);
  bad({ ...base, timestamp: '1970-01-01T00:30:00+01:00' }, 'timestamp_out_of_range', /1970 through 9999/);
  bad({ ...base, timestamp: '2018-12-07T22:00:00' }, 'wrong_type', /ISO-8601 date-time with a zone/);
  bad({ ...base, timestamp: '2018-02-30T00:00:00Z' }, 'wrong_type', /not an ISO-8601/);
  bad({ ...base, timestamp: '2018-12-07T24:00:00Z' }, 'wrong_type', /not an ISO-8601/);
  bad({ ...base, timestamp: true }, 'wrong_type', /timestamp must be a number/);
  bad({ ...base, timestamp: null }, 'missing_field', /timestamp/);
});

test('required ids must be non-empty strings', () => {
  for (const field of ['company_id', 'statistic_id', 'customer_id']) {
    const { [field]: _omitted, ...rest } = base as Record<string, unknown>;
    bad(rest, 'missing_field', new RegExp(`missing required field ${field}`));
    bad({ ...base, [field]: 42 }, 'wrong_type', new RegExp(`${field} must be a string, got a number`));
    bad({ ...base, [field]: '' }, 'wrong_type', new RegExp(`${field} must be a non-empty string`));
  }
});

test('not JSON, not an object, too large', () => {
  bad('{"company_id": ', 'malformed_json', /not valid JSON/);
  bad('[1,2]', 'not_an_object', /got an array/);
  bad('null', 'not_an_object', /got null/);
  bad('"text"', 'not_an_object', /got string/);
  const big = JSON.stringify({ ...base, pad: 'x'.repeat(200) });
  bad(big, 'too_large', /larger than maxEventBytes \(100\)/, { ...opts, maxEventBytes: 100 });
  // Size is measured on raw bytes: multi-byte UTF-8 counts per byte.
  const accented = JSON.stringify({ ...base, city: 'é'.repeat(40) });
  assert.ok(Buffer.byteLength(accented) > accented.length);
  bad(accented, 'too_large', /bytes/, { ...opts, maxEventBytes: accented.length });
});

test('event_id: strings and numbers by canonical text; null, "" and other types are absent', () => {
  assert.equal(ok({ ...base, event_id: 'e-1' }).identity, 'ie-1');
  assert.equal(ok({ ...base, event_id: 12.5 }).identity, ok({ ...base, event_id: '12.5' }).identity);
  assert.equal(ok('{"company_id":"c1","statistic_id":"s","customer_id":"u","timestamp":1544220000.9,"event_id":12.50}').identity, 'i12.5');
  for (const absent of [null, '', true, [1], { a: 1 }]) {
    assert.equal(ok({ ...base, timestamp: 1544220000.9, event_id: absent }).identity, 't1544220000', JSON.stringify(absent));
  }
});

test('facets: scalars by canonical JSON text; null, "", arrays and objects are not facet values; reserved fields never', () => {
  const ev = ok('{"company_id":"c","statistic_id":"s","customer_id":"u","timestamp":1,"event_id":"e","price":12.50,"n":12,"vip":true,"off":false,"empty":"","none":null,"list":[1],"obj":{"a":1},"campaign":"holiday sales"}');
  assert.deepEqual(ev.facets, [
    ['price', '12.5'],
    ['n', '12'],
    ['vip', 'true'],
    ['off', 'false'],
    ['campaign', 'holiday sales'],
  ]);
});

test('facet selection: include list, or all minus an exclude list', () => {
  const doc = { ...base, campaign: 'x', device: 'ios', country: 'DE' };
  assert.deepEqual(ok(doc, { ...opts, facets: { include: ['device', 'missing'], exclude: [] } }).facets, [['device', 'ios']]);
  assert.deepEqual(ok(doc, { ...opts, facets: { exclude: ['device'] } }).facets, [
    ['campaign', 'x'],
    ['country', 'DE'],
  ]);
});
