import { bucketHorizon, dedupExpired, markersExpireNow } from './expiry';
import { kindOf, kindRange, markerRanges, markerScope, parseBucketKey } from './keys';
import { decodeBucket } from './records';
import type { RocksStore } from './rocks';

/**
 * The sweep of one key group: finds the records that expiry.ts allows to delete at a cutoff.
 * The caller deletes them in its commit batch, so the deletion is atomic with the window,
 * reaches delta checkpoints like any other change, and never races a write of the same key.
 *
 * The `rocksdb` binding has no DeleteRange and no compaction filter (docs/adr/0003), so
 * expired records are found by a scan: every dedup record of the group (one sequential
 * read per record and sweep: the value says when it expires), every bucket record, and the
 * marker key ranges of each bucket whose horizon passed since the group's previous sweep.
 * The window's own uncommitted changes are judged by the same rules (a window may span
 * more than a step of ingest time): those that are already expired are not written.
 */

export interface SweepRules {
  readonly dedupRetentionSec: number;
  readonly uniquesRetentionSec: number;
}

/** The window's uncommitted changes (null = deleted): get, and every change of a key group by its prefix. */
export interface PendingChanges {
  get(key: string): string | null | undefined;
  withPrefix(prefix: string): Iterable<[string, string | null]>;
}

export interface SweepFound {
  /** Committed keys to delete. */
  readonly keys: string[];
  /** Uncommitted changes to turn into deletes. */
  readonly pending: string[];
  readonly dedup: number;
  readonly markers: number;
}

export async function findExpired(store: RocksStore, kgPrefix: string, cutoff: number, previousCutoff: number, rules: SweepRules, pending: PendingChanges): Promise<SweepFound> {
  const keys: string[] = [];
  const pendingKeys: string[] = [];
  let dedup = 0;
  let markers = 0;
  await store.scan(kindRange(kgPrefix, 'D'), (key, value) => {
    if (pending.get(key) === undefined && dedupExpired(Number(value), cutoff, rules.dedupRetentionSec)) {
      keys.push(key);
      dedup++;
    }
  });
  const expiredScopes = new Set<string>();
  const judgeBucket = (key: string, text: string): void => {
    const parts = parseBucketKey(key);
    const horizon = bucketHorizon(parts.granularity, parts.bucket, decodeBucket(text).lastIngest, rules.uniquesRetentionSec);
    if (markersExpireNow(horizon, previousCutoff, cutoff)) expiredScopes.add(parts.scope);
  };
  await store.scan(kindRange(kgPrefix, 'B'), (key, stored) => {
    if (pending.get(key) === undefined) judgeBucket(key, stored);
  });
  // The window's changes: its bucket records (their horizon is the one in force), then its dedup and marker records.
  const changes = [...pending.withPrefix(kgPrefix)];
  for (const [key, value] of changes) if (value !== null && kindOf(key) === 'B') judgeBucket(key, value);
  for (const [key, value] of changes) {
    if (value === null) continue;
    const kind = kindOf(key);
    if (kind === 'D' && dedupExpired(Number(value), cutoff, rules.dedupRetentionSec)) {
      pendingKeys.push(key);
      dedup++;
    } else if ((kind === 'U' || kind === 'V') && expiredScopes.has(markerScope(key))) {
      pendingKeys.push(key);
      markers++;
    }
  }
  const visit = (key: string): void => {
    if (pending.get(key) !== undefined) return;
    keys.push(key);
    markers++;
  };
  for (const scope of expiredScopes) {
    const ranges = markerRanges(kgPrefix, scope);
    await store.scan(ranges.markers, visit, true);
    await store.scan(ranges.shardMarkers, visit, true);
    await store.scan(ranges.tokenMarkers, visit, true);
  }
  return { keys, pending: pendingKeys, dedup, markers };
}
