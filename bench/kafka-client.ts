/**
 * What the Kafka client alone costs (docs/adr/0006-kafka-client.md): kafkajs producing and
 * consuming worker-sized records on the REAL broker of the test environment, with nothing
 * else in the process, so its ceiling can be set against the worker's events/s.
 *
 *   npm run build && node dist/bench/kafka-client.js [--records 200000]
 *   ABACUS_TEST_KAFKA_SERVER=kafka4 node dist/bench/kafka-client.js     (Kafka 4.x)
 *
 * 1. Produce: N records of ~250 bytes (the size of a test event) to a 6-partition topic, in
 *    sends of 500 (acks=all), as the router forwards a fetched batch.
 * 2. Consume: one consumer (eachBatch, as the worker's source) reads them all from the start.
 * Each phase prints records/s (wall clock) and records per CPU-second of this process.
 */
import { parseArgs } from 'node:util';
import { Partitioners } from 'kafkajs';
import { requireTestEnv } from '../test/support/env';
import { validEvents } from '../test/support/events';
import { createTopic, kafkaClient } from '../test/support/kafka';

const PARTITIONS = 6;

function cpuSeconds(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
}

function report(what: string, records: number, wallS: number, cpuS: number): void {
  console.log(`${what}: ${records} records in ${wallS.toFixed(2)} s = ${Math.round(records / wallS)} records/s; ${Math.round(records / cpuS)} records per CPU-second`);
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { records: { type: 'string' } } });
  const total = Number(values.records ?? 200_000);
  const env = requireTestEnv();
  const topic = `bench-client-${Date.now().toString(36)}`;
  await createTopic(env.kafka, topic, PARTITIONS);
  const nowSec = Math.floor(Date.now() / 1000);
  const events = validEvents(total, { seed: 7, nowSec, spanSec: 86400, companies: 20, customers: 20_000 });
  console.log(`broker ${env.kafkaServer} at ${env.kafka}; ${total} records, mean ${Math.round(events.reduce((s, v) => s + v.length, 0) / total)} bytes`);

  const client = kafkaClient(env.kafka, 'abacus-bench-client');
  const producer = client.producer({ createPartitioner: Partitioners.DefaultPartitioner, allowAutoTopicCreation: false });
  await producer.connect();
  let wall = Date.now();
  let cpu = cpuSeconds();
  for (let i = 0; i < total; i += 500) {
    await producer.send({ topic, acks: -1, messages: events.slice(i, i + 500).map((value, j) => ({ value, partition: (i + j) % PARTITIONS })) });
  }
  report('produce', total, (Date.now() - wall) / 1000, cpuSeconds() - cpu);
  await producer.disconnect();

  const consumer = client.consumer({ groupId: `${topic}-g`, maxBytesPerPartition: 1024 * 1024, maxBytes: 16 * 1024 * 1024, maxWaitTimeInMs: 200 });
  await consumer.connect();
  await consumer.subscribe({ topics: [topic], fromBeginning: true });
  let seen = 0;
  let bytes = 0;
  let done: () => void = () => undefined;
  const finished = new Promise<void>((resolve) => (done = resolve));
  wall = Date.now();
  cpu = cpuSeconds();
  await consumer.run({
    autoCommit: false,
    eachBatch: ({ batch }) => {
      for (const m of batch.messages) bytes += m.value?.length ?? 0; // touch every record, as the worker does
      seen += batch.messages.length;
      if (seen >= total) done();
      return Promise.resolve();
    },
  });
  await finished;
  report('consume', seen, (Date.now() - wall) / 1000, cpuSeconds() - cpu);
  console.log(`consumed ${bytes} value bytes`);
  await consumer.disconnect();
  const admin = client.admin();
  await admin.connect();
  await admin.deleteTopics({ topics: [topic] });
  await admin.disconnect();
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
