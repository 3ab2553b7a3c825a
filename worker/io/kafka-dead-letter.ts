import { IHeaders, Partitioners, Producer } from 'kafkajs';
import type { KafkaConfig } from '../../common/job-config';
import type { DeadLetterSink, SourceRecord } from './types';
import { backoffMs, createKafka, LogFn, sleep, stderrLog } from './kafka-client';
import { kafkaMetrics } from './kafka-metrics';

/** Header names on dead-letter records. */
export const DEAD_LETTER_HEADERS = {
  reason: 'abacus-reason',
  origin: 'abacus-origin',
  topic: 'abacus-origin-topic',
  partition: 'abacus-origin-partition',
  offset: 'abacus-origin-offset',
} as const;

/**
 * Invalid records go to the job's dead-letter topic: the original bytes as the value, the
 * original timestamp, and headers saying why (`abacus-reason`) and where the record came
 * from (`abacus-origin-topic`, `-partition`, `-offset`, and `abacus-origin` as one string).
 *
 * `send` resolves only once the broker acknowledged the record (acks=all), and retries with backoff for as long as the broker is away: the caller holds
 * back its own commit until then, so nothing is lost while the topic is unavailable.
 */
export class KafkaDeadLetterSink implements DeadLetterSink {
  private closed = false;
  private readonly abort = new AbortController();

  private constructor(
    private readonly producer: Producer,
    private readonly topic: string,
    private readonly log: LogFn,
  ) {}

  static async connect(config: KafkaConfig, log: LogFn = stderrLog): Promise<KafkaDeadLetterSink> {
    const producer = createKafka(config, 'dead-letter', log).producer({ allowAutoTopicCreation: false, createPartitioner: Partitioners.DefaultPartitioner });
    await producer.connect();
    return new KafkaDeadLetterSink(producer, config.deadLetterTopic, log);
  }

  async send(record: SourceRecord, reason: string): Promise<void> {
    await this.sendMany([{ record, reason }]);
  }

  /** Several at once (the router sends a batch's invalid records together). */
  async sendMany(items: ReadonlyArray<{ record: SourceRecord; reason: string }>): Promise<void> {
    if (items.length === 0) return;
    const messages = items.map(({ record, reason }) => ({
      value: record.value,
      timestamp: String(Math.trunc(record.ingestTimeMs)),
      headers: deadLetterHeaders(record.origin, reason),
    }));
    for (let attempt = 0; ; attempt++) {
      if (this.closed) throw new Error('dead-letter sink closed before the records were acknowledged');
      try {
        await this.producer.send({ topic: this.topic, acks: -1, messages });
        kafkaMetrics.deadLetters.inc(items.length);
        return;
      } catch (err) {
        kafkaMetrics.deadLetterErrors.inc();
        const wait = backoffMs(attempt);
        this.log('warn', 'dead-letter write failed; retrying', { topic: this.topic, attempt, waitMs: wait, error: (err as Error).message });
        await sleep(wait, this.abort.signal);
      }
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    this.abort.abort();
    await this.producer.disconnect();
  }
}

/** Headers for a dead-letter record; an origin of the form `topic/partition@offset` is also split into its parts. */
export function deadLetterHeaders(origin: string, reason: string): IHeaders {
  const headers: IHeaders = { [DEAD_LETTER_HEADERS.reason]: reason, [DEAD_LETTER_HEADERS.origin]: origin };
  const m = /^(.+)\/(\d+)@(\d+)$/.exec(origin);
  if (m !== null) {
    headers[DEAD_LETTER_HEADERS.topic] = m[1]!;
    headers[DEAD_LETTER_HEADERS.partition] = m[2]!;
    headers[DEAD_LETTER_HEADERS.offset] = m[3]!;
  }
  return headers;
}
