import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { test } from 'node:test';
import { LocalObjectStore, type ObjectStore } from '../../worker/checkpoint/object-store';
import { readCatalog } from '../../worker/checkpoint/restore';
import { S3ObjectStore } from '../../worker/checkpoint/s3-object-store';
import { metrics } from '../../worker/runtime/metrics';
import { restoreLocal, runLocal } from '../../worker/runtime/local';
import type { TaskCheckpoints } from '../../worker/runtime/task';
import type { Source, SourceRecord } from '../../worker/io/types';
import { requireTestS3, serverControl } from '../support/env';
import { rng, testInput } from '../support/events';
import { referenceRun } from '../support/reference';
import { ArraySource, localCounts, tempDir, testConfig, type InputRecord } from '../support/local';

/**
 * Checkpoints on the real S3 gateway of the test environment (versitygw): the object-store
 * contract run against S3 and the local directory alike, a checkpoint/restore round trip,
 * and S3 stopped for 20 s across checkpoints while counting goes on.
 */

const NOW = Date.UTC(2026, 10, 27, 12) / 1000;
const MAX = 4096;

function s3Store(): S3ObjectStore {
  return new S3ObjectStore(requireTestS3(`ckpt-test/${randomBytes(6).toString('hex')}/`));
}

function input(seed: number, valid: number): InputRecord[] {
  const r = rng(seed);
  const values = testInput({ seed, nowSec: NOW, valid, dupRate: 0.1, maxEventBytes: MAX, customers: 200, companies: 5 });
  let t = NOW * 1000;
  return values.map((value) => ({ value, ingestTimeMs: (t += Math.floor(r() * 20_000)) }));
}

async function contract(store: ObjectStore): Promise<void> {
  assert.deepEqual(await store.list(''), []);
  await store.put('w0/chunks/000000000001/0001-base.chunk', Buffer.from('one'));
  await store.put('w0/manifests/000000000001.manifest', Buffer.from('m1'));
  await store.put('w1/chunks/000000000001/0002-base.chunk', Buffer.alloc(70_000, 7));
  assert.deepEqual((await store.get('w0/chunks/000000000001/0001-base.chunk')).toString(), 'one');
  assert.equal((await store.get('w1/chunks/000000000001/0002-base.chunk')).length, 70_000);
  assert.equal(await store.size('w0/manifests/000000000001.manifest'), 2);
  assert.equal(await store.size('w0/nothing'), undefined);
  await store.put('w0/manifests/000000000001.manifest', Buffer.from('m1 again')); // overwrite is whole
  assert.equal((await store.get('w0/manifests/000000000001.manifest')).toString(), 'm1 again');
  await assert.rejects(store.get('w9/none'), (err: Error & { code?: string }) => err.code === 'ObjectMissing' && /checkpoint object w9\/none is missing from/.test(err.message));
  const sorted = async (p: string): Promise<string[]> => (await store.list(p)).map((o) => `${o.key}:${o.size}`).sort();
  assert.deepEqual(await sorted('w0/'), ['w0/chunks/000000000001/0001-base.chunk:3', 'w0/manifests/000000000001.manifest:8']);
  assert.deepEqual(await sorted(''), ['w0/chunks/000000000001/0001-base.chunk:3', 'w0/manifests/000000000001.manifest:8', 'w1/chunks/000000000001/0002-base.chunk:70000']);
  await store.delete(['w0/chunks/000000000001/0001-base.chunk', 'w0/never-existed']);
  await store.barrier();
  assert.deepEqual(await sorted('w0/'), ['w0/manifests/000000000001.manifest:8']);
  await store.delete(['w0/manifests/000000000001.manifest', 'w1/chunks/000000000001/0002-base.chunk']);
  assert.deepEqual(await store.list(''), []);
}

test('object store contract: S3 (versitygw) and a local directory behave alike', async () => {
  const s3 = s3Store();
  try {
    await contract(s3);
  } finally {
    s3.close();
  }
  await contract(new LocalObjectStore(join(tempDir(), 'objects')));
});

function checkpointsOn(store: ObjectStore, intervalMs: number): TaskCheckpoints {
  return { objectStore: store, writer: 'w0', intervalMs, retention: 2, includeUnkeyed: true, restoreMissing: false, finalCheckpoint: true };
}

test('checkpoints to S3, restore from S3: the same counts as the reference', async () => {
  const records = input(31, 2000);
  const expected = referenceRun(records, { level: 'account', maxEventBytes: MAX });
  const config = testConfig({ maxEventBytes: MAX });
  const store = s3Store();
  try {
    const root = tempDir();
    await runLocal({ config, dataDir: join(root, 'a'), source: new ArraySource(records.slice(0, 1200), [100]), checkpoints: checkpointsOn(store, 0) });
    const r = await runLocal({ config, dataDir: join(root, 'a'), source: new ArraySource(records, [100]), checkpoints: checkpointsOn(store, 0) });
    assert.ok(r.lastCheckpoint !== undefined && r.lastCheckpoint.bytes > 0);
    const restored = await restoreLocal(join(root, 'b'), store);
    assert.equal(restored.manifest.id, r.lastCheckpoint.manifestId);
    assert.deepEqual(await localCounts(join(root, 'b'), config), expected.rows);
  } finally {
    store.close();
  }
});

/** Hands out `records` at `perSecond`, so a run lasts long enough for an outage in the middle. */
class PacedSource implements Source {
  private readonly inner: ArraySource;
  private started = 0;
  private given = 0;

  constructor(
    records: readonly InputRecord[],
    private readonly perSecond: number,
  ) {
    this.inner = new ArraySource(records, [1000]);
  }

  async start(positions: ReadonlyMap<string, string>): Promise<void> {
    this.started = Date.now();
    await this.inner.start(positions);
  }

  async poll(max: number): Promise<SourceRecord[] | null> {
    const due = Math.floor(((Date.now() - this.started) / 1000) * this.perSecond) - this.given;
    if (due <= 0) return [];
    const out = await this.inner.poll(Math.min(max, due));
    if (out !== null) this.given += out.length;
    return out;
  }

  close(): Promise<void> {
    return this.inner.close();
  }
}

test('S3 stopped for 20 s across checkpoints: they fail and are retried, counting goes on, nothing is lost', async () => {
  const records = input(32, 6000);
  const expected = referenceRun(records, { level: 'account', maxEventBytes: MAX });
  const config = testConfig({ maxEventBytes: MAX, window: '200ms' });
  const store = s3Store();
  const root = tempDir();
  const failuresBefore = (await metrics.checkpointFailures.get()).values[0]?.value ?? 0;
  const log: string[] = [];
  let read = 0;
  try {
    const run = runLocal({
      config,
      dataDir: join(root, 'a'),
      source: new PacedSource(records, 150), // ~40 s of input
      checkpoints: checkpointsOn(store, 1000),
      onProgress: (p) => (read = p.read),
      log: (line) => log.push(`${new Date().toISOString()} ${line}`),
    });
    await new Promise((r) => setTimeout(r, 5000));
    const committedBefore = (await readCatalog(store)).length;
    assert.ok(committedBefore >= 1, 'checkpoints were committed before the outage');
    await serverControl('stop', 's3');
    const readAtStop = read;
    await new Promise((r) => setTimeout(r, 20_000));
    const readAtStart = read;
    await serverControl('start', 's3');
    const result = await run;
    const failures = ((await metrics.checkpointFailures.get()).values[0]?.value ?? 0) - failuresBefore;
    assert.ok(failures >= 2, `checkpoints failed during the outage (${failures})\n${log.join('\n')}`);
    assert.ok(readAtStart - readAtStop >= 1500, `counting went on while S3 was down (${readAtStop} → ${readAtStart} records)`);
    assert.ok(log.some((l) => /checkpoint failed \(attempt \d+; counting goes on, retrying in \d+ ms\)/.test(l)), log.join('\n'));
    const last = result.lastCheckpoint!;
    assert.ok(last !== undefined, 'the final checkpoint was committed after S3 came back');
    const restored = await restoreLocal(join(root, 'b'), store);
    assert.equal(restored.manifest.id, last.manifestId);
    assert.deepEqual(await localCounts(join(root, 'b'), config), expected.rows);
    assert.deepEqual(await localCounts(join(root, 'a'), config), expected.rows);
  } finally {
    store.close();
  }
});
