/**
 * The worker on the REAL Kafka broker and Cassandra of the test environment
 * (`npm run test-env -- up kafka cassandra`); worker-cluster-kafka4.test.ts runs the same
 * scenarios against Kafka 4.x (`up kafka4 cassandra`). Every scenario ends with the Cassandra table
 * equal to test/support/reference.ts — an independent reading of the counting contract —
 * computed over exactly the records the test produced (with the ingest times it stamped).
 *
 * Input: valid events with facets of every kind, byte-identical copies of ~25% of them
 * spread over the 6 partitions of the input topic, and one malformed record of each kind.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { after, before, test } from 'node:test';
import { stringify } from 'yaml';
import { keyGroupOf } from '../../common/keygroups';
import { defaultTableName, loadJobConfig } from '../../common/job-config';
import { routeValidator, runCountsFromCassandra } from '../../worker/runtime/worker-process';
import { dropKeyspace, readCounts } from '../support/cassandra';
import { rmSync } from 'node:fs';
import { S3ObjectStore } from '../../worker/checkpoint/s3-object-store';
import { readCatalog } from '../../worker/checkpoint/restore';
import { requireTestEnv, requireTestS3, selectedKafkaServer, serverControl, TestEnv } from '../support/env';
import { malformedEvents, testInput, validEvents } from '../support/events';
import { createTopic, kafkaClient, produce, Produced, readTopic } from '../support/kafka';
import { referenceRun, RefRow, sortRows } from '../support/reference';
import { WorkerProcess } from '../support/workers';

// One keyspace per broker: the Kafka 4 run (worker-cluster-kafka4.test.ts) must not drop this one's tables.
const KEYSPACE = selectedKafkaServer() === 'kafka4' ? 'abacus_it_worker_k4' : 'abacus_it_worker';
const INPUT_PARTITIONS = 6;
const KEY_GROUPS = 12;
const MAX_EVENT_BYTES = 2048;
const MALFORMED = malformedEvents(MAX_EVENT_BYTES, 0).length;

/** The scenarios that move state (restart, restore) run on both engines (docs/adr/0007-hot-path.md). */
const ENGINES = ['records', 'native'] as const;

function engineState(engine: (typeof ENGINES)[number]): Record<string, unknown> {
  return { state: { cacheEntries: 100_000, engine } };
}

let env: TestEnv;
const running = new Set<WorkerProcess>();
const runId = Date.now().toString(36);
const scratch = mkdtempSync(join(tmpdir(), 'abacus-it-worker-'));

before(async () => {
  env = requireTestEnv(); // fails loudly when the servers are not up
  await dropKeyspace(env.cassandra, KEYSPACE);
});

after(async () => {
  await Promise.all([...running].map((w) => w.kill()));
});

interface Job {
  readonly name: string;
  readonly level: 'account' | 'customer';
  readonly topic: string;
  readonly configPath: string;
  readonly table: string;
  readonly deadLetterTopic: string;
}

function job(name: string, level: 'account' | 'customer', topic: string, mode: 'final' | 'delta' = 'final', extra: Record<string, unknown> = {}): Job {
  const fullName = `${name}-${runId}`;
  const configPath = join(scratch, `${fullName}.yaml`);
  writeFileSync(
    configPath,
    stringify({
      name: fullName,
      level,
      keyGroups: KEY_GROUPS,
      window: '500ms',
      maxEventBytes: MAX_EVENT_BYTES,
      state: { cacheEntries: 100_000 },
      rocksdb: { blockCacheSize: '16Mi', writeBufferSize: '8Mi' },
      metrics: { port: 0 },
      kafka: { brokers: [env.kafka], topic },
      cassandra: { contactPoints: [env.cassandra], keyspace: KEYSPACE, createSchema: true, mode },
      ...extra,
    }),
  );
  return { name: fullName, level, topic, configPath, table: defaultTableName(fullName), deadLetterTopic: `${fullName}-dead-letter` };
}

function startWorker(j: Job, ordinal: number, replicas: number, assignmentFile?: string): WorkerProcess {
  const dataDir = join(scratch, `${j.name}-data-${ordinal}`);
  const placement = assignmentFile === undefined ? ['--replicas', String(replicas)] : ['--assignment', assignmentFile];
  const w = new WorkerProcess(`${j.name}#${ordinal}`, ['--config', j.configPath, '--ordinal', String(ordinal), ...placement, '--data-dir', dataDir], join(scratch, `${j.name}-${ordinal}.log`));
  running.add(w);
  void w.exited.then(() => running.delete(w));
  return w;
}

async function startWorkers(j: Job, replicas: number, assignmentFile?: string): Promise<WorkerProcess[]> {
  const ws = Array.from({ length: replicas }, (_, i) => startWorker(j, i, replicas, assignmentFile));
  await Promise.all(ws.map((w) => w.waitReady()));
  return ws;
}

function expected(j: Job, produced: ReadonlyArray<Produced<string | Buffer>>): ReturnType<typeof referenceRun> {
  return referenceRun(produced, { level: j.level, maxEventBytes: MAX_EVENT_BYTES });
}

/** Polls Cassandra until it equals the reference (or the time is up, then shows the difference). */
async function assertCountsConverge(j: Job, want: RefRow[], timeoutMs = 240_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let got: RefRow[] = [];
  while (Date.now() < deadline) {
    try {
      got = await readCounts(env.cassandra, KEYSPACE, j.table, j.level);
      if (JSON.stringify(got) === JSON.stringify(want)) return;
    } catch {
      // Cassandra may be restarting in the fault scenarios
    }
    await new Promise((r) => setTimeout(r, 2000));
  }
  assert.deepEqual(diffSummary(got, want), { missing: [], unexpected: [], rows: want.length }, `${j.name}: Cassandra did not converge to the reference counts`);
}

function diffSummary(got: RefRow[], want: RefRow[]): { missing: string[]; unexpected: string[]; rows: number } {
  const g = new Set(got.map((r) => JSON.stringify(r)));
  const w = new Set(want.map((r) => JSON.stringify(r)));
  return {
    missing: [...w].filter((x) => !g.has(x)).slice(0, 5),
    unexpected: [...g].filter((x) => !w.has(x)).slice(0, 5),
    rows: got.length,
  };
}

async function assertDeadLetters(j: Job, malformedProduced: readonly string[]): Promise<void> {
  const want = new Set(malformedProduced);
  const letters = await readTopic(env.kafka, j.deadLetterTopic, (seen) => new Set(seen.map((l) => l.value)).size >= want.size, 60_000);
  // At-least-once routing may repeat a dead letter after a crash, never lose one.
  assert.deepEqual(new Set(letters.map((l) => l.value)), want, 'the dead-letter topic holds exactly the malformed records');
  for (const l of letters) {
    assert.ok((l.headers['abacus-reason'] ?? '') !== '', 'each dead letter says why');
    assert.equal(l.headers['abacus-origin-topic'], j.topic);
    assert.match(l.headers['abacus-origin-partition'] ?? '', /^[0-5]$/);
    assert.match(l.headers['abacus-origin-offset'] ?? '', /^\d+$/);
  }
}

function inputFor(seed: number, valid: number): string[] {
  return testInput({ seed, valid, dupRate: 0.25, maxEventBytes: MAX_EVENT_BYTES, nowSec: Math.floor(Date.now() / 1000) - 60, spanSec: 2 * 86400 });
}

async function newTopic(name: string): Promise<string> {
  const topic = `${name}-${runId}-in`;
  await createTopic(env.kafka, topic, INPUT_PARTITIONS);
  return topic;
}

async function waitFor(what: string, cond: () => Promise<boolean>, timeoutMs = 120_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await cond().catch(() => false)) return;
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error(`timed out waiting for ${what}`);
}

async function stopAll(ws: WorkerProcess[]): Promise<void> {
  const codes = await Promise.all(ws.map((w) => w.stop()));
  assert.deepEqual(codes, ws.map(() => 0), 'workers exit 0 after SIGTERM');
}

test('one worker: duplicates over 6 partitions, malformed events to the dead-letter topic, counts CLI and query API', { timeout: 420_000 }, async () => {
  const topic = await newTopic('one');
  const j = job('one', 'account', topic);
  const [w] = await startWorkers(j, 1);
  const input = inputFor(1, 4000);
  const produced = await produce(env.kafka, topic, input, { partitions: INPUT_PARTITIONS, seed: 11 });
  const ref = expected(j, produced);
  assert.equal(ref.invalid.length, MALFORMED);
  assert.ok(ref.duplicates > 500, 'the input really has duplicates');
  await assertCountsConverge(j, ref.rows);
  await assertDeadLetters(j, ref.invalid.map((i) => produced[i.index]!.value));

  // Metrics: routing and counting throughput, invalid records.
  assert.equal(await w!.metric('abacus_route_records_total', 'outcome="invalid"'), MALFORMED);
  assert.equal(await w!.metric('abacus_events_counted_total'), ref.counted);
  assert.ok((await w!.metric('abacus_sink_write_duration_seconds_count')) > 0);

  // `abacus counts` prints the same rows as JSON lines.
  const lines: string[] = [];
  const out = new Writable({
    write(chunk: Buffer, _enc, cb) {
      lines.push(...chunk.toString('utf8').split('\n').filter((l) => l !== ''));
      cb();
    },
  });
  assert.equal(await runCountsFromCassandra(['--cassandra', env.cassandra, '--keyspace', KEYSPACE, '--job', j.name], out), 0);
  const printed = lines.map((l) => JSON.parse(l) as RefRow);
  assert.deepEqual(sortRows(printed), ref.rows);

  // The query API returns a counter's series from Cassandra.
  const sample = ref.rows.find((r) => r.granularity === 'hour' && r.facet === 'campaign')!;
  const series = ref.rows.filter((r) => r.scope === sample.scope && r.statistic_id === sample.statistic_id && r.granularity === 'hour' && r.facet === sample.facet && r.value === sample.value);
  const url = `http://127.0.0.1:${w!.port}/v1/series?scope=${encodeURIComponent(sample.scope)}&statistic=${encodeURIComponent(sample.statistic_id)}&granularity=hour&facet=${encodeURIComponent(sample.facet)}&value=${encodeURIComponent(sample.value)}`;
  const body = (await (await fetch(url)).json()) as { points: Array<{ bucket: string; count: number; uniques: number }> };
  assert.deepEqual(body.points, series.map((r) => ({ bucket: r.bucket, count: r.count, uniques: r.uniques })));

  await stopAll([w!]);
});

test('records that are not UTF-8 go to the dead-letter topic byte for byte with their reason; the valid ones count exactly (issue 11 #2)', { timeout: 300_000 }, async () => {
  const topic = await newTopic('utf8');
  const j = job('utf8', 'account', topic);
  const [w] = await startWorkers(j, 1);
  const nowSec = Math.floor(Date.now() / 1000) - 60;
  // The customers b\xff and b\xfe would both be "b\ufffd" after a lenient decode: one customer.
  const withBytes = (customer: Buffer, eventId: string): Buffer =>
    Buffer.concat([Buffer.from(`{"company_id":"company-0","statistic_id":"email open","timestamp":${nowSec},"event_id":"${eventId}","customer_id":"b`), customer, Buffer.from('","campaign":"utf8"}')]);
  const notUtf8 = [[0xff], [0xfe], [0xe2, 0x82], [0xed, 0xa0, 0x80], [0xc0, 0xaf], [0xf4, 0x90, 0x80, 0x80], [0x80]].map((bytes, i) => withBytes(Buffer.from(bytes), `bad-${i}`));
  const utf8 = [withBytes(Buffer.from('\u00ff'), 'good-0'), withBytes(Buffer.from('\u00fe'), 'good-1'), withBytes(Buffer.from('é😀'), 'good-2')];
  const input: Buffer[] = [...validEvents(400, { seed: 8, nowSec, spanSec: 86400 }).map((e) => Buffer.from(e)), ...notUtf8, ...utf8];
  const produced = await produce(env.kafka, topic, input, { partitions: INPUT_PARTITIONS, seed: 8 });
  const ref = expected(j, produced);
  assert.deepEqual(
    ref.invalid.map((i) => produced[i.index]!.value),
    notUtf8,
    'the reference calls exactly the non-UTF-8 records invalid',
  );
  await assertCountsConverge(j, ref.rows);
  const utf8Campaign = ref.rows.find((r) => r.granularity === 'hour' && r.facet === 'campaign' && r.value === 'utf8');
  assert.deepEqual([utf8Campaign?.count, utf8Campaign?.uniques], [3, 3], 'bÿ, bþ and bé😀 are three customers');

  const letters = await readTopic(env.kafka, j.deadLetterTopic, (seen) => new Set(seen.map((l) => l.bytes.toString('base64'))).size >= notUtf8.length, 60_000);
  assert.deepEqual(new Set(letters.map((l) => l.bytes.toString('base64'))), new Set(notUtf8.map((b) => b.toString('base64'))), 'the dead-letter topic holds exactly the non-UTF-8 records, byte for byte');
  for (const l of letters) {
    assert.match(l.headers['abacus-reason'] ?? '', /^invalid_utf8: event is not valid UTF-8/);
    assert.equal(l.headers['abacus-origin-topic'], j.topic);
  }
  assert.equal(await w!.metric('abacus_route_records_total', 'outcome="invalid"'), notUtf8.length);
  await stopAll([w!]);
});

test('input already keyed (kafka.inputKeyed): no route stage, the count stage reads the input topic; exact counts', { timeout: 300_000 }, async () => {
  // A producer that keys its records itself: the partition is the event's key group (the
  // engine's parser and hash, as a keyed producer must use); what does not parse goes to 0.
  const topic = `keyed-${runId}-in`;
  await createTopic(env.kafka, topic, KEY_GROUPS);
  const j = job('keyed', 'account', topic, 'final', { kafka: { brokers: [env.kafka], topic, inputKeyed: true } });
  const validate = routeValidator(loadJobConfig(j.configPath));
  const [w] = await startWorkers(j, 1);
  const producer = kafkaClient(env.kafka, 'abacus-test-keyed').producer({ allowAutoTopicCreation: false });
  await producer.connect();
  const produced: Array<Produced<string>> = [];
  try {
    const input = inputFor(5, 2000);
    for (let i = 0; i < input.length; i += 500) {
      const now = Date.now();
      const chunk = input.slice(i, i + 500).map((value) => {
        const v = validate(Buffer.from(value));
        return { value, ingestTimeMs: now, partition: v.ok ? keyGroupOf(v.routingKey, KEY_GROUPS) : 0 };
      });
      await producer.send({ topic, acks: -1, messages: chunk.map((c) => ({ value: c.value, partition: c.partition, timestamp: String(c.ingestTimeMs) })) });
      produced.push(...chunk);
    }
  } finally {
    await producer.disconnect();
  }
  const ref = expected(j, produced);
  assert.ok(ref.duplicates > 200, 'the input really has duplicates');
  await assertCountsConverge(j, ref.rows);
  assert.equal(await w!.metric('abacus_events_counted_total'), ref.counted);
  assert.equal(await w!.metric('abacus_source_records_total'), produced.length, 'every input record was read once, straight from the input topic');
  await stopAll([w!]);
});

test('two workers, key groups from an (uneven) assignment file', { timeout: 420_000 }, async () => {
  const topic = await newTopic('two');
  const j = job('two', 'account', topic);
  // The operator's assignment document: ordinal 0 owns 0-2 and 9-11, ordinal 1 owns 3-8.
  const assignmentFile = join(scratch, `${j.name}-assignment.json`);
  writeFileSync(
    assignmentFile,
    JSON.stringify({
      keyGroups: KEY_GROUPS,
      generation: 3,
      workers: [
        { ordinal: 0, ranges: [{ start: 0, end: 2 }, { start: 9, end: 11 }] },
        { ordinal: 1, ranges: [{ start: 3, end: 8 }] },
      ],
    }),
  );
  const ws = await startWorkers(j, 2, assignmentFile);
  const produced = await produce(env.kafka, topic, inputFor(2, 5000), { partitions: INPUT_PARTITIONS, seed: 12 });
  const ref = expected(j, produced);
  await assertCountsConverge(j, ref.rows);
  await assertDeadLetters(j, ref.invalid.map((i) => produced[i.index]!.value));
  const counted = await Promise.all(ws.map((w) => w.metric('abacus_events_counted_total')));
  assert.ok(counted.every((c) => c > 0), `both workers counted (${counted.join(', ')})`);
  await stopAll(ws);
});

for (const engine of ENGINES) {
  test(`three workers, one SIGKILLed mid-stream and restarted [${engine}]`, { timeout: 480_000 }, async () => {
    const topic = await newTopic(`kill-${engine}`);
    const j = job(`kill-${engine}`, 'account', topic, 'final', engineState(engine));
    const ws = await startWorkers(j, 3);
    const input = inputFor(3, 9000);
    const third = Math.floor(input.length / 3);
    const produced: Produced[] = [];
    produced.push(...(await produce(env.kafka, topic, input.slice(0, third), { partitions: INPUT_PARTITIONS, seed: 13, ratePerSec: 3000 })));
    // Mid-stream: the victim has counted something but the stream goes on.
    await waitFor('worker 1 to count', async () => (await ws[1]!.metric('abacus_events_counted_total')) > 0);
    const producing = produce(env.kafka, topic, input.slice(third, 2 * third), { partitions: INPUT_PARTITIONS, seed: 14, ratePerSec: 3000 });
    await new Promise((r) => setTimeout(r, 500));
    await ws[1]!.kill();
    produced.push(...(await producing));
    const restarted = startWorker(j, 1, 3);
    await restarted.waitReady();
    produced.push(...(await produce(env.kafka, topic, input.slice(2 * third), { partitions: INPUT_PARTITIONS, seed: 15, ratePerSec: 3000 })));
    const ref = expected(j, produced);
    await assertCountsConverge(j, ref.rows);
    await assertDeadLetters(j, ref.invalid.map((i) => produced[i.index]!.value));
    await stopAll([ws[0]!, restarted, ws[2]!]);
  });
}


test('Cassandra stopped for 20 s mid-stream', { timeout: 600_000 }, async () => {
  const topic = await newTopic('cass');
  const j = job('cass', 'account', topic);
  const ws = await startWorkers(j, 2);
  const input = inputFor(4, 6000);
  const half = Math.floor(input.length / 2);
  const produced: Produced[] = [];
  produced.push(...(await produce(env.kafka, topic, input.slice(0, half), { partitions: INPUT_PARTITIONS, seed: 16, ratePerSec: 3000 })));
  let retried: number[] = [];
  await serverControl('stop', 'cassandra');
  // Produced once Cassandra is down (stopping it can take longer than producing would), so
  // windows with counts close while it is away.
  const producing = produce(env.kafka, topic, input.slice(half), { partitions: INPUT_PARTITIONS, seed: 17, ratePerSec: 300 });
  try {
    await new Promise((r) => setTimeout(r, 20_000));
    // Hydration reads or sink writes (whichever the window needed first) failed and were retried.
    retried = await Promise.all(ws.map((w) => w.metric('abacus_sink_errors_total')));
  } finally {
    await serverControl('start', 'cassandra'); // always: the environment is shared
  }
  produced.push(...(await producing));
  const ref = expected(j, produced);
  await assertCountsConverge(j, ref.rows);
  assert.ok(retried.some((n) => n > 0), 'Cassandra statements failed (and were retried) while it was down');
  await stopAll(ws);
});

test('Kafka broker restarted mid-stream', { timeout: 600_000 }, async () => {
  const topic = await newTopic('broker');
  const j = job('broker', 'account', topic);
  const ws = await startWorkers(j, 2);
  const input = inputFor(5, 6000);
  const half = Math.floor(input.length / 2);
  const produced: Produced[] = [];
  produced.push(...(await produce(env.kafka, topic, input.slice(0, half), { partitions: INPUT_PARTITIONS, seed: 18, ratePerSec: 3000 })));
  await waitFor('some counting', async () => (await ws[0]!.metric('abacus_events_counted_total')) > 0);
  await serverControl('restart', env.kafkaServer);
  produced.push(...(await produce(env.kafka, topic, input.slice(half), { partitions: INPUT_PARTITIONS, seed: 19, ratePerSec: 3000 })));
  const ref = expected(j, produced);
  await assertCountsConverge(j, ref.rows);
  await assertDeadLetters(j, ref.invalid.map((i) => produced[i.index]!.value));
  await stopAll(ws);
});

test('an account-level and a customer-level job (delta mode) on one topic run independently', { timeout: 420_000 }, async () => {
  const topic = await newTopic('iso');
  const account = job('iso-acct', 'account', topic);
  const customer = job('iso-cust', 'customer', topic, 'delta'); // also keeps the legacy counter table
  const ws = [...(await startWorkers(account, 1)), ...(await startWorkers(customer, 2))];
  const produced = await produce(env.kafka, topic, inputFor(6, 4000), { partitions: INPUT_PARTITIONS, seed: 20 });
  const refAccount = expected(account, produced);
  const refCustomer = expected(customer, produced);
  await assertCountsConverge(account, refAccount.rows);
  await assertCountsConverge(customer, refCustomer.rows);
  // Delta mode: without failures, the counter table's sums equal the final counts.
  await assertCountsConverge({ ...customer, table: `${customer.table}_delta` }, refCustomer.rows);
  assert.ok(refCustomer.rows.every((r) => r.uniques === undefined));
  await assertDeadLetters(account, refAccount.invalid.map((i) => produced[i.index]!.value));
  await assertDeadLetters(customer, refCustomer.invalid.map((i) => produced[i.index]!.value));
  await stopAll(ws);
});

for (const engine of ENGINES) {
  test(`a worker's volume lost: restarted with an empty data dir, it restores its key groups from S3 [${engine}]`, { timeout: 600_000 }, async () => {
    const topic = await newTopic(`lost-${engine}`);
    const s3 = requireTestS3(`worker-it/${runId}/lost-${engine}/`);
    const j = job(`lost-${engine}`, 'account', topic, 'final', { checkpoints: { interval: '2s', retention: 2, s3 }, ...engineState(engine) });
    const ws = await startWorkers(j, 2);
    const input = inputFor(7, 8000);
    const half = Math.floor(input.length / 2);
    const produced: Produced[] = [];
    produced.push(...(await produce(env.kafka, topic, input.slice(0, half), { partitions: INPUT_PARTITIONS, seed: 21, ratePerSec: 3000 })));
    // Worker 1 has counted part of the input, and checkpointed after that.
    await waitFor('worker 1 to count', async () => (await ws[1]!.metric('abacus_events_counted_total')) > 0, 180_000);
    const counting = Date.now() / 1000;
    await waitFor('a checkpoint of worker 1 taken after it counted', async () => (await ws[1]!.metric('abacus_checkpoint_last_success_timestamp_seconds')) > counting + 1, 180_000);
    const store = new S3ObjectStore(s3);
    try {
      // Input keeps flowing; worker 1 dies and its volume is gone.
      const producing = produce(env.kafka, topic, input.slice(half), { partitions: INPUT_PARTITIONS, seed: 22, ratePerSec: 1000 });
      await new Promise((r) => setTimeout(r, 1500));
      await ws[1]!.kill();
      rmSync(join(scratch, `${j.name}-data-1`), { recursive: true, force: true });
      const restarted = startWorker(j, 1, 2);
      await restarted.waitReady(180_000);
      assert.ok((await restarted.metric('abacus_restore_downloaded_bytes_total')) > 0, 'the restarted worker downloaded its key groups from S3');
      produced.push(...(await producing));
      const ref = expected(j, produced);
      assert.ok(ref.duplicates > 500, 'copies straddle the restore: dedup state must have come back');
      await assertCountsConverge(j, ref.rows);
      // Its state came back as a restored chain; its next periodic checkpoint continues it.
      await waitFor('the restarted worker checkpoints again', async () => (await restarted.metric('abacus_checkpoint_last_success_timestamp_seconds')) > 0, 120_000);
      const writers = new Set((await readCatalog(store)).map((c) => c.manifest?.writer));
      assert.deepEqual([...writers].sort(), ['w0', 'w1']);
      await stopAll([ws[0]!, restarted]);
    } finally {
      store.close();
    }
  });
}

