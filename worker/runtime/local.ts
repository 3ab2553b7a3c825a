import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import type { JobConfig } from '../config';
import { FileDeadLetter } from '../io/file-dead-letter';
import { LocalSink } from '../io/local-sink';
import type { Source } from '../io/types';
import { CountTask, type TaskProgress } from './task';

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
}

export interface LocalRunResult extends TaskProgress {
  readonly stateBytes: number;
  readonly deadLetterPath: string;
}

export function localPaths(dataDir: string): { state: string; sink: string; deadLetter: string } {
  return { state: join(dataDir, 'state'), sink: join(dataDir, 'sink'), deadLetter: join(dataDir, 'dead-letter.jsonl') };
}

export async function runLocal(options: LocalRunOptions): Promise<LocalRunResult> {
  const { config, dataDir, source } = options;
  mkdirSync(dataDir, { recursive: true });
  const paths = localPaths(dataDir);
  const sink = await LocalSink.open(paths.sink, config.rocksdb, config.level);
  const deadLetter = new FileDeadLetter(paths.deadLetter);
  try {
    const task = await CountTask.open({
      config,
      dataDir,
      source,
      sink,
      deadLetter,
      ...(options.onProgress ? { onProgress: options.onProgress } : {}),
      ...(options.log ? { log: options.log } : {}),
      ...(options.signal ? { signal: options.signal } : {}),
      ...(options.clock ? { clock: options.clock } : {}),
    });
    try {
      const progress = await task.run();
      return { ...progress, stateBytes: task.stateSize(), deadLetterPath: paths.deadLetter };
    } finally {
      await task.close();
    }
  } finally {
    await source.close();
    await sink.close();
  }
}
