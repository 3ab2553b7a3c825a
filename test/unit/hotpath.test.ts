import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { differencesFromReference, kernelRows } from '../../bench/hotpath/check';
import { bucketEndOf, bucketStartOf, DAY_CODE, HOUR_CODE, isoSeconds, MONTH_CODE } from '../../bench/hotpath/civil';
import { fpString } from '../../bench/hotpath/fingerprint';
import { FpTable } from '../../bench/hotpath/table';
import { TsKernel } from '../../bench/hotpath/ts-kernel';
import { benchWorkload } from '../../bench/workload';
import { EventGenerator } from '../../worker/io/generator';

// The hot-path prototype of issue 9 (bench/hotpath/): its calendar arithmetic against Date,
// its table against a Map, and the whole kernel against test/support/reference.ts.

const SECONDS_BEFORE_10000 = 253_402_300_800;

test('month buckets match Date over the whole accepted range', () => {
  fc.assert(
    fc.property(fc.integer({ min: 0, max: SECONDS_BEFORE_10000 - 1 }), (s) => {
      const d = new Date(s * 1000);
      const start = Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), 1) / 1000;
      assert.equal(bucketStartOf(MONTH_CODE, s), start);
      assert.equal(bucketEndOf(MONTH_CODE, start), Date.UTC(d.getUTCFullYear(), d.getUTCMonth() + 1, 1) / 1000);
      assert.equal(bucketStartOf(DAY_CODE, s), Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate()) / 1000);
      assert.equal(bucketStartOf(HOUR_CODE, s), Math.floor(s / 3600) * 3600);
    }),
    { numRuns: 5000 },
  );
});

test('ISO timestamps: valid ones give the seconds Date gives, impossible ones NaN', () => {
  const two = (n: number): string => String(n).padStart(2, '0');
  fc.assert(
    fc.property(
      fc.record({ y: fc.integer({ min: 0, max: 9999 }), mo: fc.integer({ min: 0, max: 13 }), d: fc.integer({ min: 0, max: 32 }), h: fc.integer({ min: 0, max: 24 }), mi: fc.integer({ min: 0, max: 60 }), s: fc.integer({ min: 0, max: 60 }), off: fc.integer({ min: -14 * 60, max: 14 * 60 }) }),
      ({ y, mo, d, h, mi, s, off }) => {
        const zone = off === 0 ? 'Z' : `${off < 0 ? '-' : '+'}${two(Math.floor(Math.abs(off) / 60))}:${two(Math.abs(off) % 60)}`;
        const text = `${String(y).padStart(4, '0')}-${two(mo)}-${two(d)}T${two(h)}:${two(mi)}:${two(s)}.5${zone}`;
        const date = new Date(0);
        date.setUTCFullYear(y, mo - 1, d);
        date.setUTCHours(h, mi, s, 0);
        const possible = mo >= 1 && mo <= 12 && h <= 23 && mi <= 59 && s <= 59 && date.getUTCDate() === d && date.getUTCMonth() === mo - 1;
        if (possible) assert.equal(isoSeconds(text), date.getTime() / 1000 + 0.5 - off * 60, text);
        else assert.ok(Number.isNaN(isoSeconds(text)), text);
      },
    ),
    { numRuns: 5000 },
  );
  for (const bad of ['2018-12-07', '2018-12-07T22:00:00', '2018-12-07T22:00:00.Z', '2018-12-07T22:00Zx', '2018-12-07T22:00:00+2:00']) assert.ok(Number.isNaN(isoSeconds(bad)), bad);
  assert.equal(isoSeconds('2018-12-07T22:00Z'), Date.parse('2018-12-07T22:00:00Z') / 1000);
});

test('fingerprints tell apart strings that differ only by trailing zero code units or length', () => {
  const out = new Int32Array(12);
  fpString('a', 1, out, 0);
  fpString('a\u0000', 1, out, 4);
  fpString('a\u0000\u0000\u0000\u0000\u0000\u0000\u0000', 1, out, 8);
  const lanes = (at: number): string => Array.from(out.subarray(at, at + 4)).join(',');
  assert.notEqual(lanes(0), lanes(4));
  assert.notEqual(lanes(4), lanes(8));
  fpString('a', 2, out, 4);
  assert.notEqual(lanes(0), lanes(4), 'the seed separates domains');
});

test('the fingerprint table agrees with a Map through growth', () => {
  fc.assert(
    fc.property(fc.array(fc.tuple(fc.string({ maxLength: 6 }), fc.integer({ min: 1, max: 1000 })), { maxLength: 3000 }), (ops) => {
      const table = new FpTable(8);
      const map = new Map<string, number>();
      const fp = new Int32Array(4);
      for (const [key, value] of ops) {
        fpString(key, 7, fp, 0);
        const slot = table.find(fp, 0);
        assert.equal(slot >= 0 ? table.val(slot) : undefined, map.get(key));
        if (slot >= 0) table.set(slot, value);
        else table.insert(slot, fp, 0, value);
        map.set(key, value);
      }
      assert.equal(table.size, map.size);
    }),
    { numRuns: 30 },
  );
});

test('the TypeScript kernel counts exactly what the reference counts', () => {
  // The benchmark workload, smaller, with id-less events, boolean facets and a wider
  // spread of ingest time than the benchmark (10 records per simulated second).
  const gen = new EventGenerator({ ...benchWorkload(30_000, 3_000), facets: 10, noIdRate: 0.2, ratePerSecond: 10 });
  const records = Array.from({ length: 30_000 }, (_, i) => {
    const r = gen.recordAt(i);
    return { value: r.value, ingestSec: Math.floor(r.ingestTimeMs / 1000) };
  });
  records.splice(100, 0, { value: '{"company_id":"c"}', ingestSec: records[100]!.ingestSec }, { value: 'not json', ingestSec: records[100]!.ingestSec });
  const kernel = new TsKernel({ level: 'account', granularities: [0, 1, 2], dedupRetentionSec: 7 * 86_400, uniquesRetentionSec: 7 * 86_400 }, { identities: 16, markers: 16, counters: 16 });
  const batch = 777;
  for (let from = 0; from < records.length; from += batch) {
    const slice = records.slice(from, from + batch);
    const buf = Buffer.from(slice.map((r) => r.value).join('\n'));
    const starts = new Int32Array(slice.length);
    const ends = new Int32Array(slice.length);
    let at = 0;
    slice.forEach((r, i) => {
      starts[i] = at;
      ends[i] = at + Buffer.byteLength(r.value);
      at = ends[i] + 1;
    });
    kernel.countBatch(buf, starts, ends, Uint32Array.from(slice.map((r) => r.ingestSec)), slice.length);
    if ((from / batch) % 3 === 2) kernel.flush();
  }
  kernel.flush();
  assert.equal(kernel.invalid, 2);
  assert.ok(kernel.duplicates > 0);
  const problems = differencesFromReference(records, {
    counted: kernel.counted,
    duplicates: kernel.duplicates,
    invalid: kernel.invalid,
    beyondHorizon: kernel.beyondHorizon,
    windows: kernel.windows,
    rowsFlushed: kernel.rowsFlushed,
    extra: {},
    rows: () => kernelRows(kernel.counters, kernel.totalCount, kernel.totalUniques),
  });
  assert.deepEqual(problems, []);
});
