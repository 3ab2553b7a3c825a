import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { test } from 'node:test';
import type { CounterKey, CounterRow, CounterValue, CountSink, SourceRecord } from '../../worker/io/types';
import { LocalSink } from '../../worker/io/local-sink';
import { localPaths } from '../../worker/runtime/local';
import { CountTask } from '../../worker/runtime/task';
import { OUTBOX_KEY } from '../../worker/state/keys';
import { referenceRun } from '../support/reference';
import { ArraySource, jumpyClock, localCounts, tempDir, testConfig, timedInput, type InputRecord } from '../support/local';

/**
 * A window's sink write overlaps with the next window filling (worker/runtime/task.ts, steps
 * 3-4 of the commit protocol): while the sink holds a write, the task keeps polling and
 * counting, commits nothing more, and starts no second write; the counts end up exactly the
 * contract's.
 */

/** The local sink, each write held for `holdMs` (a slow Cassandra), watching what the task does meanwhile. */
class SlowSink implements CountSink {
  outstanding = 0;
  maxOutstanding = 0;
  writes = 0;
  /** Windows committed when the write in flight started, and the most seen while it was held. */
  windowsAtStart = 0;
  windowsWhileHeld = 0;
  constructor(
    private readonly inner: CountSink,
    private readonly holdMs: number,
    readonly windows: () => number,
  ) {}
  async write(rows: readonly CounterRow[]): Promise<void> {
    this.writes++;
    this.outstanding++;
    this.maxOutstanding = Math.max(this.maxOutstanding, this.outstanding);
    this.windowsAtStart = this.windows();
    try {
      await new Promise((resolve) => setTimeout(resolve, this.holdMs));
      this.windowsWhileHeld = Math.max(this.windowsWhileHeld, this.windows() - this.windowsAtStart);
      await this.inner.write(rows);
    } finally {
      this.outstanding--;
    }
  }
  read(keys: readonly CounterKey[]): Promise<Map<string, CounterValue>> {
    return this.inner.read(keys);
  }
  scan(): ReturnType<CountSink['scan']> {
    return this.inner.scan();
  }
  ping(): Promise<boolean> {
    return Promise.resolve(true);
  }
  close(): Promise<void> {
    return Promise.resolve();
  }
}

/** Counts the records handed out while a sink write is held. */
class WatchedSource extends ArraySource {
  whileWriting = 0;
  constructor(
    records: readonly InputRecord[],
    batchSizes: readonly number[],
    private readonly writing: () => boolean,
  ) {
    super(records, batchSizes);
  }
  override async poll(max: number): Promise<SourceRecord[] | null> {
    const batch = await super.poll(max);
    if (batch !== null && this.writing()) this.whileWriting += batch.length;
    return batch;
  }
}

test('the next window fills while the last one is written; at most one write outstanding; exact counts', { timeout: 60_000 }, async () => {
  const records = timedInput(7, 1500);
  const config = testConfig({ window: '1s', maxEventBytes: 4096 });
  const dataDir = tempDir();
  const local = await LocalSink.open(localPaths(dataDir).sink, config.rocksdb, config.level);
  const opened: { task?: CountTask } = {};
  const sink = new SlowSink(local, 150, () => opened.task?.progress.windows ?? 0);
  const source = new WatchedSource(records, [40, 7, 90], () => sink.outstanding > 0);
  const task = await CountTask.open({
    config,
    dataDir,
    source,
    sink,
    deadLetter: { send: () => Promise.resolve(), close: () => Promise.resolve() },
    // Windows close every few polls, far faster than the sink's 150 ms per write.
    clock: jumpyClock(7, 400),
  });
  opened.task = task;
  await task.run();
  await task.close();
  await local.close();

  assert.ok(sink.writes >= 3, `windows written: ${sink.writes}`);
  assert.ok(source.whileWriting > 0, 'records were polled while a sink write was outstanding');
  assert.equal(sink.maxOutstanding, 1, 'never two sink writes at once');
  assert.equal(sink.windowsWhileHeld, 0, 'no commit while the previous commit\'s sink write is outstanding');
  assert.deepEqual(await localCounts(dataDir, config), referenceRun(records, { level: 'account', maxEventBytes: 4096 }).rows);
  rmSync(dataDir, { recursive: true });
});

/** An ArraySource that takes `delayMs` per poll, so the loop runs for seconds of real time. */
class PacedSource extends ArraySource {
  constructor(
    records: readonly InputRecord[],
    private readonly delayMs: number,
  ) {
    super(records, [10]);
  }
  override async poll(max: number): Promise<SourceRecord[] | null> {
    await new Promise((resolve) => setTimeout(resolve, this.delayMs));
    return super.poll(max);
  }
}

test('a stop asked for while a window\'s sink write is held lets it finish with every group counting: the stopped groups then wait for one write, not two', { timeout: 60_000 }, async () => {
  const holdMs = 600;
  const config = testConfig({ window: '1s', maxEventBytes: 4096 });
  const dataDir = tempDir();
  const local = await LocalSink.open(localPaths(dataDir).sink, config.rocksdb, config.level);
  const opened: { task?: CountTask; stopping?: Promise<{ stop: number; flushed: number; outbox?: string }> } = {};
  const sink = new SlowSink(local, holdMs, () => opened.task?.progress.windows ?? 0);
  const write = sink.write.bind(sink);
  let asked = false;
  sink.write = (rows) => {
    // The first window's write is held: ask for the stop halfway through it, when the loop
    // has counted records into the next window.
    if (!asked) {
      setTimeout(() => {
        const task = opened.task!;
        // What a restart right after the release would re-send to the sink.
        opened.stopping = task.stopGroups([0]).then(async (times) => ({ ...times, outbox: await task.stateStore.get(OUTBOX_KEY) }));
      }, holdMs / 2);
    }
    asked = true;
    return write(rows);
  };
  const groups = Array.from({ length: config.keyGroups }, (_, g) => g);
  const task = await CountTask.open({ config, dataDir, source: new PacedSource(timedInput(9, 600), 20), sink, deadLetter: { send: () => Promise.resolve(), close: () => Promise.resolve() }, keyGroups: groups });
  opened.task = task;
  await task.run();
  const { stop, flushed, outbox } = await opened.stopping!;
  await task.close();
  await local.close();
  rmSync(dataDir, { recursive: true });
  assert.ok(sink.writes >= 2, `windows written: ${sink.writes}`);
  assert.equal(sink.maxOutstanding, 1, 'never two sink writes at once');
  // Waiting inside the stop for the rest of the held write, then for its own, would take 1.5 × holdMs.
  assert.ok(flushed - stop < 1.25 * holdMs, `from the stop to its flush confirmed: ${flushed - stop} ms (one write is ${holdMs} ms)`);
  assert.ok(!task.groups().includes(0), 'the group was stopped');
  // Its new owner's totals will be newer than the ones the stop confirmed: re-sent, they would roll them back.
  assert.equal(outbox, undefined, 'the confirmed outbox is gone once the stop has flushed');
});

/** The local sink, each write held until the test releases it, standing in for a remote sink (Cassandra). */
class GatedSink extends SlowSink {
  private gates: Array<() => void> = [];
  private open = false;
  constructor(
    inner: CountSink,
    windows: () => number,
    readonly remote = true,
  ) {
    super(inner, 0, windows);
  }
  override async write(rows: readonly CounterRow[]): Promise<void> {
    if (!this.open) await new Promise<void>((resolve) => this.gates.push(resolve));
    return super.write(rows);
  }
  /** Lets the writes waiting now go on. */
  release(): void {
    for (const go of this.gates.splice(0)) go();
  }
  /** Lets every write go on, now and from now on. */
  openGate(): void {
    this.open = true;
    this.release();
  }
  get held(): number {
    return this.gates.length;
  }
}

/** An ArraySource of one record a poll, 2 ms a poll, counting its polls. */
class CountingSource extends ArraySource {
  polls = 0;
  constructor(records: readonly InputRecord[]) {
    super(records, [1]);
  }
  override async poll(max: number): Promise<SourceRecord[] | null> {
    await new Promise((resolve) => setTimeout(resolve, 2));
    this.polls++;
    return super.poll(max);
  }
}

/** Polls `ok` every 5 ms (the kube helpers' `until` polls every second, too slow for a paced source of a few seconds). */
async function until(what: string, ok: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!ok()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting until ${what}`);
    await pause(5);
  }
}

function pause(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * A task over a CountingSource and a GatedSink, on a clock the test moves (`advance`); its
 * first window committed and that window's write held. `finish` lets every write go, waits
 * for the run and checks the counts against the reference.
 */
async function gatedRun(seed: number, valid: number, remote: boolean) {
  const records = timedInput(seed, valid);
  const config = testConfig({ window: '1s', maxEventBytes: 4096 });
  const dataDir = tempDir();
  const local = await LocalSink.open(localPaths(dataDir).sink, config.rocksdb, config.level);
  const opened: { task?: CountTask } = {};
  const windows = (): number => opened.task?.progress.windows ?? 0;
  const sink = new GatedSink(local, windows, remote);
  const source = new CountingSource(records);
  let now = 1_000_000;
  const task = await CountTask.open({ config, dataDir, source, sink, deadLetter: { send: () => Promise.resolve(), close: () => Promise.resolve() }, clock: () => now });
  opened.task = task;
  const running = task.run();
  const advance = (ms: number): void => {
    now += ms;
  };
  const finish = async (): Promise<void> => {
    sink.openGate();
    await running;
    await task.close();
    await local.close();
    assert.equal(sink.maxOutstanding, 1, 'never two sink writes at once');
    assert.deepEqual(await localCounts(dataDir, config), referenceRun(records, { level: 'account', maxEventBytes: 4096 }).rows);
    rmSync(dataDir, { recursive: true });
  };
  try {
    await until('a few records are counted', () => task.progress.read >= 5);
    advance(1_100);
    await until('the first window is committed and its write held', () => windows() === 1 && sink.held === 1);
  } catch (err) {
    sink.openGate();
    throw err;
  }
  return { task, sink, source, windows, advance, finish };
}

/** Whether the loop stopped polling (it waits inside a flush): no poll over 150 ms, after 50 ms for it to get there. */
async function loopWaits(source: CountingSource): Promise<boolean> {
  await pause(50);
  const polls = source.polls;
  await pause(150);
  return source.polls === polls;
}

test('with a remote sink, a window due while the previous write is outstanding keeps filling; it closes once that write is confirmed, or after four windows', { timeout: 60_000 }, async () => {
  const { task, sink, source, windows, advance, finish } = await gatedRun(11, 1500, true);
  try {
    // The second window is due, but the first write is outstanding: the loop keeps polling and commits nothing.
    advance(1_100);
    const read = task.progress.read;
    await pause(100);
    // At 2 ms a poll, 100 ms is dozens of polls; a loop that had closed the window would wait after one.
    assert.ok(task.progress.read - read >= 10, `records counted into the due window while the previous write was held: ${task.progress.read - read}`);
    assert.equal(windows(), 1, 'no window closed while the previous write was outstanding');

    // Confirmed: the due window closes at once.
    sink.release();
    await until('the second window is committed', () => windows() === 2 && sink.held === 1);

    // Four windows later it closes anyway, and the loop waits for the write before its commit.
    advance(4 * 1_000 + 100);
    assert.ok(await loopWaits(source), 'the loop stopped polling: the window closed and waits for the outstanding write');
    assert.equal(windows(), 2, 'nothing is committed before that write is confirmed');
    sink.release();
    await until('the stretched window is committed', () => windows() === 3);
  } finally {
    await finish();
  }
});

test('with an embedded sink, a due window closes on time and the loop waits for the previous write', { timeout: 60_000 }, async () => {
  const { sink, source, windows, advance, finish } = await gatedRun(12, 800, false);
  try {
    advance(1_100);
    assert.ok(await loopWaits(source), 'the due window closed and the loop waits for the outstanding write');
    sink.release();
    await until('the second window is committed', () => windows() === 2);
  } finally {
    await finish();
  }
});
