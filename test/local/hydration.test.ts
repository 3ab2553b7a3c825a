import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { test } from 'node:test';
import { keyGroupOf, routingKey } from '../../common/keygroups';
import { LocalSink } from '../../worker/io/local-sink';
import { localPaths } from '../../worker/runtime/local';
import { CountTask } from '../../worker/runtime/task';
import { referenceRun } from '../support/reference';
import { validEvents } from '../support/events';
import { ArraySource, localCounts, tempDir, testConfig, type InputRecord } from '../support/local';

/**
 * Hydration (docs/semantics.md, "Delivery guarantees"): a key group a task takes with no
 * local state and no checkpoint starts from the totals in the sink. A task that opened over
 * an empty sink hydrates none of the groups it opened with (nothing could be found), but a
 * group it starts later may have been counted by another owner meanwhile: its totals must
 * be read. Two tasks share one sink here, as two workers share one Cassandra table.
 */

const NOW_SEC = Date.UTC(2026, 10, 27, 12) / 1000;

/** Valid events, each with an id of its own (no duplicate across the owners' halves), ingested a few seconds apart. */
function input(n: number): InputRecord[] {
  return validEvents(n, { seed: 11, nowSec: NOW_SEC, spanSec: 2 * 86_400, companies: 3, customers: 50 }).map((line, i) => ({
    value: JSON.stringify({ ...(JSON.parse(line) as object), event_id: `u-${i}` }),
    ingestTimeMs: NOW_SEC * 1000 + i * 5_000,
  }));
}

for (const engine of ['records', 'native'] as const) {
  test(`a group started after the task opened over an empty sink is hydrated with what another owner wrote meanwhile [${engine}]`, { timeout: 60_000 }, async () => {
    const config = testConfig({ state: { engine }, maxEventBytes: 4096 });
    const records = input(600);
    const groupOf = (r: InputRecord): number => {
      const e = JSON.parse(String(r.value)) as { company_id: string; statistic_id: string; customer_id: string };
      return keyGroupOf(routingKey('account', e.company_id, e.statistic_id, e.customer_id), config.keyGroups);
    };
    const groups = [...new Set(records.map(groupOf))].sort((a, b) => a - b);
    const mine = groups.filter((_, i) => i % 2 === 0);
    const moved = groups.filter((_, i) => i % 2 === 1);
    assert.ok(mine.length > 0 && moved.length > 0, `groups ${groups.join(',')}`);
    const ofMoved = records.filter((r) => moved.includes(groupOf(r)));
    const before = ofMoved.slice(0, ofMoved.length / 2);
    const after = ofMoved.slice(ofMoved.length / 2);

    const sinkRoot = tempDir();
    const sink = await LocalSink.open(localPaths(sinkRoot).sink, config.rocksdb, 'account');
    const noDeadLetter = { send: () => Promise.resolve(), close: () => Promise.resolve() };
    const [dirA, dirB] = [tempDir(), tempDir()];
    // This task opens first, over the empty sink, owning `mine`.
    const task = await CountTask.open({ config, dataDir: dirA, source: new ArraySource([...records.filter((r) => mine.includes(groupOf(r))), ...after], [50]), sink, deadLetter: noDeadLetter, keyGroups: mine });
    // Meanwhile another owner counts the first half of `moved` into the same sink.
    const other = await CountTask.open({ config, dataDir: dirB, source: new ArraySource(before, [50]), sink, deadLetter: noDeadLetter, keyGroups: moved });
    await other.run();
    await other.close();
    // Then `moved` comes to this task without its state: its totals come from the sink.
    await task.startGroups(moved);
    await task.run();
    await task.close();
    await sink.close();

    // Counts only: a customer counted by both owners is a unique of both (the markers did not move with the totals).
    const countsOnly = <T extends { uniques?: number }>(rows: T[]): Array<Omit<T, 'uniques'>> => rows.map(({ uniques: _, ...rest }) => rest);
    const expected = countsOnly(referenceRun([...before, ...records.filter((r) => mine.includes(groupOf(r))), ...after], { level: 'account', maxEventBytes: 4096 }).rows);
    assert.deepEqual(countsOnly(await localCounts(sinkRoot, config)), expected);
    for (const d of [sinkRoot, dirA, dirB]) rmSync(d, { recursive: true });
  });
}
