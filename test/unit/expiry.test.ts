import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { facetToken } from '../../common/counter-id';
import { bucketHorizon, dedupExpired, expiryStep, markersExpireNow, pastHorizon, sweepCutoff, withinDedupRetention } from '../../worker/state/expiry';
import { bucketKey, kindRange, markerKey, markerRanges, markerScope, markerShardKey, overflowMarkerStem, parseBucketKey, tokenMarkerKey } from '../../worker/state/keys';

/**
 * The expiry rules (worker/state/expiry.ts): deleting what they select never changes a
 * decision of the engine for an event at or after the cutoff, they select everything that
 * no such event can need, and state lives at most two steps past its retention.
 */

const DAY = 86_400;
const retention = fc.integer({ min: 1, max: 400 * DAY });
const second = fc.integer({ min: 0, max: 253402300799 });
const granularity = fc.constantFrom('hour' as const, 'day' as const, 'month' as const);

test('the step is a seventh of the shorter retention, between one second and one day', () => {
  fc.assert(
    fc.property(retention, retention, (d, u) => {
      const step = expiryStep(d, u);
      assert.ok(Number.isInteger(step) && step >= 1 && step <= DAY);
      if (Math.min(d, u) >= 7) assert.ok(step <= Math.min(d, u) / 7);
    }),
  );
  assert.equal(expiryStep(7 * DAY, 7 * DAY), DAY);
  assert.equal(expiryStep(70, 7 * DAY), 10);
});

test('the cutoff is a multiple of the step, one to two steps behind the watermark, and never moves back', () => {
  fc.assert(
    fc.property(second, second, fc.integer({ min: 1, max: DAY }), (w1, w2, step) => {
      const c = sweepCutoff(w1, step);
      assert.equal(c % step === 0 ? 0 : c % step, 0);
      assert.ok(c <= w1 - step && c > w1 - 2 * step);
      if (w2 >= w1) assert.ok(sweepCutoff(w2, step) >= c);
    }),
  );
});

test('a deleted dedup record decides nothing for events at or after the cutoff; a kept one still may', () => {
  fc.assert(
    fc.property(second, second, retention, fc.integer({ min: 0, max: 100 * DAY }), (firstSeen, cutoff, r, after) => {
      const t = cutoff + after;
      if (dedupExpired(firstSeen, cutoff, r)) assert.equal(withinDedupRetention(firstSeen, t, r), false, 'an event at or after the cutoff is no copy of it');
      else if (firstSeen <= cutoff) assert.equal(withinDedupRetention(firstSeen, cutoff, r), true, 'an event at the cutoff would still be a copy');
    }),
  );
});

test('a dedup record lives at most two steps beyond its retention', () => {
  fc.assert(
    fc.property(second, retention, retention, fc.integer({ min: 0, max: 30 * DAY }), (firstSeen, d, u, extra) => {
      const step = expiryStep(d, u);
      const watermark = firstSeen + d + 2 * step + extra;
      assert.ok(dedupExpired(firstSeen, sweepCutoff(watermark, step), d));
    }),
  );
});

test('deleted markers decide nothing for events at or after the cutoff, and each horizon is swept exactly once as the cutoff moves', () => {
  fc.assert(
    fc.property(granularity, second, second, retention, fc.integer({ min: 0, max: 20 * DAY }), fc.array(fc.integer({ min: 1, max: 5 * DAY }), { minLength: 1, maxLength: 12 }), (g, start, lastIngest, u, behind, moves) => {
      const horizon = bucketHorizon(g, start, lastIngest, u);
      assert.ok(horizon >= lastIngest + u);
      let previous = Number.NEGATIVE_INFINITY;
      let cutoff = horizon - behind;
      let sweeps = 0;
      for (const move of moves) {
        cutoff += move;
        if (markersExpireNow(horizon, previous, cutoff)) {
          sweeps++;
          for (const after of [0, 1, DAY]) assert.ok(pastHorizon(cutoff + after, horizon));
        } else if (horizon >= cutoff) {
          assert.equal(pastHorizon(cutoff, horizon), false, 'kept markers still count for an event at the cutoff');
        }
        previous = cutoff;
      }
      assert.equal(sweeps, cutoff > horizon ? 1 : 0);
    }),
  );
});

// Ids may hold every separator of the key layout, and astral characters (4 UTF-8 bytes).
const SPECIALS = ['|', ':', '1', '9', 'h', 'U', 'V', '\u{10ffff}', '\uffff', 'é'];
const unit = fc.oneof(fc.constantFrom(...SPECIALS), fc.string({ unit: 'binary', minLength: 1, maxLength: 1 }));
const id = fc.string({ unit, minLength: 1, maxLength: 6 });
const utf8 = (s: string | Buffer): Buffer => (typeof s === 'string' ? Buffer.from(s, 'utf8') : s);
const within = (key: string, range: { gte: string | Buffer; lt: string | Buffer }): boolean => Buffer.compare(utf8(key), utf8(range.gte)) >= 0 && Buffer.compare(utf8(key), utf8(range.lt)) < 0;

test("a bucket key names its granularity, bucket and exactly its company's and statistic's marker ranges", () => {
  fc.assert(
    fc.property(granularity, second, id, id, id, id, id, id, (g, bucket, company, statistic, customer, otherCompany, otherStatistic, token) => {
      const kg = '002a';
      const bk = parseBucketKey(bucketKey(kg, g, bucket, company, statistic));
      assert.equal(bk.granularity, g);
      assert.equal(bk.bucket, bucket);
      const parts = markerRanges(kg, bk.scope);
      assert.equal(markerScope(markerKey(kg, g, bucket, company, statistic, customer)), bk.scope);
      const tokenKey = (c: string, st: string): string => tokenMarkerKey(kg, overflowMarkerStem(g, bucket, c, st, customer), facetToken('f', token));
      const shardKey = (c: string, st: string): string => markerShardKey(kg, overflowMarkerStem(g, bucket, c, st, customer), 7);
      assert.equal(markerScope(tokenKey(company, statistic)), bk.scope);
      assert.equal(markerScope(shardKey(company, statistic)), bk.scope);
      assert.ok(within(markerKey(kg, g, bucket, company, statistic, customer), parts.markers));
      assert.ok(within(tokenKey(company, statistic), parts.tokenMarkers));
      assert.ok(within(shardKey(company, statistic), parts.shardMarkers));
      if (otherCompany !== company || otherStatistic !== statistic) {
        assert.ok(!within(markerKey(kg, g, bucket, otherCompany, otherStatistic, customer), parts.markers));
        assert.ok(!within(tokenKey(otherCompany, otherStatistic), parts.tokenMarkers));
        assert.ok(!within(shardKey(otherCompany, otherStatistic), parts.shardMarkers));
      }
      if (bucket > 0) assert.ok(!within(markerKey(kg, g, bucket - 1, company, statistic, customer), parts.markers));
      assert.ok(!within(markerKey('002b', g, bucket, company, statistic, customer), parts.markers));
      assert.ok(within(bucketKey(kg, g, bucket, company, statistic), kindRange(kg, 'B')));
    }),
  );
});
