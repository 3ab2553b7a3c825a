import { Admin, Consumer, Kafka, KafkaConfig as KafkaJsConfig, logLevel, LogEntry, SASLOptions } from 'kafkajs';
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

const CLIENT_RETRY = { initialRetryTime: 200, maxRetryTime: 5000, retries: 8 };

/**
 * A kafkajs consumer that we restart ourselves. kafkajs can restart a crashed consumer on its
 * own, but 2.2.4 then races disconnect(): a consumer that was restarting (broker away) when
 * disconnect() ran finishes joining afterwards and lives on as a zombie that keeps the
 * process alive (kafkajs issue #1639 and relatives). So kafkajs' restart is disabled
 * (`restartOnFailure` → false) and this class does it: on a crash it disconnects the old
 * consumer and builds, connects and runs a fresh one, with backoff, forever. Start, restart
 * and stop are serialised, so stop() never disconnects a consumer that is still joining.
 */
export class SupervisedConsumer {
  private current?: Consumer;
  private stopping = false;
  private chain: Promise<void> = Promise.resolve();

  constructor(
    private readonly name: string,
    /** Builds a new consumer (pass it `retry: NO_RESTART_RETRY`) and attaches its event handlers. */
    private readonly build: () => Consumer,
    /** Subscribes and runs it; resolves once it joined its group. */
    private readonly run: (consumer: Consumer) => Promise<void>,
    private readonly log: LogFn,
  ) {}

  /** The running consumer (for pause/resume/seek); undefined between restarts. */
  get consumer(): Consumer | undefined {
    return this.current;
  }

  start(): Promise<void> {
    return this.serial(() => this.launch());
  }

  async stop(): Promise<void> {
    this.stopping = true;
    await this.serial(async () => {
      const c = this.current;
      this.current = undefined;
      await c?.disconnect();
    });
  }

  private serial(step: () => Promise<void>): Promise<void> {
    const next = this.chain.then(step);
    this.chain = next.catch(() => undefined);
    return next;
  }

  private async launch(): Promise<void> {
    const consumer = this.build();
    consumer.on(consumer.events.CRASH, (event) => {
      if (this.stopping || this.current !== consumer) return;
      this.log('warn', `${this.name} consumer crashed; restarting it`, { error: event.payload.error.message });
      void this.serial(() => this.relaunch(consumer));
    });
    this.current = consumer;
    try {
      await consumer.connect();
      await this.run(consumer);
    } catch (err) {
      this.current = undefined;
      await consumer.disconnect().catch(() => undefined);
      throw err;
    }
  }

  private async relaunch(old: Consumer): Promise<void> {
    if (this.current === old) this.current = undefined;
    await old.disconnect().catch(() => undefined);
    for (let attempt = 0; !this.stopping; attempt++) {
      await sleep(backoffMs(attempt, 500, 10_000));
      if (this.stopping) return;
      try {
        await this.launch();
        this.log('info', `${this.name} consumer restarted`, { attempt });
        return;
      } catch (err) {
        this.log('warn', `${this.name} consumer restart failed; retrying`, { attempt, error: (err as Error).message });
      }
    }
  }
}

/** Consumer retry settings: kafkajs retries requests, but never restarts the consumer itself (SupervisedConsumer does). */
export const NO_RESTART_RETRY = { ...CLIENT_RETRY, restartOnFailure: (): Promise<boolean> => Promise.resolve(false) };

/** A kafkajs client for the job; `role` is appended to the client id (visible in broker logs and quotas). */
export function createKafka(config: KafkaConfig, role: string, log: LogFn): Kafka {
  const options: KafkaJsConfig = {
    clientId: `${config.clientId}-${role}`,
    brokers: [...config.brokers],
    ssl: config.tls,
    connectionTimeout: 5000,
    requestTimeout: 30000,
    // kafkajs' own retries cover short blips; the callers loop on top for long outages.
    retry: CLIENT_RETRY,
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
  const options: SASLOptions = { mechanism: config.saslMechanism, username, password };
  return options;
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
