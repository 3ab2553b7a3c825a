import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseDuration, parseSize, formatDuration } from '../../common/duration';
import { resolveJobConfig, stateFingerprint } from '../../worker/config';

test('durations: one number and a unit', () => {
  assert.equal(parseDuration('1ms', 'x'), 1);
  assert.equal(parseDuration('500ms', 'x'), 500);
  assert.equal(parseDuration('2s', 'x'), 2000);
  assert.equal(parseDuration('1.5m', 'x'), 90_000);
  assert.equal(parseDuration('7d', 'x'), 7 * 86_400_000);
  assert.equal(formatDuration(7 * 86_400_000), '7d');
  assert.equal(formatDuration(1500), '1500ms');
  for (const bad of ['', '5', '5 s', 's', '-1s', '1w']) assert.throws(() => parseDuration(bad, 'window'), /window: ".*" is not a duration — write a number and a unit/);
});

test('sizes: bytes or binary/decimal units', () => {
  assert.equal(parseSize('64Mi', 'x'), 64 * 1024 * 1024);
  assert.equal(parseSize('10MB', 'x'), 10_000_000);
  assert.equal(parseSize(4096, 'x'), 4096);
  assert.throws(() => parseSize('1.5Gi', 'rocksdb.blockCacheSize'), /rocksdb\.blockCacheSize: "1\.5Gi" is not a size/);
});

test('defaults follow the contract', () => {
  const c = resolveJobConfig({});
  assert.equal(c.level, 'account');
  assert.deepEqual(c.granularities, ['hour', 'day', 'month']);
  assert.deepEqual(c.facets, { exclude: [] });
  assert.equal(c.maxEventBytes, 1024 * 1024);
  assert.equal(c.dedupRetentionMs, 7 * 86_400_000);
  assert.equal(c.uniquesRetentionMs, 7 * 86_400_000);
});

test('every error names the field and the fix', () => {
  const cases: Array<[Record<string, unknown>, RegExp]> = [
    [{ level: 'team' }, /level: "team" is not allowed — use one of: account, customer/],
    [{ keyGroups: 0 }, /keyGroups: 0 is not an integer in 1\.\.32768/],
    [{ granularities: ['week'] }, /granularities\[0\]: "week" is not allowed/],
    [{ granularities: [] }, /granularities: must be a non-empty list/],
    [{ facets: { include: ['a'], exclude: ['b'] } }, /facets: sets both include and exclude/],
    [{ facets: { include: ['customer_id'] } }, /"customer_id" is a reserved field/],
    [{ dedup: { retention: '0s' } }, /dedup\.retention: must be greater than zero/],
    [{ window: 5 }, /window: "5" is not a duration/],
    [{ kafka: { brokers: [] , topic: 't' } }, /kafka\.brokers: is empty/],
    [{ kafka: { brokers: ['b:9092'] } }, /kafka\.topic: is missing/],
    [{ cassandra: { contactPoints: ['c'], keyspace: 'bad-name' } }, /cassandra\.keyspace: "bad-name" is not a valid CQL identifier/],
    [{ windwo: '1s' }, /windwo: is not a known setting/],
    [{ dedup: { retension: '7d' } }, /dedup\.retension: is not a known setting — remove it or check its spelling; known settings under dedup: retention/],
    [{ cassandra: { contactPoints: ['c'], tabel: 't' } }, /cassandra\.tabel: is not a known setting/],
  ];
  for (const [raw, message] of cases) assert.throws(() => resolveJobConfig(raw), message, JSON.stringify(raw));
});

test('names derive from the job name; granularities keep a canonical order', () => {
  const c = resolveJobConfig({ name: 'opens', granularities: ['month', 'hour'], kafka: { brokers: ['b:9092'], topic: 'events' } });
  assert.deepEqual(c.granularities, ['hour', 'month']);
  assert.equal(c.kafka?.keyedTopic, 'opens-keyed');
  assert.equal(c.kafka?.deadLetterTopic, 'opens-dead-letter');
  const withSink = resolveJobConfig({ name: 'Email-Opens', cassandra: { contactPoints: ['c:9042'] } });
  assert.equal(withSink.cassandra?.table, 'email_opens_counts', 'each job its own table unless one is named');
});

test('the state fingerprint covers what changes the meaning of state, not tuning', () => {
  const a = stateFingerprint(resolveJobConfig({ window: '1s', rocksdb: { blockCacheSize: '64Mi' } }));
  const b = stateFingerprint(resolveJobConfig({ window: '10s', rocksdb: { blockCacheSize: '1Gi' } }));
  assert.deepEqual(a, b);
  assert.notDeepEqual(a, stateFingerprint(resolveJobConfig({ level: 'customer' })));
});
