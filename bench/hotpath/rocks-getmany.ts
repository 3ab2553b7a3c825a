/**
 * The cost of one batched lookup per micro-batch, for the spill design of
 * docs/adr/0007-hot-path.md: a store holding `--keys` 16-byte fingerprint keys, then rounds
 * of one getMany of `--batch` keys (all present, then all absent), through
 *   - `rocksdb` 5.2.1 (the binding the worker uses: getMany is a loop of Get in the libuv
 *     pool and one JavaScript value per key), and
 *   - rust-rocksdb in native/hotpath (built with `cargo build --release --features rocks`;
 *     one batched MultiGet, the keys passed as one Buffer).
 * Both stores: no compression, a 10-bit Bloom filter, the same LRU block cache, compacted
 * before reading (the load phase's batched puts are timed too, WAL on, no sync). CPU time is
 * process.cpuUsage (all threads: the libuv pool and RocksDB's flush and compaction threads).
 *
 *   node dist/bench/hotpath/rocks-getmany.js [--keys 2000000] [--batch 10000] [--rounds 30]
 *        [--cache-mib 64] [--dir /tmp/abacus-getmany] [--only rocksdb|rust]
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import rocksdb from 'rocksdb';
import { fpWords } from './fingerprint';
import { loadNative, nativeLibrary } from './rust-kernel';

interface LevelDown {
  open(options: Record<string, unknown>, cb: (err?: Error) => void): void;
  close(cb: (err?: Error) => void): void;
  getMany(keys: Buffer[], options: Record<string, unknown>, cb: (err: Error | undefined, values: Array<Buffer | undefined>) => void): void;
  batch(): { put(k: Buffer, v: Buffer): void; write(cb: (err?: Error) => void): void };
  compactRange(start: Buffer, end: Buffer, cb: (err?: Error) => void): void;
}

interface RocksProbe {
  putMany(keys: Buffer): void;
  compact(): void;
  getMany(keys: Buffer): number;
}

function call<T = void>(f: (cb: (err: Error | undefined, v?: T) => void) => void): Promise<T> {
  return new Promise((resolve, reject) => f((err, v) => (err ? reject(err) : resolve(v as T))));
}

/** `n` distinct 16-byte keys from index `from` (fingerprints of the index: random-looking, as state keys are). */
function keysFrom(from: number, n: number): Buffer {
  const out = new Int32Array(n * 4);
  const w = new Int32Array(4);
  for (let i = 0; i < n; i++) {
    w[0] = from + i;
    fpWords(w, 0, 4, 0x6b657973, out, i * 4);
  }
  return Buffer.from(out.buffer);
}

interface Figures {
  binding: string;
  mode: string;
  batch: number;
  found: number;
  cpuMsPerBatch: number;
  wallMsPerBatch: number;
  nsPerKeyCpu: number;
}

async function measure(binding: string, mode: string, batch: number, rounds: number, storedKeys: number, get: (keys: Buffer) => Promise<number>): Promise<Figures> {
  let found = 0;
  let cpu = 0;
  let wall = 0;
  for (let r = 0; r < rounds; r++) {
    const from = mode === 'present' ? Math.floor(Math.random() * (storedKeys - batch)) : storedKeys + r * batch;
    const keys = keysFrom(from, batch);
    const c0 = process.cpuUsage();
    const w0 = process.hrtime.bigint();
    found += await get(keys);
    wall += Number(process.hrtime.bigint() - w0) / 1e6;
    const c = process.cpuUsage(c0);
    cpu += (c.user + c.system) / 1e3;
  }
  return { binding, mode, batch, found: found / rounds, cpuMsPerBatch: round(cpu / rounds), wallMsPerBatch: round(wall / rounds), nsPerKeyCpu: Math.round((cpu * 1e6) / (rounds * batch)) };
}

/** CPU time of the load phase: batched puts of `batch` keys (key generation included, the same on both sides). */
function startWrites(): { done(keys: number, batch: number): Record<string, number | string> } {
  const c0 = process.cpuUsage();
  const w0 = process.hrtime.bigint();
  return {
    done(keys, batch) {
      const c = process.cpuUsage(c0);
      const cpuNs = (c.user + c.system) * 1e3;
      return { mode: 'put', batch, keys, nsPerKeyCpu: Math.round(cpuNs / keys), wallSeconds: round(Number(process.hrtime.bigint() - w0) / 1e9) };
    },
  };
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      keys: { type: 'string', default: '2000000' },
      batch: { type: 'string', default: '10000' },
      rounds: { type: 'string', default: '30' },
      'cache-mib': { type: 'string', default: '64' },
      dir: { type: 'string', default: '/tmp' },
      only: { type: 'string' },
    },
  });
  const stored = Number(values.keys);
  const batch = Number(values.batch);
  const rounds = Number(values.rounds);
  const cacheBytes = Number(values['cache-mib']) * 2 ** 20;
  const dir = mkdtempSync(join(values.dir, 'abacus-getmany-'));
  const load = 50_000;
  try {
    if (values.only !== 'rust') {
      const db = (rocksdb as (location: string) => LevelDown)(join(dir, 'level'));
      await call((cb) => db.open({ createIfMissing: true, compression: false, cacheSize: cacheBytes }, cb));
      const w = startWrites();
      for (let from = 0; from < stored; from += load) {
        const keys = keysFrom(from, Math.min(load, stored - from));
        const b = db.batch();
        const v = Buffer.from([1, 0, 0, 0]);
        for (let i = 0; i < keys.length; i += 16) b.put(keys.subarray(i, i + 16), v);
        await call((cb) => b.write(cb));
      }
      console.log(JSON.stringify({ binding: 'rocksdb 5.2.1 (RocksDB 6.17)', ...w.done(stored, load) }));
      await call((cb) => db.compactRange(Buffer.alloc(16, 0), Buffer.alloc(16, 0xff), cb));
      const get = async (keys: Buffer): Promise<number> => {
        const list: Buffer[] = [];
        for (let i = 0; i < keys.length; i += 16) list.push(keys.subarray(i, i + 16));
        const vals = await call<Array<Buffer | undefined>>((cb) => db.getMany(list, { asBuffer: true, fillCache: true }, cb));
        return vals.filter((x) => x !== undefined).length;
      };
      for (const mode of ['present', 'absent']) console.log(JSON.stringify(await measure('rocksdb 5.2.1 (RocksDB 6.17)', mode, batch, rounds, stored, get)));
      await call((cb) => db.close(cb));
    }
    if (values.only !== 'rocksdb') {
      const native = loadNative<{ RocksProbe: new (path: string, cacheBytes: number) => RocksProbe }>(process.env.ABACUS_HOTPATH_ROCKS_LIB ?? nativeLibrary());
      const probe = new native.RocksProbe(join(dir, 'rust'), cacheBytes);
      const w = startWrites();
      for (let from = 0; from < stored; from += load) probe.putMany(keysFrom(from, Math.min(load, stored - from)));
      console.log(JSON.stringify({ binding: 'rust-rocksdb 0.23 (RocksDB 10.4)', ...w.done(stored, load) }));
      probe.compact();
      for (const mode of ['present', 'absent']) console.log(JSON.stringify(await measure('rust-rocksdb 0.23 (RocksDB 10.4)', mode, batch, rounds, stored, (keys) => Promise.resolve(probe.getMany(keys)))));
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

function round(x: number): number {
  return Math.round(x * 100) / 100;
}

main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
