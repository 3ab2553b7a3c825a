import { readFileSync } from 'node:fs';
import { Socket } from 'node:net';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { keyGroupsOfOrdinal, parseAssignment, type Assignment } from '../../common/assignment';
import { ASSIGNMENT_KEY, assignmentConfigMapName, parseReport, REPORT_KEY, workerStatusConfigMapName, type WorkerReport } from '../../common/handover';
import { AbacusError, ConfigError } from '../../common/errors';
import { rangeForWorker, keyGroupsIn, routingKey } from '../../common/keygroups';
import { defaultTableName, jobIdentity, JobConfig, loadJobConfig } from '../../common/job-config';
import { countingSettings } from '../engine/counting';
import { parseEvent } from '../engine/event';
import { NativeState } from '../engine/native-state';
import { formatBucket } from '../engine/time';
import { CassandraSink, connectCassandra, parseTableComment } from '../io/cassandra-sink';
import { backoffMs, createKafka, ensureTopics, kafkaSetupError, keyedRetentionProblem, LogFn, sleep, stderrLog, topicRetentionMs } from '../io/kafka-client';
import { objectStoreFor } from '../checkpoint/s3-object-store';
import { KafkaDeadLetterSink } from '../io/kafka-dead-letter';
import { KafkaRouter, type KeyGroupsOf, type RouteValidator } from '../io/kafka-router';
import { KafkaKeyedSource } from '../io/kafka-source';
import { KubeConfigMaps } from '../io/kube-channel';
import type { ObjectStore } from '../checkpoint/object-store';
import { HandoverAgent, type AssignmentSource, type GroupCheckpoints, type ReportStore } from './handover-agent';
import { LineOutput, standardOutput } from '../io/line-output';
import { startHttpServer, RunningHttpServer } from './http';
import { progressFigures, registry } from './metrics';
import { eventLoopLiveness } from '../../common/metrics';
import { CountTask, SinkGaveUp, type TaskCheckpoints } from './task';

/**
 * `abacus worker`: one worker process of a job on real Kafka and Cassandra.
 *
 *   abacus worker --config JOB.yaml --ordinal I --replicas N [--assignment FILE]
 *                 [--kube-namespace NS [--kubeconfig FILE]] [--brokers H:P,..] [--topic T] [--key-groups K] [--level account|customer]
 *                 [--cassandra H:P,..] [--keyspace KS] [--table T] [--data-dir DIR]
 *                 [--create-schema] [--metrics-port P]
 *
 * It runs, side by side: the router (input topic → keyed topic, unless kafka.inputKeyed),
 * the count task for its key groups (keyed topic → RocksDB → Cassandra), and one HTTP port
 * with /metrics, /healthz, /readyz and /v1/series. With --assignment or --kube-namespace it
 * follows the published assignment while running (HandoverAgent): it counts exactly the key
 * groups the newest document gives it, and with --kube-namespace it takes part in hand-overs,
 * reading `<job>-assignment` and reporting into `<job>-worker-<ordinal>` through the API
 * server (in a pod: its ServiceAccount; elsewhere --kubeconfig or $KUBECONFIG). SIGTERM/SIGINT stop it gracefully: the
 * router commits what was acknowledged, the task flushes its window, commits state and
 * positions, writes the sink, and everything is closed. Exit code 0 after a clean stop,
 * 2 for a configuration error, 1 for any other failure.
 */

const WORKER_OPTIONS = {
  config: { type: 'string' },
  ordinal: { type: 'string' },
  replicas: { type: 'string' },
  assignment: { type: 'string' },
  'kube-namespace': { type: 'string' },
  kubeconfig: { type: 'string' },
  'assignment-poll': { type: 'string' },
  name: { type: 'string' },
  brokers: { type: 'string' },
  topic: { type: 'string' },
  'key-groups': { type: 'string' },
  level: { type: 'string' },
  cassandra: { type: 'string' },
  keyspace: { type: 'string' },
  table: { type: 'string' },
  'data-dir': { type: 'string' },
  'create-schema': { type: 'boolean' },
  'metrics-port': { type: 'string' },
  'memory-budget': { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} as const;

const WORKER_USAGE = `usage: abacus worker --config JOB.yaml --ordinal I --replicas N [--assignment FILE]
  [--kube-namespace NS [--kubeconfig FILE]] [--assignment-poll MS]
  [--brokers HOST:PORT,...] [--topic TOPIC] [--key-groups K] [--level account|customer] [--name JOB]
  [--cassandra HOST:PORT,...] [--keyspace KS] [--table TABLE] [--create-schema]
  [--data-dir DIR] [--metrics-port PORT] [--memory-budget SIZE]`;

export interface WorkerSettings {
  readonly config: JobConfig;
  readonly ordinal: number;
  /** The groups to count from the start when the assignment is static (no --assignment, no --kube-namespace). */
  readonly keyGroups: number[];
  readonly dataDir: string;
  /** Follow this assignment file while running. */
  readonly assignmentFile?: string;
  /** Read the assignment and report hand-over steps through the API server, in this namespace. */
  readonly kubeNamespace?: string;
  readonly kubeconfig?: string;
  /** How often the assignment is read, in ms (default 1000). */
  readonly assignmentPollMs: number;
  /** The assignment generation the key groups were read from (0 without an assignment file). */
  readonly generation: number;
}

/** Parses the worker's flags into its settings (pure apart from reading the config and assignment files). */
export function workerSettings(argv: string[]): WorkerSettings {
  const { values } = parseArgs({ args: argv, options: WORKER_OPTIONS, allowPositionals: false, strict: true });
  const overrides: Record<string, unknown> = {};
  const kafka: Record<string, unknown> = {};
  const cassandra: Record<string, unknown> = {};
  if (values.name !== undefined) overrides.name = values.name;
  if (values['key-groups'] !== undefined) overrides.keyGroups = values['key-groups'];
  if (values.level !== undefined) overrides.level = values.level;
  if (values['metrics-port'] !== undefined) overrides.metrics = { port: values['metrics-port'] };
  if (values['memory-budget'] !== undefined) overrides.state = { memoryBudget: values['memory-budget'] };
  if (values.brokers !== undefined) kafka.brokers = splitList(values.brokers);
  if (values.topic !== undefined) kafka.topic = values.topic;
  if (values.cassandra !== undefined) cassandra.contactPoints = splitList(values.cassandra);
  if (values.keyspace !== undefined) cassandra.keyspace = values.keyspace;
  if (values.table !== undefined) cassandra.table = values.table;
  if (values['create-schema'] === true) cassandra.createSchema = true;
  if (Object.keys(kafka).length > 0) overrides.kafka = kafka;
  if (Object.keys(cassandra).length > 0) overrides.cassandra = cassandra;

  const config = loadJobConfig(values.config, overrides);
  if (config.kafka === undefined) throw new ConfigError('kafka', 'is missing', 'a cluster worker reads Kafka: set kafka.brokers and kafka.topic in the job file, or pass --brokers and --topic');
  if (config.cassandra === undefined) throw new ConfigError('cassandra', 'is missing', 'a cluster worker writes Cassandra: set cassandra.contactPoints in the job file, or pass --cassandra HOST:PORT');

  const ordinal = intFlag(values.ordinal, '--ordinal', 0);
  let keyGroups: number[];
  let generation = 0;
  if (values.assignment !== undefined) {
    const assignment = parseAssignment(readFileSync(values.assignment, 'utf8'));
    if (assignment.keyGroups !== config.keyGroups) {
      throw new ConfigError('--assignment', `the assignment is for ${assignment.keyGroups} key groups but the job has keyGroups=${config.keyGroups}`, 'use the assignment published for this job');
    }
    keyGroups = keyGroupsOfOrdinal(assignment, ordinal);
    generation = assignment.generation;
  } else if (values['kube-namespace'] !== undefined) {
    keyGroups = []; // the assignment read through the API server decides (HandoverAgent)
  } else {
    const replicas = intFlag(values.replicas, '--replicas', 1);
    if (replicas < 1 || replicas > config.keyGroups || ordinal >= replicas) {
      throw new ConfigError('--ordinal/--replicas', `ordinal ${ordinal} of ${replicas} replicas with ${config.keyGroups} key groups is impossible`, 'use 0 <= ordinal < replicas <= keyGroups');
    }
    keyGroups = keyGroupsIn(rangeForWorker(config.keyGroups, replicas, ordinal));
  }
  const dataDir = values['data-dir'] ?? join('.abacus', `${config.name}-${ordinal}`);
  const assignmentPollMs = intFlag(values['assignment-poll'], '--assignment-poll', 1000);
  return {
    config,
    ordinal,
    keyGroups,
    dataDir,
    assignmentPollMs,
    generation,
    ...(values.assignment !== undefined ? { assignmentFile: values.assignment } : {}),
    ...(values['kube-namespace'] !== undefined ? { kubeNamespace: values['kube-namespace'] } : {}),
    ...(values.kubeconfig !== undefined ? { kubeconfig: values.kubeconfig } : {}),
  };
}

/** Runs `abacus worker`; resolves to the process exit code. */
export async function runWorkerCommand(argv: string[], log: LogFn = stderrLog): Promise<number> {
  if (argv.includes('--help') || argv.includes('-h')) {
    process.stdout.write(`${WORKER_USAGE}\n`);
    return 0;
  }
  let settings: WorkerSettings;
  try {
    settings = workerSettings(argv);
  } catch (err) {
    process.stderr.write(`abacus worker: ${(err as Error).message}\n${err instanceof ConfigError ? '' : `${WORKER_USAGE}\n`}`);
    return 2;
  }
  const stop = new AbortController();
  const onSignal = (sig: string) => (): void => {
    log('info', `received ${sig}; stopping gracefully`);
    stop.abort();
  };
  const onTerm = onSignal('SIGTERM');
  const onInt = onSignal('SIGINT');
  process.on('SIGTERM', onTerm);
  process.on('SIGINT', onInt);
  try {
    await runWorker(settings, stop.signal, log);
    return 0;
  } catch (err) {
    if (err instanceof SinkGaveUp) {
      log('warn', 'stopped before the sink answered; the next start replays what was not confirmed', { error: err.message });
      return 0;
    }
    log('error', 'worker failed', { error: (err as Error).message, code: err instanceof AbacusError ? err.code : undefined, stack: (err as Error).stack });
    return err instanceof ConfigError ? 2 : 1;
  } finally {
    process.off('SIGTERM', onTerm);
    process.off('SIGINT', onInt);
    exitIfSomethingLingers(log);
  }
}

/**
 * Everything is closed; the event loop should now drain and the process exit. kafkajs
 * 2.2.4 can leave a reconnecting socket behind when the broker restarted shortly before
 * (a request in flight across disconnect). This unref'd timer only fires if something
 * still holds the loop open 10 s later: it names what and exits with the exit code set.
 */
function exitIfSomethingLingers(log: LogFn): void {
  const timer = setTimeout(() => {
    log('warn', 'handles still open 10 s after the worker stopped; exiting anyway', { handles: process.getActiveResourcesInfo(), sockets: openSockets() });
    process.exit();
  }, 10_000);
  timer.unref();
}

/**
 * The worker's life: HTTP up first (so liveness answers while connecting), then the sink,
 * the topics, the router and the task; teardown in reverse, each step guarded so one failing
 * close does not leak the others.
 */
export async function runWorker(settings: WorkerSettings, signal: AbortSignal, log: LogFn = stderrLog): Promise<void> {
  const { config, ordinal, keyGroups, dataDir } = settings;
  const kafka = config.kafka!;
  const cassandra = config.cassandra!;
  log('info', 'worker starting', { job: config.name, jobLevel: config.level, engine: config.engine, ordinal, keyGroups: describeGroups(keyGroups), dataDir, table: `${cassandra.keyspace}.${cassandra.table}` });

  const closers: Array<[string, () => Promise<void>]> = [];
  let sink: CassandraSink | undefined;
  let running = false;
  let http: RunningHttpServer | undefined;
  try {
    http = await startHttpServer({
      port: config.metricsPort,
      registry,
      live: eventLoopLiveness(),
      // Ready = counting its key groups: the task runs and the count store answers.
      ready: async () => running && sink !== undefined && (await sink.ping()),
      series: (q) => (sink === undefined ? Promise.reject(new Error('not connected to Cassandra yet')) : sink.series(q)),
    });
    const server = http;
    closers.push(['http', () => server.close()]);
    log('info', 'http listening', { port: http.port });

    sink = await CassandraSink.open({ config: cassandra, level: config.level, job: jobIdentity(config.name, config.namespace), log, signal });
    const openedSink = sink;
    closers.push(['cassandra', () => openedSink.close()]);
    if (signal.aborted) return;

    const kafkaFatal = (err: unknown): ConfigError | undefined => kafkaSetupError(err, kafka);
    await retryUntil('create topics', signal, log, async () => {
      const admin = createKafka(kafka, 'admin', log).admin();
      await admin.connect();
      try {
        await ensureTopics(admin, [
          { topic: kafka.keyedTopic, partitions: config.keyGroups, exactPartitions: true, configEntries: [{ name: 'message.timestamp.type', value: 'CreateTime' }] },
          { topic: kafka.deadLetterTopic, partitions: 1, exactPartitions: false },
        ], log);
        if (config.checkpoints !== undefined) {
          const problem = keyedRetentionProblem(kafka.keyedTopic, await topicRetentionMs(admin, kafka.keyedTopic), config.checkpoints.intervalMs);
          if (problem !== undefined) log('warn', problem, { topic: kafka.keyedTopic, checkpointIntervalMs: config.checkpoints.intervalMs });
        }
      } finally {
        await admin.disconnect();
      }
    }, kafkaFatal);
    if (signal.aborted) return;

    const deadLetter = await retryUntil('connect dead-letter producer', signal, log, () => KafkaDeadLetterSink.connect(kafka, log), kafkaFatal);
    if (deadLetter === undefined) return;
    closers.push(['dead-letter', () => deadLetter.close()]);

    if (!kafka.inputKeyed) {
      const router = new KafkaRouter({ job: config, kafka, validate: routeValidator(config), keyGroupsOf: nativeKeyGroups(config), deadLetter, log });
      await retryUntil('start router', signal, log, () => router.start(), kafkaFatal);
      closers.push(['router', () => router.stop()]);
    }

    // A worker that follows the assignment starts with no groups: the agent starts what the document gives it.
    const follow = followAssignment(settings);
    const initialGroups = follow === undefined ? keyGroups : [];
    const source = new KafkaKeyedSource({ job: config, kafka, keyGroups: initialGroups, ordinal, log });
    closers.push(['keyed source', () => source.close()]);
    let agent: HandoverAgent | undefined;
    const checkpoints = workerCheckpoints(settings, () => agent);
    const objectStore = checkpoints?.objectStore;
    if (checkpoints !== undefined) {
      const store = checkpoints.objectStore;
      closers.push(['checkpoint store', () => Promise.resolve(store.close?.())]);
      log('info', 'checkpoints on', { store: store.description, writer: checkpoints.writer, intervalMs: checkpoints.intervalMs, retention: checkpoints.retention });
    }
    const task = await CountTask.open({
      config,
      dataDir,
      source,
      sink,
      deadLetter,
      keyGroups: initialGroups,
      signal,
      log: (line, level = 'warn') => log(level, line),
      // Producers' clocks may run ahead; an hour is believed, a record stamped later does not move expiry past it.
      sweepCeilingMs: () => Date.now() + 3_600_000,
      ...(checkpoints === undefined ? {} : { checkpoints }),
    });
    closers.push(['state', () => task.close()]);
    let agentDone: Promise<void> = Promise.resolve();
    if (follow !== undefined) {
      agent = new HandoverAgent({ ordinal, task, keyGroups: config.keyGroups, log, pollMs: settings.assignmentPollMs, checkpoints: groupCheckpoints(task, objectStore, log), progress: progressFigures, ...follow });
      await agent.start(signal);
      if (signal.aborted) return;
      agentDone = agent.run(signal);
    }
    running = true;
    log('info', 'worker running', { job: config.name, ordinal, keyGroups: describeGroups(task.groups()) });
    const progress = await task.run();
    running = false;
    await agentDone;
    log('info', 'count task stopped', { ...progress });
  } finally {
    running = false;
    // Router first (its commits need the broker, not us), then the task's state, source,
    // dead-letter producer, the sink and finally HTTP.
    for (const [name, close] of closers.reverse()) {
      try {
        await close();
      } catch (err) {
        log('warn', `closing ${name} failed`, { error: (err as Error).message });
      }
    }
    log('info', 'worker stopped', { job: config.name, ordinal });
  }
}

/** Where the assignment is read and the report kept; undefined for a static assignment. */
function followAssignment(settings: WorkerSettings): { assignment: AssignmentSource; reports: ReportStore } | undefined {
  const { config, ordinal } = settings;
  if (settings.kubeNamespace !== undefined) {
    const kube = new KubeConfigMaps(settings.kubeNamespace, settings.kubeconfig);
    const assignmentName = assignmentConfigMapName(config.name);
    const reportName = workerStatusConfigMapName(config.name, ordinal);
    return {
      assignment: {
        read: async () => {
          const text = (await kube.read(assignmentName))?.[ASSIGNMENT_KEY];
          return text === undefined ? undefined : checkedAssignment(text, config.keyGroups);
        },
        watch: (onChange, signal) =>
          kube.watch(assignmentName, (data) => {
            const text = data[ASSIGNMENT_KEY];
            let doc: Assignment | undefined;
            try {
              doc = text === undefined ? undefined : checkedAssignment(text, config.keyGroups);
            } catch {
              doc = undefined; // the run loop reads it and reports the problem
            }
            onChange(doc);
          }, signal),
      },
      reports: {
        load: async () => {
          const data = await kube.read(reportName);
          if (data === undefined) throw new Error(`ConfigMap ${settings.kubeNamespace}/${reportName} does not exist yet (the operator creates it)`);
          const text = data[REPORT_KEY];
          return text === undefined ? undefined : parseReport(text);
        },
        save: (report: WorkerReport) => kube.write(reportName, REPORT_KEY, JSON.stringify(report)),
      },
    };
  }
  if (settings.assignmentFile !== undefined) {
    const file = settings.assignmentFile;
    // Nobody reads a report without the API server: the worker follows ownership, hand-overs cannot progress.
    let kept: WorkerReport | undefined;
    return {
      assignment: { read: () => Promise.resolve(checkedAssignment(readFileSync(file, 'utf8'), config.keyGroups)) },
      reports: { load: () => Promise.resolve(kept), save: (r) => Promise.resolve(void (kept = r)) },
    };
  }
  return undefined;
}

function checkedAssignment(text: string, keyGroups: number): Assignment {
  const doc = parseAssignment(text);
  if (doc.keyGroups !== keyGroups) {
    throw new ConfigError('assignment', `the assignment is for ${doc.keyGroups} key groups but the job has keyGroups=${keyGroups}`, 'use the assignment published for this job');
  }
  return doc;
}

/** The hand-over's use of checkpoints; without a checkpoint store, releasing and acquiring fail (and are retried) with the reason. */
function groupCheckpoints(task: CountTask, objectStore: ObjectStore | undefined, log: LogFn): GroupCheckpoints {
  if (objectStore === undefined) {
    const missing = () => Promise.reject(new ConfigError('checkpoints', 'are not configured', 'a key group moves between workers through a checkpoint: set checkpoints in the job (spec.checkpoints)'));
    return { checkpoint: missing, restore: missing };
  }
  return {
    checkpoint: async (groups, reason) => {
      const result = await task.checkpoint(groups, reason, { urgent: true });
      return { manifest: result.manifestId, bytes: result.bytes };
    },
    restore: async (groups, manifest) => {
      // Without a manifest it is a pre-copy (paced, see RestoreOptions.background); with one, an acquire its groups wait for.
      const result = await task.restoreGroups(objectStore, groups, manifest === undefined ? { background: true } : { manifestId: manifest, concurrency: 4 });
      if (manifest !== undefined && result.missing.length > 0) throw new Error(`checkpoint ${manifest} does not hold key groups ${result.missing.join(',')}`);
    },
    refresh: (groups) => {
      // Urgent too: a periodic checkpoint in flight may be compacting these groups, and a new
      // base committed now would not continue the chain the new owner is pre-copying.
      task.checkpoint(groups, 'pre-release', { urgent: true }).catch((err: unknown) => log('info', 'checkpoint before a release did not complete; the release carries its changes', { error: (err as Error).message }));
    },
  };
}

/**
 * A cluster worker's checkpoints: into its own namespace `w<ordinal>` of the job's root; at
 * start, every owned key group without local state (a new pod, a lost volume) is restored
 * from the newest complete checkpoint that holds it, by any writer.
 */
function workerCheckpoints(settings: WorkerSettings, agent: () => HandoverAgent | undefined): (TaskCheckpoints & { objectStore: { close?(): void } }) | undefined {
  const cp = settings.config.checkpoints;
  if (cp === undefined) return undefined;
  return {
    objectStore: objectStoreFor(cp),
    writer: `w${settings.ordinal}`,
    intervalMs: cp.intervalMs,
    retention: cp.retention,
    includeUnkeyed: false,
    restoreMissing: true,
    finalCheckpoint: false,
    // Manifests carry the ownership epoch: a restore prefers the newest generation over a late write of an old owner.
    generation: () => agent()?.epoch ?? settings.generation,
    // A released group's final checkpoint stays until its new owner has acquired it.
    pinned: () => agent()?.pinnedManifests() ?? [],
    // A group being pre-copied by its next owner keeps its chain, so the final checkpoint is a delta on it.
    keepChains: () => agent()?.movingOut() ?? [],
  };
}

/**
 * With the native engine, the router asks the kernel's fast path for the key groups of a
 * whole chunk (one call, no parse in JavaScript) and validates only what it defers; the
 * kernel is the one the task loads anyway. With the records engine, every value is parsed.
 */
export function nativeKeyGroups(config: JobConfig): KeyGroupsOf | undefined {
  if (config.engine !== 'native') return undefined;
  const state = new NativeState(countingSettings(config));
  const options = { maxEventBytes: config.maxEventBytes, facets: config.facets, level: config.level };
  return (values) => state.keyGroupsOf(values, options, config.keyGroups);
}

/** The router's validation: the engine's own parser, so the router and the task agree on validity. */
export function routeValidator(config: JobConfig): RouteValidator {
  const options = { maxEventBytes: config.maxEventBytes, facets: config.facets, level: config.level };
  return (value) => {
    const parsed = parseEvent(value, options);
    if (!parsed.ok) return { ok: false, code: parsed.code, reason: `${parsed.code}: ${parsed.reason}` };
    const ev = parsed.event;
    return { ok: true, routingKey: routingKey(config.level, ev.companyId, ev.statisticId, ev.customerId) };
  };
}

/**
 * Retries `fn` with backoff until it succeeds; undefined when `signal` aborts first. A
 * ConfigError, or a failure `fatal` turns into one (refused credentials, an untrusted
 * certificate), ends the retries: the same settings would fail the same way.
 */
async function retryUntil<T>(what: string, signal: AbortSignal, log: LogFn, fn: () => Promise<T>, fatal: (err: unknown) => ConfigError | undefined): Promise<T | undefined> {
  for (let attempt = 0; ; attempt++) {
    if (signal.aborted) return undefined;
    try {
      return await fn();
    } catch (err) {
      if (err instanceof ConfigError) throw err;
      const unfixable = fatal(err);
      if (unfixable !== undefined) throw unfixable;
      const wait = backoffMs(attempt, 500, 10_000);
      log('warn', `${what} failed; retrying`, { attempt, waitMs: wait, error: (err as Error).message });
      await sleep(wait, signal);
    }
  }
}

/** Remote endpoints of open sockets (diagnostics only; uses Node's undocumented handle list). */
function openSockets(): string[] {
  const list = (process as unknown as { _getActiveHandles?: () => unknown[] })._getActiveHandles?.() ?? [];
  return list.filter((h): h is Socket => h instanceof Socket && h.remotePort !== undefined).map((h) => `${h.remoteAddress}:${h.remotePort}`);
}

function splitList(text: string): string[] {
  return text.split(',').map((s) => s.trim()).filter((s) => s !== '');
}

function intFlag(text: string | undefined, flag: string, fallback: number): number {
  if (text === undefined) return fallback;
  if (!/^[0-9]+$/.test(text)) throw new ConfigError(flag, `${JSON.stringify(text)} is not a non-negative integer`, `pass ${flag} as a number, e.g. ${flag} 0`);
  return Number(text);
}

function describeGroups(groups: readonly number[]): string {
  if (groups.length === 0) return 'none';
  const parts: string[] = [];
  let start = groups[0]!;
  let prev = start;
  for (const g of [...groups.slice(1), Number.NaN]) {
    if (g === prev + 1) {
      prev = g;
      continue;
    }
    parts.push(start === prev ? `${start}` : `${start}-${prev}`);
    start = g;
    prev = g;
  }
  return parts.join(',');
}

// --- abacus counts ------------------------------------------------------------------------

const COUNTS_OPTIONS = {
  cassandra: { type: 'string' },
  keyspace: { type: 'string' },
  level: { type: 'string' },
  table: { type: 'string' },
  job: { type: 'string' },
  'local-dc': { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} as const;

const COUNTS_USAGE = `usage: abacus counts --cassandra HOST:PORT --keyspace KS [--level account|customer] [--table TABLE | --job [NAMESPACE/]NAME]
  Prints every counter of a job's Cassandra table as JSON lines. --job names the job's default
  table (an AbacusJob by its namespace and name). Without --table/--job, the keyspace's Abacus
  table of the given level is used (it must be the only one).`;

/**
 * `abacus counts` on Cassandra: every row as a JSON line
 * `{"scope","statistic_id","granularity","facet","value","bucket","count","uniques"}`
 * (bucket ISO-8601 UTC; uniques at account level only). Rows come in Cassandra's token
 * order; sort them if order matters. Resolves to the exit code.
 */
export async function runCountsFromCassandra(argv: string[], out: NodeJS.WritableStream = process.stdout, log: LogFn = stderrLog): Promise<number> {
  let values;
  try {
    values = parseArgs({ args: argv, options: COUNTS_OPTIONS, allowPositionals: false, strict: true }).values;
  } catch (err) {
    process.stderr.write(`abacus counts: ${(err as Error).message}\n${COUNTS_USAGE}\n`);
    return 2;
  }
  if (values.help === true) {
    process.stdout.write(`${COUNTS_USAGE}\n`);
    return 0;
  }
  if (values.cassandra === undefined) {
    process.stderr.write(`abacus counts: --cassandra HOST:PORT is required\n${COUNTS_USAGE}\n`);
    return 2;
  }
  if (values.level !== undefined && values.level !== 'account' && values.level !== 'customer') {
    process.stderr.write(`abacus counts: --level must be account or customer\n`);
    return 2;
  }
  const keyspace = values.keyspace ?? 'abacus';
  const contactPoints = splitList(values.cassandra);
  const localDataCenter = values['local-dc'] ?? 'datacenter1';
  const base = { contactPoints, localDataCenter, keyspace, consistency: 'LOCAL_QUORUM' as const, mode: 'final' as const, createSchema: false, replicationFactor: 1 };

  let client;
  try {
    client = await connectCassandra({ ...base, table: 'counts' }, log, AbortSignal.timeout(30_000));
  } catch (err) {
    process.stderr.write(`abacus counts: cannot connect to Cassandra at ${contactPoints.join(',')}: ${(err as Error).message}\n`);
    return 1;
  }
  const job = values.job?.split('/');
  let table = values.table ?? (job === undefined ? undefined : defaultTableName(job.length === 2 ? jobIdentity(job[1]!, job[0]) : values.job!));
  let level: 'account' | 'customer' | undefined = values.level === 'account' || values.level === 'customer' ? values.level : undefined;
  try {
    const rs = await client.execute('SELECT table_name, comment FROM system_schema.tables WHERE keyspace_name = ?', [keyspace], { prepare: true });
    const tables = rs.rows.map((r) => ({ name: r.get('table_name') as string, meta: parseTableComment(r.get('comment') as string) }));
    if (table === undefined) {
      const candidates = tables.filter((t) => t.meta?.kind === 'final' && (level === undefined || t.meta.level === level));
      if (candidates.length !== 1) {
        process.stderr.write(
          `abacus counts: ${candidates.length === 0 ? 'no' : 'several'} Abacus ${level ?? ''} tables in keyspace ${keyspace}${candidates.length > 0 ? ` (${candidates.map((c) => c.name).join(', ')})` : ''}; name one with --table or --job\n`,
        );
        return 2;
      }
      table = candidates[0]!.name;
    }
    const found = tables.find((t) => t.name === table);
    if (found === undefined) {
      process.stderr.write(`abacus counts: table ${keyspace}.${table} does not exist\n`);
      return 2;
    }
    level ??= found.meta?.level ?? 'account';
  } finally {
    await client.shutdown();
  }

  const sink = await CassandraSink.open({ config: { ...base, table }, level, job: values.job ?? table, log, signal: AbortSignal.timeout(30_000) });
  const lines = out === process.stdout ? standardOutput() : new LineOutput(out);
  try {
    for await (const row of sink.scan()) {
      const line = JSON.stringify({
        scope: row.scope,
        statistic_id: row.statisticId,
        granularity: row.granularity,
        facet: row.facet,
        value: row.value,
        bucket: formatBucket(row.bucket),
        count: row.count,
        ...(level === 'account' ? { uniques: row.uniques ?? 0 } : {}),
      });
      if (!(await lines.write(`${line}\n`))) break; // the reader has gone: stop quietly
    }
  } catch (err) {
    process.stderr.write(`abacus counts: reading ${keyspace}.${table} failed: ${(err as Error).message}\n`);
    return 1;
  } finally {
    await sink.close();
  }
  return 0;
}
