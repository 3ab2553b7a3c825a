/**
 * The Cassandra sink's cost per row, on the test environment's real Cassandra
 * (`npm run test-env -- up cassandra`): writes `--windows` windows of `--rows` new counter rows
 * each through CassandraSink.write, as a worker's flushes do, and prints this process's CPU
 * per row (main thread and the driver together) and the wall clock per window.
 *
 *   npm run build && node dist/bench/sink-rows.js [--rows 10000] [--windows 10]
 */
import { parseArgs } from 'node:util';
import { resolveJobConfig } from '../common/job-config';
import { CassandraSink } from '../worker/io/cassandra-sink';
import type { CounterRow } from '../worker/io/types';
import { requireTestEnv } from '../test/support/env';

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { rows: { type: 'string', default: '10000' }, windows: { type: 'string', default: '10' } } });
  const rowsPerWindow = Number(values.rows);
  const windows = Number(values.windows);
  const env = requireTestEnv();
  const name = `sinkbench-${Date.now().toString(36)}`;
  const config = resolveJobConfig({ name, level: 'account', cassandra: { contactPoints: [env.cassandra], keyspace: 'abacus_bench', createSchema: true, consistency: 'ONE' } });
  const sink = await CassandraSink.open({ config: config.cassandra!, level: 'account', job: name, log: () => undefined });
  try {
    const hour = Math.floor(Date.now() / 3_600_000) * 3600;
    const window = (w: number): CounterRow[] =>
      Array.from({ length: rowsPerWindow }, (_, i) => ({ scope: `company-${i % 20}`, statisticId: 'opened_email', granularity: 'hour', bucket: hour, facet: 'campaign', value: `campaign-${w}-${i}`, count: i + 1, uniques: i }));
    await sink.write(window(-1)); // warm-up: connections, prepared statements, JIT
    let cpuUs = 0;
    let wallMs = 0;
    for (let w = 0; w < windows; w++) {
      const rows = window(w);
      const cpu0 = process.cpuUsage();
      const t0 = performance.now();
      await sink.write(rows);
      wallMs += performance.now() - t0;
      const d = process.cpuUsage(cpu0);
      cpuUs += d.user + d.system;
    }
    const total = rowsPerWindow * windows;
    process.stdout.write(`${total} rows in ${windows} writes of ${rowsPerWindow}: ${(cpuUs / total).toFixed(1)} µs of this process's CPU per row, ${(wallMs / windows).toFixed(0)} ms per write (${Math.round((total / wallMs) * 1000)} rows/s)\n`);
  } finally {
    await sink.close();
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`${(err as Error).stack ?? String(err)}\n`);
  process.exit(1);
});
