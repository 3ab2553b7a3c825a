import { mkdirSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import rocksdb from 'rocksdb';
import { AbacusError } from '../../common/errors';
import type { RocksDbTuning } from '../config';

/**
 * A thin promise layer over the `rocksdb` binding: the only module that calls it. Keys and
 * values are UTF-8 strings. Writes go through one atomic batch (the commit), reads through
 * getMany (one trip into the native thread pool for a whole micro-batch of keys).
 */

interface RocksIterator {
  next(cb: (err: Error | undefined, key?: string, value?: string) => void): void;
  end(cb: (err?: Error) => void): void;
}

interface RocksChainedBatch {
  put(key: string, value: string): void;
  del(key: string): void;
  write(options: Record<string, unknown>, cb: (err?: Error) => void): void;
}

interface RocksDown {
  open(options: Record<string, unknown>, cb: (err?: Error) => void): void;
  close(cb: (err?: Error) => void): void;
  getMany(keys: string[], options: Record<string, unknown>, cb: (err: Error | undefined, values: Array<string | undefined>) => void): void;
  batch(): RocksChainedBatch;
  iterator(options: Record<string, unknown>): RocksIterator;
  approximateSize(start: string, end: string, cb: (err: Error | undefined, size: number) => void): void;
  clear(options: Record<string, unknown>, cb: (err?: Error) => void): void;
}

export interface KeyRange {
  readonly gte: string;
  readonly lt: string;
}

export class RocksStore {
  private constructor(
    private readonly db: RocksDown,
    readonly location: string,
  ) {}

  static async open(location: string, tuning: RocksDbTuning): Promise<RocksStore> {
    mkdirSync(location, { recursive: true });
    const open = rocksdb as (location: string) => RocksDown;
    const db = open(location);
    try {
      await call<void>((cb) =>
        db.open(
          {
            createIfMissing: true,
            compression: true,
            cacheSize: tuning.blockCacheSize,
            writeBufferSize: tuning.writeBufferSize,
            blockSize: tuning.blockSize,
            maxOpenFiles: tuning.maxOpenFiles,
          },
          cb,
        ),
      );
    } catch (err) {
      const message = (err as Error).message;
      if (/lock/i.test(message)) {
        throw new AbacusError('StateLocked', `the state in ${location} is in use by another process (${message})`, 'stop the other abacus process using this data dir, or give a different --data-dir');
      }
      throw new AbacusError('StateOpenFailed', `cannot open RocksDB state in ${location}: ${message}`, 'check the data dir is writable and not corrupted; a lost or corrupted data dir can be deleted and restored from a checkpoint');
    }
    return new RocksStore(db, location);
  }

  /** Values for `keys`, in order; `undefined` where absent. */
  getMany(keys: string[]): Promise<Array<string | undefined>> {
    if (keys.length === 0) return Promise.resolve([]);
    return call((cb) => this.db.getMany(keys, { asBuffer: false, fillCache: true }, cb));
  }

  async get(key: string): Promise<string | undefined> {
    return (await this.getMany([key]))[0];
  }

  /**
   * One atomic write: all puts and deletes land together or not at all. `sync` fsyncs the
   * write-ahead log before resolving, which is what makes a commit survive a power cut.
   */
  write(puts: ReadonlyArray<readonly [string, string]>, deletes: readonly string[], sync: boolean): Promise<void> {
    if (puts.length === 0 && deletes.length === 0) return Promise.resolve();
    // The chained form: measured ~1.5x faster than an array of op objects with this binding.
    const batch = this.db.batch();
    for (const [key, value] of puts) batch.put(key, value);
    for (const key of deletes) batch.del(key);
    return call<void>((cb) => batch.write({ sync }, cb));
  }

  /** Visits every entry in [gte, lt) in key order. */
  async scan(range: KeyRange, visit: (key: string, value: string) => void, keysOnly = false): Promise<void> {
    const it = this.db.iterator({
      gte: range.gte,
      lt: range.lt,
      keys: true,
      values: !keysOnly,
      keyAsBuffer: false,
      valueAsBuffer: false,
      highWaterMark: 1 << 20,
    });
    try {
      for (;;) {
        const [key, value] = await new Promise<[string | undefined, string | undefined]>((resolve, reject) =>
          it.next((err, k, v) => (err ? reject(err) : resolve([k, v]))),
        );
        if (key === undefined) break;
        visit(key, value ?? '');
      }
    } finally {
      await call<void>((cb) => it.end(cb));
    }
  }

  /** Deletes every entry in [gte, lt). */
  clearRange(range: KeyRange): Promise<void> {
    return call<void>((cb) => this.db.clear({ gte: range.gte, lt: range.lt }, cb));
  }

  /** Bytes the store's files take on disk (SST, WAL, manifest), which unlike approximateSize() also counts data still only in the write-ahead log. */
  diskSize(): number {
    let total = 0;
    for (const name of readdirSync(this.location)) {
      try {
        total += statSync(join(this.location, name)).size;
      } catch {
        // a file removed by a compaction between listing and stat
      }
    }
    return total;
  }

  /** RocksDB's estimate of the on-disk size of all keys, in bytes. */
  approximateSize(): Promise<number> {
    return call((cb) => this.db.approximateSize('', '~~~~~~~~', cb));
  }

  close(): Promise<void> {
    return call<void>((cb) => this.db.close(cb));
  }
}

function call<T>(fn: (cb: (err: Error | undefined | null, value?: T) => void) => void): Promise<T> {
  return new Promise<T>((resolve, reject) => fn((err, value) => (err ? reject(err) : resolve(value as T))));
}
