import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { Message } from 'kafkajs';
import { BUNDLE_HEADER, BUNDLE_MAX_BYTES, Bundler, decodeBundle, encodeBundle, formatKeyedPosition, parseKeyedPosition, ROUTED_FROM_HEADER, WAVE_PARTITION_BYTES } from '../../worker/io/routed-bundle';
import { rng } from '../support/events';

test('a bundle reads back as its events, bytes, offsets and ingest times (random shapes, empty and binary values included)', () => {
  const r = rng(17);
  for (let round = 0; round < 200; round++) {
    const n = Math.floor(r() * 40);
    const events = Array.from({ length: n }, (_, i) => {
      const value = Buffer.from(Array.from({ length: Math.floor(r() * 300) }, () => Math.floor(r() * 256)));
      return { value, offsetDelta: i * 3 + Math.floor(r() * 3), ingestTimeMs: Math.floor(r() * 2 ** 45) + (r() < 0.1 ? 0.5 : 0) };
    });
    const back = decodeBundle(encodeBundle(events));
    assert.equal(back.length, n);
    back.forEach((e, i) => {
      assert.ok(e.value.equals(events[i]!.value), `round ${round} event ${i} bytes`);
      assert.equal(e.offsetDelta, events[i]!.offsetDelta);
      assert.equal(e.ingestTimeMs, events[i]!.ingestTimeMs);
    });
  }
});

test('a bundle laid out byte by byte as documented decodes (the format is a contract between router and count stage across versions)', () => {
  // magic, version 1, 2 events; entries (length, offset delta, ingest ms as f64); bodies.
  const bytes = Buffer.concat([
    Buffer.from([0xab, 0x01, 0, 0, 0, 2]),
    Buffer.from([0, 0, 0, 2, 0, 0, 0, 0]), f64(1_700_000_000_000),
    Buffer.from([0, 0, 0, 3, 0, 0, 0, 5]), f64(1_700_000_000_500),
    Buffer.from('{}'), Buffer.from('[1]'),
  ]);
  const events = decodeBundle(bytes);
  assert.deepEqual(events.map((e) => [e.value.toString(), e.offsetDelta, e.ingestTimeMs]), [['{}', 0, 1_700_000_000_000], ['[1]', 5, 1_700_000_000_500]]);
  assert.ok(encodeBundle(events).equals(bytes), 'encoding is the documented layout');
});

test('a damaged or foreign bundle is refused with what is wrong, never read past its end', () => {
  const good = encodeBundle([{ value: Buffer.from('{"a":1}'), offsetDelta: 0, ingestTimeMs: 1 }, { value: Buffer.from('{"b":2}'), offsetDelta: 1, ingestTimeMs: 2 }]);
  assert.throws(() => decodeBundle(Buffer.from('{"a":1}')), /not a bundle/);
  assert.throws(() => decodeBundle(Buffer.alloc(0)), /not a bundle/);
  const v2 = Buffer.from(good);
  v2[1] = 2;
  assert.throws(() => decodeBundle(v2), /version 2 is unknown.*upgrade the worker/);
  for (let cut = 1; cut < good.length; cut++) assert.throws(() => decodeBundle(good.subarray(0, cut)), Error, `cut at ${cut}`);
  assert.throws(() => decodeBundle(Buffer.concat([good, Buffer.from('x')])), /1 bytes after its 2 events/);
  const huge = Buffer.from(good);
  huge.writeUInt32BE(0xffffffff, 2);
  assert.throws(() => decodeBundle(huge), /claims 4294967295 events/);
});

test('keyed positions: a plain offset, or an offset with the events of its bundle already counted', () => {
  assert.deepEqual(parseKeyedPosition('0'), { offset: 0n, consumed: 0 });
  assert.deepEqual(parseKeyedPosition('9223372036854775806'), { offset: 9223372036854775806n, consumed: 0 });
  assert.deepEqual(parseKeyedPosition('41:7'), { offset: 41n, consumed: 7 });
  assert.equal(formatKeyedPosition(41n, 7), '41:7');
  assert.equal(formatKeyedPosition(41n, 0), '41', 'a whole record is the position earlier versions wrote');
  for (const bad of ['', '-1', '4:', ':3', '1:2:3', 'x', '12 ']) assert.throws(() => parseKeyedPosition(bad), /neither <offset> nor <offset>:<events already consumed>/, bad);
});

function f64(v: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeDoubleBE(v);
  return b;
}

/** The events a list of keyed-topic records holds, per partition in order: [input offset, bytes]. */
function unpack(records: readonly Message[]): Map<number, Array<[number, string]>> {
  const out = new Map<number, Array<[number, string]>>();
  for (const r of records) {
    const list = out.get(r.partition!) ?? [];
    const headers = r.headers as Record<string, string>;
    const from = Number(/@(\d+)$/.exec(headers[ROUTED_FROM_HEADER]!)![1]);
    if (headers[BUNDLE_HEADER] === undefined) list.push([from, (r.value as Buffer).toString('latin1')]);
    else for (const e of decodeBundle(r.value as Buffer)) list.push([from + e.offsetDelta, e.value.toString('latin1')]);
    out.set(r.partition!, list);
  }
  return out;
}

test('the bundler keeps every event once, in input order per key group, large ones alone, every wave under the broker limit per partition', () => {
  const r = rng(5);
  for (const bundling of [true, false]) {
    for (let round = 0; round < 30; round++) {
      const bundler = new Bundler('events/3', bundling);
      const expected = new Map<number, Array<[number, string]>>();
      let offset = 1_000 + Math.floor(r() * 1e6);
      const n = 1 + Math.floor(r() * 400);
      for (let i = 0; i < n; i++) {
        offset += 1 + (r() < 0.1 ? Math.floor(r() * 5) : 0); // gaps, as transaction markers leave
        const group = Math.floor(r() * 5);
        const size = r() < 0.05 ? BUNDLE_MAX_BYTES + Math.floor(r() * 1000) : Math.floor(r() * 30_000);
        const value = Buffer.alloc(size, String.fromCharCode(97 + (i % 26)));
        bundler.add(group, { offset: String(offset), key: null, headers: {} }, value, 1_700_000_000_000 + i);
        expected.set(group, [...(expected.get(group) ?? []), [offset, value.toString('latin1')]]);
      }
      const waves = bundler.finish();
      assert.deepEqual(unpack(waves.flat()), expected, `round ${round}: every event once, in order per group`);
      assert.equal(waves.flat().length, bundler.records);
      assert.equal(bundler.events, n);
      for (const wave of waves) {
        const perPartition = new Map<number, number[]>();
        for (const m of wave) perPartition.set(m.partition!, [...(perPartition.get(m.partition!) ?? []), (m.value as Buffer).length]);
        for (const sizes of perPartition.values()) assert.ok(sizes.length === 1 || sizes.reduce((a, b) => a + b, 0) <= WAVE_PARTITION_BYTES, `a wave holds ${sizes.join('+')} bytes of one partition`);
      }
      if (!bundling) assert.equal(bundler.records, n, 'one record per event');
      else assert.ok(bundler.records < n || n < 10, `${n} events in ${bundler.records} records`);
    }
  }
});
