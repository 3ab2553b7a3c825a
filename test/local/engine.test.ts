import assert from 'node:assert/strict';
import { readFileSync, rmSync } from 'node:fs';
import { test } from 'node:test';
import { localPaths, runLocal } from '../../worker/runtime/local';
import { metrics } from '../../worker/runtime/metrics';
import { rng, testInput } from '../support/events';
import { referenceRun } from '../support/reference';
import { ArraySource, engineOf, engineRunOptions, jumpyClock, localCounts, tempDir, TEST_ENGINES, testConfig, type InputRecord, type TestEngine } from '../support/local';

/**
 * Property tests of the whole count task (real RocksDB, embedded sink) against the
 * independent reference of the contract in test/support/reference.ts: whatever the windows,
 * batches, duplicates and replays, the counts in the sink are the contract's counts.
 */

const NOW = Date.UTC(2026, 10, 27, 12) / 1000;
const ENGINES = TEST_ENGINES;
const MAX = 4096;

type Engine = TestEngine;
const runOptions = engineRunOptions;

function input(seed: number, valid: number): InputRecord[] {
  const r = rng(seed);
  const values = testInput({ seed, nowSec: NOW, valid, dupRate: 0.1, maxEventBytes: MAX, customers: 40, companies: 3 });
  // Ingest times increase through the input, by up to a minute per record.
  let t = NOW * 1000;
  return values.map((value) => ({ value, ingestTimeMs: (t += Math.floor(r() * 60_000)) }));
}

/** The process's spill metrics so far (every task of this test file adds to them). */
async function spillFigures(): Promise<{ identities: number; customers: number; reads: number }> {
  const spilled = (await metrics.stateSpilled.get()).values;
  const of = (kind: string): number => spilled.find((v) => v.labels.kind === kind)?.value ?? 0;
  return { identities: of('dedup'), customers: of('customer_markers'), reads: (await metrics.stateSpillReads.get()).values[0]?.value ?? 0 };
}

async function countWith(records: readonly InputRecord[], configOverrides: Record<string, unknown>, seed: number, engine: Engine, dataDir = tempDir()) {
  const r = rng(seed);
  const config = testConfig({ maxEventBytes: MAX, state: { cacheEntries: 1000, engine: engineOf(engine) }, ...configOverrides });
  const batchSizes = Array.from({ length: 7 }, () => 1 + Math.floor(r() * 300));
  await runLocal({ config, dataDir, source: new ArraySource(records, batchSizes), clock: jumpyClock(seed, 700), ...runOptions(engine) });
  return { rows: await localCounts(dataDir, config), dataDir, config };
}

for (const engine of ENGINES) {
  test(`random splits into windows and batches give the contract counts (account level) [${engine}]`, async () => {
    const before = await spillFigures();
    for (const seed of [1, 2, 3, 4, 5]) {
      const records = input(seed, 400);
      const expected = referenceRun(records, { level: 'account', maxEventBytes: MAX });
      assert.ok(expected.duplicates > 0 && expected.invalid.length > 0, 'input has duplicates and invalid events');
      const a = await countWith(records, {}, seed * 7, engine);
      const b = await countWith(records, {}, seed * 13, engine);
      assert.deepEqual(a.rows, expected.rows, `seed ${seed}, split A`);
      assert.deepEqual(b.rows, expected.rows, `seed ${seed}, split B`);
      rmSync(a.dataDir, { recursive: true });
      rmSync(b.dataDir, { recursive: true });
    }
    if (engine === 'native-spilling') {
      // The path under test was taken: identities and marker sets spilled, and read back.
      const after = await spillFigures();
      assert.ok(after.identities - before.identities > 1000 && after.customers - before.customers > 500 && after.reads - before.reads > 200, JSON.stringify({ before, after }));
    }
  });
}

for (const engine of ENGINES) {
  test(`customer level, a subset of granularities and an include list [${engine}]`, async () => {
    const records = input(11, 300);
    const expected = referenceRun(records, { level: 'customer', granularities: ['day', 'month'], facets: { include: ['campaign', 'amount'] }, maxEventBytes: MAX });
    const got = await countWith(records, { level: 'customer', granularities: ['month', 'day'], facets: { include: ['campaign', 'amount'] } }, 11, engine);
    assert.deepEqual(got.rows, expected.rows);
    assert.ok(got.rows.every((row) => row.uniques === undefined), 'no uniques at customer level');
    rmSync(got.dataDir, { recursive: true });
  });
}

for (const engine of ENGINES) {
  test(`an exclude list drops those facets only [${engine}]`, async () => {
    const records = input(12, 200);
    const expected = referenceRun(records, { level: 'account', facets: { exclude: ['device'] }, maxEventBytes: MAX });
    const got = await countWith(records, { facets: { exclude: ['device'] } }, 12, engine);
    assert.deepEqual(got.rows, expected.rows);
    rmSync(got.dataDir, { recursive: true });
  });
}

for (const engine of ENGINES) {
  test(`input delivered again after a restore (positions ignored) changes nothing [${engine}]`, async () => {
    const records = input(21, 300);
    const expected = referenceRun(records, { level: 'account', maxEventBytes: MAX });
    const first = await countWith(records, {}, 21, engine);
    assert.deepEqual(first.rows, expected.rows);
    // Re-deliver a prefix and then everything, into the same state, as a replay would.
    for (const replay of [records.slice(0, 120), records]) {
      await runLocal({ config: first.config, dataDir: first.dataDir, source: new ArraySource(replay, [50], true), clock: jumpyClock(5, 900), ...runOptions(engine) });
      assert.deepEqual(await localCounts(first.dataDir, first.config), expected.rows);
    }
    rmSync(first.dataDir, { recursive: true });
  });
}

for (const engine of ENGINES) {
  test(`a run over the same data dir after success reads nothing and changes nothing [${engine}]`, async () => {
    const records = input(31, 150);
    const first = await countWith(records, {}, 31, engine);
    const again = await runLocal({ config: first.config, dataDir: first.dataDir, source: new ArraySource(records), ...runOptions(engine) });
    assert.equal(again.read, 0);
    assert.deepEqual(await localCounts(first.dataDir, first.config), first.rows);
    rmSync(first.dataDir, { recursive: true });
  });
}

for (const engine of ENGINES) {
  test(`counts continue across two inputs into one data dir, duplicates across them dropped [${engine}]`, async () => {
    const records = input(41, 300);
    const expected = referenceRun(records, { level: 'account', maxEventBytes: MAX });
    const dataDir = tempDir();
    const config = testConfig({ maxEventBytes: MAX, state: { cacheEntries: 1000, engine: engineOf(engine) } });
    await runLocal({ config, dataDir, source: new ArraySource(records.slice(0, 180), [64], false, 'part-1'), ...runOptions(engine) });
    await runLocal({ config, dataDir, source: new ArraySource(records.slice(150), [64], false, 'part-2'), ...runOptions(engine) });
    assert.deepEqual(await localCounts(dataDir, config), expected.rows);
    rmSync(dataDir, { recursive: true });
  });
}

for (const engine of ENGINES) {
  test(`uniques within the horizon are exact even when copies arrive days apart [${engine}]`, async () => {
    const day = 86_400_000;
    const ev = (customer: string, id: string, ts: number): string => JSON.stringify({ company_id: 'c', statistic_id: 'open', customer_id: customer, timestamp: ts, event_id: id, campaign: 'x' });
    const t0 = NOW * 1000;
    const records: InputRecord[] = [
      { value: ev('u1', 'a', NOW - 3600), ingestTimeMs: t0 },
      { value: ev('u1', 'b', NOW - 3600), ingestTimeMs: t0 + 2 * day },
      { value: ev('u2', 'c', NOW - 3600), ingestTimeMs: t0 + 3 * day },
      { value: ev('u1', 'a', NOW - 3600), ingestTimeMs: t0 + 5 * day }, // duplicate within 7 days
    ];
    const expected = referenceRun(records, { level: 'account' });
    const got = await countWith(records, {}, 51, engine);
    assert.deepEqual(got.rows, expected.rows);
    const hourTotal = got.rows.find((r) => r.granularity === 'hour' && r.facet === '*')!;
    assert.equal(hourTotal.count, 3);
    assert.equal(hourTotal.uniques, 2);
    rmSync(got.dataDir, { recursive: true });
  });
}

test('native engine: a record stamped beyond what it stores (32-bit ingest seconds) goes to the dead letter, naming the fix; the rest count exactly', async () => {
  const all = input(61, 200);
  // Two producer clocks gone wrong, among valid records of the same customers.
  const beyond = [5, 77].map((i) => ({ ...all[i]!, ingestTimeMs: 2 ** 32 * 1000 + i * 1000 }));
  const records = all.map((r, i) => (i === 5 ? beyond[0]! : i === 77 ? beyond[1]! : r));
  const kept = records.filter((_, i) => i !== 5 && i !== 77);
  const expected = referenceRun(kept, { level: 'account', maxEventBytes: MAX });
  const got = await countWith(records, {}, 61, 'native');
  assert.deepEqual(got.rows, expected.rows);
  const dead = readFileSync(localPaths(got.dataDir).deadLetter, 'utf8')
    .trim()
    .split('\n')
    .map((line) => JSON.parse(line) as { reason: string });
  const outOfRange = dead.filter((d) => /ingest time \d+ s is outside 1970-01-01\.\.2106-02-07.*use state\.engine: records/.test(d.reason));
  assert.equal(outOfRange.length, 2, 'both records are in the dead letter with the reason');
  assert.equal(dead.length, expected.invalid.length + 2, 'and nothing else beyond the invalid records');
  rmSync(got.dataDir, { recursive: true });
});

test('native engine: an event with more facets than it encodes (65,534) goes to the dead letter, naming the fix; the rest count exactly', async () => {
  const records = input(71, 60);
  // 65,535 facets of a few bytes each: within a 1 MiB maxEventBytes, beyond the native engine's 16-bit token count.
  const wide = JSON.stringify({ company_id: 'c', statistic_id: 'open', customer_id: 'u', timestamp: NOW, event_id: 'wide', ...Object.fromEntries(Array.from({ length: 65_535 }, (_, i) => [`f${i}`, 1])) });
  const all = [...records.slice(0, 30), { value: wide, ingestTimeMs: records[30]!.ingestTimeMs }, ...records.slice(30)];
  const expected = referenceRun(records, { level: 'account', maxEventBytes: 1 << 20 });
  const got = await countWith(all, { maxEventBytes: '1Mi' }, 71, 'native');
  assert.deepEqual(got.rows, expected.rows);
  const dead = readFileSync(localPaths(got.dataDir).deadLetter, 'utf8')
    .trim()
    .split('\n')
    .map((line) => JSON.parse(line) as { reason: string });
  assert.equal(dead.filter((d) => /event has 65535 facets; the native engine counts at most 65534 .*use state\.engine: records/.test(d.reason)).length, 1);
  assert.equal(dead.length, expected.invalid.length + 1, 'and nothing else beyond the invalid records');
  rmSync(got.dataDir, { recursive: true });
});
