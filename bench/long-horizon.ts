/**
 * Long-horizon benchmark of bounded state (issue 9): the count task fed at a constant rate
 * of simulated ingest time for many days, with the job's retentions (default 7 days), to
 * show that the state on disk reaches a plateau once identities and uniqueness markers past
 * their retention are deleted (worker/state/expiry.ts).
 *
 * After each simulated day it prints: the state's files on disk (`du`: SST files, write-ahead
 * log, manifest; with --compact-daily also after a full compaction, which drops the deleted
 * records' tombstones), the records by kind (dedup identities stored and live — first
 * counted within the dedup retention of the newest ingest time —, uniqueness markers), the
 * key + value bytes of the records that expire and those bytes per live identity, and the
 * counters and bucket records. Counters and bucket records are the output and are kept
 * forever (one per counter and bucket), so they grow with the number of buckets (24 hours,
 * a day and a month's share per day), not with the number of events.
 *
 * With `--engine native` the state is the native kernel's (ADR 7): the census comes from
 * its tables (identities stored, markers, counters, buckets) and the segments on disk; the
 * live identities are the records counted within the retention of the newest ingest time
 * (an identity is counted at most once per retention, so each such record is one live
 * identity, and each is stored), summed from the days' counts, not read from the kernel.
 *
 *   npm run bench:long-horizon -- [--days 30] [--events-per-day 40000] [--customers 1000000] [--retention 7d]
 *                                  [--granularities hour,day,month] [--engine records|native] [--compact-daily] [--data-dir DIR] [--keep]
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { parseDuration } from '../common/duration';
import { resolveJobConfig, sinkTuning } from '../common/job-config';
import { bytes, int, table } from '../worker/cli/format';
import { FileDeadLetter } from '../worker/io/file-dead-letter';
import { GeneratorSource, type GeneratorOptions } from '../worker/io/generator';
import { LocalSink } from '../worker/io/local-sink';
import type { Source, SourceRecord } from '../worker/io/types';
import { localPaths } from '../worker/runtime/local';
import { metrics } from '../worker/runtime/metrics';
import { CountTask } from '../worker/runtime/task';
import { keyGroupOfKey, kindOf } from '../worker/state/keys';
import { loadNativeKernel } from '../worker/native/kernel';
import type { RocksStore } from '../worker/state/rocks';
import { benchWorkload } from './workload';

const DAY_MS = 86_400_000;

/** The generator, ending each run() at the end of the current simulated day. */
class DaySource implements Source {
  readonly partition: string;
  /** Records before this index are handed out; poll() then reports the end. */
  limit = 0;
  private next = 0;

  constructor(private readonly inner: GeneratorSource) {
    this.partition = inner.partition;
  }

  async start(positions: ReadonlyMap<string, string>): Promise<void> {
    await this.inner.start(positions);
    this.next = Number(positions.get(this.partition) ?? 0);
  }

  async poll(max: number): Promise<SourceRecord[] | null> {
    if (this.next >= this.limit) return null;
    const records = await this.inner.poll(Math.min(max, this.limit - this.next));
    if (records !== null) this.next += records.length;
    return records;
  }

  close(): Promise<void> {
    return this.inner.close();
  }
}

interface Census {
  dedup: number;
  liveDedup: number;
  markers: number;
  buckets: number;
  counters: number;
  /** Key + value bytes (UTF-8) of the records that expire (dedup, markers) and of those kept (counters, buckets, positions). */
  expiringBytes: number;
  keptBytes: number;
}

async function census(store: RocksStore, newestIngestSec: number, retentionSec: number): Promise<Census> {
  const c: Census = { dedup: 0, liveDedup: 0, markers: 0, buckets: 0, counters: 0, expiringBytes: 0, keptBytes: 0 };
  await store.scan({ gte: '0000', lt: '~' }, (key, value) => {
    const size = Buffer.byteLength(key) + Buffer.byteLength(value);
    const kind = kindOf(key);
    if (kind === 'D' || kind === 'U' || kind === 'V') c.expiringBytes += size;
    else c.keptBytes += size;
    switch (kind) {
      case 'D':
        c.dedup++;
        if (newestIngestSec - Number(value) <= retentionSec) c.liveDedup++;
        break;
      case 'U':
      case 'V':
        c.markers++;
        break;
      case 'B':
        c.buckets++;
        break;
      case 'C':
        c.counters++;
        break;
    }
  });
  return c;
}

/** The native engine's census: the kernel's tables, and the segments in the store (their sections' bytes as stored, decoded from base64). */
async function nativeCensus(task: CountTask, liveDedup: number): Promise<Census & { segments: number }> {
  const k = task.nativeStats()!;
  const kernel = loadNativeKernel();
  let segments = 0;
  let expiringBytes = 0;
  let keptBytes = 0;
  await task.stateStore.scan({ gte: '0000', lt: '~' }, (key, value) => {
    const kind = kindOf(key);
    if (kind !== 'S' && kind !== 'T') return;
    segments++;
    // Sections: customers, counters, dedup, buckets, markers, totals; dedup and markers expire.
    const { bytes: b } = kernel.segmentSections(Buffer.from(value, 'base64'), keyGroupOfKey(key));
    expiringBytes += b[2]! + b[4]!;
    keptBytes += b[0]! + b[1]! + b[3]! + b[5]!;
  });
  return { dedup: k.identities, liveDedup, markers: k.markers, buckets: k.buckets, counters: k.counters, expiringBytes, keptBytes, segments };
}

/** The flushes that swept, their time in all, and the bucket the longest fell in (abacus_state_sweep_duration_seconds). */
async function sweepSummary(): Promise<string> {
  const { values } = await metrics.stateSweepSeconds.get();
  const count = values.find((v) => v.metricName?.endsWith('_count'))?.value ?? 0;
  const sum = values.find((v) => v.metricName?.endsWith('_sum'))?.value ?? 0;
  const buckets = values.filter((v) => v.metricName?.endsWith('_bucket'));
  const longest = buckets.find((b) => b.value === count)?.labels.le;
  return `${int(count)} flushes swept, ${sum.toFixed(1)} s in all, the longest ≤ ${longest} s`;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      days: { type: 'string', default: '30' },
      'events-per-day': { type: 'string', default: '40000' },
      customers: { type: 'string', default: '1000000' },
      retention: { type: 'string', default: '7d' },
      granularities: { type: 'string', default: 'hour,day,month' },
      window: { type: 'string', default: '1s' },
      'compact-daily': { type: 'boolean', default: false },
      engine: { type: 'string', default: 'records' },
      'data-dir': { type: 'string' },
      keep: { type: 'boolean', default: false },
    },
  });
  const days = Number(values.days);
  const perDay = Number(values['events-per-day']);
  const generator: GeneratorOptions = { ...benchWorkload(days * perDay, Number(values.customers)), ratePerSecond: perDay / 86_400, startMs: Date.UTC(2026, 10, 1) };
  const config = resolveJobConfig({
    keyGroups: 128,
    window: values.window,
    granularities: values.granularities.split(','),
    dedup: { retention: values.retention },
    uniques: { retention: values.retention },
    state: { engine: values.engine },
  });
  const native = config.engine === 'native';
  const retentionSec = parseDuration(values.retention, '--retention') / 1000;
  const dataDir = values['data-dir'] ?? mkdtempSync(join(tmpdir(), 'abacus-long-'));
  console.log(
    `workload: ${days} simulated days × ${int(perDay)} records/day (${int(generator.customers)} Zipf customers, ${generator.facets} facets, ${generator.duplicateRate * 100}% duplicates, ${generator.lateRate * 100}% late/historical), from ${new Date(generator.startMs).toISOString().slice(0, 10)}`,
  );
  console.log(`config: ${config.engine} engine, retention ${values.retention} (dedup and uniques), granularities ${config.granularities.join(',')}, ${config.keyGroups} key groups; data in ${dataDir}`);

  const source = new DaySource(new GeneratorSource(generator));
  const sink = await LocalSink.open(localPaths(dataDir).sink, sinkTuning(config), config.level);
  const task = await CountTask.open({ config, dataDir, source, sink, deadLetter: new FileDeadLetter(localPaths(dataDir).deadLetter) });
  const du = (): number => Number(execFileSync('du', ['-sb', localPaths(dataDir).state], { encoding: 'utf8' }).split('\t')[0]);
  const rows: string[][] = [
    native
      ? ['day', 'records', 'counted', 'expired', 'disk', values['compact-daily'] ? 'disk compacted' : '', 'dedup stored', 'dedup live', 'markers', 'segments', 'dedup+marker bytes', 'bytes/live identity', 'counters', 'buckets', 'other segment bytes', 'RSS'].filter((h) => h !== '')
      : ['day', 'records', 'counted', 'expired', 'disk', values['compact-daily'] ? 'disk compacted' : '', 'dedup stored', 'dedup live', 'markers', 'expiring bytes', 'bytes/live identity', 'counters', 'buckets', 'counter+bucket bytes'].filter((h) => h !== ''),
  ];
  const retentionDays = Math.max(1, Math.round(retentionSec / 86_400));
  const countedByDay: number[] = [];
  const cpu0 = process.cpuUsage();
  try {
    for (let day = 1; day <= days; day++) {
      source.limit = day * perDay;
      const progress = await task.run();
      const newestIngestSec = (generator.startMs + day * DAY_MS) / 1000 - 1;
      countedByDay.push(progress.counted - countedByDay.reduce((a, b) => a + b, 0));
      const c = native ? await nativeCensus(task, countedByDay.slice(-retentionDays).reduce((a, b) => a + b, 0)) : await census(task.stateStore, newestIngestSec, retentionSec);
      const disk = du();
      let compacted: string[] = [];
      if (values['compact-daily']) {
        await task.stateStore.compactAll();
        compacted = [bytes(du())];
      }
      rows.push([
        String(day),
        int(progress.read),
        int(progress.counted),
        int(progress.expired),
        bytes(disk),
        ...compacted,
        int(c.dedup),
        int(c.liveDedup),
        int(c.markers),
        ...(native ? [int((c as Census & { segments: number }).segments)] : []),
        bytes(c.expiringBytes),
        int(c.expiringBytes / c.liveDedup),
        int(c.counters),
        int(c.buckets),
        bytes(c.keptBytes),
        ...(native ? [bytes(process.memoryUsage().rss)] : []),
      ]);
      if (day === 1) console.log(rows[0]!.join(' | '));
      console.log(rows.at(-1)!.join(' | '));
    }
    const cpu = process.cpuUsage(cpu0);
    await task.stateStore.compactAll();
    console.log('');
    console.log(`after a full compaction: state on disk ${bytes(du())}`);
    console.log(`cpu ${((cpu.user + cpu.system) / 1e6).toFixed(1)} s for ${int(task.progress.read)} records; peak RSS ${bytes(process.resourceUsage().maxRSS * 1024)}`);
    console.log(`sweeps: ${await sweepSummary()}`);
    console.log('');
    console.log(table(rows));
  } finally {
    await task.close();
    await sink.close();
    if (!values.keep && values['data-dir'] === undefined) rmSync(dataDir, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
