import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { formatFilePosition, parseFilePosition } from '../../worker/io/file-source';

test('file positions round-trip, with and without the last line; anything else is not one', () => {
  const offset = fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER });
  fc.assert(
    fc.property(offset, offset, fc.option(fc.record({ start: offset, crc: fc.integer({ min: 0, max: 0xffffffff }) }), { nil: undefined }), (at, ingest, lastLine) => {
      const p = lastLine === undefined ? { offset: at, ingestTimeMs: ingest } : { offset: at, ingestTimeMs: ingest, lastLine: { ...lastLine } };
      assert.deepEqual(parseFilePosition(formatFilePosition(p)), p);
    }),
  );
  // Positions written before the last line was recorded still read.
  assert.deepEqual(parseFilePosition('427@1764244800000'), { offset: 427, ingestTimeMs: 1764244800000 });
  for (const bad of ['', '12', 'x@1', '1@2@3', '1@2@3:', '1@2@3:xyz', '1@2@3:123456789', '-1@2']) assert.equal(parseFilePosition(bad), undefined, bad);
});
