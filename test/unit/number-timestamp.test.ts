import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { floorOfNumberText } from '../../worker/engine/decimal';
import { parseEvent, type ParseOptions } from '../../worker/engine/event';
import { topLevelMemberText } from '../../worker/engine/json-source';

/**
 * Numeric timestamps with more digits than a double holds (issue 11 #3, the class of
 * `1543658399.9999999`): the whole second comes from the number's text, exactly. Expected
 * values come from BigInt arithmetic on the digits or from how the input was built.
 */

const opts: ParseOptions = { maxEventBytes: 1024 * 1024, facets: { exclude: [] }, level: 'account' };
const HEAD = '{"company_id":"c","statistic_id":"s","customer_id":"u"';
const LAST_SECOND = 253402300799; // 9999-12-31T23:59:59Z

function seconds(json: string): number | string {
  const r = parseEvent(Buffer.from(json), opts);
  return r.ok ? r.event.seconds : r.code;
}

/** floor(text) in BigInt arithmetic: mantissa × 10^exponent, divided toward minus infinity. */
function bigFloor(text: string): bigint {
  const m = /^(-?)(\d+)(?:\.(\d+))?(?:[eE]([+-]?\d+))?$/.exec(text)!;
  const fraction = m[3] ?? '';
  let value = BigInt(m[2]! + fraction);
  const exponent = Number(m[4] ?? '0') - fraction.length;
  if (exponent >= 0) return (m[1] === '-' ? -1n : 1n) * value * 10n ** BigInt(exponent);
  const divisor = 10n ** BigInt(-exponent);
  const remainder = value % divisor;
  value /= divisor;
  return m[1] === '-' ? -value - (remainder === 0n ? 0n : 1n) : value;
}

test('the whole second of a number is floored from its text, never from a rounded double', () => {
  const table: Array<[string, number | string]> = [
    ['1543658399.9999999', 1543658399], // a double rounds it to 1543658400: the next hour, day and month
    ['1543658399.99999999999999999999999999', 1543658399],
    ['1543622399.9999999', 1543622399],
    ['1543658400', 1543658400],
    ['1543658400.0000000', 1543658400],
    ['1.5e9', 1500000000],
    ['15E8', 1500000000],
    ['1.5439999999999999999e9', 1543999999],
    ['15439999999999999999e-10', 1543999999],
    [`0.${'0'.repeat(60)}15436583999e70`, 1543658399],
    [`0.${'0'.repeat(60)}1543658399e69`, 154365839],
    ['253402300799.99999999', LAST_SECOND], // a double rounds it to 10000-01-01: still 9999
    ['2.5340230079999999999e11', LAST_SECOND],
    ['253402300800', 'timestamp_out_of_range'],
    ['2.534023008e11', 'timestamp_out_of_range'],
    ['-0', 0],
    ['-0.0', 0],
    ['-0e5', 0],
    ['0.9999999999999999999', 0],
    ['-0.0000000000000000001', 'timestamp_out_of_range'], // a double makes it -0; it is before 1970
    ['-1e-400', 'timestamp_out_of_range'],
    ['1e-400', 0],
    ['-1', 'timestamp_out_of_range'],
    ['1e400', 'timestamp_out_of_range'],
    ['1e99999999999999999999', 'timestamp_out_of_range'],
  ];
  for (const [text, expected] of table) assert.equal(seconds(`${HEAD},"timestamp":${text}}`), expected, text);
});

test('the id-less identity and the out-of-range message use the written number', () => {
  const r = parseEvent(Buffer.from(`${HEAD},"timestamp":1543658399.9999999}`), opts);
  assert.ok(r.ok);
  assert.equal(r.event.identity, 't1543658399');
  const late = parseEvent(Buffer.from(`${HEAD},"timestamp":-0.0000000000000000001}`), opts);
  assert.ok(!late.ok);
  assert.match(late.reason, /timestamp -0\.0000000000000000001 is outside the years 1970 through 9999 UTC/);
});

test('the timestamp member is found as JSON.parse finds it: last of a repeated name, escaped names, nested and quoted decoys', () => {
  const cases: Array<[string, number]> = [
    [`${HEAD},"timestamp":1,"timestamp":1543658399.9999999}`, 1543658399],
    [`${HEAD},"timestamp":1543658399.9999999,"timestamp":1543658400.5}`, 1543658400],
    [`${HEAD},"time\\u0073tamp":1543658399.9999999}`, 1543658399],
    [`${HEAD},"n":{"timestamp":1.5,"a":[{"timestamp":2.5e9}]},"timestamp":1543658399.9999999,"m":[1e3,{"}":"]"}]}`, 1543658399],
    [`${HEAD},"s":"\\"timestamp\\":5.5e9,\\\\","timestamp":1543658399.9999999}`, 1543658399],
    [` \t\r\n{ "timestamp" \n: 1543658399.9999999 \t, "company_id":"c","statistic_id":"s","customer_id":"u" } `, 1543658399],
    [`{"timestamp":1543658399.9999999,${HEAD.slice(1)}}`, 1543658399],
  ];
  for (const [json, expected] of cases) assert.equal(seconds(json), expected, json);
});

test('property: floorOfNumberText equals BigInt arithmetic on the digits', () => {
  const numberText = fc
    .tuple(
      fc.boolean(),
      fc.oneof(fc.constant('0'), fc.stringMatching(/^[1-9][0-9]{0,17}$/)),
      fc.option(fc.string({ unit: fc.constantFrom('0', '1', '5', '9'), minLength: 1, maxLength: 30 }), { nil: undefined }),
      fc.option(fc.tuple(fc.constantFrom('e', 'E'), fc.constantFrom('', '+', '-'), fc.integer({ min: 0, max: 40 })), { nil: undefined }),
    )
    .map(([neg, int, frac, exp]) => `${neg ? '-' : ''}${int}${frac === undefined ? '' : `.${frac}`}${exp === undefined ? '' : `${exp[0]}${exp[1]}${exp[2]}`}`);
  fc.assert(
    fc.property(numberText, (text) => {
      const expected = bigFloor(text);
      const got = floorOfNumberText(text);
      if (expected > -(10n ** 15n) && expected < 10n ** 15n) assert.equal(got, Number(expected), text);
      else assert.ok(got === Number(expected) || got === (expected < 0n ? -Infinity : Infinity), `${text}: ${got}`);
    }),
    { numRuns: 5000 },
  );
  assert.ok(Number.isNaN(floorOfNumberText('1.')));
  assert.ok(Number.isNaN(floorOfNumberText('+1')));
});

test('property: any second in 1970..9999 with any fraction digits (runs of 9s included), in any exponent form, is that second', () => {
  const fraction = fc.oneof(
    fc.string({ unit: fc.constantFrom('0', '1', '5', '9'), maxLength: 40 }),
    fc.integer({ min: 1, max: 40 }).map((n) => '9'.repeat(n)),
  );
  fc.assert(
    fc.property(fc.integer({ min: 0, max: LAST_SECOND }), fraction, fc.integer({ min: -12, max: 12 }), fc.constantFrom('e', 'E'), fc.boolean(), (second, frac, shift, e, decoys) => {
      // second.frac written as 0.<digits>e<point> shifted by `shift`: the same value.
      const whole = String(second);
      const digits = whole + frac;
      const point = whole.length - shift;
      const intPart = (point <= 0 ? '' : digits.slice(0, point).padEnd(point, '0')).replace(/^0+/, '') || '0';
      const fracPart = point <= 0 ? `${'0'.repeat(-point)}${digits}` : digits.slice(point);
      const mantissa = fracPart === '' ? intPart : `${intPart}.${fracPart}`;
      const text = shift === 0 ? `${whole}${frac === '' ? '' : `.${frac}`}` : `${mantissa}${e}${shift}`;
      assert.equal(bigFloor(text), BigInt(second), `generator: ${text}`);
      const extra = decoys ? `,"price":12.50,"n":{"timestamp":${second + 1}.5},"q":"\\"timestamp\\":1e3"` : '';
      const json = `${HEAD},"timestamp":${text}${extra}}`;
      const r = parseEvent(Buffer.from(json), opts);
      assert.ok(r.ok, json);
      assert.equal(r.event.seconds, second, json);
      assert.equal(r.event.identity, `t${second}`, json);
    }),
    { numRuns: 3000 },
  );
});

test('property: topLevelMemberText gives the text of the last top-level member of that name, whatever the other members hold', () => {
  const name = fc.oneof(fc.constantFrom('timestamp', 'time', 'timestamp ', '"'), fc.string({ maxLength: 4 }));
  // A member name written plainly or with one character escaped as \uXXXX.
  const writtenName = (n: string, escapeAt: number): string => {
    if (n.length === 0) return '""';
    const i = escapeAt % n.length;
    return `${JSON.stringify(n.slice(0, i)).slice(0, -1)}\\u${n.charCodeAt(i).toString(16).padStart(4, '0')}${JSON.stringify(n.slice(i + 1)).slice(1)}`;
  };
  const member = fc.record({ name, escapeAt: fc.option(fc.nat(), { nil: undefined }), value: fc.jsonValue({ maxDepth: 3 }), spaces: fc.constantFrom('', ' ', '\n\t ', '\r\n') });
  fc.assert(
    fc.property(fc.array(member, { maxLength: 8 }), (members) => {
      const texts = members.map((m) => (m.value === null ? 'null' : JSON.stringify(m.value, null, m.spaces === '' ? undefined : 1)));
      const json = `{${members.map((m, i) => `${m.spaces}${m.escapeAt === undefined ? JSON.stringify(m.name) : writtenName(m.name, m.escapeAt)}${m.spaces}:${m.spaces}${texts[i]}${m.spaces}`).join(',')}}`;
      JSON.parse(json); // the precondition: valid JSON
      let expected: string | undefined;
      members.forEach((m, i) => {
        if (m.name === 'timestamp') expected = texts[i];
      });
      assert.equal(topLevelMemberText(json, 'timestamp'), expected, json);
    }),
    { numRuns: 3000 },
  );
});
