/**
 * Cluster benchmark: one `abacus worker` process on the REAL broker and Cassandra of the test
 * environment (`npm run test-env -- up kafka cassandra`).
 *
 *   npm run build && node dist/bench/cluster.js [--events 200000] [--seconds 30] [--window 1s] [--rate N] [--keyed] [--engine records|native] [--baseline-gc]
 *
 * 1. Saturation. N unique events (2 facets each, 3 granularities: 9 counters per event) are
 *    produced to a 6-partition input topic BEFORE the worker starts, so the worker never waits
 *    for input. From the worker's readiness to the moment every event is counted and flushed:
 *    events/s (wall clock) and events per CPU-second of the worker process (read from its own
 *    process_cpu_seconds metric) — the "per worker core" figure, since a worker is one
 *    JavaScript thread. The worker both routes and counts, as it does in production; with
 *    `--keyed` the events go straight to a topic of one partition per key group
 *    (`kafka.inputKeyed`), so the worker only counts: the difference is what routing costs.
 * 2. Latency. The same worker then gets a steady load of 80 % of the saturation rate for
 *    `--seconds` (`--rate N` sets another steady rate); every 200 ms one probe event with its
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
import { Partitioners } from 'kafkajs';
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
const KEY_GROUPS = 32;

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { events: { type: 'string' }, seconds: { type: 'string' }, window: { type: 'string' }, rate: { type: 'string' }, keyed: { type: 'boolean' }, engine: { type: 'string' }, 'baseline-gc': { type: 'boolean' } } });
  const keyed = values.keyed === true;
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

    // --- 2. latency at 80 % of the saturation rate ------------------------------------------
    const target = values.rate !== undefined ? Number(values.rate) : Math.max(100, Math.round(rate * 0.8));
    const cassandra = new Client({ contactPoints: [env.cassandra], localDataCenter: 'datacenter1', keyspace: KEYSPACE });
    await cassandra.connect();
    const table = defaultTableName(jobIdentity(id));
    const select = `SELECT count FROM ${table} WHERE scope = ? AND statistic_id = 'probe' AND granularity = 'hour' AND facet = '*' AND value = '*' AND bucket = ?`;
    const pending = new Map<number, { sentAt: number; bucket: Date }>();
    const latencies: number[] = [];
    let polling = true;
    let lastSend = Date.now();
    const poller = (async () => {
      while (polling || pending.size > 0) {
        await Promise.all(
          [...pending].map(async ([i, p]) => {
            const rs = await cassandra.execute(select, [`probe-${id}-${i}`, p.bucket], { prepare: true });
            if (rs.rowLength > 0 && pending.delete(i)) latencies.push(Date.now() - p.sentAt);
          }),
        );
        await sleep(20);
        if (!polling && Date.now() - lastSend > 60_000) break;
      }
    })();
    const cpuLoad0 = await worker.metric('process_cpu_seconds_total');
    const rowsLoad0 = await worker.metric('abacus_sink_rows_written_total');
    const loadStart = Date.now();
    const more = validEvents(Math.ceil(target * seconds * 1.1), { seed: 43, nowSec, spanSec: 86400, companies: 20, customers: 20_000 });
    let sent = 0;
    let probe = 0;
    while (Date.now() - loadStart < seconds * 1000) {
      const tick = Date.now();
      const due = Math.floor(((tick - loadStart) / 1000) * target);
      const batch = more.slice(sent, due).map((value, j) => ({ value, partition: partitionOf(value, sent + j) }));
      sent = Math.max(sent, due);
      const probeDue = Math.floor((tick - loadStart) / 200) >= probe;
      const messages = [...batch];
      let probeIndex = -1;
      if (probeDue) {
        probeIndex = probe++;
        const ts = Math.floor(Date.now() / 1000);
        const value = JSON.stringify({ company_id: `probe-${id}-${probeIndex}`, statistic_id: 'probe', customer_id: 'p', timestamp: ts });
        messages.push({ value, partition: partitionOf(value, probeIndex) });
        pending.set(probeIndex, { sentAt: Date.now(), bucket: new Date(Math.floor(ts / 3600) * 3600 * 1000) });
      }
      if (messages.length > 0) await producer.send({ topic, acks: -1, messages });
      lastSend = Date.now();
      await sleep(Math.max(0, 50 - (Date.now() - tick)));
    }
    polling = false;
    await poller;
    const cpuLoad = (await worker.metric('process_cpu_seconds_total')) - cpuLoad0;
    const rowsLoad = (await worker.metric('abacus_sink_rows_written_total')) - rowsLoad0;
    await cassandra.shutdown();
    latencies.sort((a, b) => a - b);
    const pct = (p: number): number => latencies[Math.min(latencies.length - 1, Math.floor((p / 100) * latencies.length))] ?? Number.NaN;
    log(`latency at ${target} events/s for ${seconds} s (${sent} events + ${probe} probes; window ${values.window ?? '1s'}):`);
    log(`  produce -> count visible in Cassandra: p50 ${pct(50)} ms, p99 ${pct(99)} ms, max ${latencies[latencies.length - 1]} ms (${latencies.length}/${probe} probes seen)`);
    log(`  worker CPU ${cpuLoad.toFixed(1)} s -> ${Math.round((sent + probe) / cpuLoad)} events per worker CPU-second at this steady load; ${rowsLoad} rows written`);
    await breakdown(worker);
  } finally {
    await producer.disconnect();
    await worker.stop();
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
