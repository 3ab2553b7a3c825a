import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { MAX_MEMORY_BUDGET, MIN_MEMORY_BUDGET, parseMemoryBudget, planMemory, plannedBytes } from '../../common/memory-budget';
import { ConfigError } from '../../common/errors';
import { resolveJobConfig } from '../../common/job-config';
import { desiredConfigMap } from '../../operator/model/config';
import { desiredStatefulSet } from '../../operator/model/statefulset';
import { validateJob } from '../../operator/reconcile/validate';
import { parse } from 'yaml';
import { loadExample, minimalJob } from './operator-fixtures';

const MiB = 1024 ** 2;

test('a budget is divided without exceeding it, every part positive, the filter a power of two, the heap cap above the cache', () => {
  // Every MiB up to 4 GiB, where the reserve's floor and the filter's rounding make the room tightest (a random sample missed
  // 2,485 quarter-MiB budgets between 621 MiB and 2.6 GiB that the plan exceeded by up to 39 MiB).
  for (let budget = MIN_MEMORY_BUDGET; budget <= 4096 * MiB; budget += MiB / 4) {
    const p = planMemory(budget);
    assert.ok(plannedBytes(p) + Math.max(144 * MiB, budget / 5) <= budget, `budget ${budget / MiB} MiB: ${plannedBytes(p)} planned`);
    assert.ok(p.cacheBytes > 0 && p.heapLimitMiB * MiB >= p.cacheBytes * 2, `budget ${budget / MiB} MiB`);
  }
  fc.assert(
    fc.property(fc.integer({ min: MIN_MEMORY_BUDGET, max: MAX_MEMORY_BUDGET }), (budget) => {
      const p = planMemory(budget);
      for (const part of [p.cacheBytes, p.blockCacheSize, p.writeBufferSize, p.filterBits, p.reserve]) assert.ok(part > 0);
      assert.equal(Math.log2(p.filterBits) % 1, 0);
      assert.ok(p.blockCacheSize < 2 ** 32 && p.writeBufferSize < 2 ** 32, 'the binding takes 32-bit sizes');
      assert.ok(3 * p.semiSpaceMiB * MiB <= p.reserve / 2, 'three semi-spaces fit half the reserve');
      assert.ok(p.heapLimitMiB * MiB >= p.cacheBytes * 2);
      // What the settings allow leaves a fifth of the budget, and at least 144 MiB, for the own
      // allocations of Node.js and RocksDB (measured: ~160 MiB beyond the settings at 1 GiB).
      const room = Math.max(144 * MiB, budget / 5);
      assert.ok(plannedBytes(p) + room <= budget, `${plannedBytes(p)} + ${room} > ${budget}`);
      // The native engine's share is the state share less RocksDB's, and positive.
      assert.equal(p.nativeStateBytes, budget - p.reserve - p.blockCacheSize - 2 * p.writeBufferSize);
      assert.ok(p.nativeStateBytes > 0);
      assert.ok(p.reserve >= 320 * MiB);
    }),
  );
  // Larger budgets never get smaller parts (but for the cache's rounding by a few bytes, or the filter's power of two).
  fc.assert(
    fc.property(fc.integer({ min: MIN_MEMORY_BUDGET, max: 64 * 1024 * MiB }), fc.integer({ min: 0, max: 64 * 1024 * MiB }), (a, more) => {
      const [p, q] = [planMemory(a), planMemory(a + more)];
      assert.ok(q.cacheBytes + q.filterBits / 8 >= p.cacheBytes + p.filterBits / 8 - 4 && q.blockCacheSize >= p.blockCacheSize && q.filterBits >= p.filterBits && q.semiSpaceMiB >= p.semiSpaceMiB);
    }),
  );
});

test('bad budgets are refused naming the field and the fix', () => {
  for (const bad of ['lots', '-1Gi', '100Mi', '2Ti', true, { size: 1 }]) {
    assert.throws(
      () => parseMemoryBudget(bad, 'state.memoryBudget'),
      (err: unknown) => err instanceof ConfigError && err.message.startsWith('state.memoryBudget') && /set state\.memoryBudget to|write bytes/.test(err.message),
      JSON.stringify(bad),
    );
  }
  assert.equal(parseMemoryBudget('1536Mi', 'x'), 1536 * MiB);
});

test('the job config: a budget sizes the cache, the filter and RocksDB, and is refused beside the settings it replaces', () => {
  const c = resolveJobConfig({ state: { memoryBudget: '2Gi' } });
  assert.deepEqual(c.memory, planMemory(2048 * MiB));
  assert.equal(c.rocksdb.blockCacheSize, c.memory.blockCacheSize);
  assert.equal(c.rocksdb.writeBufferSize, c.memory.writeBufferSize);
  assert.equal(resolveJobConfig({}).memory, undefined);
  for (const both of [{ state: { memoryBudget: '2Gi', cacheEntries: 5000 } }, { state: { memoryBudget: '2Gi' }, rocksdb: { blockCacheSize: '1Gi' } }]) {
    assert.throws(() => resolveJobConfig(both), /state\.memoryBudget: is set together with .*remove/);
  }
  assert.throws(() => resolveJobConfig({ state: { memoryBudget: '64Mi' } }), /state\.memoryBudget: 64Mi is outside 512Mi\.\.1Ti .*at least 512Mi/);
});

test('the operator passes the spec field to the workers: budget in the job document, young generation in NODE_OPTIONS, limit checked', () => {
  const job = loadExample('customer-level.yaml');
  assert.equal(job.spec.memoryBudget, '1Gi');
  const doc = parse(desiredConfigMap(job).data!['job.yaml']!) as Record<string, Record<string, unknown>>;
  assert.deepEqual(doc.state, { engine: 'records', memoryBudget: '1Gi' });
  assert.equal(doc.rocksdb!.blockCacheSize, undefined);
  const env = desiredStatefulSet(job, 1).spec!.template.spec!.containers[0]!.env!;
  const plan = planMemory(1024 * MiB);
  assert.equal(env.find((e) => e.name === 'NODE_OPTIONS')!.value, `--max-semi-space-size=${plan.semiSpaceMiB} --max-old-space-size=${plan.heapLimitMiB}`);
  assert.deepEqual(validateJob(job).warnings, []);
  const tooBig = minimalJob({ memoryBudget: '4Gi', resources: { limits: { memory: '2Gi' } } });
  assert.match(validateJob(tooBig).warnings.map((w) => `${w.field}: ${w.message}`).join(), /spec\.memoryBudget: 4096Mi is more than resources\.limits\.memory \(2048Mi\).*lower memoryBudget/);
  assert.match(validateJob(minimalJob({ memoryBudget: '100Mi' })).errors.map((e) => e.message).join(), /memoryBudget.*512Mi/);
  // The native engine under a budget: the job document carries both, its young generation stays at 32 MiB, the heap cap is the plan's.
  const native = minimalJob({ engine: 'native', memoryBudget: '2Gi' });
  assert.deepEqual(validateJob(native).errors, []);
  assert.deepEqual((parse(desiredConfigMap(native).data!['job.yaml']!) as Record<string, unknown>).state, { engine: 'native', memoryBudget: '2Gi' });
  const nativeEnv = desiredStatefulSet(native, 1).spec!.template.spec!.containers[0]!.env!;
  assert.equal(nativeEnv.find((e) => e.name === 'NODE_OPTIONS')!.value, `--max-semi-space-size=32 --max-old-space-size=${planMemory(2048 * MiB).heapLimitMiB}`);
  assert.equal(resolveJobConfig({ state: { engine: 'native', memoryBudget: '2Gi' } }).memory!.nativeStateBytes, planMemory(2048 * MiB).nativeStateBytes);
  const plain = desiredStatefulSet(minimalJob(), 1).spec!.template.spec!.containers[0]!.env!;
  assert.equal(plain.find((e) => e.name === 'NODE_OPTIONS')!.value, '--max-semi-space-size=128');
  // glibc's arenas: two, with or without a budget (docs/performance.md "Memory budget").
  for (const e of [env, plain]) assert.equal(e.find((v) => v.name === 'MALLOC_ARENA_MAX')?.value, '2');
});
