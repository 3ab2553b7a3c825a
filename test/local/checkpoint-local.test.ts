import assert from 'node:assert/strict';
import { readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { LocalObjectStore, type ObjectStore } from '../../worker/checkpoint/object-store';
import { readCatalog, restoreGroups } from '../../worker/checkpoint/restore';
import { keyGroupPrefix, keyGroupRange } from '../../worker/state/keys';
import { RocksStore } from '../../worker/state/rocks';
import { localPaths, restoreLocal, runLocal } from '../../worker/runtime/local';
import { CountTask, type TaskCheckpoints } from '../../worker/runtime/task';
import { LocalSink } from '../../worker/io/local-sink';
import { FileDeadLetter } from '../../worker/io/file-dead-letter';
import { Checkpointer, CheckpointPreempted } from '../../worker/checkpoint/checkpointer';
import type { JobConfig } from '../../common/job-config';
import { rng, testInput } from '../support/events';
import { referenceRun } from '../support/reference';
import { ArraySource, jumpyClock, localCounts, tempDir, testConfig, type InputRecord } from '../support/local';

/**
 * Checkpoints and restore in local mode, through the task and the object store on a real
 * RocksDB and a real directory. Counts are compared with the independent reference.
 */

const NOW = Date.UTC(2026, 10, 27, 12) / 1000;
const MAX = 4096;

function input(seed: number, valid: number): InputRecord[] {
  const r = rng(seed);
  const values = testInput({ seed, nowSec: NOW, valid, dupRate: 0.1, maxEventBytes: MAX, customers: 40, companies: 3 });
  let t = NOW * 1000;
  return values.map((value) => ({ value, ingestTimeMs: (t += Math.floor(r() * 60_000)) }));
}

function localCheckpoints(dir: string, overrides: Partial<TaskCheckpoints> = {}): TaskCheckpoints {
  return { objectStore: new LocalObjectStore(dir), writer: 'local', intervalMs: 0, retention: 3, includeUnkeyed: true, restoreMissing: false, finalCheckpoint: true, ...overrides };
}

/** Every state record except the presence records and the outbox, which restores rewrite or drop by design. */
async function dumpState(dataDir: string): Promise<Array<[string, string]>> {
  const store = await RocksStore.open(localPaths(dataDir).state, testConfig().rocksdb);
  const out: Array<[string, string]> = [];
  try {
    await store.scan({ gte: '', lt: '\uffff' }, (k, v) => {
      if (k !== '~outbox' && k[4] !== 'G') out.push([k, v]);
    });
  } finally {
    await store.close();
  }
  return out;
}

test('a Level iterator sees the store as it was when it was created, whatever is written after', async () => {
  const dir = tempDir();
  const store = await RocksStore.open(dir, testConfig().rocksdb);
  try {
    await store.write([['a1', 'x'], ['a2', 'y']], [], true);
    const reader = store.reader({ gte: 'a', lt: 'b' });
    await store.write([['a3', 'z'], ['a1', 'changed']], ['a2'], true);
    const seen: Array<[string, string]> = [];
    await reader.readAll((k, v) => seen.push([k, v]));
    assert.deepEqual(seen, [['a1', 'x'], ['a2', 'y']]);
  } finally {
    await store.close();
    rmSync(dir, { recursive: true });
  }
});

test('checkpoint, lose the data dir, restore, run again: the contract counts; deltas carry only changes', async () => {
  const records = input(11, 1500);
  const expected = referenceRun(records, { level: 'account', maxEventBytes: MAX });
  const config = testConfig({ maxEventBytes: MAX });
  const root = tempDir();
  const data = join(root, 'data');
  const cpDir = join(root, 'checkpoints');

  // First run: 2/3 of the input, then a final (base) checkpoint.
  const first = records.slice(0, 1000);
  const r1 = await runLocal({ config, dataDir: data, source: new ArraySource(first, [97]), clock: jumpyClock(3, 700), checkpoints: localCheckpoints(cpDir) });
  assert.ok(r1.lastCheckpoint !== undefined);
  assert.equal(r1.lastCheckpoint.delta.length, 0, 'a first checkpoint is all bases');
  // Second run (a restart): its final checkpoint is again all bases (deltas are not known across a restart).
  const r2 = await runLocal({ config, dataDir: data, source: new ArraySource(records, [97]), clock: jumpyClock(4, 700), checkpoints: localCheckpoints(cpDir, { finalCheckpoint: true }) });
  assert.ok(r2.lastCheckpoint !== undefined);
  const before = await dumpState(data);

  // The volume is lost; restore it, and compare with what was there.
  rmSync(data, { recursive: true });
  const restored = await restoreLocal(data, new LocalObjectStore(cpDir));
  assert.equal(restored.manifest.id, r2.lastCheckpoint.manifestId);
  assert.deepEqual(await dumpState(data), before);
  assert.deepEqual(await localCounts(data, config), expected.rows);

  // Counting again on the same input resumes at the restored position and stays exact.
  const r3 = await runLocal({ config, dataDir: data, source: new ArraySource(records, [97]), checkpoints: localCheckpoints(cpDir) });
  assert.equal(r3.read, 0, 'nothing is re-read after the restored position');
  assert.deepEqual(await localCounts(data, config), expected.rows);
  rmSync(root, { recursive: true });
});

test('within one run, later checkpoints are deltas of the changed groups only, and restore folds the chain', async () => {
  const records = input(12, 1200);
  const expected = referenceRun(records, { level: 'account', maxEventBytes: MAX });
  const config = testConfig({ maxEventBytes: MAX });
  const root = tempDir();
  const data = join(root, 'data');
  const cpDir = join(root, 'checkpoints');
  // A clock that moves 1 s per read with a 20 s interval: a checkpoint every few batches.
  let t = 0;
  const clock = (): number => (t += 1000);
  const r = await runLocal({ config, dataDir: data, source: new ArraySource(records, [25]), clock, checkpoints: localCheckpoints(cpDir, { intervalMs: 20_000, retention: 2 }) });
  assert.ok(r.lastCheckpoint !== undefined);
  const catalog = await readCatalog(new LocalObjectStore(cpDir));
  assert.equal(catalog.length, 2, 'retention keeps the last 2 manifests');
  const newest = catalog[0]!.manifest!;
  const chains = Object.values(newest.groups).map((g) => g.chunks.length);
  assert.ok(chains.some((n) => n > 1), `some group has a delta chain (${chains.join(',')})`);
  // Every chunk the kept manifests reference still exists; no other chunk does.
  const referenced = new Set(catalog.flatMap((c) => [...Object.values(c.manifest!.groups).flatMap((g) => g.chunks.map((x) => x.key)), c.manifest!.unkeyed!.chunk.key]));
  const chunkFiles = (await new LocalObjectStore(cpDir).list('local/chunks/')).map((o) => o.key);
  assert.deepEqual(new Set(chunkFiles), referenced);

  const before = await dumpState(data);
  rmSync(data, { recursive: true });
  await restoreLocal(data, new LocalObjectStore(cpDir));
  assert.deepEqual(await dumpState(data), before);
  assert.deepEqual(await localCounts(data, config), expected.rows);
  rmSync(root, { recursive: true });
});

test('a damaged newest checkpoint is skipped for an older complete one, and refused when named', async () => {
  const records = input(13, 900);
  const expected = referenceRun(records, { level: 'account', maxEventBytes: MAX });
  const config = testConfig({ maxEventBytes: MAX });
  const root = tempDir();
  const data = join(root, 'data');
  const cpDir = join(root, 'checkpoints');
  await runLocal({ config, dataDir: data, source: new ArraySource(records.slice(0, 500), [50]), checkpoints: localCheckpoints(cpDir) });
  await runLocal({ config, dataDir: data, source: new ArraySource(records, [50]), checkpoints: localCheckpoints(cpDir) });
  const store = new LocalObjectStore(cpDir);
  const [newest, older] = (await readCatalog(store)).map((c) => c.manifest!);
  // Flip one byte of one chunk of the newest checkpoint.
  const victim = Object.values(newest!.groups).find((g) => (g.chunks[0]?.records ?? 0) > 0)!.chunks[0]!;
  const path = join(cpDir, ...victim.key.split('/'));
  const body = await store.get(victim.key);
  body.writeUInt8(body.readUInt8(body.length >> 1) ^ 0xff, body.length >> 1);
  writeFileSync(path, body);

  rmSync(data, { recursive: true });
  await assert.rejects(restoreLocal(data, store, newest!.id), /checkpoint object .* is damaged: its sha256 is/);
  rmSync(data, { recursive: true, force: true });
  const restored = await restoreLocal(data, store);
  assert.equal(restored.manifest.id, older!.id);
  assert.equal(restored.skipped[0]?.manifestId, newest!.id);
  // The older checkpoint is at record 500: the rest is counted again from there, exactly.
  await runLocal({ config, dataDir: data, source: new ArraySource(records, [50]) });
  assert.deepEqual(await localCounts(data, config), expected.rows);
  rmSync(root, { recursive: true });
});

test('restoreGroups replaces only the named groups and reports their positions', async () => {
  const records = input(14, 600);
  const config = testConfig({ maxEventBytes: MAX });
  const root = tempDir();
  const data = join(root, 'data');
  const cpDir = join(root, 'checkpoints');
  await runLocal({ config, dataDir: data, source: new ArraySource(records, [50]), checkpoints: localCheckpoints(cpDir) });
  const before = await dumpState(data);
  const store = await RocksStore.open(localPaths(data).state, config.rocksdb);
  try {
    // Damage groups 3 and 5 locally; group 4 is left alone.
    await store.clearRange(keyGroupRange(3));
    await store.write([['0005Cjunk', '1,1']], [], true);
    const result = await restoreGroups(store, new LocalObjectStore(cpDir), [3, 5]);
    assert.deepEqual(result.groups.map((g) => g.group), [3, 5]);
    assert.deepEqual(result.missing, []);
    assert.equal(result.groups[0]!.incremental, false);
    assert.deepEqual(await restoreGroups(store, new LocalObjectStore(cpDir), [99]).then((r) => r.missing), [99], 'a group no checkpoint holds is reported missing');
  } finally {
    await store.close();
  }
  assert.deepEqual(await dumpState(data), before);
  assert.ok(readdirSync(cpDir).includes('local'));
  rmSync(root, { recursive: true });
});

/** A count task in `root/a` with no input of its own, its sink in `root/sink`, checkpointing into `objectStore` as writer w0 only when asked. */
async function checkpointingTask(root: string, config: JobConfig, objectStore: ObjectStore, extra: Partial<TaskCheckpoints> = {}): Promise<{ task: CountTask; sink: LocalSink }> {
  const sink = await LocalSink.open(join(root, 'sink'), config.rocksdb, config.level);
  const task = await CountTask.open({
    config,
    dataDir: join(root, 'a'),
    source: new ArraySource([]),
    sink,
    deadLetter: new FileDeadLetter(join(root, 'dead.jsonl')),
    checkpoints: { objectStore, writer: 'w0', intervalMs: 0, retention: 5, includeUnkeyed: false, restoreMissing: false, finalCheckpoint: false, ...extra },
  });
  return { task, sink };
}

test('pre-copy then delta: a second restore of the same group applies only the new deltas and ends equal to the source', async () => {
  const records = input(15, 1500);
  const config = testConfig({ maxEventBytes: MAX });
  const root = tempDir();
  const objectStore = new LocalObjectStore(join(root, 'checkpoints'));
  const { task, sink } = await checkpointingTask(root, config, objectStore);
  const target = await RocksStore.open(join(root, 'b'), config.rocksdb);
  const groupRecords = async (store: RocksStore, g: number): Promise<Array<[string, string]>> => {
    const out: Array<[string, string]> = [];
    await store.scan(keyGroupRange(g), (k, v) => {
      if (k[4] !== 'G') out.push([k, v]);
    });
    return out;
  };
  try {
    const toSource = (rs: readonly InputRecord[], from: number) => rs.map((r, i) => ({ value: Buffer.from(r.value), ingestTimeMs: r.ingestTimeMs, partition: 'array', nextPosition: String(from + i + 1), origin: `#${from + i}` }));
    await task.process(toSource(records.slice(0, 1000), 0));
    await task.flush();
    const first = await task.checkpoint(undefined, 'periodic');
    assert.equal(first.base.length, 16);
    const storeA = (task as unknown as { store: RocksStore }).store;
    const sizes = await Promise.all(first.base.map(async (g) => (await groupRecords(storeA, g)).length));
    const busy = first.base[sizes.indexOf(Math.max(...sizes))]!;
    // Pre-copy while the source keeps counting.
    const pre = await restoreGroups(target, objectStore, [busy]);
    assert.equal(pre.groups[0]!.incremental, false);
    await task.process(toSource(records.slice(1000, 1100), 1000)); // a small change: a delta, not a compaction
    await task.flush();
    // The final checkpoint of just that group: a delta on the chain the target already holds.
    const final = await task.checkpoint([busy], 'handover');
    assert.deepEqual(final.delta, [busy], `the hand-over checkpoint is a delta: ${JSON.stringify(final)}`);
    const post = await restoreGroups(target, objectStore, [busy], { manifestId: final.manifestId });
    assert.equal(post.groups[0]!.incremental, true, 'only the new delta was applied');
    assert.ok(post.bytes < pre.bytes, `the second restore moved less (${post.bytes} < ${pre.bytes} bytes)`);
    assert.deepEqual(await groupRecords(target, busy), await groupRecords(storeA, busy));
    assert.ok((await groupRecords(target, busy)).length > 0);
  } finally {
    await target.close();
    await task.close();
    await sink.close();
    rmSync(root, { recursive: true });
  }
});

test('a checkpoint whose manifest names a missing chunk is never used: restoreGroups falls back to an older one', async () => {
  const records = input(16, 800);
  const config = testConfig({ maxEventBytes: MAX });
  const root = tempDir();
  const data = join(root, 'data');
  const cpDir = join(root, 'checkpoints');
  const objects = new LocalObjectStore(cpDir);
  await runLocal({ config, dataDir: data, source: new ArraySource(records.slice(0, 400), [50]), checkpoints: localCheckpoints(cpDir) });
  const older = (await readCatalog(objects))[0]!.manifest!;
  await runLocal({ config, dataDir: data, source: new ArraySource(records, [50]), checkpoints: localCheckpoints(cpDir) });
  const newest = (await readCatalog(objects))[0]!.manifest!;
  const [g, entry] = Object.entries(newest.groups).find(([, e]) => e.chunks.length > 0)!;
  await objects.delete([entry.chunks[0]!.key]); // as if the upload had stopped half way
  const store = await RocksStore.open(join(root, 'other'), config.rocksdb);
  try {
    const r = await restoreGroups(store, objects, [Number(g)]);
    assert.equal(r.groups[0]!.manifestId, older.id);
    assert.equal(r.skipped[0]!.manifestId, newest.id);
    assert.match(r.skipped[0]!.problem, /checkpoint object .* is missing from/);
    await assert.rejects(restoreGroups(store, objects, [Number(g)], { manifestId: newest.id }), /is missing from .* restore from an older complete checkpoint/);
  } finally {
    await store.close();
  }
  rmSync(root, { recursive: true });
});

/** The local directory store, each put held back until `release()` (or abandoned when its signal aborts): a checkpoint caught mid-upload. */
class HeldObjectStore extends LocalObjectStore {
  holding = false;
  putsStarted = 0;
  private waiting: Array<() => void> = [];
  override async put(key: string, body: Buffer, signal?: AbortSignal): Promise<void> {
    if (this.holding) {
      this.putsStarted++;
      await new Promise<void>((resolve, reject) => {
        this.waiting.push(resolve);
        signal?.addEventListener('abort', () => reject(new Error(`put ${key} abandoned`)), { once: true });
      });
    }
    await super.put(key, body);
  }
  release(): void {
    this.holding = false;
    for (const w of this.waiting.splice(0)) w();
  }
}

test('a release checkpoint preempts a periodic one mid-upload: it is a delta on the pre-copied chain (no compaction), the periodic one gives its changes back, nothing is lost', async () => {
  const records = input(17, 1500);
  const config = testConfig({ maxEventBytes: MAX });
  const root = tempDir();
  const objectStore = new HeldObjectStore(join(root, 'checkpoints'));
  // A chain of 2 chunks is due for compaction: only the release's "no compaction" keeps it a delta.
  const { task, sink } = await checkpointingTask(root, config, objectStore, { maxChainLength: 2 });
  const storeA = (task as unknown as { store: RocksStore }).store;
  const groupRecords = async (store: RocksStore, g: number): Promise<Array<[string, string]>> => {
    const out: Array<[string, string]> = [];
    await store.scan(keyGroupRange(g), (k, v) => {
      if (k[4] !== 'G') out.push([k, v]);
    });
    return out;
  };
  const stores: RocksStore[] = [];
  try {
    const toSource = (rs: readonly InputRecord[], from: number) => rs.map((r, i) => ({ value: Buffer.from(r.value), ingestTimeMs: r.ingestTimeMs, partition: 'array', nextPosition: String(from + i + 1), origin: `#${from + i}` }));
    const count = async (from: number, to: number) => {
      await task.process(toSource(records.slice(from, to), from));
      await task.flush();
    };
    await count(0, 1000);
    const first = await task.checkpoint(undefined, 'periodic');
    const sizes = await Promise.all(first.base.map(async (g) => (await groupRecords(storeA, g)).length));
    const busy = first.base[sizes.indexOf(Math.max(...sizes))]!;
    const target = await RocksStore.open(join(root, 'b'), config.rocksdb);
    stores.push(target);
    assert.equal((await restoreGroups(target, objectStore, [busy])).groups[0]!.incremental, false, 'the pre-copy is a full restore');
    await count(1000, 1100);
    await task.checkpoint(undefined, 'periodic'); // busy's chain: base + 1 delta
    await count(1100, 1200);

    objectStore.holding = true;
    const periodic = task.checkpoint(undefined, 'periodic'); // would compact busy's chain (2 chunks)
    while (objectStore.putsStarted === 0) await new Promise((r) => setTimeout(r, 5));
    const release = task.checkpoint([busy], 'release', { urgent: true });
    await assert.rejects(periodic, CheckpointPreempted);
    objectStore.release();
    const final = await release;
    assert.deepEqual(final.delta, [busy], `the release is a delta: ${JSON.stringify(final)}`);
    const post = await restoreGroups(target, objectStore, [busy], { manifestId: final.manifestId });
    assert.equal(post.groups[0]!.incremental, true, 'only the deltas since the pre-copy were applied');
    assert.deepEqual(await groupRecords(target, busy), await groupRecords(storeA, busy));

    // The preempted checkpoint's changes came back: a new checkpoint holds every group as the source has it.
    await count(1200, 1500);
    const later = await task.checkpoint(undefined, 'periodic');
    const fresh = await RocksStore.open(join(root, 'c'), config.rocksdb);
    stores.push(fresh);
    const all = Array.from({ length: config.keyGroups }, (_, g) => g);
    const restored = await restoreGroups(fresh, objectStore, all, { manifestId: later.manifestId });
    assert.deepEqual(restored.missing, []);
    for (const g of all) assert.deepEqual(await groupRecords(fresh, g), await groupRecords(storeA, g), `key group ${g}`);
  } finally {
    for (const s of stores) await s.close();
    await task.close();
    await sink.close();
    rmSync(root, { recursive: true });
  }
});

test('past the pending bound, deltas keep only which keys changed and read the values from the snapshot: still a delta, exact as of the snapshot', async () => {
  const root = tempDir();
  const config = testConfig();
  const source = await RocksStore.open(join(root, 'source'), config.rocksdb);
  const target = await RocksStore.open(join(root, 'target'), config.rocksdb);
  const objectStore = new LocalObjectStore(join(root, 'checkpoints'));
  const groups = [0, 1];
  const key = (g: number, i: number): string => `${keyGroupPrefix(g)}U:customer-${i}`;
  const value = (i: number, version: number): string => `v${version}:`.padEnd(1000, String(i % 10));
  const everything = async (store: RocksStore): Promise<Array<[string, string]>> => {
    const out: Array<[string, string]> = [];
    for (const g of groups) {
      await store.scan(keyGroupRange(g), (k, v) => {
        if (k[4] !== 'G') out.push([k, v]); // not the presence record, which a restore writes
      });
    }
    return out;
  };
  // Every commit goes to the store and to the checkpointer, as the task does.
  let checkpointer!: Checkpointer;
  const commit = async (puts: Array<[string, string]>, deletes: string[]): Promise<void> => {
    await source.write(puts, deletes, true);
    checkpointer.recordCommit(puts, deletes);
  };
  try {
    // 10 changed values of 1,000 characters overflow 8,000 bytes; their keys alone do not.
    checkpointer = new Checkpointer({ objectStore, writer: 'w0', job: 'test', fingerprint: {}, retention: 5, includeUnkeyed: false, maxPendingBytes: 8000 });
    await commit(Array.from({ length: 40 }, (_, i) => [key(i % 2, i), value(i, 0)]), []);
    const base = await checkpointer.write(checkpointer.snapshot(source, groups, 'periodic'));
    assert.deepEqual(base.base, groups);
    await restoreGroups(target, objectStore, groups);

    // Changes: 24 rewritten values (past the bound), 4 deletes, 2 new keys, one key rewritten after the bound was crossed.
    await commit(Array.from({ length: 24 }, (_, i) => [key(i % 2, i), value(i, 1)]), []);
    await commit([[key(0, 100), value(100, 1)], [key(1, 101), value(101, 1)]], [key(0, 30), key(1, 31), key(0, 32), key(1, 33)]);
    await commit([[key(0, 2), value(2, 2)]], []);
    const snap = checkpointer.snapshot(source, groups, 'periodic');
    const atSnapshot = await everything(source);
    // A commit after the snapshot must not reach this checkpoint, though its values are read later.
    await commit([[key(0, 4), value(4, 3)], [key(1, 5), value(5, 3)]], [key(0, 6)]);
    const delta = await checkpointer.write(snap);
    assert.deepEqual(delta.delta, groups, `past the bound the groups stay deltas: ${JSON.stringify(delta)}`);
    assert.equal(delta.records, 24 + 2 + 4, 'the delta holds exactly the changed records');
    const applied = await restoreGroups(target, objectStore, groups, { manifestId: delta.manifestId });
    assert.ok(applied.groups.every((g) => g.incremental), 'the target applied only the delta');
    assert.deepEqual(await everything(target), atSnapshot);

    // The changes made after that snapshot are in the next delta.
    const next = await checkpointer.write(checkpointer.snapshot(source, groups, 'periodic'));
    assert.deepEqual(next.delta, groups);
    await restoreGroups(target, objectStore, groups, { manifestId: next.manifestId });
    assert.deepEqual(await everything(target), await everything(source));

    // When even the changed keys overflow the bound, the largest groups get a new base (and are still exact).
    const tiny = new Checkpointer({ objectStore, writer: 'w1', job: 'test', fingerprint: {}, retention: 5, includeUnkeyed: false, maxPendingBytes: 200 });
    checkpointer = tiny;
    await tiny.write(tiny.snapshot(source, groups, 'periodic'));
    await commit(Array.from({ length: 20 }, (_, i) => [key(i % 2, i), value(i, 4)]), []);
    const rebased = await tiny.write(tiny.snapshot(source, groups, 'periodic'));
    assert.ok(rebased.base.length > 0, `keys beyond the bound: a new base (${JSON.stringify(rebased)})`);
    await restoreGroups(target, objectStore, groups, { manifestId: rebased.manifestId });
    assert.deepEqual(await everything(target), await everything(source));
  } finally {
    await source.close();
    await target.close();
    rmSync(root, { recursive: true });
  }
});
