import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseDuration, parseSize, formatDuration } from '../../common/duration';
import fc from 'fast-check';
import { defaultTableName, jobIdentity, resolveJobConfig, stateFingerprint } from '../../common/job-config';

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
    [{ window: '25d' }, /window: "25d" is longer than 24 days — set window to at most 24d/],
    [{ checkpoints: { dir: '/c', interval: '30d' } }, /checkpoints\.interval: "30d" is longer than 24 days/],
    [{ dedup: { retention: '99999999999d' } }, /dedup\.retention: "99999999999d" is too long to be exact/],
    [{ rocksdb: { blockCacheSize: '99999999T' } }, /rocksdb\.blockCacheSize: "99999999T" is too large to be exact/],
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
  assert.equal(c.kafka?.routeGroup, 'opens-route');
  assert.equal(c.kafka?.countGroupPrefix, 'opens-count');
  assert.equal(c.kafka?.bundles, true, 'the router bundles unless told not to');
  assert.equal(resolveJobConfig({ kafka: { brokers: ['b:9092'], topic: 'events', bundles: false } }).kafka?.bundles, false);
  assert.throws(() => resolveJobConfig({ kafka: { brokers: ['b:9092'], topic: 'events', bundles: 'no' } }), /kafka\.bundles/);
  const keyed = resolveJobConfig({ name: 'opens', keyGroups: 8, kafka: { brokers: ['b:9092'], topic: 'events-by-group', inputKeyed: true } });
  assert.equal(keyed.kafka?.keyedTopic, 'events-by-group', 'an input already keyed is the topic the count stage reads');
  assert.throws(
    () => resolveJobConfig({ name: 'opens', kafka: { brokers: ['b:9092'], topic: 'events', keyedTopic: 'other', inputKeyed: true } }),
    /kafka\.keyedTopic: is "other" but kafka\.inputKeyed says the input topic "events" is already keyed.*leave kafka\.keyedTopic out/,
  );
  const withSink = resolveJobConfig({ name: 'email_opens', cassandra: { contactPoints: ['c:9042'] } });
  assert.equal(withSink.cassandra?.table, 'email_opens_counts', 'each job its own table unless one is named');
  const rewritten = resolveJobConfig({ name: 'Email-Opens', cassandra: { contactPoints: ['c:9042'] } }).cassandra?.table ?? '';
  assert.match(rewritten, /^email_opens_[0-9a-f]{12}_counts$/, 'a name that is not a CQL identifier keeps a readable start and gains a hash');
});

test('jobs of the same name in two namespaces share no topic, group or table; derived names are valid and distinct', () => {
  const job = (name: string, namespace?: string) =>
    resolveJobConfig({ name, ...(namespace === undefined ? {} : { namespace }), kafka: { brokers: ['b:9092'], topic: 'events' }, cassandra: { contactPoints: ['c:9042'] } });
  const a = job('opens', 'team-a');
  const b = job('opens', 'team-b');
  assert.equal(a.kafka?.keyedTopic, 'team-a.opens-keyed');
  assert.equal(a.kafka?.routeGroup, 'team-a.opens-route');
  for (const field of ['keyedTopic', 'deadLetterTopic', 'routeGroup', 'countGroupPrefix', 'clientId'] as const) assert.notEqual(a.kafka?.[field], b.kafka?.[field], field);
  assert.notEqual(a.cassandra?.table, b.cassandra?.table);
  // Rewriting characters, case or the 48-character limit never maps two jobs to one table.
  const arbitraryName = fc.string({ minLength: 1, maxLength: 80, unit: fc.constantFrom('a', 'b', 'A', '-', '.', '_', '1', 'é') });
  const namespace = fc.option(fc.constantFrom('team-a', 'team-b', 'x'), { nil: undefined });
  fc.assert(
    fc.property(arbitraryName, namespace, arbitraryName, namespace, (n1, ns1, n2, ns2) => {
      fc.pre(jobIdentity(n1, ns1) !== jobIdentity(n2, ns2));
      const [t1, t2] = [defaultTableName(jobIdentity(n1, ns1)), defaultTableName(jobIdentity(n2, ns2))];
      assert.notEqual(t1, t2);
      for (const t of [t1, t2]) assert.match(t, /^[a-z][a-z0-9_]{0,47}$/);
    }),
    { numRuns: 2000 },
  );
  // Names Kafka would refuse are refused here, naming the setting and the fix.
  assert.throws(() => job('a b'), /kafka\.keyedTopic: "a b-keyed" is not a valid Kafka name .* — name it explicitly with kafka\.keyedTopic, or give the job a name made of those characters/);
  assert.throws(() => job('opens', 'Team_A'), /namespace: "Team_A" is not a Kubernetes namespace name/);
  assert.throws(() => resolveJobConfig({ kafka: { brokers: ['b:9092'], topic: 'events', deadLetterTopic: 'x'.repeat(250) } }), /kafka\.deadLetterTopic: .* is not a valid Kafka name/);
});

test('the state fingerprint covers what changes the meaning of state, not tuning', () => {
  const a = stateFingerprint(resolveJobConfig({ window: '1s', rocksdb: { blockCacheSize: '64Mi' } }));
  const b = stateFingerprint(resolveJobConfig({ window: '10s', rocksdb: { blockCacheSize: '1Gi' } }));
  assert.deepEqual(a, b);
  assert.notDeepEqual(a, stateFingerprint(resolveJobConfig({ level: 'customer' })));
});

test('checkpoints: S3 or a directory, with field-named errors', () => {
  const c = resolveJobConfig({ name: 'orders', checkpoints: { s3: { bucket: 'ckpt', endpoint: 'http://s3:9000' } } });
  assert.deepEqual(c.checkpoints, { intervalMs: 300_000, retention: 3, s3: { endpoint: 'http://s3:9000', region: 'us-east-1', bucket: 'ckpt', prefix: 'abacus/orders/', forcePathStyle: true } });
  assert.equal(resolveJobConfig({ checkpoints: { s3: { bucket: 'ckpt', prefix: 'x/y' } } }).checkpoints?.s3?.prefix, 'x/y/');
  assert.deepEqual(resolveJobConfig({ checkpoints: { dir: '/tmp/c', interval: '30s', retention: 2 } }).checkpoints, { intervalMs: 30_000, retention: 2, dir: '/tmp/c' });
  assert.equal(resolveJobConfig({}).checkpoints, undefined);
  assert.throws(() => resolveJobConfig({ checkpoints: { dir: '/a', s3: { bucket: 'ckpt' } } }), /checkpoints: names both s3 and dir/);
  assert.throws(() => resolveJobConfig({ checkpoints: { interval: '1m' } }), /checkpoints: names no store/);
  assert.throws(() => resolveJobConfig({ checkpoints: { s3: { bucket: 'Bad_Bucket' } } }), /checkpoints\.s3\.bucket: "Bad_Bucket" is not a valid bucket name/);
  assert.throws(() => resolveJobConfig({ checkpoints: { s3: {} } }), /checkpoints\.s3\.bucket: is missing/);
  assert.throws(() => resolveJobConfig({ checkpoints: { s3: { bucket: 'ckpt', endpoint: 'minio:9000' } } }), /checkpoints\.s3\.endpoint: "minio:9000" is not an http\(s\) URL/);
  assert.throws(() => resolveJobConfig({ checkpoints: { dir: '/a', retention: 0 } }), /checkpoints\.retention: 0 is not an integer in 1\.\.1000/);
  assert.throws(() => resolveJobConfig({ checkpoints: { dir: '/a', every: '1m' } }), /checkpoints\.every: is not a known setting/);
  assert.throws(() => resolveJobConfig({ checkpoints: { s3: { bucket: 'ckpt', secretKey: 'x' } } }), /checkpoints\.s3\.secretKey: is not a known setting/);
});

test('a facet named twice in include or exclude is refused, naming the field and the name (issue 11 #4)', () => {
  assert.throws(() => resolveJobConfig({ facets: { include: ['a', 'b', 'a'] } }), /facets\.include: lists "a" twice — list each field once in facets\.include/);
  assert.throws(() => resolveJobConfig({ facets: { exclude: ['x', 'x'] } }), /facets\.exclude: lists "x" twice/);
  assert.deepEqual(resolveJobConfig({ facets: { include: ['a', 'b'] } }).facets, { include: ['a', 'b'], exclude: [] });
});
