import { randomBytes } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { open, readdir, readFile, rename, rmdir, stat, unlink } from 'node:fs/promises';
import { dirname, join, relative, sep } from 'node:path';
import { AbacusError } from '../../common/errors';

/**
 * Where checkpoints are kept: a flat key → bytes store, keys relative to the job's
 * checkpoint root (`<prefix>/<job>/`). Two implementations: a local directory (local mode,
 * tests) and S3 (s3-object-store.ts). A put is atomic — readers see the whole object or
 * none — which is what lets a manifest written last be the commit point of a checkpoint.
 */
export interface ObjectStore {
  /** For messages: `s3://bucket/prefix/` or a directory path. */
  readonly description: string;
  /** Stores `body` under `key`, whole or not at all; `signal` may abandon it (then it is either whole or absent). */
  put(key: string, body: Buffer, signal?: AbortSignal): Promise<void>;
  /** The bytes of `key`; throws an AbacusError with code `ObjectMissing` when there is none. */
  get(key: string): Promise<Buffer>;
  /** Size in bytes of `key`, or undefined when it does not exist. */
  size(key: string): Promise<number | undefined>;
  /** Every object whose key starts with `prefix`, in no particular order. */
  list(prefix: string): Promise<ObjectInfo[]>;
  /** Deletes `keys`; keys that do not exist are not an error. */
  delete(keys: readonly string[]): Promise<void>;
  /** Makes every put so far durable (a local store syncs the directories it renamed into; S3 puts are durable when they return). */
  barrier(): Promise<void>;
}

export interface ObjectInfo {
  readonly key: string;
  readonly size: number;
}

export function objectMissing(store: ObjectStore, key: string): AbacusError {
  return new AbacusError('ObjectMissing', `checkpoint object ${key} is missing from ${store.description}`, 'this checkpoint cannot be used; restore from an older complete checkpoint');
}

const TMP_MARK = '.tmp-';

/**
 * A directory as an object store. Commit protocol of a put: write `<key>.tmp-<random>`,
 * fsync it, rename it over `<key>` (atomic on POSIX); barrier() fsyncs the directories
 * renamed into since the last barrier, so the renames survive a power cut. A checkpoint
 * calls barrier() after its chunks and again after its manifest: a durable manifest never
 * names a chunk whose directory entry could still be lost. Temp files of a put that crashed
 * are never listed, so restore and retention ignore them (deleting them by hand is safe).
 */
export class LocalObjectStore implements ObjectStore {
  private readonly unsynced = new Set<string>();

  constructor(readonly root: string) {}

  get description(): string {
    return this.root;
  }

  async put(key: string, body: Buffer): Promise<void> {
    const path = this.path(key);
    mkdirSync(dirname(path), { recursive: true });
    const tmp = `${path}${TMP_MARK}${randomBytes(6).toString('hex')}`;
    const file = await open(tmp, 'w');
    try {
      await file.writeFile(body);
      await file.sync();
    } finally {
      await file.close();
    }
    await rename(tmp, path);
    this.unsynced.add(dirname(path));
  }

  async barrier(): Promise<void> {
    const dirs = [...this.unsynced];
    this.unsynced.clear();
    for (const d of dirs) {
      let dir;
      try {
        dir = await open(d, 'r');
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue; // emptied and removed since
        throw err;
      }
      try {
        await dir.sync();
      } finally {
        await dir.close();
      }
    }
  }

  async get(key: string): Promise<Buffer> {
    try {
      return await readFile(this.path(key));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw objectMissing(this, key);
      throw err;
    }
  }

  async size(key: string): Promise<number | undefined> {
    try {
      return (await stat(this.path(key))).size;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw err;
    }
  }

  async list(prefix: string): Promise<ObjectInfo[]> {
    const out: ObjectInfo[] = [];
    let entries;
    try {
      entries = await readdir(this.root, { recursive: true, withFileTypes: true });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return out;
      throw err;
    }
    for (const e of entries) {
      if (!e.isFile() || e.name.includes(TMP_MARK)) continue;
      const full = join(e.parentPath, e.name);
      const key = relative(this.root, full).split(sep).join('/');
      if (!key.startsWith(prefix)) continue;
      try {
        out.push({ key, size: (await stat(full)).size });
      } catch {
        // deleted between listing and stat
      }
    }
    return out;
  }

  async delete(keys: readonly string[]): Promise<void> {
    const dirs = new Set<string>();
    for (const key of keys) {
      const path = this.path(key);
      try {
        await unlink(path);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      }
      dirs.add(dirname(path));
    }
    // A checkpoint's chunk folder goes once its last chunk is gone.
    for (const dir of dirs) await rmdir(dir).catch(() => undefined);
  }

  private path(key: string): string {
    if (key.split('/').some((part) => part === '..' || part === '')) throw new Error(`invalid object key ${JSON.stringify(key)}`);
    return join(this.root, ...key.split('/'));
  }
}
