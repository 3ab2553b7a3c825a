import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { countLine } from '../../common/counter-id';
import { resolveJobConfig } from '../../common/job-config';
import { countEvent, eventKeys, overflowKeys, shardOverflowKeys, WindowAccumulator, type CountingSettings, type EventKeys, type StateView } from '../../worker/engine/counting';
import { parseEvent } from '../../worker/engine/event';
import { counterOfKey } from '../../worker/state/keys';
import { emptyMarkers, MarkerAppend, markerEntries, markerEntry, markerNeedle, markerShard, markersFull, markersSharded, markerTokens, type MarkerLimits } from '../../worker/state/records';
import { referenceRun, sortRows, type RefRow } from '../support/reference';

/**
 * The uniqueness markers of a customer in a bucket live in three tiers: the U record, then
 * shard records (W) by token hash, then one V record per token (and, in state written before
 * shards, straight from U to V). The limits are shrunk here so that a few short tokens reach
 * every tier, and the counting step runs on a state that is strict about loads: a record not
 * loaded for the batch (nor written in the window) reads as absent even when it is stored, so
 * a load the engine wrongly skips shows as a wrong unique count against the reference.
 */

const NOW = Date.UTC(2026, 10, 27, 12) / 1000;
const config = resolveJobConfig({});

/** Committed records, plus the window's changes and the batch's loads on top. */
class StrictState implements StateView {
  readonly stored = new Map<string, string>();
  private readonly dirty = new Map<string, string>();
  private loaded = new Map<string, string | null>();

  load(keys: readonly string[], more = false): void {
    if (!more) this.loaded = new Map();
    for (const k of keys) this.loaded.set(k, this.stored.get(k) ?? null);
  }

  get(key: string): string | null {
    const d = this.dirty.get(key);
    if (d !== undefined) return d;
    const l = this.loaded.get(key);
    if (l === undefined) throw new Error(`not loaded: ${JSON.stringify(key)}`);
    return l;
  }

  getIfLoaded(key: string): string | null {
    return this.dirty.get(key) ?? this.loaded.get(key) ?? null;
  }

  set(key: string, value: string): void {
    this.dirty.set(key, value);
  }

  commit(): void {
    for (const [k, v] of this.dirty) this.stored.set(k, v);
    this.dirty.clear();
  }
}

/** Counts `events` in batches (sizes cycle) and windows of `batchesPerWindow`; limits per batch index. Returns rows like `abacus counts`. */
function engineRows(events: readonly string[], batchSizes: readonly number[], batchesPerWindow: number, limitsAt: (batch: number) => MarkerLimits): { rows: RefRow[]; state: StrictState } {
  const state = new StrictState();
  const window = new WindowAccumulator();
  const tally = { counted: 0, duplicates: 0, beyondHorizon: 0 };
  const totals = new Map<string, { count: number; uniques: number }>();
  const closeWindow = (): void => {
    for (const [stem, tokens] of window.byStem()) {
      for (const [token, d] of tokens) {
        const t = totals.get(stem + token) ?? { count: 0, uniques: 0 };
        totals.set(stem + token, { count: t.count + d.count, uniques: t.uniques + d.uniques });
      }
    }
    window.clear();
    state.commit();
  };
  let pos = 0;
  for (let b = 0; pos < events.length; b++) {
    const s: CountingSettings = { level: 'account', granularities: ['hour', 'day', 'month'], dedupRetentionSec: 7 * 86400, uniquesRetentionSec: 7 * 86400, markerLimits: limitsAt(b) };
    const batch = events.slice(pos, pos + batchSizes[b % batchSizes.length]!);
    pos += batch.length;
    const toLoad: string[] = [];
    const keys: EventKeys[] = [];
    for (const e of batch) {
      const parsed = parseEvent(Buffer.from(e), { maxEventBytes: 1 << 20, facets: config.facets, level: config.level });
      assert.ok(parsed.ok, e);
      keys.push(eventKeys(parsed.event, '0000', s, toLoad));
    }
    state.load(toLoad);
    const more: string[] = [];
    for (const k of keys) overflowKeys(k, s, state, more);
    state.load(more, true);
    more.length = 0;
    for (const k of keys) shardOverflowKeys(k, state, more);
    state.load(more, true);
    for (const k of keys) countEvent(k, NOW + 60, s, state, window, tally);
    if ((b + 1) % batchesPerWindow === 0) closeWindow();
  }
  closeWindow();
  const rows: RefRow[] = [...totals].map(([key, t]) => countLine({ ...counterOfKey(key), ...t }, true));
  return { rows: sortRows(rows), state };
}

const SPECIAL = ['\u0001', '"', '*', '=', ':', '|', 'a', 'b'];
const text = fc.string({ unit: fc.oneof(fc.constantFrom(...SPECIAL), fc.string({ unit: 'binary', minLength: 1, maxLength: 1 })), minLength: 1, maxLength: 4 });
const eventArb = fc.record({
  customer: fc.constantFrom('u1', 'u2', 'u3'),
  hour: fc.integer({ min: 0, max: 30 }),
  facets: fc.dictionary(fc.constantFrom('f', 'g', '*', 'h\u0001', '"q'), text, { maxKeys: 4 }),
});

test('uniques are exact through every marker tier (U, shards, V; older U-then-V state read on), with every load the engine relies on', () => {
  fc.assert(
    fc.property(
      fc.array(eventArb, { minLength: 1, maxLength: 60 }),
      fc.array(fc.integer({ min: 1, max: 9 }), { minLength: 1, maxLength: 4 }),
      fc.integer({ min: 1, max: 3 }),
      fc.integer({ min: 6, max: 40 }),
      fc.integer({ min: 1, max: 4 }),
      fc.integer({ min: 0, max: 6 }),
      (evs, batchSizes, batchesPerWindow, recordMax, shards, legacyBatches) => {
        const events = evs.map((e, i) => JSON.stringify({ ...e.facets, company_id: 'acme', statistic_id: 'open', customer_id: e.customer, timestamp: NOW - e.hour * 3600, event_id: `e${i}` }));
        // The first batches write state as it was before shards (no shards: U then V).
        const { rows } = engineRows(events, batchSizes, batchesPerWindow, (b) => ({ recordMax, shards: b < legacyBatches ? 0 : shards }));
        const expected = referenceRun(
          events.map((value) => ({ value, ingestTimeMs: (NOW + 60) * 1000 })),
          { level: 'account' },
        ).rows;
        assert.deepEqual(rows, expected);
      },
    ),
    { numRuns: 300 },
  );
});

test('one wide event and a heavy customer reach shard and V records, and count exactly', () => {
  const wide = JSON.stringify({ company_id: 'acme', statistic_id: 'open', customer_id: 'w', timestamp: NOW, event_id: 'w', ...Object.fromEntries(Array.from({ length: 300 }, (_, f) => [`a${f}`, `v${f % 5}`])) });
  const heavy = Array.from({ length: 200 }, (_, i) => JSON.stringify({ company_id: 'acme', statistic_id: 'open', customer_id: 'h', timestamp: NOW - (i % 20) * 3600, event_id: `h${i}`, page: `p${i}`, sku: `s${i % 40}` }));
  const events = [wide, ...heavy, wide.replace('"event_id":"w"', '"event_id":"w2"')];
  const { rows, state } = engineRows(events, [7, 64], 2, () => ({ recordMax: 64, shards: 8 }));
  assert.deepEqual(rows, referenceRun(events.map((value) => ({ value, ingestTimeMs: (NOW + 60) * 1000 })), { level: 'account' }).rows);
  const kinds = new Set([...state.stored.keys()].map((k) => k[4]));
  assert.ok(kinds.has('W') && kinds.has('V'), `kinds written: ${[...kinds].join('')}`);
});

test('marker record helpers: appending, bounds, full marks, entries of a full record, shard range', () => {
  fc.assert(
    fc.property(fc.uniqueArray(text, { maxLength: 12 }), fc.boolean(), fc.integer({ min: 1, max: 2048 }), fc.integer({ min: 2, max: 60 }), (tokens, sharded, shards, recordMax) => {
      const append = new MarkerAppend(emptyMarkers(3), recordMax);
      const kept: string[] = [];
      for (const t of tokens) {
        if (append.tryAdd(markerNeedle(t))) kept.push(t);
        else break;
      }
      const record = append.result() ?? emptyMarkers(3);
      assert.ok(record.length <= Math.max(recordMax, emptyMarkers(3).length), `${record.length} > ${recordMax}`);
      assert.deepEqual(markerTokens(record), kept);
      assert.equal(markersFull(record), false);
      for (const t of kept) assert.ok(record.includes(markerNeedle(t)));
      const full = new MarkerAppend(record, recordMax);
      full.markFull(sharded);
      const fullRecord = full.result()!;
      assert.equal(markersFull(fullRecord), true);
      assert.equal(markersSharded(fullRecord), sharded);
      assert.deepEqual(markerTokens(fullRecord), kept);
      const after = new MarkerAppend(fullRecord, 1 << 20);
      assert.equal(after.isFull, true);
      assert.equal(after.tryAdd(markerNeedle('new')), false);
      assert.equal(after.result(), undefined);
      const entries = markerEntries(fullRecord);
      assert.equal(entries.size, kept.length);
      for (const t of kept) assert.ok(entries.has(markerEntry(t, markerNeedle(t))));
      for (const t of tokens) {
        const shard = markerShard(t, shards);
        assert.ok(Number.isInteger(shard) && shard >= 0 && shard < shards);
      }
    }),
  );
});
