import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { test } from 'node:test';
import { resolveJobConfig } from '../../common/job-config';
import { BloomFilter } from '../../worker/state/bloom';
import { entryBytes, StateCache } from '../../worker/state/cache';
import { RocksStore } from '../../worker/state/rocks';
import { tempDir } from '../support/local';

/** The state cache over a real RocksDB, with a filter small enough to be mostly false positives. */

async function withCache(body: (cache: StateCache, store: RocksStore) => Promise<void>): Promise<void> {
  const dir = tempDir();
  const store = await RocksStore.open(dir, resolveJobConfig({}).rocksdb);
  try {
    await body(new StateCache(store, new BloomFilter(1024, 2), 100), store);
  } finally {
    await store.close();
    rmSync(dir, { recursive: true });
  }
}

test('a key ruled out at load stays absent even when later writes make the filter say "maybe"', async () => {
  await withCache(async (cache) => {
    const batch = Array.from({ length: 50 }, (_, i) => `0000Dkey-${i}`);
    await cache.load(batch);
    // Writing many other keys fills the 1024-bit filter: almost every key now looks present.
    for (let i = 0; i < 2000; i++) cache.set(`0000Uother-${i}`, 'x');
    for (const key of batch) assert.equal(cache.get(key), null);
  });
});

test('committed values are read back, evicted ones re-read from RocksDB, unloaded keys refused', async () => {
  await withCache(async (cache, store) => {
    await cache.load(['0000Ca', '0000Cb']);
    cache.set('0000Ca', '1,1');
    cache.set('0000Cb', '2,0');
    const { puts } = cache.changes();
    await store.write(puts, [], true);
    cache.markCommitted();
    for (let i = 0; i < 300; i++) {
      await cache.load([`0001Cfill-${i}`]);
      cache.set(`0001Cfill-${i}`, '1,0');
      await store.write(cache.changes().puts, [], false);
      cache.markCommitted();
    }
    await cache.load(['0000Ca', '0000Cb', '0000Cnever']);
    assert.equal(cache.get('0000Ca'), '1,1');
    assert.equal(cache.get('0000Cb'), '2,0');
    assert.equal(cache.get('0000Cnever'), null);
    assert.ok(cache.size <= 100 + 3, 'clean entries are trimmed to the capacity');
    assert.throws(() => cache.get('0000Cnot-loaded-and-maybe-present'), /not loaded before use/);
  });
});

test('staged counters go to the commit batch, are read back once committed, and are dropped with a failed commit', async () => {
  await withCache(async (cache, store) => {
    assert.deepEqual(await cache.readCommitted(['0000Cx', '0000Cy']), [null, null]);
    cache.stage(['0000Cx', '0000Cy'], ['1,1', '2,0']);
    cache.set('0000Uz', 'marker');
    const { puts } = cache.changes();
    assert.deepEqual(
      puts.map(([k, v]) => `${k}=${v}`).sort(),
      ['0000Cx=1,1', '0000Cy=2,0', '0000Uz=marker'],
    );
    await store.write(puts, [], true);
    cache.markCommitted();
    assert.equal(cache.changes().puts.length, 0, 'a commit unstages');
    assert.deepEqual(await cache.readCommitted(['0000Cx', '0000Cy']), ['1,1', '2,0']);

    // A failed commit: the staged totals are forgotten, the committed ones read again.
    cache.stage(['0000Cx'], ['5,5']);
    cache.discardUncommitted();
    assert.equal(cache.changes().puts.length, 0);
    assert.deepEqual(await cache.readCommitted(['0000Cx']), ['1,1']);

    // Evicted from memory: read from RocksDB (the filter indexed them when they were first read).
    for (let i = 0; i < 300; i++) {
      cache.stage([`0001Cfill-${i}`], ['1,0']);
      await store.write(cache.changes().puts, [], false);
      cache.markCommitted();
    }
    assert.deepEqual(await cache.readCommitted(['0000Cx', '0000Cy', '0000Cnever']), ['1,1', '2,0', null]);
    assert.ok(cache.stats.storeReads >= 2);
  });
});

test('the memory estimate follows every committed record, staged counters included, through updates', async () => {
  await withCache(async (cache, store) => {
    // Independent of the cache's bookkeeping: what it should hold is the last `capacity`
    // records committed, each costing entryBytes; recompute that from a model map.
    const model = new Map<string, string>();
    for (let w = 0; w < 40; w++) {
      const keys = Array.from({ length: 7 }, (_, i) => `0000Cc-${(w * 5 + i) % 60}`);
      await cache.readCommitted(keys);
      const values = keys.map((_, i) => `${w + i},${'u'.repeat(w % 5)}`);
      cache.stage(keys, values);
      cache.set(`0000Um-${w % 9}`, 'm'.repeat(w));
      await store.write(cache.changes().puts, [], false);
      cache.markCommitted();
      keys.forEach((k, i) => model.set(k, values[i]!));
      model.set(`0000Um-${w % 9}`, 'm'.repeat(w));
    }
    // capacity 100 > 69 distinct keys: nothing evicted, so the estimate is the model's sum.
    let expected = 0;
    for (const [k, v] of model) expected += entryBytes(k, v);
    assert.equal(cache.bytes, expected);
  });
});

test('forgetGroups drops the cached and uncommitted records of exactly those key groups, and their bytes', async () => {
  await withCache(async (cache, store) => {
    const keys = [0, 1, 2, 17].flatMap((g) => [`${g.toString(16).padStart(4, '0')}Ca`, `${g.toString(16).padStart(4, '0')}Ub`]);
    await cache.load([...keys, '~meta']);
    for (const key of keys) cache.set(key, '1,0');
    await store.write(cache.changes().puts, [], true);
    cache.markCommitted();
    cache.set('0001Cc', '5,0'); // uncommitted, in a forgotten group
    cache.set('0002Cc', '6,0'); // uncommitted, in a kept group
    const before = cache.bytes;
    cache.forgetGroups([1, 17]);
    const forgotten = keys.filter((k) => k.startsWith('0001') || k.startsWith('0011'));
    for (const key of forgotten) assert.equal(cache.getIfLoaded(key), null, `${key} is forgotten`);
    for (const key of keys.filter((k) => !forgotten.includes(k))) assert.equal(cache.getIfLoaded(key), '1,0');
    assert.equal(cache.pending('0001Cc'), undefined, 'an uncommitted change of a forgotten group is dropped');
    assert.equal(cache.pending('0002Cc'), '6,0');
    assert.equal(before - cache.bytes, forgotten.reduce((n, k) => n + entryBytes(k, '1,0'), 0));
  });
});

test('the per-group record counts follow loads, commits, evictions and forgets; forgetting a group the cache holds nothing of changes nothing', async () => {
  await withCache(async (cache, store) => {
    const groups = [0, 3, 10, 255];
    const key = (g: number, i: number) => `${g.toString(16).padStart(4, '0')}Ck-${i}`;
    const total = () => groups.reduce((n, g) => n + cache.cachedInGroup(g), 0);
    let seed = 7;
    const next = (n: number) => ((seed = (seed * 1103515245 + 12345) % 2 ** 31), seed % n);
    // 60 windows of 12 keys over 4 groups × 40 keys: far past the capacity of 100, so evictions happen.
    for (let w = 0; w < 60; w++) {
      const keys = Array.from({ length: 12 }, () => key(groups[next(4)]!, next(40)));
      await cache.load(keys);
      for (const k of keys) if (next(2) === 0) cache.set(k, `${w},0`);
      await store.write(cache.changes().puts, [], false);
      cache.markCommitted();
      assert.equal(total(), cache.size, `window ${w}: the groups' counts add up to the records cached`);
    }
    assert.ok(cache.size > 0 && cache.size <= 100);
    const before = cache.size;
    cache.forgetGroups([1, 2, 4096]); // groups it holds nothing of
    assert.equal(cache.size, before);
    for (const g of groups) {
      const held = cache.cachedInGroup(g);
      const size = cache.size;
      cache.forgetGroups([g]);
      assert.equal(cache.cachedInGroup(g), 0);
      assert.equal(cache.size, size - held, `forgetting group ${g} dropped exactly its ${held} records`);
    }
  });
});
