import { existsSync, mkdirSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { AbacusError } from '../../common/errors';
import { DEFAULTS, resolveJobConfig, sinkTuning, type JobConfig, type Level } from '../../common/job-config';
import type { CheckpointResult } from '../checkpoint/checkpointer';
import { decodeChunk, parseManifestKey, type Manifest } from '../checkpoint/format';
import type { ObjectStore } from '../checkpoint/object-store';
import { readCatalog, readManifestById, restoreGroups, verifyManifest } from '../checkpoint/restore';
import { FileDeadLetter } from '../io/file-dead-letter';
import { LocalSink } from '../io/local-sink';
import type { CounterRow, Source } from '../io/types';
import { counterIdOfKey, counterOfKey, KIND_OFFSET } from '../state/keys';
import { decodeCounter } from '../state/records';
import { RocksStore } from '../state/rocks';
import { checkDataDir } from './data-dir';
import { CountTask, type TaskCheckpoints, type TaskProgress } from './task';

/**
 * Local mode: the same count task, on a local source, with the embedded sink and a
 * dead-letter file, all under one data dir:
 *
 *   <data-dir>/state             RocksDB state (all key groups)
 *   <data-dir>/sink              final counts (what `abacus counts` prints)
 *   <data-dir>/dead-letter.jsonl invalid records with their reasons
 */
export interface LocalRunOptions {
  readonly config: JobConfig;
  readonly dataDir: string;
  readonly source: Source;
  readonly onProgress?: (p: TaskProgress) => void;
  readonly log?: (line: string) => void;
  readonly signal?: AbortSignal;
  readonly clock?: () => number;
  /** Caps the ingest time that expiry trusts (see CountTaskOptions.sweepCeilingMs). */
  readonly sweepCeilingMs?: () => number;
  /** Checkpoints into an object store (a directory with --checkpoint-dir). */
  readonly checkpoints?: TaskCheckpoints;
  /** Native engine: its state limit (see TaskOptions.nativeStateBytes). */
  readonly nativeStateBytes?: number;
}

export interface LocalRunResult extends TaskProgress {
  readonly stateBytes: number;
  readonly deadLetterPath: string;
  /** The last checkpoint committed (the final one), when checkpointing. */
  readonly lastCheckpoint?: CheckpointResult;
}

export function localPaths(dataDir: string): { state: string; sink: string; deadLetter: string } {
  return { state: join(dataDir, 'state'), sink: join(dataDir, 'sink'), deadLetter: join(dataDir, 'dead-letter.jsonl') };
}

export async function runLocal(options: LocalRunOptions): Promise<LocalRunResult> {
  const { config, dataDir, source } = options;
  const paths = localPaths(dataDir);
  try {
    // Everything is checked before anything is written: a refused run leaves the data dir as it was.
    await checkDataDir(dataDir, paths, config);
    mkdirSync(dataDir, { recursive: true });
    const sink = await LocalSink.open(paths.sink, sinkTuning(config), config.level);
    try {
      const task = await CountTask.open({
        config,
        dataDir,
        source,
        sink,
        deadLetter: new FileDeadLetter(paths.deadLetter),
        ...(options.onProgress ? { onProgress: options.onProgress } : {}),
        ...(options.log ? { log: options.log } : {}),
        ...(options.signal ? { signal: options.signal } : {}),
        ...(options.clock ? { clock: options.clock } : {}),
        ...(options.sweepCeilingMs ? { sweepCeilingMs: options.sweepCeilingMs } : {}),
        ...(options.checkpoints ? { checkpoints: options.checkpoints } : {}),
        ...(options.nativeStateBytes !== undefined ? { nativeStateBytes: options.nativeStateBytes } : {}),
      });
      try {
        const progress = await task.run();
        return { ...progress, stateBytes: task.stateSize(), deadLetterPath: paths.deadLetter, ...(task.lastCheckpoint ? { lastCheckpoint: task.lastCheckpoint } : {}) };
      } finally {
        await task.close();
      }
    } finally {
      await sink.close();
    }
  } finally {
    await source.close();
  }
}

export interface LocalRestoreResult {
  readonly manifest: Manifest;
  /** Newer checkpoints passed over, and why. */
  readonly skipped: Array<{ readonly manifestId: string; readonly problem: string }>;
  readonly groups: number;
  readonly records: number;
  readonly bytes: number;
  readonly counters: number;
  readonly positions: Readonly<Record<string, string>>;
  readonly durationMs: number;
}

/**
 * `abacus restore`: rebuilds a lost local data dir from a checkpoint — the state (every key
 * group, `~meta`, the unkeyed positions, all from one snapshot) and the embedded sink (the
 * counters' committed totals, which the sink held at the snapshot since a checkpoint is
 * taken after the sink confirmed the last commit). Without `manifestId`, the newest
 * checkpoint that verifies completely is used and newer damaged ones are reported; with
 * it, that checkpoint or an error saying why not. The dead-letter file is not part of a
 * checkpoint.
 */
export async function restoreLocal(dataDir: string, objectStore: ObjectStore, manifestId?: string, log?: (line: string) => void): Promise<LocalRestoreResult> {
  const started = Date.now();
  const paths = localPaths(dataDir);
  for (const dir of [paths.state, paths.sink]) {
    if (existsSync(dir) && readdirSync(dir).length > 0) {
      throw new AbacusError('DataDirNotEmpty', `${dir} already exists: restore rebuilds a lost data dir and never writes over one`, `move ${dataDir} away (or delete it, also after an interrupted restore) and run restore again`);
    }
  }
  const skipped: Array<{ manifestId: string; problem: string }> = [];
  let manifest: Manifest | undefined;
  if (manifestId !== undefined) {
    manifest = await readManifestById(objectStore, manifestId);
    if (manifest.unkeyed === undefined) throw new AbacusError('NotALocalCheckpoint', `checkpoint ${manifestId} was written by a cluster worker (it has no local-mode positions)`, 'restore a checkpoint written by `abacus run --checkpoint-dir`');
    await verifyManifest(objectStore, manifest);
  } else {
    const catalog = await readCatalog(objectStore);
    for (const c of catalog) {
      if (c.manifest === undefined || c.manifest.unkeyed === undefined) continue;
      try {
        await verifyManifest(objectStore, c.manifest);
        manifest = c.manifest;
        break;
      } catch (err) {
        skipped.push({ manifestId: c.manifest.id, problem: (err as Error).message });
      }
    }
    // Damaged manifests carry no time: the ones numbered after the chosen checkpoint were newer.
    for (const c of catalog) {
      const sequence = parseManifestKey(c.key)?.sequence ?? 0;
      if (c.manifest === undefined && (manifest === undefined || sequence > manifest.sequence)) skipped.push({ manifestId: c.key, problem: c.problem! });
    }
    if (manifest === undefined) {
      throw new AbacusError('NoCheckpoint', `no complete checkpoint in ${objectStore.description}${skipped.length > 0 ? ` (damaged: ${skipped.map((s) => `${s.manifestId}: ${s.problem}`).join('; ')})` : ''}`, 'give the --checkpoint-dir that `abacus run` wrote to');
    }
  }
  for (const s of skipped) log?.(`skipped checkpoint ${s.manifestId}: ${s.problem}`);

  const config = configOfFingerprint(manifest.fingerprint);
  mkdirSync(dataDir, { recursive: true });
  const store = await RocksStore.open(paths.state, config.rocksdb);
  let records = 0;
  let bytes = 0;
  let counters = 0;
  try {
    const groups = Object.keys(manifest.groups).map(Number);
    const result = await restoreGroups(store, objectStore, groups, { manifestId: manifest.id, ...(log ? { log } : {}) });
    records += result.records;
    bytes += result.bytes;
    const ref = manifest.unkeyed!.chunk;
    const unkeyed = await decodeChunk(await objectStore.get(ref.key), ref);
    bytes += ref.bytes;
    records += unkeyed.length;
    await store.write(
      unkeyed.filter((e): e is [string, string] => e[1] !== null),
      [],
      true,
    );
    counters = await rebuildSink(store, paths.sink, config);
  } finally {
    await store.close();
  }
  return { manifest, skipped, groups: Object.keys(manifest.groups).length, records, bytes, counters, positions: manifest.unkeyed!.positions, durationMs: Date.now() - started };
}

/** The embedded sink from the counter records of the state: the totals committed with it. */
async function rebuildSink(store: RocksStore, sinkDir: string, config: JobConfig): Promise<number> {
  const sink = await LocalSink.open(sinkDir, sinkTuning(config), config.level);
  let n = 0;
  try {
    let rows: CounterRow[] = [];
    const flush = async (): Promise<void> => {
      if (rows.length > 0) await sink.write(rows);
      rows = [];
    };
    const pending: CounterRow[][] = [];
    await store.scan({ gte: '0000', lt: '~' }, (key, value) => {
      if (key[KIND_OFFSET] !== 'C') return;
      const total = decodeCounter(value);
      rows.push({ ...counterOfKey(key), id: counterIdOfKey(key), count: total.count, uniques: total.uniques });
      n++;
      if (rows.length >= 10_000) {
        pending.push(rows);
        rows = [];
      }
    });
    for (const batch of pending) await sink.write(batch);
    await flush();
  } finally {
    await sink.close();
  }
  return n;
}

/** A config with the settings a checkpoint was written with (level, key groups, …) and default tuning. */
function configOfFingerprint(fingerprint: Readonly<Record<string, unknown>>): JobConfig {
  if (fingerprint.engine === 'native') {
    // Its counters live in the kernel's segments, which the sink rebuild below does not read.
    throw new AbacusError('RestoreNotSupported', 'this checkpoint was written by the native engine (state.engine: native), which abacus restore cannot rebuild a sink from yet', 'count the input again into a fresh data dir with --engine native');
  }
  const level = fingerprint.level === 'customer' ? 'customer' : ('account' satisfies Level);
  return resolveJobConfig({ level, keyGroups: typeof fingerprint.keyGroups === 'number' ? fingerprint.keyGroups : DEFAULTS.keyGroups });
}
