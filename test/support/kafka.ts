import { Kafka, logLevel } from 'kafkajs';
import { rng } from './events';

/** Test-side Kafka helpers (plain kafkajs, independent of worker/io). */

export function kafkaClient(broker: string, clientId = 'abacus-test'): Kafka {
  return new Kafka({ clientId, brokers: [broker], logLevel: logLevel.NOTHING, retry: { retries: 10, initialRetryTime: 200, maxRetryTime: 5000 } });
}

export async function createTopic(broker: string, topic: string, partitions: number): Promise<void> {
  const admin = kafkaClient(broker).admin();
  await admin.connect();
  try {
    await admin.createTopics({ topics: [{ topic, numPartitions: partitions, replicationFactor: 1 }], waitForLeaders: true });
  } finally {
    await admin.disconnect();
  }
}

export interface Produced<V extends string | Buffer = string> {
  /** The record value as given: text, or raw bytes (which need not be UTF-8). */
  readonly value: V;
  /** The record timestamp we set: the ingest time the contract's retention uses. */
  readonly ingestTimeMs: number;
  readonly partition: number;
}

/**
 * Produces `values` in order, each to a pseudo-random partition of `partitions` (so copies of
 * one event land on different partitions), with an explicit record timestamp. Batches of 500.
 */
export async function produce<V extends string | Buffer = string>(broker: string, topic: string, values: readonly V[], opts: { partitions: number; seed: number; ratePerSec?: number }): Promise<Array<Produced<V>>> {
  const r = rng(opts.seed);
  const producer = kafkaClient(broker, 'abacus-test-producer').producer({ allowAutoTopicCreation: false });
  await producer.connect();
  const out: Array<Produced<V>> = [];
  try {
    const started = Date.now();
    for (let i = 0; i < values.length; i += 500) {
      const now = Date.now();
      const chunk = values.slice(i, i + 500).map((value) => ({ value, ingestTimeMs: now, partition: Math.floor(r() * opts.partitions) }));
      await producer.send({ topic, acks: -1, messages: chunk.map((c) => ({ value: c.value, partition: c.partition, timestamp: String(c.ingestTimeMs) })) });
      out.push(...chunk);
      if (opts.ratePerSec !== undefined) {
        const due = started + ((i + chunk.length) / opts.ratePerSec) * 1000;
        const wait = due - Date.now();
        if (wait > 0) await new Promise((res) => setTimeout(res, wait));
      }
    }
  } finally {
    await producer.disconnect();
  }
  return out;
}

export interface DeadLetter {
  /** The value decoded as UTF-8 (invalid sequences replaced): for records that are text. */
  readonly value: string;
  /** The value's exact bytes. */
  readonly bytes: Buffer;
  readonly headers: Record<string, string>;
}

/**
 * Reads a topic from the beginning until `enough(records so far)` holds or `timeoutMs` passed
 * (a number means "at least that many records").
 */
export async function readTopic(broker: string, topic: string, enough: number | ((records: readonly DeadLetter[]) => boolean), timeoutMs: number): Promise<DeadLetter[]> {
  const isEnough = typeof enough === 'number' ? (r: readonly DeadLetter[]) => r.length >= enough : enough;
  const consumer = kafkaClient(broker, 'abacus-test-reader').consumer({ groupId: `abacus-test-reader-${Date.now()}-${Math.random()}` });
  const out: DeadLetter[] = [];
  await consumer.connect();
  try {
    await consumer.subscribe({ topics: [topic], fromBeginning: true });
    let done: () => void = () => undefined;
    const finished = new Promise<void>((res) => (done = res));
    await consumer.run({
      eachMessage: ({ message }) => {
        const headers: Record<string, string> = {};
        for (const [k, v] of Object.entries(message.headers ?? {})) headers[k] = String(v);
        const bytes = message.value ?? Buffer.alloc(0);
        out.push({ value: bytes.toString('utf8'), bytes, headers });
        if (isEnough(out)) done();
        return Promise.resolve();
      },
    });
    const timer = setTimeout(done, timeoutMs);
    await finished;
    clearTimeout(timer);
  } finally {
    await consumer.disconnect();
  }
  return out;
}
