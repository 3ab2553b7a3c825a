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
 * Then two adversarial cases beside it (issue 11), each on a fresh data dir, printing the
 * engine's CPU cost per event and per counter update, to compare with the normal workload:
 * - heavy customer: `--heavy-events` events (default 40,000) of ONE customer of one account
 *   within one month, every event with new facet values (6 facets);
 * - wide event: `--wide-events` events (default 20) with `--wide-facets` facets each
 *   (default 60,000, ~860 KB an event).
 *
 *   npm run bench -- [--events N] [--customers N] [--window 1s] [--clock cpu|wall] [--cache-entries N | --memory-budget SIZE] [--engine records|native] [--data-dir DIR] [--keep]
 *                    [--case all|normal|heavy|wide] [--heavy-events N] [--wide-events N] [--wide-facets N]
 *
 * With --memory-budget (e.g. 1Gi) the state sizes itself from the budget (common/memory-budget.ts)
 * and the peak RSS is compared with it.
 *
 * Small and quick: `npm run bench -- --events 100000 --customers 20000 --heavy-events 10000 --wide-events 5 --wide-facets 20000`
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { nodeFlags, parseMemoryBudget, planMemory } from '../common/memory-budget';
import { WORKER_MALLOC_ENV, workerNodeOptions } from '../common/node-options';
import { resolveJobConfig, sinkTuning } from '../common/job-config';
import { FileDeadLetter } from '../worker/io/file-dead-letter';
import { EventGenerator, GeneratorSource, type GeneratorOptions } from '../worker/io/generator';
import { LocalSink } from '../worker/io/local-sink';
import type { Source, SourceRecord } from '../worker/io/types';
import { localPaths } from '../worker/runtime/local';
import { CountTask } from '../worker/runtime/task';
import { bytes, int, ProgressLine, rate } from '../worker/cli/format';
import { benchWorkload } from './workload';

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      events: { type: 'string', default: '5200000' },
      customers: { type: 'string', default: '1000000' },
      window: { type: 'string', default: '1s' },
      clock: { type: 'string', default: 'cpu' },
      'cache-entries': { type: 'string', default: '2000000' },
      'memory-budget': { type: 'string' },
      engine: { type: 'string', default: 'records' },
      'data-dir': { type: 'string' },
      keep: { type: 'boolean', default: false },
      case: { type: 'string', default: 'all' },
      'heavy-events': { type: 'string', default: '40000' },
      'wide-events': { type: 'string', default: '20' },
      'wide-facets': { type: 'string', default: '60000' },
    },
  });
  if (respawnAsWorker(values['memory-budget'], values.engine)) return;
  const cases = values.case === 'all' ? ['normal', 'heavy', 'wide'] : [values.case];
  const perEvent: Record<string, CaseCost> = {};
  if (cases.includes('normal')) perEvent.normal = await normalCase(values);
  if (cases.includes('heavy')) perEvent.heavy = await listCase('heavy customer', heavyCustomer(Number(values['heavy-events'])), values);
  if (cases.includes('wide')) perEvent.wide = await listCase('wide events', wideEvents(Number(values['wide-events']), Number(values['wide-facets'])), values);
  if (perEvent.normal !== undefined && Object.keys(perEvent).length > 1) {
    console.log('');
    console.log('engine CPU cost vs the normal workload (per event / per counter update):');
    for (const [name, c] of Object.entries(perEvent)) {
      console.log(
        `  ${name.padEnd(7)} ${c.usPerEvent.toFixed(1)} µs/event (${(c.usPerEvent / perEvent.normal.usPerEvent).toFixed(2)}x), ${c.usPerUpdate.toFixed(2)} µs/counter update (${(c.usPerUpdate / perEvent.normal.usPerUpdate).toFixed(2)}x); ${c.rowsPerUpdate.toFixed(3)} counter rows written per update`,
      );
    }
  }
}

/**
 * The benchmark measures the engine as a worker runs it: with the workers' malloc settings
 * (fewer glibc arenas: 150 MiB less RSS at 2 M records on the native engine, same speed),
 * which only the environment of a process sets, and with the workers' V8 heap sizes (the
 * engine's young generation, or a budget's MemoryPlan.semiSpaceMiB and heapLimitMiB), which
 * only flags of the process set, as the operator's NODE_OPTIONS does for workers. So it runs
 * itself again with them when they are missing. Returns true when the child ran.
 */
function respawnAsWorker(budget: string | undefined, engine: string): boolean {
  const flags = budget === undefined ? workerNodeOptions(engine === 'native' ? 'native' : 'records').split(' ') : nodeFlags(planMemory(parseMemoryBudget(budget, '--memory-budget')), engine === 'native' ? 'native' : 'records');
  const mallocSet = Object.entries(WORKER_MALLOC_ENV).every(([name, value]) => process.env[name] === value);
  if (mallocSet && flags.every((f) => process.execArgv.includes(f))) return false;
  const sized = (a: string): boolean => a.startsWith('--max-semi-space-size') || a.startsWith('--max-old-space-size');
  const execArgv = [...process.execArgv.filter((a) => !sized(a)), ...flags];
  const heap = `${flags.join(' ')} (the heap ${budget === undefined ? `workers of the ${engine} engine get` : 'the budget allows'}) and `;
  console.log(`(running again with ${heap}the workers' ${Object.entries(WORKER_MALLOC_ENV).map(([n, v]) => `${n}=${v}`).join(' ')})`);
  const child = spawnSync(process.execPath, [...execArgv, __filename, ...process.argv.slice(2)], { stdio: 'inherit', env: { ...process.env, ...WORKER_MALLOC_ENV } });
  process.exitCode = child.status ?? 1;
  return true;
}

interface CaseCost {
  readonly usPerEvent: number;
  readonly usPerUpdate: number;
  /**
   * Counter rows the window closes wrote per counter update: the share of updates that pay
   * the per-counter costs (state read, update, commit put, sink row). The normal workload
   * shares a counter among many events of a window; every update of a wide event is a
   * counter of its own.
   */
  readonly rowsPerUpdate: number;
}

/**
 * The clock that closes the task's windows. `cpu` (the default): the process's CPU time, so a
 * window closes after the same work whatever else runs on the machine — with the wall clock,
 * a loaded machine closes more windows per record, each writing its counters again, and the
 * per-update cost of the normal workload (whose counters are shared within a window) rises
 * with the machine's load while a wide event's (every update a counter of its own) does not.
 * `wall`: real time, as a worker runs.
 */
function benchClock(kind: string): () => number {
  if (kind === 'wall') return Date.now;
  if (kind !== 'cpu') throw new Error(`--clock ${kind}: use cpu or wall`);
  return () => cpuSeconds(process.cpuUsage()) * 1000;
}

/**
 * Collects the garbage of earlier cases (when node runs with --expose-gc, as `npm run bench`
 * does) so that a case is not charged for the heap another case left behind.
 */
function collectGarbage(): void {
  (globalThis as { gc?: () => void }).gc?.();
}

async function normalCase(values: { events: string; customers: string; window: string; clock: string; engine: string; 'cache-entries': string; 'memory-budget'?: string; 'data-dir'?: string; keep: boolean }): Promise<CaseCost> {
  const events = Number(values.events);
  const generator: GeneratorOptions = benchWorkload(events, Number(values.customers));
  const budget = values['memory-budget'];
  const config = resolveJobConfig({ keyGroups: 128, window: values.window, state: { engine: values.engine, ...(budget === undefined ? { cacheEntries: Number(values['cache-entries']) } : { memoryBudget: budget }) } });
  const dataDir = values['data-dir'] ?? mkdtempSync(join(tmpdir(), 'abacus-bench-'));
  console.log(`workload: ${int(events)} records, ${int(generator.customers)} customers (Zipf s=${generator.zipfExponent}), ${generator.facets} facets → ${3 * (1 + generator.facets)} counters/event, ${generator.duplicateRate * 100}% duplicates, ${generator.lateRate * 100}% late/historical`);
  const m = config.memory;
  const cacheSize = m === undefined ? `cache ${int(config.stateCacheEntries)} entries` : `memory budget ${bytes(m.budget)}: cache ${bytes(m.cacheBytes)}, Bloom filter ${bytes(m.filterBits / 8)}, block cache ${bytes(m.blockCacheSize)}, write buffers 2 × ${bytes(m.writeBufferSize)}, runtime reserve ${bytes(m.reserve)}`;
  const nativeState = m === undefined ? 'all state in memory' : `memory budget ${bytes(m.budget)}: kernel state ${bytes(m.nativeStateBytes)} (spilling beyond it), block cache ${bytes(m.blockCacheSize)}, write buffers 2 × ${bytes(m.writeBufferSize)}, runtime reserve ${bytes(m.reserve)}`;
  console.log(`config: ${config.engine} engine, level ${config.level}, ${config.keyGroups} key groups, window ${values.window}, ${config.engine === 'native' ? nativeState : cacheSize}; data in ${dataDir}`);

  // The generator's own cost, measured alone so it can be taken out: the median of three
  // samples taken at the start, the middle and the end of the records (a single sample at the
  // start varied from 3.5 to 4.6 µs a record between runs, moving the engine's figure by 15 %).
  const sample = Math.min(events, 100_000);
  const gen = new EventGenerator(generator);
  let sink = 0;
  const costs = [0, Math.floor((events - sample) / 2), events - sample].map((from) => {
    const g0 = process.cpuUsage();
    for (let i = from; i < from + sample; i++) sink += Buffer.from(gen.recordAt(i).value).length;
    return cpuSeconds(process.cpuUsage(g0)) / sample;
  });
  const genCpuPerRecord = costs.sort((a, b) => a - b)[1]!;
  console.log(`generator alone: ${rate(1 / genCpuPerRecord)} per core (${((genCpuPerRecord * 1e6)).toFixed(2)} µs/record, median of ${costs.map((c) => (c * 1e6).toFixed(2)).join(', ')}; avg ${Math.round(sink / (3 * sample))} bytes)`);

  const countSink = await LocalSink.open(localPaths(dataDir).sink, sinkTuning(config), config.level);
  const task = await CountTask.open({ config, dataDir, source: new GeneratorSource(generator), sink: countSink, deadLetter: new FileDeadLetter(localPaths(dataDir).deadLetter), clock: benchClock(values.clock) });
  const progress = new ProgressLine();
  collectGarbage();
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
  const memEnd = process.memoryUsage();
  const cacheStats = task.cacheStats;
  const kernel = task.nativeStats();
  await task.close();
  await countSink.close();
  const engineCpu = cpu - genCpuPerRecord * result.read;
  const du = (dir: string): number => Number(execFileSync('du', ['-sb', dir], { encoding: 'utf8' }).split('\t')[0]);

  console.log('');
  console.log(`records ${int(result.read)}, counted ${int(result.counted)}, duplicates ${int(result.duplicates)}, invalid ${int(result.invalid)}, windows ${int(result.windows)}, counter rows written ${int(result.rowsWritten)}`);
  console.log(`wall ${wall.toFixed(1)} s → ${rate(result.read / wall)} (generator included)`);
  console.log(`cpu ${cpu.toFixed(1)} s (user+sys, all threads incl. RocksDB) → ${rate(result.read / cpu)} per core (generator included)`);
  console.log(`engine alone: ${rate(result.read / engineCpu)} per core (generator's ${(genCpuPerRecord * result.read).toFixed(1)} s subtracted)`);
  const peakRss = process.resourceUsage().maxRSS * 1024;
  const held = kernel === undefined ? `state cache at the end: ${int(task.cacheSize)} records, ${bytes(task.cacheBytes)} estimated` : `kernel tables: ${bytes(kernel.stateBytes)} (${int(kernel.identities)} identities, ${int(kernel.markers)} markers, ${int(kernel.counters)} counters, ${int(kernel.customers)} customers, ${int(kernel.buckets)} buckets)`;
  console.log(`peak RSS ${bytes(peakRss)} (${int(Math.round(peakRss / 2 ** 20))} MiB)${m === undefined ? '' : ` — ${peakRss <= m.budget ? 'within' : 'OVER'} the memory budget of ${bytes(m.budget)} (${((peakRss / m.budget) * 100).toFixed(0)} %)`}; ${held}`);
  const kernelBytes = kernel?.stateBytes ?? 0;
  console.log(
    `memory at the end: rss ${bytes(memEnd.rss)} = V8 heap ${bytes(memEnd.heapTotal)} + buffers ${bytes(memEnd.arrayBuffers)}${kernel === undefined ? '' : ` + kernel tables ${bytes(kernelBytes)}`} + the rest ${bytes(memEnd.rss - memEnd.heapTotal - memEnd.arrayBuffers - kernelBytes)} (RocksDB memtables and block caches, code, allocator)`,
  );
  console.log(`state on disk ${bytes(du(localPaths(dataDir).state))} (files when the task closed: ${bytes(stateApprox)}), sink ${bytes(du(localPaths(dataDir).sink))}`);
  if (kernel === undefined) console.log(`state reads: ${int(cacheStats.cacheHits)} cache hits, ${int(cacheStats.filteredReads)} ruled out by the Bloom filter, ${int(cacheStats.storeReads)} from RocksDB`);
  else if (m !== undefined) console.log(`spilled at the end: ${int(kernel.spilledIdentities)} identities, ${int(kernel.spilledCustomers)} customers' marker sets; ${int(task.spillReads)} spill records read back`);
  if (!values.keep && values['data-dir'] === undefined) rmSync(dataDir, { recursive: true, force: true });
  const updates = result.counted * 3 * (1 + generator.facets);
  console.log(`engine cost: ${((engineCpu / result.read) * 1e6).toFixed(1)} µs/event, ${((engineCpu / updates) * 1e6).toFixed(2)} µs/counter update`);
  return { usPerEvent: (engineCpu / result.read) * 1e6, usPerUpdate: (engineCpu / updates) * 1e6, rowsPerUpdate: result.rowsWritten / updates };
}

/** An adversarial case: records built up front (so no generator cost is measured), counted on a fresh data dir. */
interface ListCase {
  readonly records: Buffer[];
  /** Counter updates the records make (3 granularities × (1 + facets) per counted event). */
  readonly updates: number;
  readonly describe: string;
}

const CASE_START_MS = Date.UTC(2026, 10, 1);

function heavyCustomer(events: number): ListCase {
  const monthSec = 29 * 86400;
  const records = Array.from({ length: events }, (_, i) =>
    Buffer.from(
      JSON.stringify({
        company_id: 'acme-outdoor',
        statistic_id: 'page_view',
        customer_id: 'heavy-customer-1',
        timestamp: CASE_START_MS / 1000 + Math.floor((i * monthSec) / events),
        event_id: `heavy-${i}`,
        campaign: `campaign-${i}`,
        page: `/products/${i}`,
        product: `sku-${i % 5000}`,
        list: `list-${i % 25}`,
        device: ['mobile', 'desktop', 'tablet'][i % 3],
        country: ['US', 'DE', 'FR', 'GB'][i % 4],
      }),
    ),
  );
  return { records, updates: events * 3 * 7, describe: `${int(events)} events of one customer in one month, 6 facets each with new values` };
}

function wideEvents(events: number, facets: number): ListCase {
  const records = Array.from({ length: events }, (_, i) => {
    const e: Record<string, unknown> = { company_id: 'acme-outdoor', statistic_id: 'page_view', customer_id: `wide-${i}`, timestamp: CASE_START_MS / 1000 + i * 60, event_id: `wide-${i}` };
    for (let f = 0; f < facets; f++) e[`attribute_${f}`] = `v${(f * 7 + i) % 13}`;
    return Buffer.from(JSON.stringify(e));
  });
  return { records, updates: events * 3 * (1 + facets), describe: `${int(events)} events of ${int(facets)} facets each (${bytes(records[0]!.length)} an event)` };
}

async function listCase(name: string, c: ListCase, { window, clock, engine }: { window: string; clock: string; engine: string }): Promise<CaseCost> {
  const maxBytes = c.records.reduce((most, r) => Math.max(most, r.length), 0); // (not Math.max(...): a spread of 100 k+ records overflows the stack)
  const config = resolveJobConfig({ keyGroups: 128, window, maxEventBytes: Math.max(1 << 20, maxBytes), state: { engine } });
  const dataDir = mkdtempSync(join(tmpdir(), 'abacus-bench-'));
  console.log('');
  console.log(`${name}: ${c.describe}`);
  const source: Source = {
    partition: 'list',
    next: 0,
    start() {
      return Promise.resolve();
    },
    poll(max: number) {
      if (this.next >= c.records.length) return Promise.resolve(null);
      const out: SourceRecord[] = [];
      for (; out.length < max && this.next < c.records.length; this.next++) {
        out.push({ value: c.records[this.next]!, ingestTimeMs: CASE_START_MS + 30 * 86400_000 + this.next, partition: 'list', nextPosition: String(this.next + 1), origin: `list#${this.next}` });
      }
      return Promise.resolve(out);
    },
    close() {
      return Promise.resolve();
    },
  } as Source & { next: number };
  const countSink = await LocalSink.open(localPaths(dataDir).sink, sinkTuning(config), config.level);
  const task = await CountTask.open({ config, dataDir, source, sink: countSink, deadLetter: new FileDeadLetter(localPaths(dataDir).deadLetter), clock: benchClock(clock) });
  collectGarbage();
  const wall0 = process.hrtime.bigint();
  const cpu0 = process.cpuUsage();
  const result = await task.run();
  const wall = Number(process.hrtime.bigint() - wall0) / 1e9;
  const cpu = cpuSeconds(process.cpuUsage(cpu0));
  await task.close();
  await countSink.close();
  rmSync(dataDir, { recursive: true, force: true });
  if (result.counted !== c.records.length) throw new Error(`${name}: counted ${result.counted} of ${c.records.length} (invalid ${result.invalid})`);
  console.log(`wall ${wall.toFixed(1)} s, cpu ${cpu.toFixed(1)} s → ${((cpu / result.read) * 1e6).toFixed(1)} µs/event, ${((cpu / c.updates) * 1e6).toFixed(2)} µs/counter update; counter rows written ${int(result.rowsWritten)}`);
  return { usPerEvent: (cpu / result.read) * 1e6, usPerUpdate: (cpu / c.updates) * 1e6, rowsPerUpdate: result.rowsWritten / c.updates };
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
