/* eslint-disable @typescript-eslint/no-unsafe-member-access -- kubectl's JSON is untyped */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { createNamespace, deleteNamespace, example, getJson, installCrd, k, kubectl } from './operator-harness';

/** What the API server itself refuses, from the generated CRD alone (no operator running). */
let ns = '';
before(() => {
  installCrd();
  ns = createNamespace('abacus-admission');
});
after(() => deleteNamespace(ns));

function applyExpectingRejection(doc: string, message: RegExp): void {
  const r = kubectl(['apply', '-f', '-'], doc);
  assert.notEqual(r.code, 0, `expected the API server to reject:\n${doc}`);
  assert.match(r.stderr, message);
}

test('a valid example is accepted and stored with schema defaults', () => {
  k(['apply', '-f', '-'], example('customer-level.yaml', ns));
  const job = getJson(['get', 'abacusjob', 'customers', '-n', ns])!;
  assert.equal(job.spec.rocksdb.blockCacheSize, '256Mi');
  assert.equal(job.spec.metrics.port, 9400);
  assert.equal(job.spec.storage.whenScaled, 'Delete');
  assert.equal(job.spec.source.kafka.tls.enabled, false);
  assert.equal(job.spec.sink.cassandra.localDataCenter, 'datacenter1');
  const short = getJson(['get', 'abj', 'customers', '-n', ns])!;
  assert.equal(short.metadata.name, 'customers');
});

test('replicas below 1 is rejected by the schema', () => {
  applyExpectingRejection(example('customer-level.yaml', ns, (d) => ((d.metadata.name = 'r0'), (d.spec.replicas = 0))), /spec.replicas.*should be greater than or equal to 1/);
});

test('replicas above keyGroups is rejected by a CEL rule with a clear message', () => {
  applyExpectingRejection(
    example('customer-level.yaml', ns, (d) => ((d.metadata.name = 'r65'), (d.spec.replicas = 65))),
    /spec.replicas: Invalid value.*replicas must not exceed keyGroups/,
  );
});

test('keyGroups cannot change (CEL self == oldSelf)', () => {
  const r = kubectl(['patch', 'abacusjob', 'customers', '-n', ns, '--type=merge', '-p', '{"spec":{"keyGroups":128}}']);
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /keyGroups is immutable/);
});

test('engine defaults to records, cannot change, and native takes a memoryBudget', () => {
  assert.equal(getJson(['get', 'abacusjob', 'customers', '-n', ns])!.spec.engine, 'records');
  const r = kubectl(['patch', 'abacusjob', 'customers', '-n', ns, '--type=merge', '-p', '{"spec":{"engine":"native"}}']);
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /engine is immutable/);
  applyExpectingRejection(example('customer-level.yaml', ns, (d) => ((d.metadata.name = 'engine'), (d.spec.engine = 'rust'))), /spec.engine: Unsupported value/);
  // The example sets a memoryBudget: the native engine takes it (it spills under it).
  k(['apply', '-f', '-'], example('customer-level.yaml', ns, (d) => ((d.metadata.name = 'native'), (d.spec.engine = 'native'))));
  const native = getJson(['get', 'abacusjob', 'native', '-n', ns])!.spec as { engine: string; memoryBudget: string };
  assert.deepEqual([native.engine, native.memoryBudget], ['native', '1Gi']);
});

test('kubectl scale beyond keyGroups is rejected too', () => {
  const r = kubectl(['scale', 'abacusjob/customers', '-n', ns, '--replicas=100']);
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /must not exceed keyGroups/);
  k(['scale', 'abacusjob/customers', '-n', ns, '--replicas=4']);
  assert.equal(getJson(['get', 'abacusjob', 'customers', '-n', ns])!.spec.replicas, 4);
});

test('malformed durations and sizes are rejected by their patterns', () => {
  applyExpectingRejection(example('customer-level.yaml', ns, (d) => ((d.metadata.name = 'dur'), (d.spec.window = '5 minutes'))), /spec.window.*should match/);
  applyExpectingRejection(
    example('customer-level.yaml', ns, (d) => ((d.metadata.name = 'ret'), (d.spec.dedup.retention = '7 days'))),
    /spec.dedup.retention.*should match/,
  );
  applyExpectingRejection(
    example('customer-level.yaml', ns, (d) => ((d.metadata.name = 'size'), (d.spec.rocksdb = { blockCacheSize: 'lots' }))),
    /spec.rocksdb.blockCacheSize.*should match/,
  );
});

test('a missing source or sink is rejected', () => {
  applyExpectingRejection(example('customer-level.yaml', ns, (d) => ((d.metadata.name = 'nosrc'), delete d.spec.source)), /spec.source: Required value/);
  applyExpectingRejection(
    example('customer-level.yaml', ns, (d) => ((d.metadata.name = 'nobrokers'), delete d.spec.source.kafka.brokers)),
    /spec.source.kafka.brokers: Required value/,
  );
  applyExpectingRejection(example('customer-level.yaml', ns, (d) => ((d.metadata.name = 'nosink'), delete d.spec.sink)), /spec.sink: Required value/);
});

test('facets include and exclude together, and overlong names, are rejected', () => {
  applyExpectingRejection(
    example('customer-level.yaml', ns, (d) => ((d.metadata.name = 'facets'), (d.spec.facets = { include: ['a'], exclude: ['b'] }))),
    /set include or exclude, not both/,
  );
  applyExpectingRejection(example('customer-level.yaml', ns, (d) => (d.metadata.name = 'x'.repeat(53))), /at most 52 characters/);
});
