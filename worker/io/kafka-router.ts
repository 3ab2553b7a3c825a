import { EachBatchPayload, KafkaMessage, Message, Partitioners, Producer } from 'kafkajs';
import type { JobConfig, KafkaConfig } from '../../common/job-config';
import { keyGroupOf } from '../../common/keygroups';
import { backoffMs, createKafka, LogFn, NO_RESTART_RETRY, sleep, stderrLog, SupervisedConsumer } from './kafka-client';
import { KafkaDeadLetterSink } from './kafka-dead-letter';
import { kafkaMetrics } from './kafka-metrics';
import { metrics } from '../runtime/metrics';
import type { SourceRecord } from './types';
import { Bundler } from './routed-bundle';

/** The router's verdict on one record: its routing key, or why it is invalid. */
export type RouteDecision = { readonly ok: true; readonly routingKey: string } | { readonly ok: false; readonly reason: string; readonly code?: string };

/** Validates a raw record value (the engine's parser in production; anything in tests). */
export type RouteValidator = (value: Buffer) => RouteDecision;

/** Key groups of many values at once where they are certainly valid (the native kernel's fast path), -1 where `validate` must decide. */
export type KeyGroupsOf = (values: readonly Buffer[]) => Int32Array;

export interface KafkaRouterOptions {
  readonly job: JobConfig;
  readonly kafka: KafkaConfig;
  readonly validate: RouteValidator;
  /** When set, asked first for a whole chunk; `validate` only sees the values it leaves at -1. */
  readonly keyGroupsOf?: KeyGroupsOf;
  readonly deadLetter: KafkaDeadLetterSink;
  readonly log?: LogFn;
  /** Input records routed together (a batch from the broker is cut into chunks of this size): a chunk's events of one key group are one bundle. */
  readonly chunkSize?: number;
}

/**
 * The route stage: stateless, shared by every worker of a job through one consumer group
 * (`<job>-route`) on the input topic, whatever its partitioning.
 *
 * For each record: validate it; an invalid one goes to the dead-letter topic with the
 * reason; a valid one is re-published to the keyed topic, partition = key group of its
 * routing key, with its original value, key, headers and — importantly — its original
 * timestamp, which is the ingest time every retention decision downstream is made on.
 *
 * Commit protocol (at-least-once): a chunk's input offsets are resolved only after the keyed
 * and dead-letter produces are acknowledged by the broker (acks=all); kafkajs commits resolved
 * offsets periodically and on rebalance. A crash between produce and commit re-routes the
 * chunk; the count stage deduplicates, so that is harmless. While the broker refuses
 * produces, the batch is retried with backoff and nothing further is consumed.
 */
export class KafkaRouter {
  private consumer?: SupervisedConsumer;
  private producer?: Producer;
  private readonly log: LogFn;
  private readonly stopping = new AbortController();

  constructor(private readonly opts: KafkaRouterOptions) {
    this.log = opts.log ?? stderrLog;
  }

  async start(): Promise<void> {
    const { kafka } = this.opts;
    const client = createKafka(kafka, 'route', this.log);
    this.producer = client.producer({ allowAutoTopicCreation: false, maxInFlightRequests: 5, createPartitioner: Partitioners.DefaultPartitioner });
    await this.producer.connect();
    const groupId = kafka.routeGroup;
    this.consumer = new SupervisedConsumer(
      'router',
      () =>
        client.consumer({
          groupId,
          // Short enough that partitions of a killed worker move to the others quickly.
          sessionTimeout: 10_000,
          rebalanceTimeout: 20_000,
          heartbeatInterval: 2_000,
          // A fetched batch is what the router bundles: larger batches, larger bundles.
          maxBytesPerPartition: 4 * 1024 * 1024,
          allowAutoTopicCreation: false,
          retry: NO_RESTART_RETRY,
        }),
      async (consumer) => {
        await consumer.subscribe({ topics: [kafka.topic], fromBeginning: true });
        await consumer.run({
          autoCommit: true,
          autoCommitInterval: 1000,
          eachBatchAutoResolve: false,
          partitionsConsumedConcurrently: 1,
          eachBatch: (payload) => this.routeBatch(payload),
        });
      },
      this.log,
    );
    await this.consumer.start();
    this.log('info', 'router started', { topic: kafka.topic, keyedTopic: kafka.keyedTopic, group: groupId });
  }

  private async routeBatch(payload: EachBatchPayload): Promise<void> {
    const { batch } = payload;
    const resolveOffset = (offset: string): void => payload.resolveOffset(offset);
    const heartbeat = (): Promise<void> => payload.heartbeat();
    const isRunning = (): boolean => payload.isRunning();
    const isStale = (): boolean => payload.isStale();
    const { kafka, job, validate } = this.opts;
    const chunkSize = this.opts.chunkSize ?? 20_000;
    for (let i = 0; i < batch.messages.length; i += chunkSize) {
      const chunk = batch.messages.slice(i, i + chunkSize);
      const bundler = new Bundler(`${batch.topic}/${batch.partition}`, kafka.bundles);
      const invalid: Array<{ record: SourceRecord; reason: string; code: string }> = [];
      const values = chunk.map((m) => m.value ?? EMPTY);
      const known = this.opts.keyGroupsOf?.(values);
      for (let j = 0; j < chunk.length; j++) {
        const m = chunk[j]!;
        const value = values[j]!;
        const timestamp = ingestTime(m);
        const group = known?.[j] ?? -1;
        if (group >= 0) {
          bundler.add(group, m, value, timestamp);
          continue;
        }
        const verdict = validate(value);
        if (verdict.ok) {
          bundler.add(keyGroupOf(verdict.routingKey, job.keyGroups), m, value, timestamp);
        } else {
          const origin = `${batch.topic}/${batch.partition}@${m.offset}`;
          invalid.push({ record: { value, ingestTimeMs: timestamp, partition: `${batch.topic}/${batch.partition}`, nextPosition: String(BigInt(m.offset) + 1n), origin }, reason: verdict.reason, code: verdict.code ?? 'invalid' });
        }
      }
      const waves = bundler.finish();
      for (const wave of waves) {
        const sent = await this.produceWithRetry(kafka.keyedTopic, wave, () => isRunning() && !isStale(), heartbeat);
        if (!sent) return; // stopping or the partition moved: the new owner re-routes from the last commit
      }
      if (invalid.length > 0) await this.opts.deadLetter.sendMany(invalid);
      resolveOffset(chunk[chunk.length - 1]!.offset);
      kafkaMetrics.routed.inc({ outcome: 'routed' }, bundler.events);
      kafkaMetrics.routedRecords.inc(bundler.records);
      if (invalid.length > 0) kafkaMetrics.routed.inc({ outcome: 'invalid' }, invalid.length);
      // Invalid input is found here, before the count task: the same metric, by reason.
      for (const { code } of invalid) metrics.invalid.inc({ reason: code });
      await heartbeat();
    }
    const lag = Number(batch.offsetLag());
    kafkaMetrics.routeLag.set({ partition: `${batch.topic}/${batch.partition}` }, Math.max(0, lag));
  }

  /** True once acknowledged; false when the consumer stopped or lost the partition meanwhile. */
  private async produceWithRetry(topic: string, messages: Message[], stillOwner: () => boolean, heartbeat: () => Promise<void>): Promise<boolean> {
    if (messages.length === 0) return true;
    for (let attempt = 0; ; attempt++) {
      if (!stillOwner() || this.stopping.signal.aborted) return false;
      try {
        await this.producer!.send({ topic, acks: -1, messages });
        return true;
      } catch (err) {
        kafkaMetrics.routeProduceErrors.inc();
        const wait = backoffMs(attempt);
        this.log('warn', 'routing produce failed; retrying', { topic, attempt, waitMs: wait, error: (err as Error).message });
        await sleep(wait, this.stopping.signal);
        await heartbeat().catch(() => undefined);
      }
    }
  }

  /** Stops consuming (committing what was acknowledged), then closes the producer. */
  async stop(): Promise<void> {
    this.stopping.abort();
    await this.consumer?.stop();
    await this.producer?.disconnect();
    this.log('info', 'router stopped');
  }
}

/** The record's own timestamp (ms), which travels with the event as its ingest time. */
function ingestTime(m: KafkaMessage): number {
  const t = Number(m.timestamp);
  return Number.isFinite(t) && t >= 0 ? t : Date.now();
}

const EMPTY = Buffer.alloc(0);
