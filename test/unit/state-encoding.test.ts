import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { counterId, counterStem, counterToken, facetColumn, facetToken, parseCounterId, parseCounterStem, parseCounterToken, TOTAL, TOTAL_TOKEN, type CounterKey } from '../../common/counter-id';
import { BloomFilter } from '../../worker/state/bloom';
import { bucketKey, counterKey, counterOfKey, dedupKey, keyGroupOfKey, keyGroupPrefix, keyGroupRange, KIND_OFFSET, markerKey, markerShardKey, overflowMarkerStem, tokenMarkerKey } from '../../worker/state/keys';
import { emptyMarkers, MarkerAppend, markerEpoch, markerNeedle, markerTokens } from '../../worker/state/records';

/**
 * The state encodings must be injective for ANY strings: ids, facet names and values come
 * from users, so they may contain every separator and marker the encodings use. Strings here
 * mix arbitrary Unicode scalar values with those characters on purpose.
 */
const SPECIALS = ['\u0001', '*', '=', ':', '|', '"', '\\', '~', ',', '0', '1', '9', 'h', 'd', 'm', 'i', 't', '\u0000', '\uffff', '\u{10ffff}'];
const unit = fc.oneof({ weight: 3, arbitrary: fc.constantFrom(...SPECIALS) }, { weight: 2, arbitrary: fc.string({ unit: 'binary', minLength: 1, maxLength: 1 }) });
const str = (minLength = 0): fc.Arbitrary<string> => fc.string({ unit, minLength, maxLength: 8 });
const granularity = fc.constantFrom('hour' as const, 'day' as const, 'month' as const);
const bucket = fc.integer({ min: 0, max: 253402300799 });

/** A counter as the engine makes them: the total, or one facet of an event by its name and value. */
const counter: fc.Arbitrary<CounterKey> = fc
  .record({ scope: str(1), statisticId: str(1), granularity, bucket, total: fc.boolean(), name: str(), value: str(1) })
  .map(({ total, name, value, ...rest }) => ({ ...rest, facet: total ? TOTAL : facetColumn(name), value: total ? TOTAL : value }));

const same = (a: unknown, b: unknown): boolean => JSON.stringify(a) === JSON.stringify(b);
/** What RocksDB stores: UTF-8 bytes. */
const utf8 = (s: string): string => Buffer.from(s, 'utf8').toString('hex');

test('counter ids round-trip for any strings, separators and markers included', () => {
  fc.assert(fc.property(counter, (key) => assert.deepEqual(parseCounterId(counterId(key)), { ...key })));
  const total = { scope: 'c', statisticId: 's', granularity: 'day' as const, facet: TOTAL, value: TOTAL, bucket: 0 };
  assert.deepEqual(parseCounterId(counterId(total)), total);
});

test('a counter state key parses as its stem (from after the kind letter) and its token, for any strings', () => {
  fc.assert(
    fc.property(fc.integer({ min: 0, max: 32767 }), counter, (group, key) => {
      const k = counterKey(group, key);
      const stem = counterStem(key.scope, key.statisticId, key.granularity, key.bucket);
      const { parts, end } = parseCounterStem(k, KIND_OFFSET + 1);
      assert.deepEqual(parts, { scope: key.scope, statisticId: key.statisticId, granularity: key.granularity, bucket: key.bucket });
      assert.equal(end, KIND_OFFSET + 1 + stem.length);
      assert.deepEqual(parseCounterToken(k.slice(end)), { facet: key.facet, value: key.value });
      assert.equal(k.slice(end), counterToken(key));
    }),
  );
  for (const bad of ['', '=', '=5:ab', 'x', '=x:a']) assert.throws(() => parseCounterToken(bad), /malformed counter id/);
  for (const bad of ['', '3:ab', '1:a1:bx5|', '1:a1:bh5']) assert.throws(() => parseCounterStem(bad), /malformed counter id/);
});

test('distinct counters have distinct ids (and distinct UTF-8 state keys)', () => {
  fc.assert(
    fc.property(counter, counter, fc.integer({ min: 0, max: 32767 }), (a, b, g) => {
      if (same(a, b)) return;
      assert.notEqual(counterId(a), counterId(b));
      assert.notEqual(utf8(counterKey(g, a)), utf8(counterKey(g, b)));
    }),
  );
});

test('no facet of an event maps to the total, whatever its name and value; distinct pairs map to distinct tokens and columns', () => {
  // The cases of issue 11 and the encodings' own characters, then arbitrary pairs.
  for (const [name, value] of [['*', '*'], ['**', '*'], ['*', '**'], ['=', '*'], ['', '*'], ['1:*', '*']] as const) {
    assert.notEqual(facetToken(name, value), TOTAL_TOKEN, `${name}/${value}`);
    assert.ok(!(facetColumn(name) === TOTAL && value === TOTAL), `${name}/${value} would be the total's Cassandra columns`);
  }
  fc.assert(
    fc.property(str(), str(1), str(), str(1), (n1, v1, n2, v2) => {
      assert.notEqual(facetToken(n1, v1), TOTAL_TOKEN);
      assert.ok(!(facetColumn(n1) === TOTAL && v1 === TOTAL));
      if (n1 === n2 && v1 === v2) return;
      assert.notEqual(facetToken(n1, v1), facetToken(n2, v2));
      // Cassandra stores (facet, value) as columns: the column pair must be distinct too.
      assert.ok(facetColumn(n1) !== facetColumn(n2) || v1 !== v2);
    }),
  );
});

test('dedup, bucket, marker, shard and token-marker keys are injective for any strings, and never collide across kinds', () => {
  const ident = fc.oneof(str().map((s) => `i${s}`), bucket.map((s) => `t${s}`));
  const dedup = fc.record({ kind: fc.constant('D'), c: str(1), s: str(1), u: str(1), id: ident });
  const bkt = fc.record({ kind: fc.constant('B'), g: granularity, b: bucket, c: str(1), s: str(1) });
  const marker = fc.record({ kind: fc.constant('U'), g: granularity, b: bucket, c: str(1), s: str(1), u: str(1) });
  const shard = fc.record({ kind: fc.constant('W'), g: granularity, b: bucket, c: str(1), s: str(1), u: str(1), n: fc.nat(4096) });
  const tokenMarker = fc.record({ kind: fc.constant('V'), g: granularity, b: bucket, c: str(1), s: str(1), u: str(1), t: str(1) });
  const anyKey = fc.oneof(dedup, bkt, marker, shard, tokenMarker);
  const encode = (k: Record<string, unknown>): string => {
    const p = keyGroupPrefix(3);
    if (k.kind === 'D') return dedupKey(p, k.c as string, k.s as string, k.u as string, k.id as string);
    if (k.kind === 'B') return bucketKey(p, k.g as 'hour', k.b as number, k.c as string, k.s as string);
    if (k.kind === 'U') return markerKey(p, k.g as 'hour', k.b as number, k.c as string, k.s as string, k.u as string);
    const stem = overflowMarkerStem(k.g as 'hour', k.b as number, k.c as string, k.s as string, k.u as string);
    return k.kind === 'W' ? markerShardKey(p, stem, k.n as number) : tokenMarkerKey(p, stem, k.t as string);
  };
  fc.assert(
    fc.property(anyKey, anyKey, (a, b) => {
      if (same(a, b)) assert.equal(encode(a), encode(b));
      else assert.notEqual(utf8(encode(a)), utf8(encode(b)));
    }),
    { numRuns: 2000 },
  );
});

test('counter state keys carry their key group and stay inside its range', () => {
  fc.assert(
    fc.property(fc.integer({ min: 0, max: 32767 }), counter, (group, key) => {
      const k = counterKey(group, key);
      const range = keyGroupRange(group);
      assert.equal(keyGroupOfKey(k), group);
      assert.ok(k >= range.gte && k < range.lt);
      assert.deepEqual(counterOfKey(k), { ...key });
      assert.ok(k.startsWith(keyGroupPrefix(group)));
    }),
  );
});

test('marker records: membership is exact for any tokens, separators included', () => {
  const token = fc.oneof(fc.constant(TOTAL_TOKEN), fc.tuple(str(), str(1)).map(([n, v]) => facetToken(n, v)), str());
  fc.assert(
    fc.property(fc.nat(1000), fc.uniqueArray(token, { maxLength: 12 }), token, (epoch, tokens, probe) => {
      const append = new MarkerAppend(emptyMarkers(epoch), 1 << 20);
      for (const t of tokens) assert.ok(append.tryAdd(markerNeedle(t)));
      const record = append.result() ?? emptyMarkers(epoch);
      assert.equal(markerEpoch(record), epoch);
      assert.deepEqual(markerTokens(record), tokens);
      assert.equal(record.includes(markerNeedle(probe)), tokens.includes(probe));
    }),
  );
});

test('the Bloom filter never forgets a key it was given', () => {
  fc.assert(
    fc.property(fc.uniqueArray(fc.string(), { maxLength: 500 }), (keys) => {
      const filter = new BloomFilter(4096);
      for (const k of keys) filter.add(k);
      for (const k of keys) assert.ok(filter.mightContain(k));
    }),
  );
  fc.assert(
    fc.property(fc.uniqueArray(fc.string(), { maxLength: 300 }), fc.uniqueArray(fc.string(), { maxLength: 300 }), (first, second) => {
      // addReporting answers what mightContain would have answered, and adds like add().
      const reporting = new BloomFilter(4096);
      const plain = new BloomFilter(4096);
      for (const k of first) {
        reporting.add(k);
        plain.add(k);
      }
      for (const k of second) {
        const before = plain.mightContain(k);
        plain.add(k);
        assert.equal(reporting.addReporting(k), before);
        assert.ok(reporting.addReporting(k));
      }
      for (const k of [...first, ...second]) assert.ok(reporting.mightContain(k));
    }),
  );
  const filter = new BloomFilter(1 << 20);
  for (let i = 0; i < 10_000; i++) filter.add(`present-${i}`);
  let falsePositives = 0;
  for (let i = 0; i < 10_000; i++) if (filter.mightContain(`absent-${i}`)) falsePositives++;
  assert.ok(falsePositives < 50, `false-positive rate ${falsePositives / 10_000} is near the design rate (~0.01%)`);
});
