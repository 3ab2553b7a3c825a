import { Admin, Kafka, KafkaConfig as KafkaJsConfig, logLevel, LogEntry, SASLOptions } from 'kafkajs';
import { ConfigError } from '../../common/errors';
import type { KafkaConfig } from '../config';

/**
 * What the Kafka edges of the worker share: the client factory (TLS, SASL from the
 * environment, kafkajs logs routed to ours), topic creation that is safe when several
 * workers start at once, and the names derived from the job name.
 */

/** A structured log line: the worker process prints these as JSON on stderr. */
export type LogFn = (level: 'debug' | 'info' | 'warn' | 'error', message: string, fields?: Record<string, unknown>) => void;

/** Default logger: one JSON object per line on stderr. */
export const stderrLog: LogFn = (level, message, fields) => {
  if (level === 'debug' && process.env.ABACUS_DEBUG === undefined) return;
  // Fields first: a field can never overwrite time, level or msg.
  process.stderr.write(`${JSON.stringify({ ...fields, time: new Date().toISOString(), level, msg: message })}\n`);
};

/**
 * Names of the job's Kafka objects. Everything is derived from the job name, so an
 * account-level and a customer-level job reading the same input topic never share a
 * consumer group, a keyed topic or a dead-letter topic.
 */
export function kafkaNames(jobName: string, ordinal: number): { routeGroup: string; countGroupPrefix: string } {
  return {
    routeGroup: `${jobName}-route`,
    countGroupPrefix: `${jobName}-count-${ordinal}`,
  };
}

/** A kafkajs client for the job; `role` is appended to the client id (visible in broker logs and quotas). */
export function createKafka(config: KafkaConfig, role: string, log: LogFn): Kafka {
  const options: KafkaJsConfig = {
    clientId: `${config.clientId}-${role}`,
    brokers: [...config.brokers],
    ssl: config.tls,
    connectionTimeout: 5000,
    requestTimeout: 30000,
    // kafkajs' own retries cover short blips; the callers loop on top for long outages.
    retry: { initialRetryTime: 200, maxRetryTime: 5000, retries: 8 },
    logLevel: process.env.ABACUS_DEBUG !== undefined ? logLevel.INFO : logLevel.WARN,
    logCreator: () => (entry: LogEntry) => {
      const { message, ...rest } = entry.log;
      // kafkajs logs every failed request of its connections at ERROR although it retries
      // them itself; those are warnings to us. Its real failures surface as exceptions.
      const level = entry.level <= logLevel.ERROR ? (entry.namespace === 'Connection' ? 'warn' : 'error') : entry.level === logLevel.WARN ? 'warn' : 'debug';
      log(level, `kafkajs: ${message}`, { namespace: entry.namespace, ...rest });
    },
  };
  const sasl = saslFromEnv(config);
  if (sasl !== undefined) options.sasl = sasl;
  return new Kafka(options);
}

function saslFromEnv(config: KafkaConfig): SASLOptions | undefined {
  if (config.saslMechanism === undefined) return undefined;
  const username = process.env.ABACUS_KAFKA_USERNAME;
  const password = process.env.ABACUS_KAFKA_PASSWORD;
  if (username === undefined || password === undefined) {
    throw new ConfigError(
      'kafka.saslMechanism',
      `is ${config.saslMechanism} but ABACUS_KAFKA_USERNAME / ABACUS_KAFKA_PASSWORD are not set`,
      'set both environment variables (from a Secret in Kubernetes) or remove kafka.saslMechanism',
    );
  }
  return { mechanism: config.saslMechanism, username, password } as SASLOptions;
}

export interface TopicSpec {
  readonly topic: string;
  readonly partitions: number;
  /** When true, an existing topic with another partition count is an error (the keyed topic). */
  readonly exactPartitions: boolean;
  readonly configEntries?: ReadonlyArray<{ name: string; value: string }>;
}

/**
 * Creates the topics that are missing and checks the ones that exist. Safe when several
 * workers race: "already exists" is success, and the partition count is then read back (the
 * metadata can lag a concurrent creation, so it is polled for a few seconds). A keyed topic
 * with the wrong number of partitions is refused: records would land in the wrong key group.
 */
export async function ensureTopics(admin: Admin, specs: readonly TopicSpec[], log: LogFn, timeoutMs = 30_000): Promise<void> {
  const existing = new Set(await admin.listTopics());
  const missing = specs.filter((s) => !existing.has(s.topic));
  if (missing.length > 0) {
    const created = await admin.createTopics({
      waitForLeaders: true,
      topics: missing.map((s) => ({
        topic: s.topic,
        numPartitions: s.partitions,
        replicationFactor: -1, // the broker's default.replication.factor
        configEntries: s.configEntries?.map((e) => ({ ...e })),
      })),
    });
    log('info', created ? 'created topics' : 'topics were created concurrently by another worker', { topics: missing.map((s) => s.topic) });
  }
  const deadline = Date.now() + timeoutMs;
  for (const spec of specs) {
    for (;;) {
      const meta = await admin.fetchTopicMetadata({ topics: [spec.topic] });
      const partitions = meta.topics[0]?.partitions ?? [];
      const allLed = partitions.every((p) => p.leader >= 0);
      if (spec.exactPartitions && partitions.length > spec.partitions) {
        throw new ConfigError(
          'kafka.keyedTopic',
          `topic ${spec.topic} has ${partitions.length} partitions but the job has keyGroups=${spec.partitions}`,
          'the keyed topic needs exactly one partition per key group: use another kafka.keyedTopic or recreate the topic',
        );
      }
      const enough = spec.exactPartitions ? partitions.length === spec.partitions : partitions.length > 0;
      if (enough && allLed) break;
      if (Date.now() > deadline) {
        throw new ConfigError(
          spec.exactPartitions ? 'kafka.keyedTopic' : 'kafka.deadLetterTopic',
          `topic ${spec.topic} has ${partitions.length} partitions with leaders after ${timeoutMs} ms (want ${spec.partitions})`,
          'check the broker, or create the topic by hand with the right partition count',
        );
      }
      await sleep(250);
    }
  }
}

export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted === true) return resolve();
    const timer = setTimeout(done, ms);
    function done(): void {
      clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      resolve();
    }
    signal?.addEventListener('abort', done, { once: true });
  });
}

/** Exponential backoff with full jitter, capped. */
export function backoffMs(attempt: number, baseMs = 200, capMs = 10_000): number {
  const ceiling = Math.min(capMs, baseMs * 2 ** Math.min(attempt, 20));
  return Math.round(ceiling / 2 + Math.random() * (ceiling / 2));
}
