import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { closeSync, existsSync, mkdirSync, openSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { ABACUS_BIN, abacus, jsonLines } from '../support/cli';
import { LocalSink } from '../../worker/io/local-sink';
import { localPaths, runLocal } from '../../worker/runtime/local';
import { ArraySource, localCounts, tempDir, testConfig } from '../support/local';
import { jsonlRecords, referenceRun, sortRows, type RefOptions, type RefRow } from '../support/reference';

/**
 * Hostile input to `abacus run` / `abacus counts` (issue 11): adversarial events and
 * environments. Every count is compared with the independent reference of the contract.
 */

const NOW = Date.UTC(2026, 10, 27, 12) / 1000;
const INGEST = '2026-11-27T12:00:00Z';
const INGEST_MS = Date.parse(INGEST);

const event = (fields: Record<string, unknown>): string => JSON.stringify({ company_id: 'acme', statistic_id: 'open', customer_id: 'u1', timestamp: NOW, ...fields });

interface Counted {
  readonly dir: string;
  readonly data: string;
  readonly rows: RefRow[];
  readonly expected: ReturnType<typeof referenceRun>;
  readonly dead: Array<{ reason: string; origin: string; bytes: number }>;
  readonly stderr: string;
}

/** Counts `file` (bytes of a JSONL file) with `abacus run`, and the same bytes with the reference. */
function countFile(file: Buffer | string, opts: RefOptions = { level: 'account' }, extraArgs: string[] = []): Counted {
  const dir = tempDir();
  const bytes = typeof file === 'string' ? Buffer.from(file) : file;
  const input = join(dir, 'events.jsonl');
  writeFileSync(input, bytes);
  const data = join(dir, 'data');
  const run = abacus(['run', '--input', input, '--data-dir', data, '--ingest-time', INGEST, '--level', opts.level, '--quiet', ...extraArgs]);
  assert.equal(run.status, 0, run.stderr);
  const counts = abacus(['counts', '--data-dir', data]);
  assert.equal(counts.status, 0, counts.stderr);
  let dead: Counted['dead'] = [];
  try {
    dead = jsonLines(readFileSync(join(data, 'dead-letter.jsonl'), 'utf8'));
  } catch {
    // no invalid record, no file
  }
  const expected = referenceRun(jsonlRecords(bytes).map((value) => ({ value, ingestTimeMs: INGEST_MS })), opts);
  return { dir, data, rows: sortRows(jsonLines<RefRow>(counts.stdout)), expected, dead, stderr: run.stderr };
}

function assertMatchesReference(c: Counted): void {
  assert.deepEqual(c.rows, c.expected.rows);
  assert.equal(c.dead.length, c.expected.invalid.length, `dead letters ${JSON.stringify(c.dead.map((d) => d.reason))} vs the reference's ${JSON.stringify(c.expected.invalid)}`);
  rmSync(c.dir, { recursive: true, force: true });
}

test('a facet named * with value * is its own counter, never the total (issue 11 #1)', () => {
  const c = countFile([event({ '*': '*' }), event({ customer_id: 'u2', '**': '*', '*': 'x' }), event({ customer_id: 'u3' })].join('\n'));
  const total = c.rows.filter((r) => r.facet === '*' && r.value === '*' && r.granularity === 'hour');
  assert.equal(total.length, 1);
  assert.equal(total[0]!.count, 3);
  assert.equal(c.rows.find((r) => r.facet === '**' && r.value === '*' && r.granularity === 'hour')?.count, 1);
  assert.equal(c.rows.find((r) => r.facet === '***' && r.value === '*' && r.granularity === 'hour')?.count, 1);
  assertMatchesReference(c);
});

test('ids and values that are not UTF-8 go to the dead letter and never merge (issue 11 #2)', () => {
  const withBytes = (prefix: string, bytes: number[], suffix: string): Buffer => Buffer.concat([Buffer.from(prefix), Buffer.from(bytes), Buffer.from(suffix)]);
  const head = `{"company_id":"acme","statistic_id":"open","timestamp":${NOW},"customer_id":"b`;
  const file = Buffer.concat(
    [
      withBytes(head, [0xff], '"}'),
      withBytes(head, [0xfe], '"}'),
      withBytes(head, [0xe2, 0x82], '"}'), // truncated sequence
      withBytes(head, [0xed, 0xa0, 0x80], '"}'), // CESU-8 surrogate
      withBytes(`{"company_id":"acme","statistic_id":"open","timestamp":${NOW},"customer_id":"ok","city":"`, [0xc0, 0xaf], '"}'), // overlong
      Buffer.from(`{"company_id":"acme","statistic_id":"open","timestamp":${NOW},"customer_id":"b\\ud800"}`), // lone surrogate escape
      Buffer.from(`{"company_id":"acme","statistic_id":"open","timestamp":${NOW},"customer_id":"b\\ufffd"}`),
      Buffer.from(event({ customer_id: 'b😀' })),
    ].flatMap((line) => [line, Buffer.from('\n')]),
  );
  const c = countFile(file);
  assert.equal(c.dead.length, 6);
  assert.equal(c.dead.filter((d) => /not valid UTF-8/.test(d.reason)).length, 5);
  assert.equal(c.dead.filter((d) => /lone UTF-16 surrogate/.test(d.reason)).length, 1);
  const raw = jsonLines<{ record_base64?: string }>(readFileSync(join(c.data, 'dead-letter.jsonl'), 'utf8'));
  assert.deepEqual(Buffer.from(raw[0]!.record_base64!, 'base64'), withBytes(head, [0xff], '"}'), 'the dead letter keeps the exact bytes');
  assert.equal(c.rows.find((r) => r.granularity === 'hour' && r.facet === '*')?.uniques, 2);
  assertMatchesReference(c);
});

test('fractional seconds never move an event into the next hour, month or second (issue 11 #3)', () => {
  const c = countFile(
    [
      event({ timestamp: '2018-12-01T09:59:59.9999999Z' }),
      event({ customer_id: 'u2', timestamp: '2018-11-30T23:59:59.999999999Z' }),
      event({ customer_id: 'u3', timestamp: '2018-12-01T10:00:00Z' }), // id-less: not a copy of the first
      event({ customer_id: 'u4', timestamp: '9999-12-31T23:59:59.999999Z' }),
      event({ customer_id: 'u5', timestamp: 1543622399.999 }),
      event({ customer_id: 'u6', timestamp: '2018-12-01T11:29:59.99999+01:30' }),
    ].join('\n'),
  );
  assert.equal(c.dead.length, 0, JSON.stringify(c.dead));
  const hour = (b: string): number | undefined => c.rows.find((r) => r.granularity === 'hour' && r.facet === '*' && r.bucket === b)?.count;
  assert.equal(hour('2018-12-01T09:00:00Z'), 2);
  assert.equal(hour('2018-12-01T10:00:00Z'), 1);
  assert.equal(hour('2018-11-30T23:00:00Z'), 2);
  assert.equal(hour('9999-12-31T23:00:00Z'), 1);
  assertMatchesReference(c);
});

test('numeric timestamps with more digits than a double holds keep their whole second (issue 11 #3)', () => {
  // Written as text: JSON.stringify would already have rounded these numbers.
  const line = (customer: string, timestamp: string, rest = ''): string => `{"company_id":"acme","statistic_id":"open","customer_id":"${customer}","timestamp":${timestamp}${rest}}`;
  const c = countFile(
    [
      line('u1', '1543622399.9999999'), // 2018-11-30T23:59:59: a double says 2018-12-01T00:00:00
      line('u1', '1543622400'), // id-less: the next second, not a copy of the line above
      line('u2', '1.5436223999999999999e9', ',"price":12.50'),
      line('u3', '1', ',"n":{"timestamp":5},"timestamp":253402300799.99999999'), // last name wins
      line('u4', '-0.0000000000000000001'), // before 1970 although a double says -0
      line('u5', '-0'),
    ].join('\n'),
  );
  const hour = (b: string): number | undefined => c.rows.find((r) => r.granularity === 'hour' && r.facet === '*' && r.bucket === b)?.count;
  const month = (b: string): number | undefined => c.rows.find((r) => r.granularity === 'month' && r.facet === '*' && r.bucket === b)?.count;
  assert.equal(hour('2018-11-30T23:00:00Z'), 2);
  assert.equal(month('2018-11-01T00:00:00Z'), 2);
  assert.equal(hour('2018-12-01T00:00:00Z'), 1);
  assert.equal(hour('9999-12-31T23:00:00Z'), 1);
  assert.equal(hour('1970-01-01T00:00:00Z'), 1);
  assert.deepEqual(
    c.dead.map((d) => d.reason),
    ['timestamp -0.0000000000000000001 is outside the years 1970 through 9999 UTC'],
  );
  assertMatchesReference(c);
});

test('facets.include or exclude naming a field twice is refused at start, before anything is created (issue 11 #4)', () => {
  const dir = tempDir();
  const input = join(dir, 'events.jsonl');
  writeFileSync(input, `${event({ a: 'x' })}\n`);
  for (const [yaml, field] of [['facets:\n  include: [a, a]\n', 'facets.include'], ['facets:\n  exclude: [b, c, b]\n', 'facets.exclude']] as const) {
    writeFileSync(join(dir, 'job.yaml'), yaml);
    const r = abacus(['run', '--input', input, '--data-dir', join(dir, 'data'), '--config', join(dir, 'job.yaml')]);
    assert.equal(r.status, 2, r.stderr);
    assert.match(r.stderr, new RegExp(`${field.replace('.', '\\.')}: lists "[ab]" twice — list each field once in ${field.replace('.', '\\.')}`));
    assert.equal(existsSync(join(dir, 'data')), false);
  }
  // Listed once, the facet is counted once per event, as the reference counts it.
  writeFileSync(join(dir, 'job.yaml'), 'facets:\n  include: [a]\n');
  const c = countFile(`${event({ a: 'x', b: 'y' })}\n`, { level: 'account', facets: { include: ['a'] } }, ['--config', join(dir, 'job.yaml')]);
  assert.equal(c.rows.find((r) => r.facet === 'a' && r.granularity === 'hour')?.count, 1);
  assertMatchesReference(c);
  rmSync(dir, { recursive: true, force: true });
});

/** Every file and directory under `dir` with its mode and content hash: equal snapshots = the same bytes. */
function snapshot(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (d: string): void => {
    for (const name of readdirSync(d).sort()) {
      const p = join(d, name);
      const st = statSync(p);
      if (st.isDirectory()) {
        out[p] = `dir ${st.mode}`;
        walk(p);
      } else if (st.isFile()) out[p] = `${st.mode} ${createHash('sha256').update(readFileSync(p)).digest('hex')}`;
      else out[p] = `special ${st.mode}`; // a FIFO: reading it would block
    }
  };
  walk(dir);
  return out;
}

function abacusWith(args: readonly string[], stdio: { input?: string | Buffer; stdinFd?: number; uid?: number } = {}): { status: number | null; stdout: string; stderr: string } {
  const argv = [ABACUS_BIN, ...args];
  const [cmd, cmdArgs] = stdio.uid === undefined ? [process.execPath, argv] : ['setpriv', [`--reuid=${stdio.uid}`, `--regid=${stdio.uid}`, '--clear-groups', process.execPath, ...argv]];
  const r = spawnSync(cmd, cmdArgs, {
    encoding: 'utf8',
    timeout: 120_000,
    ...(stdio.input === undefined ? {} : { input: stdio.input }),
    ...(stdio.stdinFd === undefined ? {} : { stdio: [stdio.stdinFd, 'pipe', 'pipe'] }),
  });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

test('a refused run leaves the data dir byte for byte untouched, whichever setting differs (issue 11 #5)', () => {
  const c = countFile([event({ campaign: 'x' }), event({ customer_id: 'u2', campaign: 'y' })].join('\n'));
  const input = join(c.dir, 'events.jsonl');
  const before = snapshot(c.data);
  const refusals: Array<[string[], RegExp]> = [
    [['--level', 'customer'], /StateMismatch.*level was "account", now "customer"/],
    [['--key-groups', '64'], /StateMismatch.*keyGroups was 128, now 64/],
  ];
  writeFileSync(join(c.dir, 'job.yaml'), 'facets:\n  include: [campaign]\ngranularities: [day]\nmaxEventBytes: 2Mi\n');
  refusals.push([['--config', join(c.dir, 'job.yaml')], /granularities was \["hour","day","month"\].*facets was .*maxEventBytes was 1048576, now 2097152/]);
  for (const [args, message] of refusals) {
    const r = abacus(['run', '--input', input, '--data-dir', c.data, '--quiet', ...args]);
    assert.equal(r.status, 1, r.stderr);
    assert.match(r.stderr, message);
    assert.deepEqual(snapshot(c.data), before, `after the refused run with ${args.join(' ')}`);
  }
  // State lost, counts kept: the sink's level alone refuses a run of the other level.
  rmSync(join(c.data, 'state'), { recursive: true });
  const withoutState = snapshot(c.data);
  const r = abacus(['run', '--input', input, '--data-dir', c.data, '--level', 'customer', '--quiet']);
  assert.equal(r.status, 1, r.stderr);
  assert.match(r.stderr, /StateMismatch.*holds account-level counts, and this run is customer-level/);
  assert.deepEqual(snapshot(c.data), withoutState);
  // And the counts still print with their uniques.
  const counts = abacus(['counts', '--data-dir', c.data]);
  assert.deepEqual(sortRows(jsonLines<RefRow>(counts.stdout)), c.expected.rows);
  rmSync(c.dir, { recursive: true, force: true });
});

test('an unwritable data dir is diagnosed as such, not as "in use by another process"; a held one is (issue 11 #7)', async () => {
  const c = countFile(`${event({})}\n`);
  const input = join(c.dir, 'events.jsonl');
  // Checked as an unprivileged user: root may write anywhere.
  const uid = process.getuid?.() === 0 ? 65534 : undefined;
  execFileSync('chmod', ['-R', 'a+rX,a-w', c.dir]);
  try {
    const before = snapshot(c.data);
    const r = abacusWith(['run', '--input', input, '--data-dir', c.data, '--quiet'], uid === undefined ? {} : { uid });
    assert.equal(r.status, 1, r.stderr);
    assert.match(r.stderr, /StateNotWritable.*cannot be written.*give a --data-dir this user can write/);
    assert.doesNotMatch(r.stderr, /in use by another process/);
    assert.deepEqual(snapshot(c.data), before);
    const fresh = abacusWith(['run', '--input', input, '--data-dir', join(c.dir, 'new', 'data'), '--quiet'], uid === undefined ? {} : { uid });
    assert.equal(fresh.status, 1, fresh.stderr);
    assert.match(fresh.stderr, /StateNotWritable.*new.*cannot be written/);
    // Reading counts needs no write access.
    const counts = abacusWith(['counts', '--data-dir', c.data], uid === undefined ? {} : { uid });
    assert.equal(counts.status, 0, counts.stderr);
    assert.deepEqual(sortRows(jsonLines<RefRow>(counts.stdout)), c.expected.rows);
  } finally {
    execFileSync('chmod', ['-R', 'u+w', c.dir]);
  }
  // A data dir held by a running abacus (reading a standard input that stays open).
  const holder = spawn(process.execPath, [ABACUS_BIN, 'run', '--input', '-', '--data-dir', c.data, '--quiet'], { stdio: ['pipe', 'ignore', 'pipe'] });
  try {
    for (let i = 0; i < 100 && !existsSync(join(c.data, 'state', 'LOCK')); i++) await new Promise((r) => setTimeout(r, 100));
    await new Promise((r) => setTimeout(r, 1000));
    const r = abacus(['run', '--input', input, '--data-dir', c.data, '--quiet']);
    assert.equal(r.status, 1, r.stderr);
    assert.match(r.stderr, /StateLocked.*in use by another process/);
  } finally {
    holder.stdin.end();
    await once(holder, 'exit');
  }
  rmSync(c.dir, { recursive: true, force: true });
});

test('--input a directory, a pipe or /dev/stdin on a pipe; a data dir that is a file; an unusable dead-letter path: clear errors before anything is created (issue 11 #8)', () => {
  const dir = tempDir();
  const input = join(dir, 'events.jsonl');
  writeFileSync(input, `${event({})}\n`);
  const data = join(dir, 'data');
  const fifo = join(dir, 'fifo');
  execFileSync('mkfifo', [fifo]);
  const cases: Array<[string[], RegExp, { input?: string }?]> = [
    [['--input', dir], /InputUnreadable.*input .* is a directory — give the path of a JSONL file/],
    [['--input', fifo], /InputUnreadable.*input .*fifo is a pipe — read it through standard input instead \(`--input -`/],
    [['--input', '/dev/stdin'], /InputUnreadable.*input \/dev\/stdin is a (pipe|socket) — read it through standard input instead/, { input: `${event({})}\n` }],
    [['--input', join(dir, 'missing.jsonl')], /InputUnreadable.*cannot read input .*missing\.jsonl/],
  ];
  for (const [args, message, stdio] of cases) {
    const r = abacusWith(['run', ...args, '--data-dir', data, '--quiet'], stdio);
    assert.equal(r.status, 1, r.stderr);
    assert.match(r.stderr, message);
    assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
    assert.equal(existsSync(data), false, `no data dir is created (${args.join(' ')})`);
  }
  writeFileSync(data, 'not a directory');
  let r = abacus(['run', '--input', input, '--data-dir', data, '--quiet']);
  assert.equal(r.status, 1, r.stderr);
  assert.match(r.stderr, /DataDirNotADirectory.*data exists and is not a directory — give --data-dir a directory/);
  r = abacus(['run', '--input', input, '--data-dir', join(data, 'sub'), '--quiet']);
  assert.match(r.stderr, /DataDirNotADirectory.*is not a directory/);
  rmSync(data);
  mkdirSync(join(data, 'dead-letter.jsonl'), { recursive: true });
  const before = snapshot(dir);
  r = abacus(['run', '--input', input, '--data-dir', data, '--quiet']);
  assert.equal(r.status, 1, r.stderr);
  assert.match(r.stderr, /DeadLetterUnwritable.*dead-letter\.jsonl exists and is not a regular file/);
  assert.deepEqual(snapshot(dir), before);
  rmSync(dir, { recursive: true, force: true });
});

test('--input - counts standard input; /dev/stdin redirected from a file is that file (issue 11 #8)', () => {
  const dir = tempDir();
  const lines = [event({ a: 1 }), event({ customer_id: 'u2', a: 2 }), 'not json', event({ a: 1 })];
  const text = `${lines.join('\r\n')}\n`;
  const expected = referenceRun(jsonlRecords(Buffer.from(text)).map((value) => ({ value, ingestTimeMs: INGEST_MS })), { level: 'account' });
  const r = abacusWith(['run', '--input', '-', '--data-dir', join(dir, 'a'), '--ingest-time', INGEST, '--quiet'], { input: text });
  assert.equal(r.status, 0, r.stderr);
  assert.deepEqual(sortRows(jsonLines<RefRow>(abacus(['counts', '--data-dir', join(dir, 'a')]).stdout)), expected.rows);
  // Sent again (a re-run after an interruption): nothing is counted twice.
  assert.equal(abacusWith(['run', '--input', '-', '--data-dir', join(dir, 'a'), '--ingest-time', INGEST, '--quiet'], { input: text }).status, 0);
  assert.deepEqual(sortRows(jsonLines<RefRow>(abacus(['counts', '--data-dir', join(dir, 'a')]).stdout)), expected.rows);
  writeFileSync(join(dir, 'events.jsonl'), text);
  const fd = openSync(join(dir, 'events.jsonl'), 'r');
  try {
    const f = abacusWith(['run', '--input', '/dev/stdin', '--data-dir', join(dir, 'b'), '--ingest-time', INGEST, '--quiet'], { stdinFd: fd });
    assert.equal(f.status, 0, f.stderr);
  } finally {
    closeSync(fd);
  }
  assert.deepEqual(sortRows(jsonLines<RefRow>(abacus(['counts', '--data-dir', join(dir, 'b')]).stdout)), expected.rows);
  rmSync(dir, { recursive: true, force: true });
});

test('whitespace-only lines of any length are skipped; other blank-looking bytes are not JSON whitespace (issue 11 #11)', () => {
  const huge = ' \t'.repeat(5 * 512 * 1024); // 5 MiB of spaces and tabs
  const file = [`\ufeff${event({})}`, huge, `${huge}\r`, '   ', '\r', '', event({ customer_id: 'u2' }), '\f', '\u00a0', event({ customer_id: 'u3' })].join('\n');
  const c = countFile(`${file}\n${' '.repeat(2 * 1024 * 1024)}`);
  assert.equal(c.dead.length, 2, JSON.stringify(c.dead.map((d) => d.reason)));
  assert.ok(c.dead.every((d) => /not valid JSON/.test(d.reason)));
  assert.equal(c.rows.find((r) => r.granularity === 'hour' && r.facet === '*')?.count, 3);
  assertMatchesReference(c);
});

/** A data dir whose sink holds `n` counters (written directly: building them with a run would take minutes). */
async function sinkWith(n: number): Promise<{ dir: string; data: string }> {
  const dir = tempDir();
  const data = join(dir, 'data');
  const config = testConfig();
  const sink = await LocalSink.open(localPaths(data).sink, config.rocksdb, 'account');
  try {
    for (let i = 0; i < n; i += 10_000) {
      const rows = Array.from({ length: Math.min(10_000, n - i) }, (_, j) => ({
        scope: `company-${(i + j) % 97}`,
        statisticId: 'email open',
        granularity: 'hour' as const,
        facet: 'campaign',
        value: `campaign number ${i + j} with a longish name to make the row realistic`,
        bucket: 1544220000,
        count: i + j + 1,
        uniques: 1,
      }));
      await sink.write(rows);
    }
  } finally {
    await sink.close();
  }
  return { dir, data };
}

test('abacus counts | head ends quietly with exit code 0 (issue 11 #9)', async () => {
  const { dir, data } = await sinkWith(20_000);
  const child = spawn(process.execPath, [ABACUS_BIN, 'counts', '--data-dir', data], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const first = await new Promise<string>((resolve) => child.stdout.once('data', (d: Buffer) => resolve(d.toString())));
  child.stdout.destroy(); // what head does after its lines
  const [code] = (await once(child, 'exit')) as [number | null];
  assert.match(first, /^\{"scope":"company-/);
  assert.equal(stderr, '');
  assert.equal(code, 0);
  // The same through a shell pipe, for help and counts.
  for (const command of [`"${process.execPath}" "${ABACUS_BIN}" counts --data-dir "${data}" | head -n 1`, `"${process.execPath}" "${ABACUS_BIN}" help | head -c 1`]) {
    const r = spawnSync('bash', ['-o', 'pipefail', '-c', command], { encoding: 'utf8' });
    assert.equal(r.stderr, '', command);
    assert.equal(r.status, 0, command);
  }
  rmSync(dir, { recursive: true, force: true });
});

test('abacus counts streams its rows: 300,000 counters print within a 64 MiB heap (issue 11 #10)', async () => {
  const n = 300_000;
  const { dir, data } = await sinkWith(n);
  const r = spawnSync(process.execPath, ['--max-old-space-size=64', ABACUS_BIN, 'counts', '--data-dir', data], { encoding: 'utf8', maxBuffer: 1 << 30, timeout: 300_000 });
  assert.equal(r.status, 0, r.stderr.slice(0, 2000));
  const lines = r.stdout.split('\n').filter((l) => l !== '');
  assert.equal(lines.length, n);
  assert.ok(lines.includes(JSON.stringify({ scope: 'company-0', statistic_id: 'email open', granularity: 'hour', facet: 'campaign', value: 'campaign number 0 with a longish name to make the row realistic', bucket: '2018-12-07T22:00:00Z', count: 1, uniques: 1 })));
  assert.equal(
    lines.reduce((sum, l) => sum + (JSON.parse(l) as RefRow).count, 0),
    (n * (n + 1)) / 2,
  );
  rmSync(dir, { recursive: true, force: true });
});

/** Counts `lines` in-process (the count task with its RocksDB state), with the wall time it took. */
async function timedRun(lines: readonly string[], batchSizes: number[] = [1000]): Promise<{ ms: number; rows: RefRow[]; expected: RefRow[] }> {
  const dir = tempDir();
  const config = testConfig();
  const records = lines.map((value) => ({ value, ingestTimeMs: INGEST_MS }));
  const t0 = process.hrtime.bigint();
  await runLocal({ config, dataDir: dir, source: new ArraySource(records, batchSizes) });
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  const rows = await localCounts(dir, config);
  rmSync(dir, { recursive: true, force: true });
  return { ms, rows, expected: referenceRun(records, { level: 'account' }).rows };
}

const wide = (facets: number, customer = 'u1'): string => {
  const fields: Record<string, unknown> = {};
  for (let f = 0; f < facets; f++) fields[`facet-${f}`] = `value-${f % 7}`;
  return event({ customer_id: customer, ...fields });
};

test('one event with tens of thousands of facets costs linear time, and counts exactly (issue 11 #6)', async () => {
  const small = await timedRun([wide(6000), wide(6000, 'u2')]);
  const large = await timedRun([wide(24_000), wide(24_000, 'u2')]);
  assert.deepEqual(large.rows, large.expected);
  // 4x the facets: linear is ~4x the time, the quadratic marker search was ~16x.
  assert.ok(large.ms < 9 * small.ms, `24,000 facets took ${large.ms.toFixed(0)} ms, 6,000 took ${small.ms.toFixed(0)} ms`);
});

test('one customer with thousands of distinct facet values in a month costs linear time, and counts exactly (issue 11 #6)', async () => {
  // Spread over 150 hours, within the uniqueness horizon, so uniques stay exact.
  const heavy = (n: number): string[] =>
    Array.from({ length: n }, (_, i) => event({ event_id: `e${i}`, timestamp: NOW - (i % 150) * 3600, campaign: `campaign-${i}`, product: `p-${i % 5000}`, page: `/page/${i}` }));
  const small = await timedRun(heavy(3000), [97, 500]);
  const large = await timedRun(heavy(12_000), [97, 500]);
  assert.deepEqual(large.rows, large.expected);
  console.log(`heavy: ${small.ms} ${large.ms}`);
  assert.ok(large.ms < 9 * small.ms, `12,000 events took ${large.ms.toFixed(0)} ms, 3,000 took ${small.ms.toFixed(0)} ms`);
});

test('hostile JSON: __proto__ and constructor fields, duplicate keys, deep nesting, 1e3 vs 1000, -0, NUL, long ids, huge numbers', () => {
  const deep = `${'['.repeat(100_000)}${']'.repeat(100_000)}`;
  const lines = [
    `{"company_id":"acme","statistic_id":"open","customer_id":"u1","timestamp":${NOW},"__proto__":"p","constructor":"c","toString":"t"}`,
    `{"company_id":"acme","statistic_id":"open","customer_id":"first","customer_id":"u2","timestamp":${NOW},"campaign":"a","campaign":"b"}`, // last wins
    `{"company_id":"acme","statistic_id":"open","customer_id":"u3","timestamp":${NOW},"deep":${deep}}`,
    `{"company_id":"acme","statistic_id":"open","customer_id":"u4","timestamp":${NOW},"event_id":1e3,"n":-0,"big":1e400,"x":12.50}`,
    `{"company_id":"acme","statistic_id":"open","customer_id":"u4","timestamp":${NOW + 5},"event_id":1000}`, // the same id: a duplicate
    `{"company_id":"acme","statistic_id":"open","customer_id":"u4","timestamp":${NOW + 5},"event_id":-0}`,
    `{"company_id":"acme","statistic_id":"open","customer_id":"u4","timestamp":${NOW + 6},"event_id":0}`, // -0 is 0
    `{"company_id":"acme","statistic_id":"open","customer_id":"u5\\u0000x","timestamp":${NOW}}`,
    `{"company_id":"acme","statistic_id":"open","customer_id":"u5","timestamp":${NOW}}`,
    event({ customer_id: 'L'.repeat(200_000) }),
    `{"company_id":"acme","statistic_id":"open","customer_id":"u6","timestamp":NaN}`,
    `{"company_id":"acme","statistic_id":"open","customer_id":"u6","timestamp":"NaN"}`,
    `{"company_id":"acme","statistic_id":"open","customer_id":"u6","timestamp":1e400}`,
    `{"company_id":"acme","statistic_id":"open","customer_id":"u7","timestamp":${NOW},"event_id":1e400}`,
  ];
  const c = countFile(`${lines.join('\n')}`);
  const hour = (facet: string, value: string): number | undefined => c.rows.find((r) => r.granularity === 'hour' && r.facet === facet && r.value === value)?.count;
  assert.equal(hour('__proto__', 'p'), 1);
  assert.equal(hour('constructor', 'c'), 1);
  assert.equal(hour('campaign', 'b'), 1);
  assert.equal(hour('campaign', 'a'), undefined);
  assert.equal(hour('n', '0'), 1);
  assert.equal(hour('x', '12.5'), 1);
  assert.equal(hour('big', 'null'), undefined);
  assert.equal(c.rows.find((r) => r.granularity === 'hour' && r.facet === '*')?.uniques, 8);
  assert.equal(c.dead.length, 3);
  assertMatchesReference(c);
});

test('a resumed run refuses an input replaced at the same path, resumes an appended one exactly, and a clean rerun re-sends nothing', () => {
  const dir = tempDir();
  const input = join(dir, 'events.jsonl');
  const data = join(dir, 'data');
  const first = [event({ customer_id: 'u1' }), event({ customer_id: 'u2' }), event({ customer_id: 'u3' })];
  const run = (): ReturnType<typeof abacus> => abacus(['run', '--input', input, '--data-dir', data, '--ingest-time', INGEST, '--quiet']);
  writeFileSync(input, `${first.join('\n')}\n`);
  assert.equal(run().status, 0);
  // The same length before the committed position, other bytes: another file.
  const replaced = [event({ customer_id: 'v1' }), event({ customer_id: 'v2' }), event({ customer_id: 'v3' }), event({ customer_id: 'v4' })];
  writeFileSync(input, `${replaced.join('\n')}\n`);
  const refused = run();
  assert.equal(refused.status, 1);
  assert.match(refused.stderr, /InputReplaced.*is not the file this data dir counted up to byte \d+.* — restore the original file \(appending to it is fine\), or count the new file into a fresh --data-dir/);
  // The original plus appended lines: resumes after the third line; a clean run leaves no outbox to re-send.
  const appended = [event({ customer_id: 'u4' }), event({ customer_id: 'u1', timestamp: NOW + 1 })];
  writeFileSync(input, `${[...first, ...appended].join('\n')}\n`);
  const resumed = run();
  assert.equal(resumed.status, 0, resumed.stderr);
  assert.doesNotMatch(resumed.stderr, /re-sending/);
  const counts = abacus(['counts', '--data-dir', data]);
  const expected = referenceRun(jsonlRecords(readFileSync(input)).map((value) => ({ value, ingestTimeMs: INGEST_MS })), { level: 'account' });
  assert.deepEqual(sortRows(jsonLines<RefRow>(counts.stdout)), expected.rows);
  rmSync(dir, { recursive: true, force: true });
});

test('ids and facets too long for a Cassandra partition key: the same rule in local mode, against the reference', () => {
  const long = 'k'.repeat(16_385);
  const lines = [
    event({ customer_id: 'a', statistic_id: long }), // invalid: the statistic is in every key
    event({ customer_id: 'b', company_id: long }), // invalid at account level: the scope
    event({ customer_id: long, campaign: 'x' }), // valid at account level
    event({ customer_id: 'c', note: 'n'.repeat(40_000), campaign: 'x' }), // counted, without its note facet
  ];
  const c = countFile(lines.join('\n'));
  assert.equal(c.dead.length, 2);
  assert.match(c.dead[0]!.reason, /^statistic_id is 16385 bytes of UTF-8, more than the 16384 that fit a counter's key in the sink/);
  assert.match(c.dead[1]!.reason, /^company_id is 16385 bytes/);
  assert.equal(c.rows.find((r) => r.granularity === 'hour' && r.facet === 'campaign')?.count, 2);
  assert.equal(c.rows.some((r) => r.facet === 'note'), false);
  assertMatchesReference(c);
  const customer = countFile(lines.join('\n'), { level: 'customer' });
  assert.equal(customer.dead.length, 2, 'customer level: the long statistic and the long customer_id');
  assertMatchesReference(customer);
});
