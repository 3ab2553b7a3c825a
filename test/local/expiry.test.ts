import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { test } from 'node:test';
import { keyGroupOf, routingKey } from '../../common/keygroups';
import { countingSettings } from '../../worker/engine/counting';
import { NativeState } from '../../worker/engine/native-state';
import type { CountKernelStats } from '../../worker/native/kernel';
import { runLocal } from '../../worker/runtime/local';
import { readSegments } from '../../worker/state/segment-log';
import { RocksStore } from '../../worker/state/rocks';
import { rng } from '../support/events';
import { referenceRun } from '../support/reference';
import { ArraySource, engineOf, engineRunOptions, jumpyClock, localCounts, tempDir, TEST_ENGINES, testConfig, type InputRecord } from '../support/local';

/**
 * Bounded state (issue 9): over weeks of ingest time, dedup identities and uniqueness
 * markers past their retention are deleted from RocksDB, and the counts stay the contract's
 * (test/support/reference.ts) — copies within the retention dropped, copies beyond it
 * counted again, uniques exact within the horizon. Both engines: the records engine's
 * records are read back from the store; the native engine's state is its kernel's tables,
 * rebuilt from the segments on disk when the task opens, and their sizes are checked
 * against bounds computed from the input and the reference.
 */

const DAY_MS = 86_400_000;
/**
 * Dedup retention 1 day, uniques retention 3 days: a copy delayed beyond the dedup retention
 * (up to 2.4 days) then stays within its buckets' uniqueness horizon, where the reference and
 * the engine agree (the reference's rule beyond the horizon is simpler than the engine's).
 */
const RETENTION_MS = DAY_MS;
const UNIQUES_RETENTION_MS = 3 * DAY_MS;
const RETENTIONS = { dedup: { retention: '1d' }, uniques: { retention: '3d' } };
const MAX_COPY_DELAY_MS = 2.4 * DAY_MS;
/** The expiry step: a seventh of the shorter retention (worker/state/expiry.ts), in seconds. */
const STEP_SEC = Math.floor(RETENTION_MS / 1000 / 7);
const START_MS = Date.UTC(2026, 0, 3, 5);
const COMPANIES = ['acme', 'borealis'];
const STATISTICS = ['open', 'click'];
/** Long facet values, so that a busy customer's marker record fills up and spills into one-marker (V) records. */
const PAGES = Array.from({ length: 30 }, (_, i) => `/catalogue/${'section/'.repeat(10)}${i}`);
const ENGINES = TEST_ENGINES;
/** The latest an hour or day bucket's last event (a copy included) is ingested after the bucket ends: 12 h late + 2.4 days of copy delay + the hour it is rounded to. */
const LAST_TOUCH_SEC = 12 * 3600 + MAX_COPY_DELAY_MS / 1000 + 3600;

/** About 30 days of ingest; every event within 12 h of its ingest time; copies byte for byte, some within the dedup retention and some beyond (within the uniques horizon). */
function input(seed: number, n: number, maxGapMinutes = 120): InputRecord[] {
  const r = rng(seed);
  const out: InputRecord[] = [];
  const originals: InputRecord[] = [];
  let t = START_MS;
  for (let i = 0; i < n; i++) {
    t += Math.floor(r() * maxGapMinutes * 60_000);
    if (r() < 0.2) {
      // A copy of an earlier record, away from the retention's exact boundary.
      // Copies of originals only: a copy of a copy could reach beyond the original's uniques horizon.
      const recent = originals.filter((rec) => t - rec.ingestTimeMs < MAX_COPY_DELAY_MS);
      const earlier = recent[Math.floor(r() * recent.length)];
      if (earlier !== undefined && Math.abs(t - earlier.ingestTimeMs - RETENTION_MS) > 60_000) {
        out.push({ value: earlier.value, ingestTimeMs: t });
        continue;
      }
    }
    const ev: Record<string, unknown> = {
      company_id: COMPANIES[Math.floor(r() * COMPANIES.length)],
      statistic_id: STATISTICS[Math.floor(r() * STATISTICS.length)],
      customer_id: `customer-${Math.floor(r() * 12)}`,
      timestamp: Math.floor(t / 1000 - r() * 12 * 3600),
      page: PAGES[Math.floor(r() * PAGES.length)],
      device: ['ios', 'web'][Math.floor(r() * 2)],
    };
    if (r() < 0.8) ev.event_id = `ev-${seed}-${i}`;
    out.push({ value: JSON.stringify(ev), ingestTimeMs: t });
    originals.push(out.at(-1)!);
  }
  return out;
}

interface StateCensus {
  dedup: Array<{ group: number; firstSeen: number }>;
  hourMarkers: Array<{ group: number; bucket: number }>;
  tokenMarkers: number;
  expiryRecords: number;
}

async function census(dataDir: string, config: ReturnType<typeof testConfig>): Promise<StateCensus> {
  const store = await RocksStore.openReadOnly(`${dataDir}/state`, config.rocksdb);
  const c: StateCensus = { dedup: [], hourMarkers: [], tokenMarkers: 0, expiryRecords: 0 };
  try {
    await store.scan({ gte: '0000', lt: '~' }, (key, value) => {
      const group = parseInt(key.slice(0, 4), 16);
      const kind = key[4];
      if (kind === 'D') c.dedup.push({ group, firstSeen: Number(value) });
      if (kind === 'U' && key[5] === 'h') c.hourMarkers.push({ group, bucket: Number(key.slice(6, key.indexOf('|'))) });
      if (kind === 'V') c.tokenMarkers++;
      if (kind === 'X') c.expiryRecords++;
    });
  } finally {
    await store.close();
  }
  return c;
}

/** Every marker ever set is one unique of its counter; those that may be left are of buckets whose horizon can still be after the cutoff (month buckets: all of them). */
function liveMarkers(rows: ReturnType<typeof referenceRun>['rows'], newest: ReadonlyMap<number, number>, groupOf: (company: string, statistic: string) => number): { live: number; all: number } {
  let live = 0;
  let all = 0;
  for (const row of rows) {
    all += row.uniques ?? 0;
    const endSec = Date.parse(row.bucket) / 1000 + (row.granularity === 'hour' ? 3600 : 86_400);
    if (row.granularity === 'month' || endSec + LAST_TOUCH_SEC + UNIQUES_RETENTION_MS / 1000 + 2 * STEP_SEC >= newest.get(groupOf(row.scope, row.statistic_id))!) live += row.uniques ?? 0;
  }
  return { live, all };
}

/** The native engine's spill records (worker/state/spill-records.ts): identities with their first ingest second, and the markers the customer records hold. */
async function spillCensus(dataDir: string, config: ReturnType<typeof testConfig>): Promise<{ identities: Array<{ group: number; firstSeen: number }>; markers: number }> {
  const store = await RocksStore.openReadOnly(`${dataDir}/state`, config.rocksdb);
  const out = { identities: [] as Array<{ group: number; firstSeen: number }>, markers: 0 };
  try {
    await store.scan({ gte: '0000', lt: '~' }, (key, value) => {
      const bytes = Buffer.from(value, 'base64');
      if (key[4] === 'I') out.identities.push({ group: parseInt(key.slice(0, 4), 16), firstSeen: bytes.readUInt32LE(0) });
      // A version byte, then one varint per marker: the bytes below 0x80 end one each.
      if (key[4] === 'M') out.markers += bytes.subarray(1).filter((b) => b < 0x80).length;
    });
  } finally {
    await store.close();
  }
  return out;
}

/** The native engine's tables as the segments on disk rebuild them (what a restarted task would hold). */
async function reopenedKernelStats(dataDir: string, config: ReturnType<typeof testConfig>): Promise<CountKernelStats> {
  const store = await RocksStore.openReadOnly(`${dataDir}/state`, config.rocksdb);
  const native = new NativeState(countingSettings(config));
  try {
    for (let g = 0; g < config.keyGroups; g++) for (const { segment } of await readSegments(store, g)) native.load(g, segment);
  } finally {
    await store.close();
  }
  return native.stats();
}

for (const engine of ENGINES) test(`over 30 days of ingest, expired identities and markers are deleted and the counts stay exact [${engine}]`, async () => {
  for (const seed of [1, 2]) {
    const records = input(seed, 700);
    const spanDays = (records.at(-1)!.ingestTimeMs - START_MS) / DAY_MS;
    assert.ok(spanDays > 25, `input spans ${spanDays.toFixed(1)} days`);
    const expected = referenceRun(records, { level: 'account', dedupRetentionMs: RETENTION_MS, uniquesRetentionMs: UNIQUES_RETENTION_MS });
    const config = testConfig({ ...RETENTIONS, state: { cacheEntries: 1000, engine: engineOf(engine) } });
    const dataDir = tempDir();
    const r = rng(seed * 31);
    const batchSizes = Array.from({ length: 5 }, () => 1 + Math.floor(r() * 60));
    const result = await runLocal({ config, dataDir, source: new ArraySource(records, batchSizes), clock: jumpyClock(seed, 700), ...engineRunOptions(engine) });
    assert.deepEqual(await localCounts(dataDir, config), expected.rows, `seed ${seed}: counts`);
    assert.equal(result.counted, expected.counted);
    assert.equal(result.duplicates, expected.duplicates);
    // Copies beyond the retention were counted again (the reference says how many copies there were in all).
    assert.ok(expected.duplicates > 20 && records.length - expected.invalid.length - expected.counted === expected.duplicates);

    // What is left: nothing older than retention + two steps behind its key group's newest ingest second.
    const newest = new Map<number, number>();
    const groupOf = (company: string, statistic: string): number => keyGroupOf(routingKey('account', company, statistic, ''), config.keyGroups);
    for (const rec of records) {
      const ev = JSON.parse(rec.value) as { company_id: string; statistic_id: string };
      const g = groupOf(ev.company_id, ev.statistic_id);
      newest.set(g, Math.max(newest.get(g) ?? 0, Math.floor(rec.ingestTimeMs / 1000)));
    }
    assert.ok(result.expired > 0, `seed ${seed}: the sweeps deleted something`);
    if (engine === 'native-spilling') {
      // Spill records expire too: every identity record left is within retention + two steps of its group's newest, and the marker records hold no more markers than can be live.
      const spilled = await spillCensus(dataDir, config);
      assert.ok(spilled.identities.length > 0 && spilled.markers > 0, `seed ${seed}: records were spilled`);
      for (const d of spilled.identities) assert.ok(d.firstSeen >= newest.get(d.group)! - RETENTION_MS / 1000 - 2 * STEP_SEC, `seed ${seed}: a spilled identity of ${d.firstSeen} outlived its retention`);
      assert.ok(spilled.markers <= liveMarkers(expected.rows, newest, groupOf).live, `seed ${seed}: ${spilled.markers} spilled markers left`);
    }
    if (engine !== 'records') {
      const kernel = await reopenedKernelStats(dataDir, config);
      // An identity is stored once per counting, at its ingest second: those left must have been counted at most retention + two steps before their group's newest.
      const recent = records.filter((rec) => {
        const ev = JSON.parse(rec.value) as { company_id: string; statistic_id: string };
        return Math.floor(rec.ingestTimeMs / 1000) >= newest.get(groupOf(ev.company_id, ev.statistic_id))! - RETENTION_MS / 1000 - 2 * STEP_SEC;
      }).length;
      assert.ok(kernel.identities > 0 && kernel.identities <= recent, `seed ${seed}: ${kernel.identities} identities left, at most ${recent} records were recent enough`);
      // Every marker ever set is one unique of its counter; those left must be of buckets whose horizon can still be after the cutoff (month buckets: all of them).
      const { live, all } = liveMarkers(expected.rows, newest, groupOf);
      assert.ok(live < all * 0.7, `seed ${seed}: the input lets most markers expire (${live} of ${all} may live)`);
      assert.ok(kernel.markers > 0 && kernel.markers <= live, `seed ${seed}: ${kernel.markers} markers left, at most ${live} can be live`);
      rmSync(dataDir, { recursive: true });
      continue;
    }
    const state = await census(dataDir, config);
    const retentionSec = RETENTION_MS / 1000;
    assert.ok(state.dedup.length > 0 && state.dedup.length < expected.counted / 5, `seed ${seed}: ${state.dedup.length} dedup records left of ${expected.counted} counted`);
    for (const d of state.dedup) assert.ok(d.firstSeen >= newest.get(d.group)! - retentionSec - 2 * STEP_SEC, `seed ${seed}: a dedup record of ${d.firstSeen} outlived its retention`);
    // An hour bucket's last event (a copy included) is ingested at most 12 h + 2.4 days after the hour ends, so its horizon is at most that + the uniques retention.
    const lastTouch = 3600 + LAST_TOUCH_SEC;
    assert.ok(state.hourMarkers.length > 0);
    for (const m of state.hourMarkers) assert.ok(m.bucket + lastTouch + UNIQUES_RETENTION_MS / 1000 + 2 * STEP_SEC >= newest.get(m.group)!, `seed ${seed}: markers of hour ${m.bucket} outlived their horizon`);
    assert.ok(state.expiryRecords > 0);
    rmSync(dataDir, { recursive: true });
  }
});

for (const engine of ENGINES) test(`input re-delivered within one expiry step of the newest ingest time is still dropped after sweeps [${engine}]`, async () => {
  // A run over 3 days (sweeps every 3.4 h of ingest), then its last step again with the records' own ingest times (a replay from a committed position).
  const records = input(7, 600, 15);
  const config = testConfig({ ...RETENTIONS, state: { cacheEntries: 1000, engine: engineOf(engine) } });
  const expected = referenceRun(records, { level: 'account', dedupRetentionMs: RETENTION_MS, uniquesRetentionMs: UNIQUES_RETENTION_MS });
  const dataDir = tempDir();
  const first = await runLocal({ config, dataDir, source: new ArraySource(records, [37]), clock: jumpyClock(7, 700), ...engineRunOptions(engine) });
  assert.ok(first.expired > 0, 'the run deleted expired records');
  const lastMs = records.at(-1)!.ingestTimeMs;
  const tail = records.filter((rec) => rec.ingestTimeMs >= lastMs - STEP_SEC * 1000);
  assert.ok(tail.length > 10);
  await runLocal({ config, dataDir, source: new ArraySource(tail, [16], true), clock: jumpyClock(8, 700), ...engineRunOptions(engine) });
  assert.deepEqual(await localCounts(dataDir, config), expected.rows);
  rmSync(dataDir, { recursive: true });
});

for (const engine of ENGINES) test(`a record stamped a month ahead by a producer clock does not expire the dedup state of the present (sweep ceiling) [${engine}]`, async () => {
  // Kafka ingest times come from producers. One record 30 days ahead moves its key group's
  // newest ingest time; expiry must not believe it beyond the worker's clock + 1 h, or the
  // dedup records of the present are deleted and a copy delivered a minute later counts twice.
  const now = START_MS;
  const base = { company_id: 'acme', statistic_id: 'open', customer_id: 'customer-1', page: '/', device: 'ios' };
  const original = { value: JSON.stringify({ ...base, event_id: 'a', timestamp: now / 1000 - 60 }), ingestTimeMs: now };
  const records: InputRecord[] = [
    original,
    { value: JSON.stringify({ ...base, event_id: 'from-the-future', timestamp: now / 1000 }), ingestTimeMs: now + 30 * DAY_MS },
    ...Array.from({ length: 5 }, (_, i) => ({ value: JSON.stringify({ ...base, event_id: `b${i}`, timestamp: now / 1000 }), ingestTimeMs: now + 1000 * i })),
    { value: original.value, ingestTimeMs: now + 60_000 }, // the copy, a minute later: within the 1-day dedup retention
  ];
  const expected = referenceRun(records, { level: 'account', dedupRetentionMs: RETENTION_MS, uniquesRetentionMs: UNIQUES_RETENTION_MS });
  assert.equal(expected.duplicates, 1);
  const config = testConfig({ ...RETENTIONS, state: { cacheEntries: 1000, engine: engineOf(engine) } });
  const dataDir = tempDir();
  // One record per batch and a clock that closes a window (and sweeps) after every batch.
  let t = 0;
  const result = await runLocal({ config, dataDir, source: new ArraySource(records, [1]), clock: () => (t += 5_000), sweepCeilingMs: () => now + 3_600_000, ...engineRunOptions(engine) });
  assert.equal(result.duplicates, 1, 'the copy was dropped');
  assert.deepEqual(await localCounts(dataDir, config), expected.rows);
  rmSync(dataDir, { recursive: true });
});
