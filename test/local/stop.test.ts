import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { test } from 'node:test';
import type { CounterKey, CounterRow, CounterValue, CountSink } from '../../worker/io/types';
import { LocalSink } from '../../worker/io/local-sink';
import { localPaths, runLocal } from '../../worker/runtime/local';
import { CountTask } from '../../worker/runtime/task';
import { referenceRun } from '../support/reference';
import { ArraySource, localCounts, tempDir, testConfig, timedInput } from '../support/local';

/**
 * A task asked to stop while its sink (Cassandra in a worker) is unreachable stops at once
 * instead of retrying, and the next run, with the sink back, ends with exactly the
 * contract's counts: what was not committed is read again, what was committed but not
 * confirmed by the sink is sent from the outbox.
 */

/** The local sink, with reads and/or writes failing as a down Cassandra's would. */
class FailingSink implements CountSink {
  calls = 0;
  constructor(
    private readonly inner: CountSink,
    private readonly fail: { read: boolean; write: boolean },
  ) {}
  write(rows: readonly CounterRow[]): Promise<void> {
    this.calls++;
    return this.fail.write ? Promise.reject(new Error('connect ECONNREFUSED (test)')) : this.inner.write(rows);
  }
  read(keys: readonly CounterKey[]): Promise<Map<string, CounterValue>> {
    this.calls++;
    return this.fail.read ? Promise.reject(new Error('connect ECONNREFUSED (test)')) : this.inner.read(keys);
  }
  scan(): ReturnType<CountSink['scan']> {
    return this.inner.scan();
  }
  ping(): Promise<boolean> {
    return Promise.resolve(false);
  }
  close(): Promise<void> {
    return Promise.resolve();
  }
}

async function stopWhileSinkDown(fail: { read: boolean; write: boolean }, seed: number): Promise<void> {
  const records = timedInput(seed, 300);
  const config = testConfig({ window: '1h', maxEventBytes: 4096 });
  const dataDir = tempDir();
  const sink = await LocalSink.open(localPaths(dataDir).sink, config.rocksdb, config.level);
  const failing = new FailingSink(sink, fail);
  const stop = new AbortController();
  const lines: string[] = [];
  const task = await CountTask.open({
    config,
    dataDir,
    source: new ArraySource(records, [100]),
    sink: failing,
    deadLetter: { send: () => Promise.resolve(), close: () => Promise.resolve() },
    signal: stop.signal,
    log: (line) => {
      lines.push(line);
      // The stop arrives while the sink keeps failing (its retries back off up to 10 s).
      if (lines.filter((l) => l.includes('retrying')).length === 3) stop.abort();
    },
  });
  const started = Date.now();
  await task.run();
  const stopSec = (Date.now() - started) / 1000;
  await task.close();
  await sink.close();
  assert.ok(stop.signal.aborted, 'the sink failed and the stop was asked');
  assert.ok(stopSec < 3, `run() returned ${stopSec.toFixed(1)} s after starting, with three retries of 0.1-0.4 s before the stop`);
  assert.ok(lines.some((l) => l.includes('stopping with the sink unavailable')), lines.join('\n'));

  // Sink back: the next run over the same data dir ends with the contract's counts.
  await runLocal({ config, dataDir, source: new ArraySource(records, [100]) });
  assert.deepEqual(await localCounts(dataDir, config), referenceRun(records, { level: 'account', maxEventBytes: 4096 }).rows);
  rmSync(dataDir, { recursive: true });
}

test('a stop during failing hydration reads is prompt; the window is read again next run', { timeout: 60_000 }, async () => {
  await stopWhileSinkDown({ read: true, write: true }, 41);
});

test('a stop during failing sink writes is prompt; the committed outbox is sent next run', { timeout: 60_000 }, async () => {
  await stopWhileSinkDown({ read: false, write: true }, 42);
});
