import { auth, Client, policies, types } from 'cassandra-driver';
import { Counter, Histogram } from 'prom-client';
import { ConfigError, errorChain } from '../../common/errors';
import type { CassandraConfig, Level } from '../../common/job-config';
import type { SeriesPoint, SeriesQuery } from '../runtime/http';
import { registry } from '../runtime/metrics';
import { counterId, idOf } from '../../common/counter-id';
import type { CounterKey, CounterRow, CounterValue, CountSink, Granularity } from './types';
import { backoffMs, LogFn, sleep, stderrLog } from './kafka-client';

/**
 * The Cassandra sink: final counts, one row per counter, and the reads that serve hydration,
 * `abacus counts` and the query API. The schema is documented in docs/cassandra.md; the
 * statements here are its only definition.
 *
 *   PRIMARY KEY ((scope, statistic_id, granularity, facet, value), bucket)
 *
 * One partition holds one counter's time series (buckets ascending), so the query API's
 * "series of a counter between two times" is a single-partition slice, and hydration of the
 * few buckets a window touches is one `bucket IN (...)` read per series.
 */

export const sinkMetrics = {
  writeSeconds: new Histogram({
    name: 'abacus_sink_write_duration_seconds',
    help: 'Time to write one flush of final counts to Cassandra (all its rows, including in-sink retries), in seconds.',
    buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
    registers: [registry],
  }),
  rowsWritten: new Counter({
    name: 'abacus_sink_rows_written_total',
    help: 'Counter rows written to Cassandra, in rows.',
    registers: [registry],
  }),
  errors: new Counter({
    name: 'abacus_sink_errors_total',
    help: 'Failed Cassandra statements, by operation (write, delta, read, scan, query), in statements.',
    labelNames: ['op'],
    registers: [registry],
  }),
  hydrationReads: new Counter({
    name: 'abacus_sink_hydration_reads_total',
    help: 'Counters read back from Cassandra for hydration, by result (found, absent), in counters.',
    labelNames: ['result'],
    registers: [registry],
  }),
};

export interface CassandraSinkOptions {
  readonly config: CassandraConfig;
  readonly level: Level;
  /** The job name, recorded in the table comment. */
  readonly job: string;
  /** Statements in flight at once (default 64). */
  readonly concurrency?: number;
  /** Attempts per statement inside one write() before it rejects (default 3). */
  readonly attempts?: number;
  readonly log?: LogFn;
  /** Gives up connecting when aborted (connecting otherwise retries forever). */
  readonly signal?: AbortSignal;
}

/** The table comment that marks an Abacus table, its job and its level (read by `abacus counts`). */
export function tableComment(job: string, level: Level, kind: 'final' | 'delta'): string {
  return `abacus ${JSON.stringify({ job, level, kind })}`;
}

export function parseTableComment(comment: string | null | undefined): { job: string; level: Level; kind: string } | undefined {
  if (typeof comment !== 'string' || !comment.startsWith('abacus ')) return undefined;
  try {
    return JSON.parse(comment.slice('abacus '.length)) as { job: string; level: Level; kind: string };
  } catch {
    return undefined;
  }
}

/** The default table of a job: its name made a CQL identifier, plus `_counts`. */

/** Connects a client, retrying with backoff while Cassandra is unreachable, until `signal` aborts. */
export async function connectCassandra(config: CassandraConfig, log: LogFn, signal?: AbortSignal, keyspace?: string): Promise<Client> {
  for (let attempt = 0; ; attempt++) {
    const client = new Client({
      contactPoints: [...config.contactPoints],
      localDataCenter: config.localDataCenter,
      ...(keyspace === undefined ? {} : { keyspace }),
      ...credentials(),
      queryOptions: { consistency: types.consistencies[camel(config.consistency)], prepare: true },
      socketOptions: { connectTimeout: 5000, readTimeout: 12000 },
      pooling: { heartBeatInterval: 5000 },
      policies: { reconnection: new policies.reconnection.ExponentialReconnectionPolicy(250, 5000, false) },
      protocolOptions: { maxSchemaAgreementWaitSeconds: 30 },
    });
    try {
      await client.connect();
      return client;
    } catch (err) {
      await client.shutdown().catch(() => undefined);
      const refused = cassandraCredentialsError(err);
      if (refused !== undefined) throw refused;
      if (signal?.aborted === true) throw err;
      const wait = backoffMs(attempt, 500, 5000);
      log('warn', 'cannot connect to Cassandra; retrying', { contactPoints: config.contactPoints, attempt, waitMs: wait, error: (err as Error).message });
      await sleep(wait, signal);
    }
  }
}

/**
 * Cassandra refused the worker's credentials, or wants some and got none: a ConfigError naming
 * the fix (retrying with the same ones cannot help); undefined for anything else. Cassandra's
 * "Unable to perform authentication" (its auth tables unreachable, e.g. while starting) is not
 * a refusal and is retried. The message never holds the password.
 */
export function cassandraCredentialsError(err: unknown): ConfigError | undefined {
  for (const e of errorChain(err)) {
    if (e.name !== 'AuthenticationError') continue;
    const user = process.env.ABACUS_CASSANDRA_USERNAME;
    if (/no authenticator found|authentication provider not set/i.test(e.message)) {
      return new ConfigError(
        'ABACUS_CASSANDRA_USERNAME/ABACUS_CASSANDRA_PASSWORD',
        `Cassandra requires a user name and password, and none were given (${e.message})`,
        'name a Secret with them in spec.sink.cassandra.credentialsSecretRef (outside Kubernetes: set these environment variables)',
      );
    }
    if (/incorrect|bad credentials|invalid credentials/i.test(e.message)) {
      return new ConfigError(
        'ABACUS_CASSANDRA_USERNAME/ABACUS_CASSANDRA_PASSWORD',
        `Cassandra refused the credentials of user ${JSON.stringify(user ?? '')} (${e.message})`,
        'put the right user name and password in the Secret named by spec.sink.cassandra.credentialsSecretRef (outside Kubernetes: in these environment variables)',
      );
    }
  }
  return undefined;
}

function credentials(): { authProvider?: auth.PlainTextAuthProvider } {
  const user = process.env.ABACUS_CASSANDRA_USERNAME;
  const password = process.env.ABACUS_CASSANDRA_PASSWORD;
  return user !== undefined && password !== undefined ? { authProvider: new auth.PlainTextAuthProvider(user, password) } : {};
}

function camel(c: CassandraConfig['consistency']): 'one' | 'localOne' | 'quorum' | 'localQuorum' | 'all' {
  return ({ ONE: 'one', LOCAL_ONE: 'localOne', QUORUM: 'quorum', LOCAL_QUORUM: 'localQuorum', ALL: 'all' } as const)[c];
}

const KEY_COLUMNS = 'scope, statistic_id, granularity, facet, value';

/**
 * Bytes of rows per batch. Cassandra logs a warning for every batch above
 * `batch_size_warn_threshold` (5 KiB by default), counted over the mutations' data; staying
 * under it keeps its log quiet and each batch one small request.
 */
export const MAX_BATCH_BYTES = 4400;

/**
 * A row's share of a batch's size as Cassandra counts it: the key's UTF-8 plus about 72 bytes
 * of cells, timestamps and framing (measured on Cassandra 5.0: batches of 128 rows of about 40
 * bytes of text each were reported as 11.5-11.9 KiB).
 */
export function rowBatchBytes(r: CounterKey): number {
  return Buffer.byteLength(r.scope) + Buffer.byteLength(r.statisticId) + r.granularity.length + Buffer.byteLength(r.facet) + Buffer.byteLength(r.value) + 72;
}

/**
 * Cuts rows into batches: rows whose partitions live on the same replicas (`replicasOf`)
 * go together, at most `maxBytes` (by `bytesOf`) a batch. Pure: the sink passes the
 * driver's token map and rowBatchBytes.
 *
 * Why multi-partition batches: most rows of a window are the only row of their partition
 * (one bucket per series per window), so one statement per partition meant one request
 * per row, and per-request work dominated both the worker's and Cassandra's CPU
 * (docs/performance.md, "The cluster path", session 15). An UNLOGGED batch whose partitions
 * share their replicas is applied by its coordinator as one request with no extra hop.
 */
export function replicaBatches<R>(rows: readonly R[], replicasOf: (r: R) => string, bytesOf: (r: R) => number, maxBytes: number): R[][] {
  const open = new Map<string, { rows: R[]; bytes: number }>();
  const out: R[][] = [];
  for (const r of rows) {
    const replicas = replicasOf(r);
    const bytes = bytesOf(r);
    let batch = open.get(replicas);
    if (batch !== undefined && batch.bytes + bytes > maxBytes) {
      out.push(batch.rows);
      batch = undefined;
    }
    if (batch === undefined) open.set(replicas, (batch = { rows: [], bytes: 0 }));
    batch.rows.push(r);
    batch.bytes += bytes;
  }
  for (const batch of open.values()) out.push(batch.rows);
  return out;
}

/** A row's serialized partition key, as the driver hashes it to find the replicas: each column as 2-byte length, UTF-8, 0. */
export function routingKeyOf(r: CounterKey): Buffer {
  const parts = [r.scope, r.statisticId, r.granularity, r.facet, r.value];
  const lengths = parts.map((p) => Buffer.byteLength(p));
  const out = Buffer.allocUnsafe(lengths.reduce((a, n) => a + n + 3, 0));
  let at = 0;
  parts.forEach((p, i) => {
    at = out.writeUInt16BE(lengths[i]!, at);
    at += out.write(p, at);
    out[at++] = 0;
  });
  return out;
}

export class CassandraSink implements CountSink {
  readonly remote = true;
  private readonly ks: string;
  private readonly table: string;
  private readonly deltaTable: string;
  private readonly log: LogFn;
  private readonly account: boolean;
  /** Delta mode: the totals last written per counter, so increments need no read. */
  private readonly lastTotals = new Map<string, CounterValue>();
  private closed = false;

  private constructor(
    private readonly client: Client,
    private readonly opts: CassandraSinkOptions,
  ) {
    this.ks = opts.config.keyspace;
    this.table = opts.config.table;
    this.deltaTable = `${opts.config.table}_delta`;
    this.log = opts.log ?? stderrLog;
    this.account = opts.level === 'account';
  }

  /**
   * Connects (retrying while Cassandra is down), creates the schema when `createSchema` is
   * set, and checks that the table exists either way.
   */
  static async open(opts: CassandraSinkOptions): Promise<CassandraSink> {
    const log = opts.log ?? stderrLog;
    const client = await connectCassandra(opts.config, log, opts.signal);
    const sink = new CassandraSink(client, opts);
    try {
      if (opts.config.createSchema) await sink.createSchema();
      await sink.checkSchema();
    } catch (err) {
      await client.shutdown().catch(() => undefined);
      throw err;
    }
    return sink;
  }

  /** The CQL that createSchema runs, in order (also printed by docs/cassandra.md). */
  schemaStatements(): string[] {
    const { keyspace, replicationFactor } = this.opts.config;
    const out = [
      `CREATE KEYSPACE IF NOT EXISTS ${keyspace} WITH replication = {'class': 'SimpleStrategy', 'replication_factor': ${replicationFactor}}`,
      `CREATE TABLE IF NOT EXISTS ${this.ks}.${this.table} (scope text, statistic_id text, granularity text, facet text, value text, bucket timestamp, count bigint, uniques bigint, PRIMARY KEY ((${KEY_COLUMNS}), bucket)) WITH CLUSTERING ORDER BY (bucket ASC) AND comment = '${tableComment(this.opts.job, this.opts.level, 'final')}'`,
    ];
    if (this.opts.config.mode === 'delta') {
      out.push(
        `CREATE TABLE IF NOT EXISTS ${this.ks}.${this.deltaTable} (scope text, statistic_id text, granularity text, facet text, value text, bucket timestamp, count counter, uniques counter, PRIMARY KEY ((${KEY_COLUMNS}), bucket)) WITH CLUSTERING ORDER BY (bucket ASC) AND comment = '${tableComment(this.opts.job, this.opts.level, 'delta')}'`,
      );
    }
    return out;
  }

  /**
   * `IF NOT EXISTS` DDL, then waiting for schema agreement: several workers may run this at
   * once; the first creates, the others see the object exist. (On a multi-node cluster,
   * truly simultaneous CREATE TABLE from several coordinators can still race in Cassandra
   * itself; docs/cassandra.md recommends letting one process create the schema there.)
   */
  private async createSchema(): Promise<void> {
    for (const cql of this.schemaStatements()) {
      await this.client.execute(cql, [], { prepare: false });
    }
    const deadline = Date.now() + 60_000;
    // checkSchemaAgreement exists in the driver (lib/metadata) but is missing from its typings.
    const metadata = this.client.metadata as unknown as { checkSchemaAgreement(): Promise<boolean> };
    while (!(await metadata.checkSchemaAgreement())) {
      if (Date.now() > deadline) throw new Error('Cassandra nodes did not agree on the schema within 60 s');
      await sleep(500);
    }
    this.log('info', 'Cassandra schema ready', { keyspace: this.ks, table: this.table, mode: this.opts.config.mode });
  }

  private async checkSchema(): Promise<void> {
    for (const table of this.opts.config.mode === 'delta' ? [this.table, this.deltaTable] : [this.table]) {
      const rs = await this.client.execute('SELECT comment FROM system_schema.tables WHERE keyspace_name = ? AND table_name = ?', [this.ks, table]);
      if (rs.rowLength === 0) {
        throw new ConfigError('cassandra.table', `table ${this.ks}.${table} does not exist`, 'create it (docs/cassandra.md), or start the worker with --create-schema');
      }
      const marked = parseTableComment(rs.first().get('comment') as string);
      if (marked !== undefined && marked.level !== this.opts.level) {
        throw new ConfigError('cassandra.table', `table ${this.ks}.${table} holds ${marked.level}-level counts of job ${marked.job}, but this job is ${this.opts.level}-level`, 'give each job its own cassandra.table');
      }
    }
  }

  async write(rows: readonly CounterRow[]): Promise<void> {
    if (rows.length === 0) return;
    const end = sinkMetrics.writeSeconds.startTimer();
    if (this.opts.config.mode === 'delta') await this.writeDeltas(rows);
    const insert = this.account
      ? `INSERT INTO ${this.ks}.${this.table} (${KEY_COLUMNS}, bucket, count, uniques) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`
      : `INSERT INTO ${this.ks}.${this.table} (${KEY_COLUMNS}, bucket, count) VALUES (?, ?, ?, ?, ?, ?, ?)`;
    // UNLOGGED batches of rows that share their replicas (replicaBatches). Each row is
    // idempotent (the counter's final value), so a batch retried whole, or applied in part
    // before a failure, leaves the same rows as one statement per row would.
    const params = (r: CounterRow): unknown[] => {
      const p: unknown[] = [r.scope, r.statisticId, r.granularity, r.facet, r.value, new Date(r.bucket * 1000), r.count];
      if (this.account) p.push(r.uniques ?? 0);
      return p;
    };
    await this.forEachConcurrently(replicaBatches(rows, (r) => this.replicasOf(r), rowBatchBytes, MAX_BATCH_BYTES), 'write', true, (group) =>
      group.length === 1
        ? this.client.execute(insert, params(group[0]!), { prepare: true, isIdempotent: true })
        : this.client.batch(group.map((r) => ({ query: insert, params: params(r) })), { prepare: true, logged: false, isIdempotent: true }),
    );
    if (this.opts.config.mode === 'delta') {
      for (const r of rows) this.rememberTotals(r);
    }
    sinkMetrics.rowsWritten.inc(rows.length);
    end();
  }

  /**
   * The replicas of a row's partition, as a grouping key. One node (or no token map yet):
   * every row has the same, and no key is hashed.
   */
  private replicasOf(r: CounterKey): string {
    if (this.client.hosts.length <= 1) return '';
    const replicas = this.client.getReplicas(this.ks, routingKeyOf(r)) as Array<{ address: string }> | null;
    return replicas === null ? '' : replicas.map((h) => h.address).join(',');
  }

  /**
   * Delta mode (legacy readers of a counter table): increments = new totals − the totals
   * written before (remembered, else read from the final table). Counter updates are not
   * idempotent, so they are never retried inside the sink, and they are applied before the
   * final rows: a failure between the two can add an increment twice on retry (at-least-once),
   * never lose one. The final table stays exact and is what hydration reads.
   */
  private async writeDeltas(rows: readonly CounterRow[]): Promise<void> {
    const unknown = rows.filter((r) => !this.lastTotals.has(idOf(r)));
    const previous = unknown.length > 0 ? await this.read(unknown) : new Map<string, CounterValue>();
    const update = `UPDATE ${this.ks}.${this.deltaTable} SET count = count + ?, uniques = uniques + ? WHERE scope = ? AND statistic_id = ? AND granularity = ? AND facet = ? AND value = ? AND bucket = ?`;
    await this.forEachConcurrently(rows, 'delta', false, (r) => {
      const id = idOf(r);
      const before = this.lastTotals.get(id) ?? previous.get(id) ?? { count: 0, uniques: 0 };
      const dc = r.count - before.count;
      const du = (r.uniques ?? 0) - (before.uniques ?? 0);
      if (dc === 0 && du === 0) return Promise.resolve();
      return this.client.execute(update, [types.Long.fromNumber(dc), types.Long.fromNumber(du), r.scope, r.statisticId, r.granularity, r.facet, r.value, new Date(r.bucket * 1000)], { prepare: true, isIdempotent: false });
    });
  }

  private rememberTotals(r: CounterRow): void {
    if (this.lastTotals.size >= 1_000_000) this.lastTotals.clear(); // bounded: fall back to reads
    this.lastTotals.set(idOf(r), r.uniques === undefined ? { count: r.count } : { count: r.count, uniques: r.uniques });
  }

  /** Hydration: one `bucket IN (...)` read per series (at most 100 buckets each), concurrently. */
  async read(keys: readonly CounterKey[]): Promise<Map<string, CounterValue>> {
    const out = new Map<string, CounterValue>();
    if (keys.length === 0) return out;
    const series = new Map<string, { key: CounterKey; buckets: number[] }>();
    for (const k of keys) {
      const sid = JSON.stringify([k.scope, k.statisticId, k.granularity, k.facet, k.value]);
      let s = series.get(sid);
      if (s === undefined) series.set(sid, (s = { key: k, buckets: [] }));
      s.buckets.push(k.bucket);
    }
    const queries: Array<{ key: CounterKey; buckets: number[] }> = [];
    for (const s of series.values()) {
      const unique = [...new Set(s.buckets)];
      for (let i = 0; i < unique.length; i += 100) queries.push({ key: s.key, buckets: unique.slice(i, i + 100) });
    }
    // One attempt: the count task retries the whole read with backoff and pauses its source
    // meanwhile (CountTask.withSinkRetry), as it does for writes.
    await this.readSeries(queries, out);
    sinkMetrics.hydrationReads.inc({ result: 'found' }, out.size);
    sinkMetrics.hydrationReads.inc({ result: 'absent' }, keys.length - out.size);
    return out;
  }

  private async readSeries(queries: ReadonlyArray<{ key: CounterKey; buckets: number[] }>, out: Map<string, CounterValue>): Promise<void> {
    const cols = this.account ? 'bucket, count, uniques' : 'bucket, count';
    const select = `SELECT ${cols} FROM ${this.ks}.${this.table} WHERE scope = ? AND statistic_id = ? AND granularity = ? AND facet = ? AND value = ? AND bucket IN ?`;
    await this.forEachConcurrently(queries, 'read', true, async (q) => {
      const k = q.key;
      const rs = await this.client.execute(select, [k.scope, k.statisticId, k.granularity, k.facet, k.value, q.buckets.map((b) => new Date(b * 1000))], { prepare: true, isIdempotent: true });
      for (const row of rs.rows) {
        const bucket = (row.get('bucket') as Date).getTime() / 1000;
        const value: CounterValue = this.account ? { count: toNumber(row.get('count')), uniques: toNumber(row.get('uniques')) } : { count: toNumber(row.get('count')) };
        out.set(counterId({ ...k, bucket }), value);
      }
    });
  }

  /** Every row of the final table, page by page. */
  async *scan(): AsyncIterable<CounterRow> {
    const cols = this.account ? `${KEY_COLUMNS}, bucket, count, uniques` : `${KEY_COLUMNS}, bucket, count`;
    let rs;
    try {
      rs = await this.client.execute(`SELECT ${cols} FROM ${this.ks}.${this.table}`, [], { prepare: true, fetchSize: 5000 });
    } catch (err) {
      sinkMetrics.errors.inc({ op: 'scan' });
      throw err;
    }
    for await (const row of rs) {
      yield {
        scope: row.get('scope') as string,
        statisticId: row.get('statistic_id') as string,
        granularity: row.get('granularity') as Granularity,
        facet: row.get('facet') as string,
        value: row.get('value') as string,
        bucket: (row.get('bucket') as Date).getTime() / 1000,
        count: toNumber(row.get('count')),
        ...(this.account ? { uniques: toNumber(row.get('uniques')) } : {}),
      };
    }
  }

  /** A counter's time series between two bucket starts (the query API). */
  async series(q: SeriesQuery): Promise<SeriesPoint[]> {
    const cols = this.account ? 'bucket, count, uniques' : 'bucket, count';
    const from = new Date((q.fromSec ?? 0) * 1000);
    const to = new Date((q.toSec ?? 253402300800) * 1000);
    try {
      const rs = await this.client.execute(
        `SELECT ${cols} FROM ${this.ks}.${this.table} WHERE scope = ? AND statistic_id = ? AND granularity = ? AND facet = ? AND value = ? AND bucket >= ? AND bucket < ?`,
        [q.scope, q.statisticId, q.granularity, q.facet, q.value, from, to],
        { prepare: true, fetchSize: 10_000 },
      );
      const points: SeriesPoint[] = [];
      for await (const row of rs) {
        const bucket = (row.get('bucket') as Date).getTime() / 1000;
        points.push(this.account ? { bucket, count: toNumber(row.get('count')), uniques: toNumber(row.get('uniques')) } : { bucket, count: toNumber(row.get('count')) });
      }
      return points;
    } catch (err) {
      sinkMetrics.errors.inc({ op: 'query' });
      throw err;
    }
  }

  /**
   * True when the final table holds no row at all (a new job): a task opening over it hydrates
   * none of its groups, so a brand-new counter costs no read of Cassandra in its first window.
   * Read at the job's consistency, like hydration itself.
   */
  async holdsNoCounters(): Promise<boolean> {
    const rs = await this.client.execute(`SELECT scope FROM ${this.ks}.${this.table} LIMIT 1`, [], { prepare: true });
    return rs.rowLength === 0;
  }

  /** Whether Cassandra currently answers (for /readyz). */
  async ping(): Promise<boolean> {
    try {
      await this.client.execute('SELECT release_version FROM system.local', [], { prepare: true });
      return true;
    } catch {
      return false;
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    await this.client.shutdown();
  }

  /**
   * Runs `fn` over `items` with at most `concurrency` in flight. Idempotent statements are
   * retried with backoff up to `attempts` times; the first statement that still fails
   * rejects the whole call (the task then retries the flush: final writes are idempotent).
   */
  private async forEachConcurrently<T>(items: readonly T[], op: string, idempotent: boolean, fn: (item: T) => Promise<unknown>): Promise<void> {
    const attempts = idempotent ? (this.opts.attempts ?? 3) : 1;
    let next = 0;
    let failed: Error | undefined;
    const lane = async (): Promise<void> => {
      while (failed === undefined && next < items.length) {
        const item = items[next++]!;
        for (let attempt = 1; ; attempt++) {
          try {
            await fn(item);
            break;
          } catch (err) {
            sinkMetrics.errors.inc({ op });
            if (attempt >= attempts || failed !== undefined) {
              failed ??= err instanceof Error ? err : new Error(String(err));
              return;
            }
            await sleep(backoffMs(attempt, 100, 2000));
          }
        }
      }
    };
    const lanes = Math.min(this.opts.concurrency ?? 64, items.length);
    await Promise.all(Array.from({ length: lanes }, lane));
    if (failed !== undefined) throw failed;
  }
}

function toNumber(v: unknown): number {
  if (v === null || v === undefined) return 0;
  if (typeof v === 'number') return v;
  if (typeof v === 'bigint') return Number(v);
  return (v as types.Long).toNumber();
}
