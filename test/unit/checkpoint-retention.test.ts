import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { chunkKey, manifestKey, parseChunkKey } from '../../worker/checkpoint/format';
import { planRetention } from '../../worker/checkpoint/retention';

/**
 * Retention planning on arbitrary histories of several writers: a kept manifest never loses
 * an object it needs, nothing outside the writer's namespace is touched, and everything of
 * the writer that nothing references and is not newer than its newest kept manifest goes.
 */

interface History {
  objects: string[];
  manifests: Map<string, string[] | null>;
}

const writers = ['w0', 'w1', 'w2'];

/** Each writer wrote checkpoints 1..n; each manifest references some of the chunks written up to it, by any writer; some are damaged; some chunks are orphans. */
const history = fc
  .record({
    counts: fc.array(fc.integer({ min: 0, max: 8 }), { minLength: 3, maxLength: 3 }),
    picks: fc.array(fc.array(fc.nat(), { maxLength: 6 }), { minLength: 30, maxLength: 30 }),
    damaged: fc.array(fc.boolean(), { minLength: 30, maxLength: 30 }),
    extraChunks: fc.array(fc.tuple(fc.constantFrom(...writers), fc.integer({ min: 1, max: 12 }), fc.integer({ min: 0, max: 3 })), { maxLength: 8 }),
  })
  .map(({ counts, picks, damaged, extraChunks }): History => {
    const objects: string[] = [];
    const manifests = new Map<string, string[] | null>();
    const chunksSoFar: string[] = [];
    let i = 0;
    writers.forEach((w, wi) => {
      for (let seq = 1; seq <= counts[wi]!; seq++, i++) {
        const own = chunkKey(w, seq % 4, seq, 'base');
        objects.push(own);
        chunksSoFar.push(own);
        const refs = [own, ...picks[i % picks.length]!.map((p) => chunksSoFar[p % chunksSoFar.length]!)];
        const key = manifestKey(w, seq);
        objects.push(key);
        manifests.set(key, damaged[i % damaged.length]! && seq > 1 ? null : refs);
      }
    });
    for (const [w, seq, g] of extraChunks) objects.push(chunkKey(w, g, seq, 'delta'));
    return { objects: [...new Set(objects)], manifests };
  });

test('retention: no object a kept manifest (or another writer) needs is deleted; the rest of the writer\'s older objects are', () => {
  fc.assert(
    fc.property(history, fc.constantFrom(...writers), fc.integer({ min: 1, max: 4 }), (h, writer, retention) => {
      const plan = planRetention({ writer, retention, objects: h.objects, manifests: h.manifests });
      const deleted = new Set(plan.delete);
      const kept = new Set(plan.keptManifests);
      // Independent view: the writer's complete manifests, newest first.
      const ownComplete = [...h.manifests.entries()].filter(([k, refs]) => k.startsWith(`${writer}/`) && refs !== null).map(([k]) => k).sort().reverse();
      assert.deepEqual([...kept], ownComplete.slice(0, retention));
      const needed = new Set<string>();
      for (const [k, refs] of h.manifests) if (kept.has(k) || !k.startsWith(`${writer}/`)) for (const r of refs ?? []) needed.add(r);
      for (const key of deleted) {
        assert.ok(key.startsWith(`${writer}/`), `only the writer's own objects are deleted (${key})`);
        assert.ok(!needed.has(key), `a needed chunk is never deleted (${key})`);
        assert.ok(!kept.has(key), `a kept manifest is never deleted (${key})`);
      }
      if (kept.size === 0) {
        assert.equal(deleted.size, 0, 'a writer with no complete checkpoint deletes nothing');
        return;
      }
      const newestKept = Number(/(\d{12})/.exec([...kept][0]!)![1]);
      const oldestKept = Number(/(\d{12})/.exec([...kept].at(-1)!)![1]);
      for (const key of h.objects) {
        if (!key.startsWith(`${writer}/`)) continue;
        const c = parseChunkKey(key);
        if (c !== undefined && !needed.has(key) && c.sequence <= newestKept) assert.ok(deleted.has(key), `unreferenced older chunk ${key} is deleted`);
        if (c !== undefined && c.sequence > newestKept) assert.ok(!deleted.has(key), `a chunk newer than the newest manifest may be in flight (${key})`);
        const m = /manifests\/(\d{12})/.exec(key);
        if (m !== null && Number(m[1]) < oldestKept) assert.ok(deleted.has(key), `manifest ${key} older than the kept ones is deleted`);
      }
      // Manifests go before chunks, so a reader never finds a manifest whose chunks are gone first.
      const firstChunk = plan.delete.findIndex((k) => parseChunkKey(k) !== undefined);
      if (firstChunk >= 0) assert.ok(plan.delete.slice(firstChunk).every((k) => parseChunkKey(k) !== undefined));
    }),
    { numRuns: 500 },
  );
});

test('retention: a moved group keeps its old owner\'s chunks alive', () => {
  const oldChunk = chunkKey('w0', 9, 1, 'base');
  const objects = [oldChunk, manifestKey('w0', 1), chunkKey('w0', 1, 2, 'base'), manifestKey('w0', 2), chunkKey('w1', 9, 1, 'delta'), manifestKey('w1', 1)];
  const manifests = new Map<string, string[] | null>([
    [manifestKey('w0', 1), [oldChunk]],
    [manifestKey('w0', 2), [chunkKey('w0', 1, 2, 'base')]],
    [manifestKey('w1', 1), [oldChunk, chunkKey('w1', 9, 1, 'delta')]],
  ]);
  const plan = planRetention({ writer: 'w0', retention: 1, objects, manifests });
  assert.deepEqual(plan.delete, [manifestKey('w0', 1)]);
});

test('retention keeps a pinned manifest (a released key group not yet acquired) and the chunks it names', () => {
  const m = (seq: number) => manifestKey('w0', seq);
  const c = (seq: number) => chunkKey('w0', 1, seq, 'base');
  const objects = [1, 2, 3, 4, 5].flatMap((s) => [m(s), c(s)]);
  const manifests = new Map([1, 2, 3, 4, 5].map((s) => [m(s), [c(s)]] as [string, string[]]));
  const unpinned = planRetention({ writer: 'w0', retention: 2, objects, manifests });
  assert.ok(unpinned.delete.includes(m(2)) && unpinned.delete.includes(c(2)));
  const pinned = planRetention({ writer: 'w0', retention: 2, objects, manifests, pinned: new Set([m(2)]) });
  assert.ok(!pinned.delete.includes(m(2)) && !pinned.delete.includes(c(2)), 'the pinned manifest and its chunk stay');
  assert.ok(pinned.delete.includes(m(1)) && pinned.delete.includes(m(3)), 'the others go as usual');
});
