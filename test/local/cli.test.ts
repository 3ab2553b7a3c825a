import assert from 'node:assert/strict';
import { once } from 'node:events';
import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { test } from 'node:test';
import { rng, testInput } from '../support/events';
import { referenceRun, sortRows, type RefRow } from '../support/reference';
import { abacus, abacusChild, jsonLines } from '../support/cli';
import { tempDir } from '../support/local';

/**
 * `abacus run` and `abacus counts` as a user runs them: bad input, crashes, settings changes.
 * Expected counts come from the independent reference of the contract.
 */

const NOW = Date.UTC(2026, 10, 27, 12) / 1000;
const INGEST = '2026-11-27T12:00:00Z';
const INGEST_MS = Date.parse(INGEST);

function counts(dataDir: string): RefRow[] {
  const r = abacus(['counts', '--data-dir', dataDir]);
  assert.equal(r.status, 0, r.stderr);
  return sortRows(jsonLines<RefRow>(r.stdout));
}

function expectedFor(lines: readonly string[], maxEventBytes?: number): RefRow[] {
  return referenceRun(
    lines.filter((l) => l.trim() !== '').map((value) => ({ value, ingestTimeMs: INGEST_MS })),
    { level: 'account', ...(maxEventBytes === undefined ? {} : { maxEventBytes }) },
  ).rows;
}

test('malformed, mistyped and huge lines go to the dead-letter file; everything else is counted', () => {
  const dir = tempDir();
  const lines = testInput({ seed: 7, nowSec: NOW, valid: 300, dupRate: 0.1, maxEventBytes: 1024 * 1024, customers: 30 });
  const huge = JSON.stringify({ company_id: 'c', statistic_id: 's', customer_id: 'u', timestamp: NOW, pad: 'y'.repeat(3 * 1024 * 1024) });
  const file = join(dir, 'events.jsonl');
  // CRLF on one line, blank lines, a 3 MiB line, and no newline at the end.
  writeFileSync(file, `${lines.slice(0, 100).join('\n')}\r\n\n   \n${huge}\n${lines.slice(100).join('\n')}`);
  const run = abacus(['run', '--input', file, '--data-dir', join(dir, 'data'), '--ingest-time', INGEST]);
  assert.equal(run.status, 0, run.stderr);
  assert.deepEqual(counts(join(dir, 'data')), expectedFor([...lines, huge]));
  const dead = jsonLines<{ reason: string; origin: string; bytes: number }>(readFileSync(join(dir, 'data', 'dead-letter.jsonl'), 'utf8'));
  const expectedInvalid = referenceRun([...lines, huge].map((value) => ({ value, ingestTimeMs: INGEST_MS })), { level: 'account' }).invalid.length;
  assert.equal(dead.length, expectedInvalid);
  const tooLarge = dead.find((d) => d.bytes > 3 * 1024 * 1024);
  assert.ok(tooLarge, 'the huge line is reported with its true size');
  assert.match(tooLarge.reason, /larger than maxEventBytes \(1048576\)/);
  assert.ok(dead.some((d) => /not valid JSON/.test(d.reason)));
  assert.ok(dead.some((d) => /missing required field company_id/.test(d.reason)));
  assert.match(run.stderr, /invalid \(see .*dead-letter\.jsonl\)/);
  rmSync(dir, { recursive: true });
});

test('an empty file counts nothing and succeeds; a missing file is a clear error', () => {
  const dir = tempDir();
  writeFileSync(join(dir, 'empty.jsonl'), '');
  const run = abacus(['run', '--input', join(dir, 'empty.jsonl'), '--data-dir', join(dir, 'data')]);
  assert.equal(run.status, 0, run.stderr);
  assert.deepEqual(counts(join(dir, 'data')), []);
  const missing = abacus(['run', '--input', join(dir, 'nope.jsonl'), '--data-dir', join(dir, 'data')]);
  assert.equal(missing.status, 1);
  assert.match(missing.stderr, /cannot read input .*nope\.jsonl.*give the path of an existing JSONL file/);
  rmSync(dir, { recursive: true });
});

test('a data dir written with other settings is refused, naming the difference, and left intact', () => {
  const dir = tempDir();
  const file = join(dir, 'events.jsonl');
  const lines = testInput({ seed: 8, nowSec: NOW, valid: 50, dupRate: 0, maxEventBytes: 1024 * 1024 });
  writeFileSync(file, lines.join('\n'));
  const data = join(dir, 'data');
  assert.equal(abacus(['run', '--input', file, '--data-dir', data, '--ingest-time', INGEST]).status, 0);
  const before = counts(data);
  const other = abacus(['run', '--input', file, '--data-dir', data, '--level', 'customer']);
  assert.equal(other.status, 1);
  assert.match(other.stderr, /StateMismatch.*level was "account", now "customer".*fresh --data-dir/);
  const k = abacus(['run', '--input', file, '--data-dir', data, '--key-groups', '64']);
  assert.match(k.stderr, /keyGroups was 128, now 64/);
  assert.deepEqual(counts(data), before);
  rmSync(dir, { recursive: true });
});

test('config errors name the field and the fix, with exit code 2', () => {
  const dir = tempDir();
  const job = join(dir, 'job.yaml');
  writeFileSync(job, 'level: account\nwindow: 5 seconds\n');
  const r = abacus(['run', '--input', job, '--data-dir', dir, '--config', job]);
  assert.equal(r.status, 2);
  assert.match(r.stderr, /window: "5 seconds" is not a duration — write a number and a unit/);
  writeFileSync(job, 'levle: account\n');
  assert.match(abacus(['run', '--input', job, '--data-dir', dir, '--config', job]).stderr, /levle: is not a known setting/);
  assert.match(abacus(['run', '--data-dir', dir]).stderr, /--input: is missing/);
  assert.equal(abacus(['frobnicate']).status, 2);
  writeFileSync(job, '{"company_id":"a"}\n{"b":1}\n');
  const notYaml = abacus(['run', '--input', job, '--data-dir', dir, '--config', job]);
  assert.equal(notYaml.status, 2);
  assert.match(notYaml.stderr, /--config: .*job\.yaml is not valid YAML: .*line 2.* — fix the YAML at that line/);
  rmSync(dir, { recursive: true });
});

test('every command answers --help with its own usage, exit 0', () => {
  const commands = ['run', 'restore', 'counts', 'demo', 'worker'];
  for (const command of commands) {
    const r = abacus([command, '--help']);
    assert.equal(r.status, 0, r.stderr);
    assert.ok(r.stdout.startsWith(`usage:\n  abacus ${command} `), r.stdout);
    for (const other of commands.filter((c) => c !== command)) assert.ok(!r.stdout.includes(`  abacus ${other} `), `${command} --help shows ${other}`);
  }
  const operator = abacus(['operator', '--help']);
  assert.equal(operator.status, 0);
  assert.match(operator.stdout, /^usage: abacus operator .*--metrics-port/);
});

test('a metrics port in use is a named error before the data dir is created', async () => {
  const dir = tempDir();
  const taken = createServer();
  await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve));
  const port = (taken.address() as AddressInfo).port;
  const input = join(dir, 'events.jsonl');
  writeFileSync(input, '');
  const r = abacus(['run', '--input', input, '--data-dir', join(dir, 'data'), '--metrics-port', String(port)]);
  taken.close();
  assert.equal(r.status, 1);
  assert.match(r.stderr, new RegExp(`PortUnavailable.*cannot serve metrics on 127\\.0\\.0\\.1:${port}: another process listens there — free that port or choose another one with --metrics-port`));
  assert.equal(existsSync(join(dir, 'data')), false);
  rmSync(dir, { recursive: true });
});

for (const engine of ['records', 'native']) {
  test(`killed with SIGKILL at random instants and restarted, the counts are exactly the contract [${engine}]`, async () => {
    const dir = tempDir();
    const file = join(dir, 'events.jsonl');
    const lines = testInput({ seed: 99, nowSec: NOW, valid: 60_000, dupRate: 0.05, maxEventBytes: 1024 * 1024, customers: 2000 });
    writeFileSync(file, `${lines.join('\n')}\n`);
    const data = join(dir, 'data');
    const args = ['run', '--input', file, '--data-dir', data, '--ingest-time', INGEST, '--window', '50ms', '--quiet', '--engine', engine];
    const r = rng(99);
    let kills = 0;
    for (let attempt = 0; attempt < 8; attempt++) {
      const child = abacusChild(args);
      const delay = 200 + Math.floor(r() * 800);
      const timer = setTimeout(() => child.kill('SIGKILL'), delay);
      const [code, signal] = (await once(child, 'exit')) as [number | null, NodeJS.Signals | null];
      clearTimeout(timer);
      if (signal === 'SIGKILL') kills++;
      else {
        assert.equal(code, 0, `run ${attempt} exited with ${code}`);
        break;
      }
    }
    assert.ok(kills >= 2, `the process was killed mid-run at least twice (got ${kills})`);
    const final = abacus(args);
    assert.equal(final.status, 0, final.stderr);
    assert.ok(existsSync(join(data, 'sink')));
    assert.deepEqual(counts(data), expectedFor(lines));
  });
}

test('the demo runs, serves metrics while running, and prints a readable summary', () => {
  const r = abacus(['demo', '--events', '5000', '--metrics-port', '0']);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stderr, /metrics: http:\/\/127\.0\.0\.1:\d+\/metrics/);
  assert.match(r.stdout, /Counted [\d,]+ events in .* dropped [\d,]+ duplicates/);
  assert.match(r.stdout, /Busiest account\/statistic\/day totals/);
  assert.match(r.stdout, /account\s+statistic\s+day\s+count\s+uniques/);
});

test('while a run is going, /metrics serves the engine metrics with help text', async () => {
  const child = abacusChild(['demo', '--events', '400000', '--metrics-port', '0']);
  let stderr = '';
  const url = await new Promise<string>((resolve, reject) => {
    child.stderr!.on('data', (chunk: Buffer) => {
      stderr += chunk.toString();
      const m = /metrics: (http:\/\/\S+\/metrics)/.exec(stderr);
      if (m) resolve(m[1]!);
    });
    child.once('exit', () => reject(new Error(`demo exited before serving metrics: ${stderr}`)));
  });
  try {
    let text = '';
    // Poll until events have been counted (the first window may not have closed yet).
    for (let i = 0; i < 50 && !/abacus_events_in_total [1-9]/.test(text); i++) {
      text = await (await fetch(url)).text();
      await new Promise((r) => setTimeout(r, 200));
    }
    for (const name of ['abacus_events_in_total', 'abacus_events_invalid_total', 'abacus_events_duplicate_total', 'abacus_window_counters_touched', 'abacus_window_flush_duration_seconds', 'abacus_window_open_duration_seconds', 'abacus_state_size_bytes', 'abacus_input_lag_seconds']) {
      assert.match(text, new RegExp(`# HELP ${name} \\S`), `${name} has help text`);
    }
    assert.match(text, /abacus_events_in_total [1-9]/);
  } finally {
    child.kill('SIGKILL');
  }
});
