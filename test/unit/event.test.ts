import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseEvent, type ParseOptions, type ParseResult } from '../../worker/engine/event';

const base = { company_id: 'c1', statistic_id: 'email open', customer_id: 'u1', timestamp: 1544220000 };
const opts: ParseOptions = { maxEventBytes: 1024 * 1024, facets: { exclude: [] }, level: 'account' };
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

test('bytes that are not UTF-8 are invalid, never decoded to U+FFFD (issue 11 #2)', () => {
  const head = Buffer.from('{"company_id":"c","statistic_id":"s","timestamp":1544220000,"customer_id":"b');
  const tail = Buffer.from('"}');
  for (const bytes of [[0xff], [0xfe], [0xe2, 0x82], [0xed, 0xa0, 0x80], [0xc0, 0xaf], [0xf4, 0x90, 0x80, 0x80], [0x80]]) {
    const r = parseEvent(Buffer.concat([head, Buffer.from(bytes), tail]), opts);
    assert.ok(!r.ok, `bytes ${bytes.map((b) => b.toString(16)).join(' ')}`);
    assert.equal(r.code, 'invalid_utf8');
    assert.match(r.reason, /not valid UTF-8/);
  }
  // Well-formed multi-byte UTF-8 is fine.
  assert.equal(ok(Buffer.concat([head, Buffer.from('é😀'), tail]).toString()).customerId, 'bé😀');
});

test('lone UTF-16 surrogate escapes in the strings Abacus uses are invalid; elsewhere they are ignored', () => {
  for (const field of ['company_id', 'statistic_id', 'customer_id', 'event_id']) {
    bad(`{"company_id":"c","statistic_id":"s","customer_id":"u","timestamp":1,${JSON.stringify(field)}:"a\\ud800"}`, 'invalid_unicode', new RegExp(`${field} holds a lone UTF-16 surrogate`));
  }
  bad('{"company_id":"c","statistic_id":"s","customer_id":"u","timestamp":1,"city":"\\udc00x"}', 'invalid_unicode', /facet "city"/);
  bad('{"company_id":"c","statistic_id":"s","customer_id":"u","timestamp":1,"\\ud800":"x"}', 'invalid_unicode', /facet/);
  // A pair is a character; an unused field may hold anything JSON allows.
  assert.equal(ok('{"company_id":"c","statistic_id":"s","customer_id":"\\ud83d\\ude00","timestamp":1}').customerId, '😀');
  assert.deepEqual(ok('{"company_id":"c","statistic_id":"s","customer_id":"u","timestamp":1,"nested":{"x":"\\ud800"},"city":"\\ud800"}', { ...opts, facets: { exclude: ['city'] } }).facets, []);
});

test('numeric timestamps are floored; ISO fractions never move the second (issue 11 #3)', () => {
  assert.equal(ok({ ...base, timestamp: '2018-12-01T09:59:59.9999999Z' }).seconds, Date.UTC(2018, 11, 1, 9, 59, 59) / 1000);
  assert.equal(ok({ ...base, timestamp: '2018-11-30T23:59:59.999999999Z' }).identity, `t${Date.UTC(2018, 10, 30, 23, 59, 59) / 1000}`);
  assert.equal(ok({ ...base, timestamp: '9999-12-31T23:59:59.999999Z' }).seconds, 253402300799);
  assert.equal(ok({ ...base, timestamp: 253402300799.999 }).seconds, 253402300799);
  assert.equal(ok({ ...base, timestamp: 1544220000.999 }).seconds, 1544220000);
  assert.equal(ok('{"company_id":"c","statistic_id":"s","customer_id":"u","timestamp":-0}').seconds, 0);
  bad({ ...base, timestamp: -0.001 }, 'timestamp_out_of_range', /1970 through 9999/);
  bad('{"company_id":"c","statistic_id":"s","customer_id":"u","timestamp":1e400}', 'timestamp_out_of_range', /1970 through 9999/);
  bad({ ...base, timestamp: '10000-01-01T00:00:00Z' }, 'wrong_type', /not an ISO-8601/);
  bad({ ...base, timestamp: '9999-12-31T23:30:00-01:00' }, 'timestamp_out_of_range', /1970 through 9999/);
});

test('a facet listed twice in include is still one facet of the event', () => {
  assert.deepEqual(ok({ ...base, a: 'x', b: 'y' }, { ...opts, facets: { include: ['a', 'a'], exclude: [] } }).facets, [['a', 'x']]);
});

test('ids and facets that cannot fit the sink key: long scope or statistic is invalid, a long facet is not counted (the event is)', () => {
  const base = { company_id: 'acme', statistic_id: 'open', customer_id: 'u', timestamp: 1543622400 };
  const long = 'é'.repeat(8193); // 16,386 bytes of UTF-8 in 8,193 UTF-16 units
  const customer: ParseOptions = { ...opts, level: 'customer' };
  bad({ ...base, statistic_id: long }, 'id_too_long', /statistic_id is 16386 bytes of UTF-8, more than the 16384 that fit a counter's key in the sink/);
  bad({ ...base, company_id: long }, 'id_too_long', /company_id is 16386 bytes/);
  // The scope is what the key holds: customer_id at customer level, company_id at account level.
  assert.equal(parse({ ...base, customer_id: long }).ok, true, 'account level: customer_id is not in the key');
  const atCustomer = parse({ ...base, customer_id: long }, customer);
  assert.equal(atCustomer.ok ? 'ok' : atCustomer.code, 'id_too_long');
  assert.equal(parse({ ...base, company_id: long }, customer).ok, true, 'customer level: company_id is not in the key');
  const exactly = 'x'.repeat(16_384);
  assert.equal(parse({ ...base, statistic_id: exactly, company_id: exactly }).ok, true, '16 KiB each is allowed');
  const r = parse({ ...base, small: 'v', big: 'y'.repeat(31_997), bigger: 'y'.repeat(32_000) });
  assert.ok(r.ok);
  assert.deepEqual(r.event.facets.map(([n]) => n), ['small', 'big'], 'name + value up to 32,000 bytes is a facet; beyond is not counted');
});
