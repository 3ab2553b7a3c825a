import { accessSync, constants, existsSync, statSync, type Stats } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { AbacusError } from '../../common/errors';
import { fingerprintMismatch, type JobConfig } from '../../common/job-config';
import { LocalSink } from '../io/local-sink';
import { META_KEY } from '../state/keys';
import { RocksStore } from '../state/rocks';

/**
 * The checks of a local run's data dir, all made before anything is written: a refused run
 * leaves the data dir byte for byte as it was (and creates none). Existing stores are opened
 * read-only for the checks, which changes no file.
 */
export interface DataDirPaths {
  readonly state: string;
  readonly sink: string;
  readonly deadLetter: string;
}

export async function checkDataDir(dataDir: string, paths: DataDirPaths, config: JobConfig): Promise<void> {
  checkWritableDir(dataDir, '--data-dir');
  checkWritableDir(paths.state, 'the state directory');
  checkWritableDir(paths.sink, 'the sink directory');
  checkDeadLetterFile(paths.deadLetter);
  if (existsSync(`${paths.state}/CURRENT`)) {
    const store = await RocksStore.openReadOnly(paths.state, config.rocksdb);
    try {
      const stored = await store.get(META_KEY);
      const mismatch = stored === undefined ? undefined : fingerprintMismatch(stored, config, dataDir);
      if (mismatch !== undefined) throw mismatch;
    } finally {
      await store.close();
    }
  }
  if (existsSync(`${paths.sink}/CURRENT`)) {
    const sink = await LocalSink.openExisting(paths.sink, config.rocksdb);
    try {
      if (sink.level !== config.level) {
        throw new AbacusError('StateMismatch', `the data dir ${dataDir} holds ${sink.level}-level counts, and this run is ${config.level}-level`, 'run with the original --level, or start over with a fresh --data-dir');
      }
    } finally {
      await sink.close();
    }
  }
}

function statOf(path: string): Stats | undefined {
  try {
    return statSync(path);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return undefined; // absent; an ancestor that is a file is reported by the caller
    throw new AbacusError('DataDirUnusable', `cannot inspect ${path}: ${(err as Error).message}`, 'give a --data-dir this user can read and write');
  }
}

/** `path` is a directory this process can write, or can be created as one. */
function checkWritableDir(path: string, what: string): void {
  const stats = statOf(path);
  if (stats !== undefined && !stats.isDirectory()) {
    throw new AbacusError('DataDirNotADirectory', `${what} ${path} exists and is not a directory`, 'give --data-dir a directory (it is created when missing), or move the file away');
  }
  // The directory itself, or the nearest existing ancestor that would hold it.
  let existing = resolve(path);
  while (statOf(existing) === undefined && dirname(existing) !== existing) existing = dirname(existing);
  if (!statOf(existing)!.isDirectory()) {
    throw new AbacusError('DataDirNotADirectory', `${what} ${path} cannot be created: ${existing} is not a directory`, 'give --data-dir a path under an existing directory');
  }
  try {
    accessSync(existing, constants.W_OK | constants.X_OK);
  } catch (err) {
    throw new AbacusError('StateNotWritable', `${what} ${path} cannot be written (${existing}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`, 'give a --data-dir this user can write (check its owner, permissions and whether the volume is mounted read-only)');
  }
}

function checkDeadLetterFile(path: string): void {
  const stats = statOf(path);
  if (stats === undefined) return; // created on the first invalid record, in the checked data dir
  if (!stats.isFile()) {
    throw new AbacusError('DeadLetterUnwritable', `the dead-letter file ${path} exists and is not a regular file`, 'move it away: invalid records are appended to this file');
  }
  try {
    accessSync(path, constants.W_OK);
  } catch (err) {
    throw new AbacusError('DeadLetterUnwritable', `the dead-letter file ${path} cannot be written (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`, 'make it writable for this user, or move it away');
  }
}
