import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { resolveJobConfig, type JobConfig } from '../../common/job-config';
import { countLine, type CountLine } from '../../common/counter-id';
import { LocalSink } from '../../worker/io/local-sink';
import type { Source, SourceRecord } from '../../worker/io/types';
import { localPaths } from '../../worker/runtime/local';
import { rng, testInput } from './events';
import { sortRows, type RefRow } from './reference';

/** A temporary data dir for one test. */
export function tempDir(prefix = 'abacus-test-'): string {
  return mkdtempSync(join(tmpdir(), prefix));
}

export interface InputRecord {
  readonly value: string;
  readonly ingestTimeMs: number;
}

/**
 * An in-memory bounded source over `records`, handing them out in batches whose sizes come
 * from `batchSizes` (cycled), and honouring committed positions unless `ignorePositions`
 * (which simulates a re-read after a restore: everything is delivered again).
 */
export class ArraySource implements Source {
  private next = 0;
  private call = 0;

  constructor(
    private readonly records: readonly InputRecord[],
    private readonly batchSizes: readonly number[] = [1000],
    private readonly ignorePositions = false,
    readonly partition = 'array',
  ) {}

  start(positions: ReadonlyMap<string, string>): Promise<void> {
    this.next = this.ignorePositions ? 0 : Number(positions.get(this.partition) ?? 0);
    return Promise.resolve();
  }

  poll(max: number): Promise<SourceRecord[] | null> {
    if (this.next >= this.records.length) return Promise.resolve(null);
    const size = Math.min(max, this.batchSizes[this.call++ % this.batchSizes.length]!);
    const out: SourceRecord[] = [];
    for (let i = this.next; i < Math.min(this.records.length, this.next + size); i++) {
      const r = this.records[i]!;
      out.push({ value: Buffer.from(r.value), ingestTimeMs: r.ingestTimeMs, partition: this.partition, nextPosition: String(i + 1), origin: `array#${i}` });
    }
    this.next += out.length;
    return Promise.resolve(out);
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}

/**
 * The engines the local property tests run on: both (docs/adr/0007-hot-path.md), and the
 * native one spilling all it can after every window (its memory budget's path: dedup
 * identities and marker sets evicted to spill records, read back when an event needs them).
 */
export const TEST_ENGINES = ['records', 'native', 'native-spilling'] as const;
export type TestEngine = (typeof TEST_ENGINES)[number];

/** The job's `state.engine` of a test engine. */
export function engineOf(engine: TestEngine): 'records' | 'native' {
  return engine === 'records' ? 'records' : 'native';
}

/** The runLocal options of a test engine. */
export function engineRunOptions(engine: TestEngine): { nativeStateBytes?: number } {
  return engine === 'native-spilling' ? { nativeStateBytes: 0 } : {};
}

/** A job config for tests: defaults, with overrides. */
export function testConfig(overrides: Record<string, unknown> = {}): JobConfig {
  return resolveJobConfig({ keyGroups: 16, window: '1s', state: { cacheEntries: 1000 }, ...overrides });
}

/** Everything in a local data dir's sink, as `abacus counts` lines, sorted like the reference. */
export async function localCounts(dataDir: string, config: JobConfig): Promise<CountLine[]> {
  const sink = await LocalSink.openExisting(localPaths(dataDir).sink, config.rocksdb);
  const rows: CountLine[] = [];
  try {
    for await (const row of sink.scan()) rows.push(countLine(row, sink.hasUniques));
  } finally {
    await sink.close();
  }
  return sortRows(rows as RefRow[]);
}

/** A clock that advances by a pseudo-random step on every read, so windows close at arbitrary points. */
export function jumpyClock(seed: number, maxStepMs: number): () => number {
  let t = 1_000_000;
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s ^ (s >>> 15), 0x2c1b3c6d) + 0x6d2b79f5) >>> 0;
    t += s % (maxStepMs + 1);
    return t;
  };
}

/**
 * `valid` test events (10 % re-delivered, 30 customers of 2 companies) around 2026-11-27
 * 12:00 UTC, each ingested 0-60 s after the one before: input for runs of the count task
 * that stop, fail or overlap their writes.
 */
export function timedInput(seed: number, valid: number): InputRecord[] {
  const nowSec = Date.UTC(2026, 10, 27, 12) / 1000;
  const r = rng(seed);
  let t = nowSec * 1000;
  return testInput({ seed, nowSec, valid, dupRate: 0.1, maxEventBytes: 4096, customers: 30, companies: 2 }).map((value) => ({
    value,
    ingestTimeMs: (t += Math.floor(r() * 60_000)),
  }));
}
