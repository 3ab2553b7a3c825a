import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { test } from 'node:test';
import fc from 'fast-check';
import {
  chunkKey,
  decodeChunk,
  decodeChunkRaw,
  decodeManifest,
  encodeChunk,
  encodeChunkRaw,
  encodeManifest,
  manifestKey,
  manifestKeyOfId,
  parseChunkKey,
  parseManifestKey,
  type ChunkEntry,
  type ChunkRef,
  type Manifest,
} from '../../worker/checkpoint/format';
import { keyedRetentionProblem } from '../../worker/io/kafka-client';

/** Chunk and manifest formats: round trips on arbitrary content, and every kind of damage is named. */

const entries = fc.array(fc.tuple(fc.string({ unit: 'binary' }), fc.option(fc.string({ unit: 'binary' }), { nil: null })), { maxLength: 50 });

test('chunks round-trip any keys and values (any UTF-8 text, puts and deletes)', async () => {
  await fc.assert(
    fc.asyncProperty(entries, async (list) => {
      const decoded = decodeChunkRaw(encodeChunkRaw(list), 'x');
      // Lone surrogates become U+FFFD in UTF-8, as they do in the store.
      const expected = list.map(([k, v]) => [Buffer.from(k).toString(), v === null ? null : Buffer.from(v).toString()]);
      assert.deepEqual(decoded, expected);
      const encoded = await encodeChunk(list);
      const ref: ChunkRef = { key: 'k', kind: 'delta', sha256: encoded.sha256, bytes: encoded.body.length, records: encoded.records };
      assert.deepEqual(await decodeChunk(encoded.body, ref), expected);
    }),
    { numRuns: 200 },
  );
});

test('a damaged chunk is refused: wrong size, flipped byte, wrong record count, truncated raw data', async () => {
  const list: ChunkEntry[] = [['0001Dabc', '17'], ['0001Cxyz', '3,1'], ['0001Bgone', null]];
  const encoded = await encodeChunk(list);
  const ref: ChunkRef = { key: 'w0/chunks/000000000001/0001-base.chunk', kind: 'base', sha256: encoded.sha256, bytes: encoded.body.length, records: 3 };
  await assert.rejects(decodeChunk(encoded.body.subarray(1), ref), /0001-base\.chunk is damaged: it is \d+ bytes, the manifest says \d+/);
  const flipped = Buffer.from(encoded.body);
  flipped.writeUInt8(flipped.readUInt8(10) ^ 1, 10);
  await assert.rejects(decodeChunk(flipped, ref), /is damaged: its sha256 is [0-9a-f]{64}, the manifest says/);
  await assert.rejects(decodeChunk(encoded.body, { ...ref, records: 4 }), /holds 3 records, the manifest says 4/);
  const raw = encodeChunkRaw(list);
  assert.throws(() => decodeChunkRaw(raw.subarray(0, raw.length - 2), 'c'), /checkpoint object c is damaged: it ends inside a record/);
  assert.throws(() => decodeChunkRaw(Buffer.from('hello'), 'c'), /does not start with the chunk header/);
});

function manifest(overrides: Partial<Manifest> = {}): Manifest {
  const chunk: ChunkRef = { key: chunkKey('w1', 5, 7, 'base'), kind: 'base', sha256: 'a'.repeat(64), bytes: 10, records: 2 };
  return {
    format: 'abacus-checkpoint/1',
    id: 'w1/000000000007',
    job: 'orders',
    writer: 'w1',
    sequence: 7,
    generation: 3,
    createdAtMs: 1_700_000_000_000,
    reason: 'periodic',
    fingerprint: { level: 'account', keyGroups: 128 },
    groups: { 5: { chunks: [chunk, { ...chunk, key: chunkKey('w1', 5, 8, 'delta'), kind: 'delta' }], positions: { 'kg:5': '42' }, snapshotSequence: 7 }, 6: { chunks: [], positions: {}, snapshotSequence: 7 } },
    ...overrides,
  };
}

test('manifests round-trip; truncated, altered or malformed ones are named damaged', () => {
  const m = manifest();
  assert.deepEqual(decodeManifest(encodeManifest(m), 'm'), m);
  const body = encodeManifest(m);
  assert.throws(() => decodeManifest(body.subarray(0, body.length - 30), 'm'), /checkpoint manifest m is damaged: it has no checksum line \(truncated\?\)/);
  const altered = Buffer.from(body.toString().replace('"periodic"', '"periodiC"'));
  assert.throws(() => decodeManifest(altered, 'm'), /its checksum does not match its content/);
  const sealed = (doc: unknown): Buffer => {
    const line = JSON.stringify(doc);
    return Buffer.from(`${line}\nsha256:${createHash('sha256').update(line).digest('hex')}\n`);
  };
  assert.throws(() => decodeManifest(sealed({ ...m, format: 'other/2' }), 'm'), /its format is "other\/2", expected abacus-checkpoint\/1/);
  assert.throws(() => decodeManifest(sealed({ ...m, sequence: 'x' }), 'm'), /sequence is not an integer/);
  const badChain = { ...m, groups: { 5: { ...m.groups[5]!, chunks: [m.groups[5]!.chunks[1], m.groups[5]!.chunks[0]] } } };
  assert.throws(() => decodeManifest(sealed(badChain), 'm'), /group 5's chain has a base after its first chunk/);
  const badRef = { ...m, groups: { 5: { ...m.groups[5]!, chunks: [{ ...m.groups[5]!.chunks[0], sha256: 'zz' }] } } };
  assert.throws(() => decodeManifest(sealed(badRef), 'm'), /group 5 chunk 0 is malformed/);
});

test('object keys: manifests and chunks parse back; other keys are not taken for them', () => {
  assert.equal(manifestKey('w3', 42), 'w3/manifests/000000000042.manifest');
  assert.deepEqual(parseManifestKey('w3/manifests/000000000042.manifest'), { writer: 'w3', sequence: 42 });
  assert.equal(manifestKeyOfId('local/000000000009'), 'local/manifests/000000000009.manifest');
  assert.equal(manifestKeyOfId('../x'), undefined);
  assert.equal(chunkKey('w0', 0x11, 42, 'base'), 'w0/chunks/000000000042/0011-base.chunk');
  assert.equal(chunkKey('local', 'unkeyed', 1, 'base'), 'local/chunks/000000000001/unkeyed-base.chunk');
  assert.deepEqual(parseChunkKey('w0/chunks/000000000042/0011-delta.chunk'), { writer: 'w0', sequence: 42 });
  for (const other of ['w0/manifests/1.manifest', 'w0/chunks/000000000042/0011-base.chunk.tmp-ab', 'w0/chunks/x', 'README']) {
    assert.equal(parseChunkKey(other), undefined, other);
    assert.equal(parseManifestKey(other), undefined, other);
  }
});

test('keyed-topic retention must cover twice the checkpoint interval; the message says how to fix it', () => {
  assert.equal(keyedRetentionProblem('j-keyed', -1, 300_000), undefined, 'unlimited');
  assert.equal(keyedRetentionProblem('j-keyed', undefined, 300_000), undefined, 'unknown: nothing to say');
  assert.equal(keyedRetentionProblem('j-keyed', 600_000, 300_000), undefined);
  const problem = keyedRetentionProblem('j-keyed', 599_999, 300_000);
  assert.match(problem ?? '', /keyed topic j-keyed keeps records for 599999 ms \(retention\.ms\), less than twice the checkpoint interval \(300000 ms\)/);
  assert.match(problem ?? '', /raise retention\.ms of j-keyed .*retention\.ms=1200000\) or shorten checkpoints\.interval/);
});
