/**
 * Rescale benchmark: a job on the REAL Kafka, Cassandra, S3 and kube-apiserver of the test
 * environment (`npm run test-env -- up kafka cassandra s3 kube`), its workers as processes
 * that follow the StatefulSet (test/support/process-kubelet.ts), scaled 2 → 3 → 2 with
 * `kubectl scale` while input flows at a steady rate.
 *
 *   npm run build && node dist/bench/rescale.js [--key-groups 32] [--events 50000] [--rate 300]
 *     [--customers 5000] [--extra-facets 0 --facet-values 8 --facet-bytes 100] [--span-hours 72]
 *     [--steady-extra-facets N (default: --extra-facets)] [--cycles 1]
 *
 * 1. `--events` unique events are produced and counted first: that is the state. Extra
 *    facets with long values make each event add kilobytes of uniqueness markers, so a
 *    state of gigabytes is built from a few hundred thousand events (docs/performance.md).
 * 2. Once each worker has committed two checkpoints since (so one covers the whole state,
 *    as in a job that has been running), a steady `--rate` events/s flows while the job goes
 *    2 → 3 and back to 2.
 * Per step it prints: key groups moved / total; bytes of the moved groups' final checkpoints
 * against the workers' state on disk; the pause of every moved group (old owner's stop → new
 * owner's start, from the operator's "key group moved" log) as p50/p99/max, split into its
 * steps (flush, checkpoint, handoff, restore, start: see moveTimeline in common/handover.ts); and for the
 * groups that did NOT move, records consumed per second during the hand-over against the
 * 10 s before it (keyed-topic end offsets minus the owners' `abacus_input_lag_records`).
 * Nothing is asserted.
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { ownerMap } from '../common/assignment';
import { validEvents } from '../test/support/events';
import { kafkaClient, produce } from '../test/support/kafka';
import { percentiles, RescaleCluster } from '../test/support/rescale-cluster';
import type { WorkerProcess } from '../test/support/workers';

const { values } = parseArgs({
  options: Object.fromEntries(['key-groups', 'events', 'rate', 'customers', 'extra-facets', 'steady-extra-facets', 'facet-values', 'facet-bytes', 'span-hours', 'cycles'].map((o) => [o, { type: 'string' as const }])),
});
const K = Number(values['key-groups'] ?? 32);
const EVENTS = Number(values.events ?? 50_000);
const RATE = Number(values.rate ?? 300);
/** 2 → 3 → 2 this many times: more moves to take percentiles over. */
const CYCLES = Number(values.cycles ?? 1);
const EXTRA_FACETS = Number(values['extra-facets'] ?? 0);
const STEADY_EXTRA_FACETS = Number(values['steady-extra-facets'] ?? EXTRA_FACETS);
const extraFacets = (count: number) => (count > 0 ? { extraFacets: { count, values: Number(values['facet-values'] ?? 8), valueBytes: Number(values['facet-bytes'] ?? 100) } } : {});
const BASE_SHAPE = { customers: Number(values.customers ?? 5000), spanSec: Number(values['span-hours'] ?? 72) * 3600 };
/** What the events that build the state look like. */
const SHAPE = { ...BASE_SHAPE, ...extraFacets(EXTRA_FACETS) };
/** What the steady input during the hand-overs looks like: by default the same; `--steady-extra-facets 0` makes it normal events over a large state. */
const STEADY_SHAPE = { ...BASE_SHAPE, ...extraFacets(STEADY_EXTRA_FACETS) };
/** Events produced per call while the state is built (keeps the generated text small). */
const PRODUCE_CHUNK = 20_000;
const cluster = new RescaleCluster();

/** Records consumed so far per keyed partition: end offset minus the lag its owner reports. */
async function consumedPerPartition(topic: string, workers: Iterable<WorkerProcess>): Promise<Map<number, number>> {
  const admin = kafkaClient(cluster.env.kafka, 'abacus-bench-admin').admin();
  await admin.connect();
  const offsets = await admin.fetchTopicOffsets(topic);
  await admin.disconnect();
  const lag = new Map<number, number>();
  for (const w of workers) {
    const text = await w.metrics().catch(() => '');
    for (const m of text.matchAll(/^abacus_input_lag_records\{partition="kg:(\d+)"\} (\S+)$/gm)) lag.set(Number(m[1]), Number(m[2]));
  }
  return new Map(offsets.map((o) => [o.partition, Number(o.high) - (lag.get(o.partition) ?? Number(o.high))]));
}

const sumOver = (m: ReadonlyMap<number, number>, groups: readonly number[]) => groups.reduce((n, g) => n + (m.get(g) ?? 0), 0);

async function main(): Promise<void> {
  const { job, topic, kubelet } = await cluster.setUpJob('bench', 2, K, '10s');
  const keyed = `${cluster.namespace}.${job}-keyed`; // the operator prefixes job-named topics with the namespace
  const workers = () => kubelet.workers.values();
  const nowSec = Math.floor(Date.now() / 1000);
  const buildStarted = Date.now();
  for (let done = 0, chunk = 0; done < EVENTS; done += PRODUCE_CHUNK, chunk++) {
    const n = Math.min(PRODUCE_CHUNK, EVENTS - done);
    await produce(cluster.env.kafka, topic, validEvents(n, { seed: 1000 + chunk, nowSec, ...SHAPE }), { partitions: 4, seed: 1000 + chunk });
    console.log(`# producing the state: ${done + n}/${EVENTS} events`);
  }
  for (let i = 0, last = 0; i < 7200; i++) {
    const c = await consumedPerPartition(keyed, workers());
    const consumed = [...c.values()].reduce((n, v) => n + v, 0);
    if (consumed >= EVENTS) break;
    if (Date.now() - last > 30_000) {
      last = Date.now();
      console.log(`# counting the state: ${consumed}/${EVENTS} events after ${((Date.now() - buildStarted) / 1000).toFixed(0)} s`);
    }
    await new Promise((r) => setTimeout(r, 1000));
  }
  // Steady state before any move: each worker commits two checkpoints after the build, so
  // the second started after the last built record was counted and covers the whole state
  // (its first checkpoints are bases: the pre-copy needs them, as in a job that has run a while).
  const builtAt = Date.now();
  const committedSince = logOffsets(kubelet.dir);
  for (let last = 0; ; ) {
    const counts = checkpointsCommittedSince(kubelet.dir, committedSince);
    if (counts.length >= 2 && counts.every((n) => n >= 2)) break;
    if (Date.now() - last > 30_000) {
      last = Date.now();
      console.log(`# waiting for checkpoints of the whole state: ${counts.join(', ')} committed per worker since the build (2 each needed)`);
    }
    await new Promise((r) => setTimeout(r, 1000));
  }
  console.log(`# checkpoints caught up with the state ${((Date.now() - builtAt) / 1000).toFixed(0)} s after the build; ${checkpointFigures(kubelet.dir)}`);
  let stateBytes = 0;
  for (const w of workers()) stateBytes += await w.metric('abacus_state_size_bytes');
  console.log(
    `# ${K} key groups; state: ${EVENTS} events counted, ${(stateBytes / 1e6).toFixed(1)} MB on disk over 2 workers, built in ${((Date.now() - buildStarted) / 1000).toFixed(0)} s; steady input ${RATE} events/s`,
  );

  // Steady input until the end, in slices every 250 ms.
  let flowing = true;
  const flow = (async () => {
    for (let seed = 2; flowing; seed++) {
      await produce(cluster.env.kafka, topic, validEvents(Math.max(1, Math.round(RATE / 4)), { seed, nowSec, ...STEADY_SHAPE }), { partitions: 4, seed });
      await new Promise((r) => setTimeout(r, 250));
    }
  })();

  const allMoves: Array<ReturnType<typeof RescaleCluster.moves>[number]> = [];
  for (const [from, to] of Array.from({ length: CYCLES }, () => [[2, 3], [3, 2]] as const).flat()) {
    const owners = ownerMap(cluster.publishedAssignment(job)!);
    const logged = RescaleCluster.moves(cluster.operator).length;
    const a = await consumedPerPartition(keyed, workers());
    const ta = Date.now();
    await new Promise((r) => setTimeout(r, 10_000));
    const b = await consumedPerPartition(keyed, workers());
    const tb = Date.now();
    cluster.scale(job, to);
    const ms = await cluster.settled(job, to, 900_000);
    const c = await consumedPerPartition(keyed, workers());
    const tc = Date.now();
    const after = ownerMap(cluster.publishedAssignment(job)!);
    const kept = owners.map((o, g) => (o === after[g] ? g : -1)).filter((g) => g >= 0);
    const moves = RescaleCluster.moves(cluster.operator).slice(logged);
    allMoves.push(...moves);
    const p = percentiles(moves.map((m) => m.pauseMs));
    const bytes = moves.reduce((n, m) => n + m.bytes, 0);
    const before = (sumOver(b, kept) - sumOver(a, kept)) / ((tb - ta) / 1000);
    const during = (sumOver(c, kept) - sumOver(b, kept)) / ((tc - tb) / 1000);
    console.log(
      `${from} → ${to}: hand-over ${(ms / 1000).toFixed(1)} s; moved ${moves.length}/${K} key groups; ` +
        `${bytes} bytes in the moved groups' final checkpoints (state on disk ${stateBytes} bytes); ` +
        `pause per moved group p50 ${p.p50} ms, p99 ${p.p99} ms, max ${p.max} ms; ` +
        `the ${kept.length} groups that stayed: ${before.toFixed(0)} records/s before, ${during.toFixed(0)} records/s during`,
    );
    console.log(`  where the pause went: ${RescaleCluster.stepSummary(moves)}; load average ${loadavg().map((l) => l.toFixed(1)).join(' ')}`);
  }
  flowing = false;
  await flow;
  if (CYCLES > 1) {
    const p = percentiles(allMoves.map((m) => m.pauseMs));
    console.log(`all ${allMoves.length} moves: pause p50 ${p.p50} ms, p99 ${p.p99} ms, max ${p.max} ms; where it went: ${RescaleCluster.stepSummary(allMoves)}`);
  }
  console.log(checkpointFigures(kubelet.dir));
}

const workerLogs = (logDir: string): string[] => readdirSync(logDir).filter((f) => /^worker-\d+\.log$/.test(f)).sort();

/** Bytes of every worker log now, to read only what is logged afterwards. */
function logOffsets(logDir: string): Map<string, number> {
  return new Map(workerLogs(logDir).map((f) => [f, statSync(join(logDir, f)).size]));
}

/** Per worker log (in name order), checkpoints committed after `offsets`. */
function checkpointsCommittedSince(logDir: string, offsets: ReadonlyMap<string, number>): number[] {
  return workerLogs(logDir).map((f) => {
    const text = readFileSync(join(logDir, f)).subarray(offsets.get(f) ?? 0).toString('utf8');
    return [...text.matchAll(/checkpoint \S+ \(periodic\) committed/g)].length;
  });
}

/** Full and incremental checkpoints of the run, from the workers' "checkpoint … committed" log lines. */
function checkpointFigures(logDir: string): string {
  const full: Array<{ bytes: number; ms: number }> = [];
  const incremental: Array<{ bytes: number; ms: number }> = [];
  for (const file of readdirSync(logDir).filter((f) => f.endsWith('.log'))) {
    const text = readFileSync(join(logDir, file), 'utf8');
    for (const m of text.matchAll(/checkpoint \S+ \((\S+)\) committed: (\d+) base, (\d+) delta, \d+ unchanged groups; (\d+) bytes in (\d+) ms/g)) {
      (Number(m[2]) > 0 ? full : incremental).push({ bytes: Number(m[4]), ms: Number(m[5]) });
    }
  }
  const describe = (name: string, list: ReadonlyArray<{ bytes: number; ms: number }>) => {
    const b = percentiles(list.map((c) => c.bytes));
    const d = percentiles(list.map((c) => c.ms));
    return `${list.length} ${name}: size p50 ${(b.p50 / 1e6).toFixed(1)} MB, max ${(b.max / 1e6).toFixed(1)} MB; duration p50 ${d.p50} ms, p99 ${d.p99} ms, max ${d.max} ms`;
  };
  return `checkpoints: ${describe('with a new base (full for those groups)', full)}; ${describe('incremental (deltas only)', incremental)}`;
}

main()
  .catch((err: unknown) => {
    console.error(err);
    process.exitCode = 1;
  })
  .finally(() => cluster.close());
