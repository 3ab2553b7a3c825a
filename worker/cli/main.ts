import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { AbacusError, ConfigError } from '../../common/errors';
import { parseIsoSeconds } from '../engine/time';
import { loadJobConfig, type JobConfig } from '../../common/job-config';
import { countLine } from '../../common/counter-id';
import { FileSource, parseFilePosition, StreamSource } from '../io/file-source';
import { DEFAULT_GENERATOR, GeneratorSource } from '../io/generator';
import { LocalSink } from '../io/local-sink';
import { startHttpServer } from '../runtime/http';
import { LocalObjectStore } from '../checkpoint/object-store';
import { objectStoreFor } from '../checkpoint/s3-object-store';
import { localPaths, restoreLocal, runLocal } from '../runtime/local';
import type { TaskCheckpoints } from '../runtime/task';
import { registry } from '../runtime/metrics';
import type { TaskProgress } from '../runtime/task';
import { runCountsFromCassandra, runWorkerCommand } from '../runtime/worker-process';
import { bytes, int, ProgressLine, rate, table } from './format';
import { standardOutput } from '../io/line-output';

/**
 * `abacus` — the command line. Exit codes: 0 done, 1 failed while running, 2 bad usage or
 * configuration (the message names the flag or field and the fix).
 */
const USAGE = `abacus — exact real-time counting

usage:
  abacus demo [--events N] [--data-dir DIR] [--metrics-port N]
      Generate realistic events, count them, show the results.
  abacus run --input FILE.jsonl|- --data-dir DIR [--config JOB.yaml] [--level account|customer]
             [--window DURATION] [--key-groups K] [--ingest-time ISO] [--metrics-port N]
             [--memory-budget SIZE] [--engine records|native]
             [--checkpoint-dir DIR [--checkpoint-interval 30s] [--checkpoint-retention N]]
      Count a JSONL file (or standard input: --input -) into a local data dir; a file's
      count resumes where it stopped after a crash.
      With a checkpoint dir, checkpoints the state there periodically and once at the end.
  abacus restore --checkpoint-dir DIR --data-dir DIR [--checkpoint ID]
      Rebuild a lost data dir from the newest complete checkpoint (or the one named);
      then \`abacus run\` on the same input resumes from the restored positions.
  abacus counts --data-dir DIR
  abacus counts --cassandra HOST:PORT --keyspace KS [--level account|customer]
      Print every counter as one JSON object per line.
  abacus worker --config JOB.yaml --ordinal I --replicas N [...]
      Run one worker of a job on Kafka and Cassandra (see docs/worker.md).
  abacus cleanup --config JOB.yaml
      Delete a stopped job's checkpoints and job-named Kafka topic and groups (what the
      operator runs for spec.whenDeleted: Delete; see docs/operator.md).
  abacus operator [--kubeconfig PATH]
      Run the Kubernetes operator (see docs/operator.md).

Durations are written like 500ms, 2s, 5m, 1h, 7d; sizes like 512Mi, 2Gi.
--memory-budget (run, demo, worker) bounds the state's memory (cache, Bloom filter, RocksDB
block cache and write buffers) and sizes them from it (state.memoryBudget in the job file).
--engine (run, demo) chooses the counting engine (state.engine): records (default), or native,
the Rust kernel (experimental; docs/adr/0007-hot-path.md).`;

export function main(argv: string[]): void {
  standardOutput(); // from here on, a reader that goes away (EPIPE) ends output quietly
  run(argv).then(
    (code) => {
      process.exitCode = code;
    },
    (err: unknown) => {
      process.stderr.write(`abacus: ${describeError(err)}\n`);
      process.exitCode = err instanceof ConfigError ? 2 : 1;
    },
  );
}

async function run(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  // The operator parses its own flags and prints its own, longer usage.
  if (command !== undefined && command !== 'operator' && (rest.includes('--help') || rest.includes('-h'))) {
    const usage = usageOf(command);
    if (usage !== undefined) {
      await standardOutput().write(`${usage}\n`);
      return 0;
    }
  }
  switch (command) {
    case 'run':
      return runCommand(rest);
    case 'restore':
      return restoreCommand(rest);
    case 'counts':
      return rest.includes('--cassandra') ? runCountsFromCassandra(rest) : countsCommand(rest);
    case 'demo':
      return demoCommand(rest);
    case 'worker':
      return runWorkerCommand(rest);
    case 'cleanup':
      return cleanupCommand(rest);
    case 'operator':
      return operatorCommand(rest);
    case undefined:
    case 'help':
    case '--help':
    case '-h':
      await standardOutput().write(`${USAGE}\n`);
      return command === undefined ? 2 : 0;
    default:
      process.stderr.write(`abacus: unknown command "${command}"\n\n${USAGE}\n`);
      return 2;
  }
}

async function cleanupCommand(argv: string[]): Promise<number> {
  const { runCleanupCommand } = await import('../runtime/cleanup');
  return runCleanupCommand(argv);
}

/** The part of USAGE about one command (`abacus run --help`), or undefined for an unknown one. */
function usageOf(command: string): string | undefined {
  const blocks = USAGE.split(/\n(?=  abacus )/).filter((b) => b.startsWith(`  abacus ${command} `) || b.startsWith(`  abacus ${command}\n`));
  if (blocks.length === 0) return undefined;
  return `usage:\n${blocks.map((b) => b.replace(/\n\nDurations[\s\S]*$/, '')).join('\n')}\n\nDurations are written like 500ms, 2s, 5m, 1h, 7d.`;
}

async function operatorCommand(argv: string[]): Promise<number> {
  // Loaded on demand: local mode should not pay for loading the Kubernetes client.
  const { runOperatorCommand } = await import('../../operator/main');
  return runOperatorCommand(argv);
}

function describeError(err: unknown): string {
  if (err instanceof AbacusError) return `error [${err.code}]: ${err.message}`;
  return `error: ${(err as Error).stack ?? String(err)}`;
}

type FlagSpec = NonNullable<ParseArgsConfig['options']>;

function parse<const T extends FlagSpec>(argv: string[], options: T) {
  try {
    return parseArgs({ args: argv, options, strict: true, allowPositionals: false }).values;
  } catch (err) {
    throw new ConfigError('arguments', (err as Error).message, 'see `abacus help` for the flags each command takes');
  }
}

/** Flags that override the job file, shared by run and demo. */
const JOB_FLAGS = {
  config: { type: 'string' },
  level: { type: 'string' },
  window: { type: 'string' },
  'key-groups': { type: 'string' },
  'metrics-port': { type: 'string' },
  'memory-budget': { type: 'string' },
  engine: { type: 'string' },
} as const;

type JobFlagValues = { config?: string; level?: string; window?: string; 'key-groups'?: string; 'metrics-port'?: string; 'memory-budget'?: string; engine?: string };

function jobOverrides(values: JobFlagValues): Record<string, unknown> {
  return {
    level: values.level,
    window: values.window,
    keyGroups: values['key-groups'],
    metrics: values['metrics-port'] === undefined ? undefined : { port: values['metrics-port'] },
    state:
      values['memory-budget'] === undefined && values.engine === undefined
        ? undefined
        : { ...(values['memory-budget'] === undefined ? {} : { memoryBudget: values['memory-budget'] }), ...(values.engine === undefined ? {} : { engine: values.engine }) },
  };
}

function jobConfigFrom(values: JobFlagValues): JobConfig {
  return loadJobConfig(values.config, jobOverrides(values));
}

async function runCommand(argv: string[]): Promise<number> {
  const values = parse(argv, {
    ...JOB_FLAGS,
    input: { type: 'string' },
    'data-dir': { type: 'string' },
    'ingest-time': { type: 'string' },
    quiet: { type: 'boolean' },
    'checkpoint-dir': { type: 'string' },
    'checkpoint-interval': { type: 'string' },
    'checkpoint-retention': { type: 'string' },
  });
  if (values.input === undefined) throw new ConfigError('--input', 'is missing', 'give the JSONL file to count, e.g. --input events.jsonl, or --input - for standard input');
  if (values['data-dir'] === undefined) throw new ConfigError('--data-dir', 'is missing', 'give a directory for state and counts, e.g. --data-dir ./abacus-data');
  const config = loadJobConfig(values.config, {
    ...jobOverrides(values),
    checkpoints:
      values['checkpoint-dir'] === undefined
        ? checkpointFlagsWithoutDir(values)
        : { dir: values['checkpoint-dir'], interval: values['checkpoint-interval'] ?? '30s', retention: values['checkpoint-retention'] },
  });
  const checkpoints = localCheckpoints(config);
  let ingestTimeMs: number | undefined;
  if (values['ingest-time'] !== undefined) {
    const s = parseIsoSeconds(values['ingest-time']);
    if (Number.isNaN(s)) throw new ConfigError('--ingest-time', `"${values['ingest-time']}" is not an ISO-8601 date-time with a zone`, 'write it like 2026-11-27T06:00:00Z');
    ingestTimeMs = s * 1000;
  }
  // The input is opened first: a wrong --input is reported before the data dir is created.
  const lineOptions = { maxLineBytes: config.maxEventBytes + 1, ...(ingestTimeMs === undefined ? {} : { ingestTimeMs }) };
  const source = values.input === '-' ? new StreamSource(process.stdin, lineOptions) : await FileSource.open(values.input, lineOptions);
  const started = Date.now();
  const progress = new ProgressLine();
  const quiet = values.quiet === true;
  const result = await withMetricsServer(values['metrics-port'] === undefined ? undefined : config.metricsPort, () =>
    runLocal({
      config,
      dataDir: values['data-dir']!,
      source,
      onProgress: quiet ? undefined : (p) => progress.update(progressText(p, started)),
      log: (line) => process.stderr.write(`abacus: ${line}\n`),
      ...(checkpoints === undefined ? {} : { checkpoints }),
    }),
  ).finally(() => checkpoints?.objectStore.close?.());
  if (!quiet) {
    progress.done(progressText(result, started));
    process.stderr.write(
      `done: ${int(result.counted)} events counted, ${int(result.duplicates)} duplicates dropped, ${int(result.invalid)} invalid` +
        (result.invalid > 0 ? ` (see ${result.deadLetterPath})` : '') +
        `; state ${bytes(result.stateBytes)}\n`,
    );
    const cp = result.lastCheckpoint;
    if (cp !== undefined) {
      process.stderr.write(
        `checkpoint ${cp.manifestId} in ${checkpoints!.objectStore.description}: ${cp.base.length + cp.delta.length + cp.unchanged.length} key groups ` +
          `(${cp.base.length} full, ${cp.delta.length} incremental, ${cp.unchanged.length} unchanged), ${bytes(cp.bytes)} written in ${cp.durationMs} ms\n`,
      );
    }
  }
  return 0;
}

function checkpointFlagsWithoutDir(values: { 'checkpoint-interval'?: string; 'checkpoint-retention'?: string }): undefined {
  for (const flag of ['checkpoint-interval', 'checkpoint-retention'] as const) {
    if (values[flag] !== undefined) throw new ConfigError(`--${flag}`, 'needs --checkpoint-dir', 'give the directory to checkpoint into with --checkpoint-dir DIR');
  }
  return undefined;
}

/** Local mode's checkpoint settings: the whole job (every group, ~meta, the file position) in each checkpoint, and one at the end. */
function localCheckpoints(config: JobConfig): (TaskCheckpoints & { objectStore: { close?(): void } }) | undefined {
  const cp = config.checkpoints;
  if (cp === undefined) return undefined;
  return { objectStore: objectStoreFor(cp), writer: 'local', intervalMs: cp.intervalMs, retention: cp.retention, includeUnkeyed: true, restoreMissing: false, finalCheckpoint: true };
}

async function restoreCommand(argv: string[]): Promise<number> {
  const values = parse(argv, { 'checkpoint-dir': { type: 'string' }, 'data-dir': { type: 'string' }, checkpoint: { type: 'string' } });
  if (values['checkpoint-dir'] === undefined) throw new ConfigError('--checkpoint-dir', 'is missing', 'give the directory `abacus run --checkpoint-dir` wrote to');
  if (values['data-dir'] === undefined) throw new ConfigError('--data-dir', 'is missing', 'give the data dir to rebuild (it must not exist or be empty)');
  const dataDir = values['data-dir'];
  const store = new LocalObjectStore(values['checkpoint-dir']);
  const r = await restoreLocal(dataDir, store, values.checkpoint, (line) => process.stderr.write(`abacus: ${line}\n`));
  const m = r.manifest;
  const lines = [
    `restored ${dataDir} from checkpoint ${m.id} (${m.reason}, written ${new Date(m.createdAtMs).toISOString()}) in ${store.description}`,
    `  ${int(r.groups)} key groups, ${int(r.records)} state records, ${bytes(r.bytes)} read, in ${r.durationMs} ms; ${int(r.counters)} counters in the sink`,
    ...Object.entries(r.positions).map(([partition, position]) => `  input ${partition.replace(/^file:/, '')} resumes at ${describePosition(position)}`),
  ];
  if (r.skipped.length > 0) lines.push(`  newer checkpoints skipped: ${r.skipped.map((s) => `${s.manifestId} (${s.problem})`).join('; ')}`);
  lines.push('next: `abacus run` with the same --input and this --data-dir counts the rest (the dead-letter file is not part of a checkpoint)');
  process.stdout.write(`${lines.join('\n')}\n`);
  return 0;
}

/** A file position in words. */
function describePosition(position: string): string {
  const p = parseFilePosition(position);
  return p === undefined ? position : `byte ${int(p.offset)} (ingest time ${new Date(p.ingestTimeMs).toISOString()})`;
}

function progressText(p: TaskProgress, started: number, total?: number): string {
  const seconds = Math.max(0.001, (Date.now() - started) / 1000);
  const done = total === undefined ? int(p.read) : `${int(p.read)}/${int(total)} (${Math.floor((100 * p.read) / total)}%)`;
  return `records ${done} | ${rate(p.read / seconds)} | counted ${int(p.counted)} | duplicates ${int(p.duplicates)} | invalid ${int(p.invalid)} | windows ${int(p.windows)}`;
}

async function withMetricsServer<T>(port: number | undefined, body: () => Promise<T>): Promise<T> {
  if (port === undefined) return body();
  const server = await startHttpServer({ port, host: '127.0.0.1', registry, ready: () => true });
  process.stderr.write(`metrics: http://127.0.0.1:${server.port}/metrics\n`);
  try {
    return await body();
  } finally {
    await server.close();
  }
}

async function countsCommand(argv: string[]): Promise<number> {
  const values = parse(argv, { 'data-dir': { type: 'string' } });
  if (values['data-dir'] === undefined) throw new ConfigError('--data-dir', 'is missing', 'give the data dir of an `abacus run`, or --cassandra HOST:PORT --keyspace KS');
  const sink = await LocalSink.openExisting(localPaths(values['data-dir']).sink, loadJobConfig(undefined).rocksdb);
  try {
    const account = sink.hasUniques;
    const out = standardOutput();
    for await (const row of sink.scan()) {
      if (!(await out.write(`${JSON.stringify(countLine(row, account))}\n`))) break; // the reader has gone: stop quietly
    }
  } finally {
    await sink.close();
  }
  return 0;
}

async function demoCommand(argv: string[]): Promise<number> {
  const values = parse(argv, { ...JOB_FLAGS, events: { type: 'string' }, 'data-dir': { type: 'string' } });
  const events = values.events === undefined ? DEFAULT_GENERATOR.events : Number(values.events);
  if (!Number.isInteger(events) || events < 1) throw new ConfigError('--events', `"${values.events}" is not a positive integer`, 'give a number of events, e.g. --events 100000');
  const config = jobConfigFrom({ ...values, 'metrics-port': values['metrics-port'] ?? '0' });
  const ownDir = values['data-dir'] === undefined;
  const dataDir = values['data-dir'] ?? mkdtempSync(join(tmpdir(), 'abacus-demo-'));
  const generator = { ...DEFAULT_GENERATOR, events, facets: 7 };
  process.stderr.write(
    `Abacus demo: ${int(events)} generated events (${int(generator.customers)} customers, Zipf; ${generator.duplicateRate * 100}% re-delivered, ${generator.lateRate * 100}% late or back-filled), ` +
      `level ${config.level}, ${config.keyGroups} key groups, window ${config.windowMs} ms\nstate in ${dataDir}\n`,
  );
  const started = Date.now();
  const progress = new ProgressLine();
  try {
    const result = await withMetricsServer(config.metricsPort, () =>
      runLocal({ config, dataDir, source: new GeneratorSource(generator), onProgress: (p) => progress.update(progressText(p, started, events)) }),
    );
    progress.done(progressText(result, started, events));
    const seconds = (Date.now() - started) / 1000;
    await standardOutput().write(await demoReport(dataDir, result, seconds, config));
  } finally {
    if (ownDir) rmSync(dataDir, { recursive: true, force: true });
  }
  return 0;
}

/** What a person wants to see after the demo: totals, the busiest counters, uniques. */
async function demoReport(dataDir: string, result: TaskProgress & { stateBytes: number }, seconds: number, config: JobConfig): Promise<string> {
  const sink = await LocalSink.openExisting(localPaths(dataDir).sink, config.rocksdb);
  const dayTotals: Array<{ scope: string; statistic: string; bucket: number; count: number; uniques: number }> = [];
  const campaignMonths: Array<{ scope: string; statistic: string; campaign: string; month: number; count: number; uniques: number }> = [];
  let counters = 0;
  try {
    for await (const row of sink.scan()) {
      counters++;
      if (row.granularity === 'day' && row.facet === '*') dayTotals.push({ scope: row.scope, statistic: row.statisticId, bucket: row.bucket, count: row.count, uniques: row.uniques ?? 0 });
      if (row.granularity === 'month' && row.facet === 'campaign') {
        campaignMonths.push({ scope: row.scope, statistic: row.statisticId, campaign: row.value, month: row.bucket, count: row.count, uniques: row.uniques ?? 0 });
      }
    }
  } finally {
    await sink.close();
  }
  dayTotals.sort((a, b) => b.count - a.count);
  const lines: string[] = [];
  lines.push('');
  lines.push(`Counted ${int(result.counted)} events in ${seconds.toFixed(1)} s (${rate(result.read / seconds)}); dropped ${int(result.duplicates)} duplicates; ${int(result.invalid)} invalid.`);
  lines.push(`${int(counters)} counters in the sink; state ${bytes(result.stateBytes)}; ${int(result.windows)} windows flushed.`);
  lines.push('');
  lines.push('Busiest account/statistic/day totals (count = events, uniques = distinct customers):');
  lines.push(
    table([
      ['account', 'statistic', 'day', 'count', 'uniques'],
      ...dayTotals.slice(0, 10).map((d) => [d.scope, d.statistic, new Date(d.bucket * 1000).toISOString().slice(0, 10), int(d.count), int(d.uniques)]),
    ]),
  );
  const campaigns = campaignMonths.sort((a, b) => b.count - a.count).slice(0, 8);
  if (campaigns.length > 0) {
    lines.push('');
    lines.push('Busiest campaigns of a month (count = events, uniques = distinct customers):');
    lines.push(
      table([
        ['account', 'statistic', 'campaign', 'month', 'count', 'uniques'],
        ...campaigns.map((c) => [c.scope, c.statistic, c.campaign, new Date(c.month * 1000).toISOString().slice(0, 7), int(c.count), int(c.uniques)]),
      ]),
    );
  }
  lines.push('');
  lines.push('Next: `abacus run --input events.jsonl --data-dir DIR` counts your own file; `abacus counts --data-dir DIR` prints every counter.');
  return `${lines.join('\n')}\n`;
}
