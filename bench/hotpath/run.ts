/**
 * Measures one prototype of the per-micro-batch counting kernel (issue 9) on the workload
 * of `npm run bench`, in memory, in this process alone (run one kernel per process: peak
 * RSS is the process's).
 *
 *   node --max-semi-space-size=128 dist/bench/hotpath/run.js --kernel ts|rust-serde|rust-simd|rust-compact|read|parse
 *        [--events 5200000] [--customers 1000000] [--batch 4096] [--window-records 50000]
 *        [--dir /tmp/abacus-hotpath] [--check] [--marker-slots N]
 *
 * `rust-compact` is rust-serde with uniqueness markers keyed by (counter index, customer
 * index) in 12-byte slots instead of 128-bit fingerprints in 24-byte ones; `--marker-slots N`
 * sizes that table up front (as a memory budget would) instead of doubling. `read` only reads the micro-batches (and decodes each line to a string), `parse` adds
 * JSON.parse: the floors under the TypeScript kernel. `--check` compares every counter
 * with test/support/reference.ts (an independent implementation of the contract) and
 * fails on any difference; use it on small runs, the reference is brute force.
 *
 * Prints one JSON object: records, counted, duplicates, CPU seconds (user + system, all
 * threads), events per CPU-second, wall seconds, peak RSS, state table sizes.
 */
import { mkdirSync, readFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { parseArgs } from 'node:util';
import { BatchReader, workloadFiles } from './batches';
import { differencesFromReference, kernelRows, type Counted } from './check';
import { loadRustKernel, type RustKernel } from './rust-kernel';
import { TsKernel, type CounterIdentity } from './ts-kernel';

const SETTINGS = { level: 'account', granularities: [0, 1, 2], dedupRetentionSec: 7 * 86_400, uniquesRetentionSec: 7 * 86_400 } as const;

function main(): void {
  const { values } = parseArgs({
    options: {
      kernel: { type: 'string', default: 'ts' },
      events: { type: 'string', default: '5200000' },
      customers: { type: 'string', default: '1000000' },
      batch: { type: 'string', default: '4096' },
      'window-records': { type: 'string', default: '50000' },
      dir: { type: 'string', default: '/tmp/abacus-hotpath' },
      check: { type: 'boolean', default: false },
      'marker-slots': { type: 'string', default: '0' },
    },
  });
  const events = Number(values.events);
  mkdirSync(values.dir, { recursive: true });
  const files = workloadFiles(values.dir, events, Number(values.customers));
  const reader = new BatchReader(files, Number(values.batch));
  const windowRecords = Number(values['window-records']);
  const kernel = values.kernel;

  const wall0 = process.hrtime.bigint();
  const cpu0 = process.cpuUsage();
  const result = kernel === 'ts' ? runTs(reader, windowRecords) : kernel.startsWith('rust-') ? runRust(reader, windowRecords, kernel === 'rust-simd', kernel === 'rust-compact', Number(values['marker-slots'])) : runFloor(reader, kernel);
  const cpu = process.cpuUsage(cpu0);
  const wall = Number(process.hrtime.bigint() - wall0) / 1e9;
  reader.close();
  const cpuSec = (cpu.user + cpu.system) / 1e6;
  const out = {
    kernel,
    records: events,
    ...(result === undefined ? {} : { counted: result.counted, duplicates: result.duplicates, invalid: result.invalid, beyondHorizon: result.beyondHorizon, windows: result.windows, rowsFlushed: result.rowsFlushed, ...result.extra }),
    cpuSeconds: round(cpuSec),
    userSeconds: round(cpu.user / 1e6),
    systemSeconds: round(cpu.system / 1e6),
    eventsPerCpuSecond: Math.round(events / cpuSec),
    nsPerEvent: Math.round((cpuSec * 1e9) / events),
    wallSeconds: round(wall),
    peakRssMiB: Math.round((process.resourceUsage().maxRSS * 1024) / 2 ** 20),
    loadAverage: loadavg().map(round),
  };
  console.log(JSON.stringify(out));
  if (values.check) {
    if (result === undefined) throw new Error('--check needs a counting kernel');
    const lines = readFileSync(files.jsonl, 'utf8').split('\n');
    lines.pop();
    const ingest = new Uint32Array(readFileSync(files.ingest).buffer.slice(0));
    const problems = differencesFromReference(lines.map((value, i) => ({ value, ingestSec: ingest[i]! })), result);
    if (problems.length > 0) {
      console.error(`CHECK FAILED:\n${problems.join('\n')}`);
      process.exitCode = 1;
    } else {
      console.log(`check: ${result.rows().length} counters, ${result.counted} counted, ${result.duplicates} duplicates: identical to test/support/reference.ts`);
    }
  }
}

function runTs(reader: BatchReader, windowRecords: number): Counted {
  // The same starting sizes as the Rust kernel: both grow by doubling, so peak RSS includes a growth step.
  const k = new TsKernel(SETTINGS, { identities: 1 << 20, markers: 1 << 22, counters: 1 << 16 });
  let sinceFlush = 0;
  while (reader.next()) {
    k.countBatch(reader.buf, reader.starts, reader.ends, reader.ingest, reader.count);
    sinceFlush += reader.count;
    if (sinceFlush >= windowRecords) {
      k.flush();
      sinceFlush = 0;
    }
  }
  k.flush();
  return {
    counted: k.counted,
    duplicates: k.duplicates,
    invalid: k.invalid,
    beyondHorizon: k.beyondHorizon,
    windows: k.windows,
    rowsFlushed: k.rowsFlushed,
    extra: { identities: k.dedup.size, markers: k.markers.size, counters: k.counters.length, buckets: k.buckets.size, stateMiB: Math.round(k.stateBytes() / 2 ** 20) },
    rows: () => kernelRows(k.counters, k.totalCount, k.totalUniques),
  };
}

/** The Rust kernel returns each micro-batch's deltas; the window lives on this side, as it would in the worker. */
function runRust(reader: BatchReader, windowRecords: number, simd: boolean, compact: boolean, markerSlots: number): Counted {
  const native: RustKernel = loadRustKernel(SETTINGS, simd, compact, markerSlots);
  const counters: CounterIdentity[] = [];
  let totalCount = new Float64Array(1 << 16);
  let totalUniques = new Float64Array(1 << 16);
  let winCount = new Uint32Array(1 << 16);
  let winUniques = new Uint32Array(1 << 16);
  let touched = new Uint32Array(1 << 16);
  let touchedN = 0;
  let windows = 0;
  let rowsFlushed = 0;
  const flush = (): void => {
    for (let i = 0; i < touchedN; i++) {
      const c = touched[i]!;
      totalCount[c]! += winCount[c]!;
      totalUniques[c]! += winUniques[c]!;
      winCount[c] = 0;
      winUniques[c] = 0;
    }
    rowsFlushed += touchedN;
    touchedN = 0;
    windows++;
  };
  let sinceFlush = 0;
  while (reader.next()) {
    const d = native.countBatch(reader.buf, reader.starts, reader.ends, reader.ingest, reader.count);
    if (d.newCounters.length > 0) {
      for (const c of JSON.parse(d.newCounters) as Array<[string, string, number, number, string, string]>) {
        counters.push({ scope: c[0], statistic: c[1], granularity: c[2], bucket: c[3], facet: c[4], value: c[5] });
      }
      if (counters.length > winCount.length) {
        const n = 2 ** Math.ceil(Math.log2(counters.length));
        totalCount = widen(totalCount, new Float64Array(n));
        totalUniques = widen(totalUniques, new Float64Array(n));
        winCount = widen(winCount, new Uint32Array(n));
        winUniques = widen(winUniques, new Uint32Array(n));
        touched = widen(touched, new Uint32Array(n));
      }
    }
    const { index, count, uniques } = d;
    for (let i = 0; i < index.length; i++) {
      const c = index[i]!;
      if (winCount[c] === 0) touched[touchedN++] = c;
      winCount[c]! += count[i]!;
      winUniques[c]! += uniques[i]!;
    }
    sinceFlush += reader.count;
    if (sinceFlush >= windowRecords) {
      flush();
      sinceFlush = 0;
    }
  }
  flush();
  const s = native.stats();
  return {
    counted: s.counted,
    duplicates: s.duplicates,
    invalid: s.invalid,
    beyondHorizon: s.beyondHorizon,
    windows,
    rowsFlushed,
    extra: { identities: s.identities, markers: s.markers, counters: counters.length, buckets: s.buckets, stateMiB: Math.round(s.stateBytes / 2 ** 20) },
    rows: () => kernelRows(counters, totalCount, totalUniques),
  };
}

function widen<T extends Float64Array | Uint32Array>(from: T, to: T): T {
  to.set(from);
  return to;
}

/** The floors: reading the batches, then also decoding and JSON.parse of each line. */
function runFloor(reader: BatchReader, kernel: string): undefined {
  let sink = 0;
  while (reader.next()) {
    for (let i = 0; i < reader.count; i++) {
      if (kernel === 'read') continue;
      const text = reader.buf.toString('utf8', reader.starts[i], reader.ends[i]);
      if (kernel === 'parse') sink += (JSON.parse(text) as { company_id: string }).company_id.length;
      else sink += text.length;
    }
  }
  if (sink < 0) console.log(sink);
  return undefined;
}

function round(x: number): number {
  return Math.round(x * 100) / 100;
}

main();
