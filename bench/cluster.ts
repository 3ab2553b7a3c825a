/**
 * Cluster benchmark: one `abacus worker` process on the REAL broker and Cassandra of the test
 * environment (`npm run test-env -- up kafka cassandra`).
 *
 *   npm run build && node dist/bench/cluster.js [--events 200000] [--seconds 30] [--window 1s] [--rate N] [--ramp-from 1000] [--step-seconds 10] [--key-groups 32] [--keyed] [--engine records|native] [--baseline-gc]
 *
 * 1. Saturation. N unique events (2 facets each, 3 granularities: 9 counters per event) are
 *    produced to a 6-partition input topic BEFORE the worker starts, so the worker never waits
 *    for input. From the worker's readiness to the moment every event is counted and flushed:
 *    events/s (wall clock) and events per CPU-second of the worker process (read from its own
 *    process_cpu_seconds metric) — the "per worker core" figure, since a worker is one
 *    JavaScript thread. The worker both routes and counts, as it does in production; with
 *    `--keyed` the events go straight to a topic of one partition per key group
 *    (`kafka.inputKeyed`), so the worker only counts: the difference is what routing costs.
 * 2. Sustained saturation (unless `--rate` is given). A backlog is drained in windows of many
 *    seconds' input; a steady stream writes every counter a window touches once per window,
 *    so it saturates lower. Steps of `--step-seconds` at rates from `--ramp-from`, each a
 *    quarter higher, until the records not yet read by the count stage at a step's end exceed
 *    half a second of its input; the last step kept up with is the sustained saturation. Each step prints
 *    the rate this process managed to send, the worker's events per CPU-second and its sink
 *    rows per event.
 * 3. Latency. The same worker then gets a steady load of 80 % of the sustained saturation
 *    (`--rate N` sets another rate) for `--seconds`; every 200 ms one probe event with its
 *    own scope goes in the stream. Its latency is from just before its produce to the first
 *    time its counter row is readable in Cassandra (polled every 20 ms). p50/p99 are over all
 *    probes.
 *
 * Prints the figures; nothing is asserted.
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { Client } from 'cassandra-driver';
import { Partitioners, type Producer } from 'kafkajs';
import { defaultTableName, jobIdentity } from '../common/job-config';
import { keyGroupOf, routingKey } from '../common/keygroups';
import { workerNodeOptions } from '../common/node-options';
import { stringify } from 'yaml';
import { requireTestEnv } from '../test/support/env';
import { validEvents } from '../test/support/events';
import { createTopic, kafkaClient } from '../test/support/kafka';
import { WorkerProcess } from '../test/support/workers';

const KEYSPACE = 'abacus_bench';
const PARTITIONS = 6;
/** A step is kept up with when at most this many seconds of its input wait to be counted at its end. */
const KEPT_UP_BACKLOG_SEC = 0.5;

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { events: { type: 'string' }, seconds: { type: 'string' }, window: { type: 'string' }, rate: { type: 'string' }, 'ramp-from': { type: 'string' }, 'step-seconds': { type: 'string' }, 'key-groups': { type: 'string' }, keyed: { type: 'boolean' }, engine: { type: 'string' }, 'baseline-gc': { type: 'boolean' } } });
  const keyed = values.keyed === true;
  const KEY_GROUPS = Number(values['key-groups'] ?? 32);
  // Unkeyed: spread over the input partitions, as any producer would; keyed: the key group's partition.
  const partitionOf = (value: string, i: number): number => {
    if (!keyed) return i % PARTITIONS;
    const ev = JSON.parse(value) as { company_id: string; statistic_id: string; customer_id: string };
    return keyGroupOf(routingKey('account', ev.company_id, ev.statistic_id, ev.customer_id), KEY_GROUPS);
  };
  const total = Number(values.events ?? 200_000);
  const seconds = Number(values.seconds ?? 30);
  const env = requireTestEnv();
  const id = `bench-${Date.now().toString(36)}`;
  const topic = `${id}-in`;
  const dir = mkdtempSync(join(tmpdir(), 'abacus-bench-'));
  const configPath = join(dir, 'job.yaml');
  writeFileSync(
    configPath,
    stringify({
      name: id,
      level: 'account',
      keyGroups: KEY_GROUPS,
      window: values.window ?? '1s',
      facets: { include: ['campaign', 'device'] },
      ...(values.engine === undefined ? {} : { state: { engine: values.engine } }),
      metrics: { port: 0 },
      kafka: { brokers: [env.kafka], topic, ...(keyed ? { inputKeyed: true } : {}) },
      cassandra: { contactPoints: [env.cassandra], keyspace: KEYSPACE, createSchema: true, consistency: 'ONE' },
    }),
  );
  await createTopic(env.kafka, topic, keyed ? KEY_GROUPS : PARTITIONS);

  // --- 1. saturation ------------------------------------------------------------------------
  const nowSec = Math.floor(Date.now() / 1000);
  const events = validEvents(total, { seed: 42, nowSec, spanSec: 86400, companies: 20, customers: 20_000 });
  const producer = kafkaClient(env.kafka, 'abacus-bench').producer({ createPartitioner: Partitioners.DefaultPartitioner });
  await producer.connect();
  const t0 = Date.now();
  for (let i = 0; i < events.length; i += 2000) {
    await producer.send({ topic, acks: -1, messages: events.slice(i, i + 2000).map((value, j) => ({ value, partition: partitionOf(value, i + j) })) });
  }
  log(`produced ${total} events in ${((Date.now() - t0) / 1000).toFixed(1)} s`);

  // The worker runs with the pod's NODE_OPTIONS (--baseline-gc: without them, to measure what they change).
  const nodeOptions: Record<string, string> = values['baseline-gc'] === true ? {} : { NODE_OPTIONS: workerNodeOptions(values.engine === 'native' ? 'native' : 'records') };
  const worker = new WorkerProcess('bench', ['--config', configPath, '--ordinal', '0', '--replicas', '1', '--data-dir', join(dir, 'data')], join(dir, 'worker.log'), nodeOptions);
  try {
    await worker.waitReady();
    const start = Date.now();
    const cpu0 = await worker.metric('process_cpu_seconds_total');
    let routedAt = 0;
    for (;;) {
      const [routed, counted, flushes] = await Promise.all([
        worker.metric('abacus_route_records_total'),
        worker.metric('abacus_events_counted_total'),
        worker.metric('abacus_window_flush_duration_seconds_count'),
      ]);
      if (routedAt === 0 && routed >= total) routedAt = Date.now();
      if (counted >= total) {
        // Wait for the flush that writes these counts to Cassandra.
        const f0 = flushes;
        while ((await worker.metric('abacus_window_flush_duration_seconds_count')) <= f0) await sleep(50);
        break;
      }
      await sleep(100);
    }
    const elapsed = (Date.now() - start) / 1000;
    const cpu = (await worker.metric('process_cpu_seconds_total')) - cpu0;
    const rate = total / elapsed;
    log(`saturation: ${total} events routed + counted + written in ${elapsed.toFixed(1)} s`);
    if (!keyed) log(`  routing alone finished after ${((routedAt - start) / 1000).toFixed(1)} s`);
    log(`  ${Math.round(rate)} events/s wall clock; worker CPU ${cpu.toFixed(1)} s -> ${Math.round(total / cpu)} events per worker CPU-second`);
    log(`  (${total * 9} counter updates; rows written ${await worker.metric('abacus_sink_rows_written_total')})`);
    await breakdown(worker);

    // --- 2. the sustained saturation: the highest steady rate the worker keeps up with -------
    // The backlog above is drained in windows of many seconds' input, which write each counter
    // once; a steady stream writes every counter its window touches, once per window, so it
    // saturates lower. The latency goal is about that stream: steps of `--step-seconds` at
    // rates rising by a quarter, until the worker's backlog at a step's end (records produced
    // and not yet read by the count stage: a duplicate is read but never counted) is more
    // than KEPT_UP_BACKLOG_SEC of input: a worker that keeps up
    // counts each micro-batch as it arrives, and only a commit held up by the sink (a write
    // slower than the window) lets input pile up.
    const load = new SteadyLoad(producer, topic, partitionOf, nowSec, total);
    let sustained = 0;
    if (values.rate === undefined) {
      const stepSeconds = Number(values['step-seconds'] ?? 10);
      for (let r = Number(values['ramp-from'] ?? 1000); ; r = Math.round(r * 1.25)) {
        const step = await load.run(worker, r, stepSeconds);
        const backlog = load.produced() - (await worker.metric('abacus_events_in_total'));
        const kept = backlog <= step.rate * KEPT_UP_BACKLOG_SEC;
        // This process sends from the same cores: past some rate it cannot produce any faster.
        const producerBound = step.rate < 0.9 * r;
        log(
          `  step ${r} events/s for ${stepSeconds} s: sent ${Math.round(step.rate)}/s, backlog at its end ${backlog} events, worker ${Math.round(step.sent / step.cpu)} events per CPU-second, ` +
            `${(step.rows / step.sent).toFixed(2)} rows per event -> ${!kept ? 'fell behind' : producerBound ? 'kept up, but the producer could not send faster' : 'kept up'}`,
        );
        if (!kept) break;
        sustained = Math.round(step.rate);
        if (producerBound) break;
      }
      log(`sustained saturation: ${sustained} events/s (window ${values.window ?? '1s'})`);
      // Let the backlog of the last step drain before measuring latency.
      while (load.produced() - (await worker.metric('abacus_events_in_total')) > 0) await sleep(200);
    }

    // --- 3. latency at 80 % of the sustained saturation -------------------------------------
    const target = values.rate !== undefined ? Number(values.rate) : Math.max(100, Math.round(sustained * 0.8));
    const cassandra = new Client({ contactPoints: [env.cassandra], localDataCenter: 'datacenter1', keyspace: KEYSPACE });
    await cassandra.connect();
    const probes = new Probes(cassandra, defaultTableName(jobIdentity(id)), id);
    const run = await load.run(worker, target, seconds, probes);
    await probes.drain();
    await cassandra.shutdown();
    const latencies = probes.latencies.sort((a, b) => a - b);
    const pct = (p: number): number => latencies[Math.min(latencies.length - 1, Math.floor((p / 100) * latencies.length))] ?? Number.NaN;
    log(`latency at ${target} events/s for ${seconds} s (${run.sent} events + ${probes.sent} probes; window ${values.window ?? '1s'}):`);
    log(`  produce -> count visible in Cassandra: p50 ${pct(50)} ms, p90 ${pct(90)} ms, p99 ${pct(99)} ms, max ${latencies[latencies.length - 1]} ms (${latencies.length}/${probes.sent} probes seen)`);
    log(`  slowest probes (seconds into the load: ms): ${probes.slowest(5).map(([at, ms]) => `${(at / 1000).toFixed(1)}: ${ms}`).join(', ')}`);
    log(`  worker CPU ${run.cpu.toFixed(1)} s -> ${Math.round((run.sent + probes.sent) / run.cpu)} events per worker CPU-second at this steady load; ${run.rows} rows written`);
    await breakdown(worker);
  } finally {
    await producer.disconnect();
    await worker.stop();
  }
}

/** A steady stream of generated events at a given rate, sent every 50 ms, with probe events mixed in when asked. */
class SteadyLoad {
  private sent = 0;
  private seed = 43;

  constructor(
    private readonly producer: Producer,
    private readonly topic: string,
    private readonly partitionOf: (value: string, i: number) => number,
    private readonly nowSec: number,
    private readonly before: number,
  ) {}

  /** Events sent so far, the saturation backlog (`before`) included. */
  produced(): number {
    return this.before + this.sent;
  }

  /** Sends `rate` events/s for `seconds`; returns what was sent and the worker's CPU and rows meanwhile. */
  async run(worker: WorkerProcess, rate: number, seconds: number, probes?: Probes): Promise<{ sent: number; rate: number; cpu: number; rows: number }> {
    const cpu0 = await worker.metric('process_cpu_seconds_total');
    const rows0 = await worker.metric('abacus_sink_rows_written_total');
    const events = validEvents(Math.ceil(rate * seconds * 1.1), { seed: this.seed++, nowSec: this.nowSec, spanSec: 86400, companies: 20, customers: 20_000 });
    const start = Date.now();
    let sent = 0;
    while (Date.now() - start < seconds * 1000) {
      const tick = Date.now();
      const due = Math.floor(((tick - start) / 1000) * rate);
      const messages = events.slice(sent, due).map((value, j) => ({ value, partition: this.partitionOf(value, this.sent + j) }));
      sent = Math.max(sent, due);
      const probe = probes?.due(tick - start);
      if (probe !== undefined) messages.push({ value: probe, partition: this.partitionOf(probe, this.sent) });
      this.sent += messages.length;
      // At most 2,000 a request: a producer that fell behind must not exceed the broker's request size.
      for (let i = 0; i < messages.length; i += 2000) await this.producer.send({ topic: this.topic, acks: -1, messages: messages.slice(i, i + 2000) });
      probes?.sentAt(Date.now());
      await sleep(Math.max(0, 50 - (Date.now() - tick)));
    }
    const elapsed = (Date.now() - start) / 1000;
    return { sent, rate: sent / elapsed, cpu: (await worker.metric('process_cpu_seconds_total')) - cpu0, rows: (await worker.metric('abacus_sink_rows_written_total')) - rows0 };
  }
}

/**
 * Probe events, one every 200 ms, each with a scope of its own; its latency runs from just
 * before its produce to the first time its row is readable in Cassandra (polled every 20 ms).
 */
class Probes {
  /** [ms into the load when sent, latency ms] of every probe seen. */
  private readonly seen: [number, number][] = [];
  private readonly startedAt = Date.now();
  sent = 0;
  private readonly pending = new Map<number, { sentAt: number; bucket: Date }>();
  private readonly select: string;
  private polling = true;
  private lastSend = Date.now();
  private readonly poller: Promise<void>;

  constructor(
    private readonly cassandra: Client,
    table: string,
    private readonly id: string,
  ) {
    this.select = `SELECT count FROM ${table} WHERE scope = ? AND statistic_id = 'probe' AND granularity = 'hour' AND facet = '*' AND value = '*' AND bucket = ?`;
    this.poller = this.poll();
  }

  /** The next probe's event when one is due at `elapsedMs` into the load, else undefined. */
  due(elapsedMs: number): string | undefined {
    if (Math.floor(elapsedMs / 200) < this.sent) return undefined;
    const i = this.sent++;
    const ts = Math.floor(Date.now() / 1000);
    this.pending.set(i, { sentAt: Date.now(), bucket: new Date(Math.floor(ts / 3600) * 3600 * 1000) });
    return JSON.stringify({ company_id: `probe-${this.id}-${i}`, statistic_id: 'probe', customer_id: 'p', timestamp: ts });
  }

  /** The latency of every probe seen, in ms. */
  get latencies(): number[] {
    return this.seen.map(([, ms]) => ms);
  }

  /** The `n` slowest probes: when each was sent (ms into the load) and its latency. */
  slowest(n: number): [number, number][] {
    return [...this.seen].sort((a, b) => b[1] - a[1]).slice(0, n);
  }

  sentAt(ms: number): void {
    this.lastSend = ms;
  }

  /** Stops probing once every probe was seen (or a minute after the last send). */
  async drain(): Promise<void> {
    this.polling = false;
    await this.poller;
  }

  private async poll(): Promise<void> {
    while (this.polling || this.pending.size > 0) {
      await Promise.all(
        [...this.pending].map(async ([i, p]) => {
          const rs = await this.cassandra.execute(this.select, [`probe-${this.id}-${i}`, p.bucket], { prepare: true });
          if (rs.rowLength > 0 && this.pending.delete(i)) this.seen.push([p.sentAt - this.startedAt, Date.now() - p.sentAt]);
        }),
      );
      await sleep(20);
      if (!this.polling && Date.now() - this.lastSend > 60_000) break;
    }
  }
}

/** Where the worker's time went (cumulative since it started). */
async function breakdown(worker: WorkerProcess): Promise<void> {
  const m = async (name: string, labels = ''): Promise<number> => worker.metric(name, labels);
  const flushes = await m('abacus_window_flush_duration_seconds_count');
  const flushSec = await m('abacus_window_flush_duration_seconds_sum');
  const writes = await m('abacus_sink_write_duration_seconds_count');
  const writeSec = await m('abacus_sink_write_duration_seconds_sum');
  log(
    `  worker: ${flushes} window flushes, ${flushSec.toFixed(1)} s in flushes (of which ${writeSec.toFixed(1)} s in ${writes} Cassandra writes); ` +
      `hydration reads found ${await m('abacus_sink_hydration_reads_total', 'result="found"')}, absent ${await m('abacus_sink_hydration_reads_total', 'result="absent"')}; ` +
      `backpressure pauses ${await m('abacus_backpressure_pauses_total')}`,
  );
}

function log(line: string): void {
  process.stdout.write(`${line}\n`);
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

main().catch((err: unknown) => {
  process.stderr.write(`${(err as Error).stack ?? String(err)}\n`);
  process.exit(1);
});
