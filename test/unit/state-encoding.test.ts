import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { counterId, facetToken, parseCounterId } from '../../worker/io/counter-id';
import { BloomFilter } from '../../worker/state/bloom';
import { counterKey, counterOfKey, keyGroupOfKey, keyGroupRange, keyGroupPrefix } from '../../worker/state/keys';
import { addMarker, emptyMarkers, markerEpoch, markerNeedle, markerTokens } from '../../worker/state/records';

const granularity = fc.constantFrom('hour' as const, 'day' as const, 'month' as const);
const counter = fc.record({
  scope: fc.string({ minLength: 1 }),
  statisticId: fc.string({ minLength: 1 }),
  granularity,
  facet: fc.string({ minLength: 1 }),
  value: fc.string({ minLength: 1 }),
  bucket: fc.integer({ min: 0, max: 253402300799 }),
});

test('counter ids round-trip for any strings, separators included', () => {
  fc.assert(
    fc.property(counter, (key) => {
      assert.deepEqual(parseCounterId(counterId(key)), { ...key });
    }),
  );
  const total = { scope: 'c', statisticId: 's', granularity: 'day' as const, facet: '*', value: '*', bucket: 0 };
  assert.deepEqual(parseCounterId(counterId(total)), total);
  // A facet literally named "*" with value "*" is not the total.
  assert.notEqual(facetToken('*', 'x'), facetToken('*', '*'));
});

test('distinct counters have distinct ids', () => {
  fc.assert(
    fc.property(counter, counter, (a, b) => {
      if (JSON.stringify(a) !== JSON.stringify(b)) assert.notEqual(counterId(a), counterId(b));
    }),
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
  fc.assert(
    fc.property(fc.nat(1000), fc.uniqueArray(fc.string(), { maxLength: 12 }), fc.string(), (epoch, tokens, probe) => {
      let record = emptyMarkers(epoch);
      for (const t of tokens) record = addMarker(record, markerNeedle(t));
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
  const filter = new BloomFilter(1 << 20);
  for (let i = 0; i < 10_000; i++) filter.add(`present-${i}`);
  let falsePositives = 0;
  for (let i = 0; i < 10_000; i++) if (filter.mightContain(`absent-${i}`)) falsePositives++;
  assert.ok(falsePositives < 50, `false-positive rate ${falsePositives / 10_000} is near the design rate (~0.01%)`);
});
