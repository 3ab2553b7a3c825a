import assert from 'node:assert/strict';
import { once } from 'node:events';
import { existsSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { LocalObjectStore } from '../../worker/checkpoint/object-store';
import { readCatalog, verifyManifest } from '../../worker/checkpoint/restore';
import { rng, testInput } from '../support/events';
import { referenceRun, sortRows, type RefRow } from '../support/reference';
import { abacus, abacusChild, jsonLines } from '../support/cli';
import { tempDir } from '../support/local';

/**
 * `abacus run --checkpoint-dir` and `abacus restore` as a user runs them: lose the data dir,
 * restore, run again; a damaged checkpoint; SIGKILL in the middle of checkpoints.
 * Expected counts come from the independent reference of the contract.
 */

const NOW = Date.UTC(2026, 10, 27, 12) / 1000;
const INGEST = '2026-11-27T12:00:00Z';
const INGEST_MS = Date.parse(INGEST);

function counts(dataDir: string): RefRow[] {
  const r = abacus(['counts', '--data-dir', dataDir]);
  assert.equal(r.status, 0, r.stderr);
  return sortRows(jsonLines<RefRow>(r.stdout));
}

function expectedFor(lines: readonly string[]): RefRow[] {
  return referenceRun(
    lines.filter((l) => l.trim() !== '').map((value) => ({ value, ingestTimeMs: INGEST_MS })),
    { level: 'account' },
  ).rows;
}

test('run with checkpoints, lose the data dir, restore, run the grown input: the contract counts', () => {
  const dir = tempDir();
  const file = join(dir, 'events.jsonl');
  const lines = testInput({ seed: 21, nowSec: NOW, valid: 3000, dupRate: 0.1, maxEventBytes: 1024 * 1024, customers: 300 });
  writeFileSync(file, `${lines.slice(0, 2000).join('\n')}\n`);
  const data = join(dir, 'data');
  const ckpt = join(dir, 'ckpt');
  const run = abacus(['run', '--input', file, '--data-dir', data, '--ingest-time', INGEST, '--checkpoint-dir', ckpt, '--checkpoint-retention', '2']);
  assert.equal(run.status, 0, run.stderr);
  assert.match(run.stderr, /checkpoint local\/000000000001 in .*ckpt: 128 key groups \(128 full, 0 incremental, 0 unchanged\), [\d.]+ [KM]iB written in \d+ ms/);

  rmSync(data, { recursive: true });
  const restore = abacus(['restore', '--checkpoint-dir', ckpt, '--data-dir', data]);
  assert.equal(restore.status, 0, restore.stderr);
  assert.match(restore.stdout, /restored .*data from checkpoint local\/000000000001 \(final, written 20\d\d-.*\) in .*ckpt/);
  assert.match(restore.stdout, /128 key groups, [\d,]+ state records, .* read, in \d+ ms; [\d,]+ counters in the sink/);
  assert.match(restore.stdout, /input .*events\.jsonl resumes at byte [\d,]+ \(ingest time 2026-11-27T12:00:00\.000Z\)/);
  assert.deepEqual(counts(data), expectedFor(lines.slice(0, 2000)));

  // The input grew meanwhile: the run counts only what is new, exactly.
  writeFileSync(file, `${lines.join('\n')}\n`);
  const again = abacus(['run', '--input', file, '--data-dir', data, '--checkpoint-dir', ckpt]);
  assert.equal(again.status, 0, again.stderr);
  assert.deepEqual(counts(data), expectedFor(lines));

  const refused = abacus(['restore', '--checkpoint-dir', ckpt, '--data-dir', data]);
  assert.equal(refused.status, 1);
  assert.match(refused.stderr, /state already exists: restore rebuilds a lost data dir and never writes over one/);
  rmSync(dir, { recursive: true });
});

test('a damaged checkpoint is refused when named and skipped otherwise, saying which', () => {
  const dir = tempDir();
  const file = join(dir, 'events.jsonl');
  const lines = testInput({ seed: 22, nowSec: NOW, valid: 1500, dupRate: 0.1, maxEventBytes: 1024 * 1024, customers: 200 });
  writeFileSync(file, `${lines.slice(0, 700).join('\n')}\n`);
  const data = join(dir, 'data');
  const ckpt = join(dir, 'ckpt');
  assert.equal(abacus(['run', '--input', file, '--data-dir', data, '--ingest-time', INGEST, '--checkpoint-dir', ckpt]).status, 0);
  writeFileSync(file, `${lines.join('\n')}\n`);
  assert.equal(abacus(['run', '--input', file, '--data-dir', data, '--checkpoint-dir', ckpt]).status, 0);
  // Truncate the newest manifest: a half-written file.
  const manifests = join(ckpt, 'local', 'manifests');
  const newest = readdirSync(manifests).sort().at(-1)!;
  writeFileSync(join(manifests, newest), '{"format":"abacus-checkpoint/1","id":"local/0000');
  rmSync(data, { recursive: true });

  const named = abacus(['restore', '--checkpoint-dir', ckpt, '--data-dir', data, '--checkpoint', 'local/000000000002']);
  assert.equal(named.status, 1);
  assert.match(named.stderr, /checkpoint manifest local\/manifests\/000000000002\.manifest is damaged: it has no checksum line \(truncated\?\)/);
  rmSync(data, { recursive: true, force: true });
  const r = abacus(['restore', '--checkpoint-dir', ckpt, '--data-dir', data]);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /from checkpoint local\/000000000001/);
  assert.match(r.stdout, /newer checkpoints skipped: local\/manifests\/000000000002\.manifest \(checkpoint manifest .* is damaged/);
  assert.equal(abacus(['run', '--input', file, '--data-dir', data]).status, 0);
  assert.deepEqual(counts(data), expectedFor(lines));
  rmSync(dir, { recursive: true });
});

test('SIGKILL during checkpoints never leaves a usable half checkpoint; restore + run ends exact', async () => {
  const dir = tempDir();
  const file = join(dir, 'events.jsonl');
  const lines = testInput({ seed: 23, nowSec: NOW, valid: 40_000, dupRate: 0.05, maxEventBytes: 1024 * 1024, customers: 2000 });
  writeFileSync(file, `${lines.join('\n')}\n`);
  const data = join(dir, 'data');
  const ckpt = join(dir, 'ckpt');
  // Checkpoints back to back (every 100 ms), so most kills land inside one.
  const args = ['run', '--input', file, '--data-dir', data, '--ingest-time', INGEST, '--key-groups', '16', '--window', '50ms', '--quiet', '--checkpoint-dir', ckpt, '--checkpoint-interval', '100ms', '--checkpoint-retention', '50'];
  const store = new LocalObjectStore(ckpt);
  const r = rng(23);
  let kills = 0;
  let halfWritten = 0;
  /** True while a checkpoint is being uploaded: a chunk folder newer than every manifest holds files. */
  const inFlight = (): boolean => {
    const chunks = join(ckpt, 'local', 'chunks');
    const manifests = join(ckpt, 'local', 'manifests');
    if (!existsSync(chunks)) return false;
    const committed = existsSync(manifests) ? Math.max(0, ...readdirSync(manifests).map((f) => Number(f.slice(0, 12)) || 0)) : 0;
    return readdirSync(chunks).some((d) => Number(d) > committed && readdirSync(join(chunks, d)).length > 0);
  };
  for (let attempt = 0; attempt < 6; attempt++) {
    const child = abacusChild(args);
    let timer: NodeJS.Timeout;
    if (attempt % 2 === 0) {
      // Kill in the middle of an upload, as soon as one is seen.
      const deadline = Date.now() + 30_000;
      timer = setInterval(() => {
        if (inFlight() || Date.now() > deadline) child.kill('SIGKILL');
      }, 5);
    } else {
      timer = setTimeout(() => child.kill('SIGKILL'), 2500 + Math.floor(r() * 6000));
    }
    const [code, signal] = (await once(child, 'exit')) as [number | null, NodeJS.Signals | null];
    clearInterval(timer);
    clearTimeout(timer);
    if (signal !== 'SIGKILL') {
      assert.equal(code, 0);
      break;
    }
    kills++;
    // Right after a kill: chunks that no manifest names are a checkpoint cut short; every manifest there is must be complete.
    const catalog = await readCatalog(store);
    const named = new Set(catalog.flatMap((c) => (c.manifest === undefined ? [] : [...Object.values(c.manifest.groups).flatMap((g) => g.chunks.map((x) => x.key)), c.manifest.unkeyed!.chunk.key])));
    const objects = await store.list('local/chunks/');
    if (objects.some((o) => !named.has(o.key)) || (existsSync(join(ckpt, 'local', 'chunks')) && readdirSync(join(ckpt, 'local', 'chunks'), { recursive: true }).some((f) => String(f).includes('.tmp-')))) halfWritten++;
    for (const c of catalog) {
      assert.ok(c.manifest !== undefined, `${c.key}: ${c.problem}`);
      await verifyManifest(store, c.manifest);
    }
  }
  assert.ok(kills >= 2, `killed at least twice (got ${kills})`);
  assert.ok(halfWritten >= 1, `at least one kill cut a checkpoint short (${halfWritten} of ${kills})`);
  const done = abacus(args.filter((a) => a !== '--quiet'));
  assert.equal(done.status, 0, done.stderr);
  const catalog = await readCatalog(store);
  // Each of the oldest and the newest checkpoint, restored and run to the end, gives the contract counts.
  const expected = expectedFor(lines);
  for (const c of [catalog[0]!, catalog[catalog.length - 1]!]) {
    const restored = join(dir, `restored-${c.manifest!.sequence}`);
    const rr = abacus(['restore', '--checkpoint-dir', ckpt, '--data-dir', restored, '--checkpoint', c.manifest!.id]);
    assert.equal(rr.status, 0, rr.stderr);
    const run = abacus(['run', '--input', file, '--data-dir', restored, '--key-groups', '16', '--quiet']);
    assert.equal(run.status, 0, run.stderr);
    assert.deepEqual(counts(restored), expected);
  }
  rmSync(dir, { recursive: true });
});

test('checkpoint flags: errors name the flag', () => {
  const dir = tempDir();
  const file = join(dir, 'e.jsonl');
  writeFileSync(file, '');
  const r = abacus(['run', '--input', file, '--data-dir', join(dir, 'd'), '--checkpoint-interval', '1m']);
  assert.equal(r.status, 2);
  assert.match(r.stderr, /--checkpoint-interval: needs --checkpoint-dir/);
  assert.match(abacus(['run', '--input', file, '--data-dir', join(dir, 'd'), '--checkpoint-dir', join(dir, 'c'), '--checkpoint-interval', 'soon']).stderr, /checkpoints\.interval: "soon" is not a duration/);
  assert.match(abacus(['restore', '--data-dir', join(dir, 'd')]).stderr, /--checkpoint-dir: is missing/);
  const none = abacus(['restore', '--checkpoint-dir', join(dir, 'empty'), '--data-dir', join(dir, 'd2')]);
  assert.equal(none.status, 1);
  assert.match(none.stderr, /no complete checkpoint in .*empty/);
  rmSync(dir, { recursive: true });
});

test('abacus cleanup deletes every checkpoint object of the job and nothing beside it; bad usage names the flag', () => {
  const dir = tempDir();
  const file = join(dir, 'events.jsonl');
  writeFileSync(file, `${testInput({ seed: 5, nowSec: NOW, valid: 300, dupRate: 0.1, maxEventBytes: 4096, customers: 30 }).join('\n')}\n`);
  const ckpt = join(dir, 'ckpt');
  const run = abacus(['run', '--input', file, '--data-dir', join(dir, 'data'), '--ingest-time', INGEST, '--checkpoint-dir', ckpt]);
  assert.equal(run.status, 0, run.stderr);
  const listed = (): string[] => (existsSync(ckpt) ? readdirSync(ckpt, { recursive: true, withFileTypes: true }).filter((e) => e.isFile()).map((e) => e.name) : []);
  const before = listed();
  assert.ok(before.some((n) => n.endsWith('.manifest')), `a checkpoint to delete: ${before.join(', ')}`);
  writeFileSync(join(dir, 'neighbour.txt'), 'not the job\'s');
  const job = join(dir, 'job.yaml');
  writeFileSync(job, `name: cleanup-test\ncheckpoints:\n  dir: ${JSON.stringify(ckpt)}\n`);
  const cleanup = abacus(['cleanup', '--config', job]);
  assert.equal(cleanup.status, 0, cleanup.stderr);
  assert.match(cleanup.stderr, new RegExp(`deleted ${before.length} checkpoint objects`));
  assert.deepEqual(listed(), [], 'no checkpoint object left');
  assert.ok(existsSync(join(dir, 'neighbour.txt')), 'outside the root: untouched');
  const again = abacus(['cleanup', '--config', job]);
  assert.equal(again.status, 0, 'idempotent');
  const bad = abacus(['cleanup']);
  assert.equal(bad.status, 2);
  assert.match(bad.stderr, /--config.*is missing/);
});
