/**
 * Benchmark of checkpoints: full and incremental checkpoint duration and size, and restore,
 * for a state of a given size.
 *
 * The state is synthetic but shaped like the engine's: records spread over K key groups,
 * keys `gggg` + kind + ~60 characters, values of 2-40 characters (dedup seconds, counter
 * totals, marker lists), written straight into RocksDB. Then:
 *   1. a full checkpoint of every group (all bases);
 *   2. for each change rate (default 0.1 % and 1 % of the records, spread over all groups):
 *      that many records rewritten through commits the checkpointer sees, then an
 *      incremental checkpoint;
 *   3. a restore of every group into an empty store (download, verify, write).
 *
 *   npm run build && node dist/bench/checkpoint.js [--records N] [--key-groups K]
 *       [--changes 0.001,0.01] [--s3] [--dir DIR]
 *
 * --s3 uses the S3 gateway of the test environment (`npm run test-env -- up s3`); otherwise
 * a local directory.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { resolveJobConfig } from '../common/job-config';
import { bytes, int, rate, table } from '../worker/cli/format';
import { Checkpointer } from '../worker/checkpoint/checkpointer';
import { LocalObjectStore, type ObjectStore } from '../worker/checkpoint/object-store';
import { restoreGroups } from '../worker/checkpoint/restore';
import { S3ObjectStore } from '../worker/checkpoint/s3-object-store';
import { keyGroupPrefix } from '../worker/state/keys';
import { RocksStore } from '../worker/state/rocks';
import { requireTestS3 } from '../test/support/env';

const KINDS = ['D', 'D', 'D', 'U', 'B', 'C', 'C'];

function record(i: number, K: number, version: number): [string, string] {
  const g = i % K;
  const kind = KINDS[i % KINDS.length]!;
  const key = `${keyGroupPrefix(g)}${kind}${(i * 2654435761 >>> 0).toString(36)}:company-${i % 97}:statistic-${i % 13}:customer-${i}`;
  const value = kind === 'D' ? String(1_764_000_000 + i) : kind === 'C' ? `${i + version},${i >> 3}` : kind === 'U' ? `0\u0001*\u0001=campaign-${i % 50}\u0001=device-${i % 7}\u0001v${version}\u0001` : `${1_764_000_000 + version},0`;
  return [key, value];
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      records: { type: 'string', default: '1000000' },
      'key-groups': { type: 'string', default: '128' },
      changes: { type: 'string', default: '0.001,0.01' },
      s3: { type: 'boolean', default: false },
      dir: { type: 'string' },
    },
  });
  const N = Number(values.records);
  const K = Number(values['key-groups']);
  const rates = values.changes.split(',').map(Number);
  const work = values.dir ?? mkdtempSync(join(tmpdir(), 'abacus-bench-ckpt-'));
  const tuning = resolveJobConfig({}).rocksdb;
  const objectStore: ObjectStore & { close?(): void } = values.s3 ? new S3ObjectStore(requireTestS3(`bench-checkpoint/${randomBytes(6).toString('hex')}/`)) : new LocalObjectStore(join(work, 'checkpoints'));
  const store = await RocksStore.open(join(work, 'state'), tuning);
  const groups = Array.from({ length: K }, (_, g) => g);
  const rows: string[][] = [['step', 'groups written', 'records', 'uploaded', 'duration', 'rate']];
  try {
    process.stderr.write(`writing ${int(N)} records over ${K} key groups into ${work} …\n`);
    let rawBytes = 0;
    for (let i = 0; i < N; i += 50_000) {
      const batch: Array<[string, string]> = [];
      for (let j = i; j < Math.min(N, i + 50_000); j++) {
        const r = record(j, K, 0);
        rawBytes += r[0].length + r[1].length;
        batch.push(r);
      }
      await store.write(batch, [], false);
    }
    process.stderr.write(`state: ${int(N)} records, ${bytes(rawBytes)} of keys and values; checkpoints in ${objectStore.description}\n`);

    const checkpointer = new Checkpointer({ objectStore, writer: 'w0', job: 'bench', fingerprint: {}, retention: 2, includeUnkeyed: false, maxPendingBytes: 1 << 30 });
    let t = Date.now();
    const full = await checkpointer.write(checkpointer.snapshot(store, groups, 'full'));
    let ms = Date.now() - t;
    rows.push(['full', `${full.base.length} base`, int(full.records), bytes(full.bytes), `${(ms / 1000).toFixed(2)} s`, `${rate((N / ms) * 1000)} records`]);

    let version = 1;
    for (const fraction of rates) {
      const changed = Math.max(1, Math.round(N * fraction));
      // Rewrite `changed` records spread over the state, as commits the checkpointer sees.
      for (let i = 0; i < changed; i += 20_000) {
        const puts: Array<[string, string]> = [];
        for (let j = i; j < Math.min(changed, i + 20_000); j++) puts.push(record(Math.floor(((j * 0.6180339887498949) % 1) * N), K, version));
        await store.write(puts, [], false);
        checkpointer.recordCommit(puts, []);
      }
      version++;
      t = Date.now();
      const inc = await checkpointer.write(checkpointer.snapshot(store, groups, 'incremental'));
      ms = Date.now() - t;
      rows.push([
        `incremental, ${(fraction * 100).toFixed(2)} % changed`,
        `${inc.delta.length} delta, ${inc.base.length} base`,
        int(inc.records),
        bytes(inc.bytes),
        `${(ms / 1000).toFixed(2)} s`,
        `${rate((changed / ms) * 1000)} changes`,
      ]);
    }

    const target = await RocksStore.open(join(work, 'restored'), tuning);
    try {
      t = Date.now();
      const restored = await restoreGroups(target, objectStore, groups);
      ms = Date.now() - t;
      rows.push(['restore (every group)', `${restored.groups.length}`, int(restored.records), `${bytes(restored.bytes)} read`, `${(ms / 1000).toFixed(2)} s`, `${rate((restored.records / ms) * 1000)} records`]);
    } finally {
      await target.close();
    }
    process.stdout.write(`${table(rows)}\n`);
  } finally {
    await store.close();
    objectStore.close?.();
    if (values.dir === undefined) rmSync(work, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`${(err as Error).stack ?? String(err)}\n`);
  process.exitCode = 1;
});
