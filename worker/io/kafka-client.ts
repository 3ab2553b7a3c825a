import { Admin, Consumer, Kafka, KafkaConfig as KafkaJsConfig, logLevel, LogEntry, SASLOptions, ConfigResourceTypes } from 'kafkajs';
import { ConfigError, errorChain } from '../../common/errors';
import type { KafkaConfig } from '../../common/job-config';
import { sleep } from '../../common/sleep';

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
 * The job-named Kafka objects that spec.whenDeleted=Delete removes: the keyed topic (unless the
 * input is already keyed: then it is the user's topic) and, among `groupIds`, the route group
 * and the count groups (`<countGroupPrefix>-<ordinal>-<random hex>`, kafka-source.ts). The input
 * and dead-letter topics are shared or audit data: never.
 */
export function jobKafkaObjects(
  kafka: Pick<KafkaConfig, 'keyedTopic' | 'inputKeyed' | 'routeGroup' | 'countGroupPrefix'>,
  groupIds: readonly string[],
): { topics: string[]; groups: string[] } {
  const countPrefix = `${kafka.countGroupPrefix}-`;
  const groups = groupIds.filter((g) => g === kafka.routeGroup || (g.startsWith(countPrefix) && /^\d+-[0-9a-f]+$/.test(g.slice(countPrefix.length))));
  return { topics: kafka.inputKeyed ? [] : [kafka.keyedTopic], groups };
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

/** Node's codes for a TLS peer certificate that does not verify against the trusted CAs. */
const TLS_TRUST_CODES = new Set([
  'SELF_SIGNED_CERT_IN_CHAIN',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'CERT_UNTRUSTED',
  'CERT_HAS_EXPIRED',
  'CERT_NOT_YET_VALID',
  'ERR_TLS_CERT_ALTNAME_INVALID',
]);

/**
 * Failures that retrying with the same settings cannot fix — the brokers refused the SASL
 * credentials, or their TLS certificate does not verify — as a ConfigError that names what to
 * fix (the worker then exits with code 2 instead of retrying forever); undefined for anything
 * else (an outage, a timeout), which the caller retries. The message never holds the password.
 */
export function kafkaSetupError(err: unknown, config: KafkaConfig): ConfigError | undefined {
  for (const e of errorChain(err)) {
    if (e.name === 'KafkaJSSASLAuthenticationError') {
      const user = process.env.ABACUS_KAFKA_USERNAME ?? '';
      return new ConfigError(
        'ABACUS_KAFKA_USERNAME/ABACUS_KAFKA_PASSWORD',
        `the Kafka brokers refused the ${config.saslMechanism ?? 'SASL'} credentials of user ${JSON.stringify(user)} (${e.message})`,
        'put the right user name and password in the Secret named by spec.source.kafka.sasl.credentialsSecretRef (outside Kubernetes: in these environment variables)',
      );
    }
    if (typeof e.code === 'string' && TLS_TRUST_CODES.has(e.code)) {
      return new ConfigError(
        'kafka.tls',
        `the Kafka brokers' TLS certificate does not verify (${e.code}: ${e.message})`,
        'give the CA bundle that signs the brokers\' certificates in spec.source.kafka.tls.caSecretRef (outside Kubernetes: NODE_EXTRA_CA_CERTS=FILE), and name the brokers as their certificates do',
      );
    }
  }
  return undefined;
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

export { sleep };

/** Exponential backoff with full jitter, capped. */
export function backoffMs(attempt: number, baseMs = 200, capMs = 10_000): number {
  const ceiling = Math.min(capMs, baseMs * 2 ** Math.min(attempt, 20));
  return Math.round(ceiling / 2 + Math.random() * (ceiling / 2));
}

/**
 * A topic's retention.ms as the broker reports it (-1 = unlimited); undefined when the
 * broker does not say. A restored key group replays its keyed partition from the
 * checkpoint's position, so the keyed topic must keep records at least that long.
 */
export async function topicRetentionMs(admin: Admin, topic: string): Promise<number | undefined> {
  const out = await admin.describeConfigs({ includeSynonyms: false, resources: [{ type: ConfigResourceTypes.TOPIC, name: topic, configNames: ['retention.ms'] }] });
  const value = out.resources[0]?.configEntries.find((e) => e.configName === 'retention.ms')?.configValue;
  return value === undefined || value === null ? undefined : Number(value);
}

/**
 * Whether the keyed topic keeps records long enough for a restore: a checkpoint can be up to
 * one interval old (longer while the object store is down), and its groups replay from there.
 * Returns the problem in words, or undefined when retention covers twice the interval.
 */
export function keyedRetentionProblem(topic: string, retentionMs: number | undefined, checkpointIntervalMs: number): string | undefined {
  if (retentionMs === undefined || retentionMs < 0) return undefined;
  if (retentionMs >= 2 * checkpointIntervalMs) return undefined;
  return (
    `the keyed topic ${topic} keeps records for ${retentionMs} ms (retention.ms), less than twice the checkpoint interval (${checkpointIntervalMs} ms): ` +
    'a key group restored from its last checkpoint may find the records it must replay already deleted, and its counts would then miss them; ' +
    `raise retention.ms of ${topic} (e.g. kafka-configs --alter --entity-type topics --entity-name ${topic} --add-config retention.ms=${4 * checkpointIntervalMs}) or shorten checkpoints.interval`
  );
}
