/**
 * Benchmark of the counting engine alone (no Kafka, no Cassandra): the count task with its
 * RocksDB state and the embedded sink, fed by the built-in generator.
 *
 * Workload (defaults): 5.2 M records → ≥ 5 M distinct event identities, 1 M customers
 * (Zipf, s = 1), 6 facets per event (3 granularities × (1 + 6) = 21 counters per event),
 * 2 % re-delivered duplicates, 5 % late or back-filled events, account level (exact uniques).
 *
 * Prints: events/s per core (records / CPU seconds of the process), wall-clock events/s,
 * the generator's own share (measured separately and subtracted), peak RSS, state size on
 * disk, and state-cache statistics.
 *
 *   npm run bench -- [--events N] [--customers N] [--window 1s] [--data-dir DIR] [--keep]
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { resolveJobConfig } from '../worker/config';
import { FileDeadLetter } from '../worker/io/file-dead-letter';
import { DEFAULT_GENERATOR, EventGenerator, GeneratorSource, type GeneratorOptions } from '../worker/io/generator';
import { LocalSink } from '../worker/io/local-sink';
import { localPaths } from '../worker/runtime/local';
import { CountTask } from '../worker/runtime/task';
import { bytes, int, ProgressLine, rate } from '../worker/cli/format';

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      events: { type: 'string', default: '5200000' },
      customers: { type: 'string', default: '1000000' },
      window: { type: 'string', default: '1s' },
      'cache-entries': { type: 'string', default: '2000000' },
      'data-dir': { type: 'string' },
      keep: { type: 'boolean', default: false },
    },
  });
  const events = Number(values.events);
  const generator: GeneratorOptions = {
    ...DEFAULT_GENERATOR,
    events,
    customers: Number(values.customers),
    companies: 6,
    statistics: 6,
    facets: 6,
    duplicateRate: 0.02,
    lateRate: 0.05,
    noIdRate: 0,
    ratePerSecond: 50_000,
  };
  const config = resolveJobConfig({ keyGroups: 128, window: values.window, state: { cacheEntries: Number(values['cache-entries']) } });
  const dataDir = values['data-dir'] ?? mkdtempSync(join(tmpdir(), 'abacus-bench-'));
  console.log(`workload: ${int(events)} records, ${int(generator.customers)} customers (Zipf s=${generator.zipfExponent}), ${generator.facets} facets → ${3 * (1 + generator.facets)} counters/event, ${generator.duplicateRate * 100}% duplicates, ${generator.lateRate * 100}% late/historical`);
  console.log(`config: level ${config.level}, ${config.keyGroups} key groups, window ${values.window}, cache ${int(config.stateCacheEntries)} entries; data in ${dataDir}`);

  // The generator's own cost, measured alone on a sample, so it can be taken out.
  const sample = Math.min(events, 300_000);
  const gen = new EventGenerator(generator);
  const g0 = process.cpuUsage();
  let sink = 0;
  for (let i = 0; i < sample; i++) sink += Buffer.from(gen.recordAt(i).value).length;
  const genCpuPerRecord = cpuSeconds(process.cpuUsage(g0)) / sample;
  console.log(`generator alone: ${rate(1 / genCpuPerRecord)} per core (${((genCpuPerRecord * 1e6)).toFixed(2)} µs/record, avg ${Math.round(sink / sample)} bytes)`);

  const countSink = await LocalSink.open(localPaths(dataDir).sink, config.rocksdb, config.level);
  const task = await CountTask.open({ config, dataDir, source: new GeneratorSource(generator), sink: countSink, deadLetter: new FileDeadLetter(localPaths(dataDir).deadLetter) });
  const progress = new ProgressLine();
  const wall0 = process.hrtime.bigint();
  const cpu0 = process.cpuUsage();
  let lastReport = 0;
  const result = await runWithProgress(task, (read) => {
    if (read - lastReport >= 250_000) {
      lastReport = read;
      const s = Number(process.hrtime.bigint() - wall0) / 1e9;
      progress.update(`${int(read)}/${int(events)} records, ${rate(read / s)} wall, rss ${bytes(process.memoryUsage().rss)}`, true);
    }
  });
  const wall = Number(process.hrtime.bigint() - wall0) / 1e9;
  const cpu = cpuSeconds(process.cpuUsage(cpu0));
  const stateApprox = task.stateSize();
  const cacheStats = task.cacheStats;
  await task.close();
  await countSink.close();
  const engineCpu = cpu - genCpuPerRecord * result.read;
  const du = (dir: string): number => Number(execFileSync('du', ['-sb', dir], { encoding: 'utf8' }).split('\t')[0]);

  console.log('');
  console.log(`records ${int(result.read)}, counted ${int(result.counted)}, duplicates ${int(result.duplicates)}, invalid ${int(result.invalid)}, windows ${int(result.windows)}, counter rows written ${int(result.rowsWritten)}`);
  console.log(`wall ${wall.toFixed(1)} s → ${rate(result.read / wall)} (generator included)`);
  console.log(`cpu ${cpu.toFixed(1)} s (user+sys, all threads incl. RocksDB) → ${rate(result.read / cpu)} per core (generator included)`);
  console.log(`engine alone: ${rate(result.read / engineCpu)} per core (generator's ${(genCpuPerRecord * result.read).toFixed(1)} s subtracted)`);
  console.log(`peak RSS ${bytes(process.resourceUsage().maxRSS * 1024)}`);
  console.log(`state on disk ${bytes(du(localPaths(dataDir).state))} (files when the task closed: ${bytes(stateApprox)}), sink ${bytes(du(localPaths(dataDir).sink))}`);
  console.log(`state reads: ${int(cacheStats.cacheHits)} cache hits, ${int(cacheStats.filteredReads)} ruled out by the Bloom filter, ${int(cacheStats.storeReads)} from RocksDB`);
  if (!values.keep && values['data-dir'] === undefined) rmSync(dataDir, { recursive: true, force: true });
}

async function runWithProgress(task: CountTask, onRead: (read: number) => void): Promise<Awaited<ReturnType<CountTask['run']>>> {
  const timer = setInterval(() => onRead(task.progress.read), 1000);
  try {
    return await task.run();
  } finally {
    clearInterval(timer);
  }
}

function cpuSeconds(u: NodeJS.CpuUsage): number {
  return (u.user + u.system) / 1e6;
}

main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
