import type { Granularity } from '../io/types';
import { bucketEnd } from '../engine/time';

/**
 * When state past its retention may be physically deleted: the pure rules of the sweep
 * (worker/state/sweep.ts runs them over RocksDB). Deleting a record must never change a
 * decision the engine (worker/engine/counting.ts) makes, so a record is deleted only when
 * every event that can still arrive decides the same way without it:
 *
 * - a dedup record (first ingest second f) decides "duplicate" for an event of ingest second
 *   t only while t − f ≤ dedup retention; absent, the event is counted — the same decision
 *   once t > f + retention;
 * - a bucket's uniqueness markers count only while t ≤ its horizon (the later of the bucket's
 *   end and its last ingest hour, plus the uniques retention); past it the bucket starts a
 *   new marker epoch and ignores them — the same decision as no markers at all.
 *
 * Events may arrive with ingest times a little out of order (Kafka CreateTime, several
 * files), so "every event that can still arrive" is taken as every event whose ingest second
 * is at least the **cutoff**: one to two expiry steps behind the newest ingest second the key
 * group has counted (its watermark). An event more than one step older than its key group's
 * watermark may find state its twin of the same age would have found deleted; semantics.md
 * says so. The step is a seventh of the shorter retention, at most a day: so a sweep runs
 * once a step per key group, and a record lives at most two steps beyond its retention.
 */

const DAY = 86_400;

/** The expiry step in seconds: a seventh of the shorter retention, between 1 s and 1 day. */
export function expiryStep(dedupRetentionSec: number, uniquesRetentionSec: number): number {
  return Math.max(1, Math.min(DAY, Math.floor(Math.min(dedupRetentionSec, uniquesRetentionSec) / 7)));
}

/**
 * The cutoff for a key group whose newest counted ingest second is `watermark`: a multiple of
 * the step, more than one step and at most two steps behind the watermark, so that it moves
 * (and a sweep runs) once per step.
 */
export function sweepCutoff(watermark: number, step: number): number {
  return (Math.floor(watermark / step) - 1) * step;
}

/** The engine's dedup rule: an event at ingest second `ingest` is a copy of one counted at `firstSeen` (semantics.md, "Retention"). */
export function withinDedupRetention(firstSeen: number, ingest: number, dedupRetentionSec: number): boolean {
  return ingest - firstSeen <= dedupRetentionSec;
}

/** The engine's horizon rule: an event at ingest second `ingest` finds the bucket's markers dropped. */
export function pastHorizon(ingest: number, horizon: number): boolean {
  return ingest > horizon;
}

/** True when a dedup record first counted at `firstSeen` decides nothing for events at or after `cutoff`. */
export function dedupExpired(firstSeen: number, cutoff: number, dedupRetentionSec: number): boolean {
  return firstSeen + dedupRetentionSec < cutoff;
}

/** The last ingest second at which a bucket's markers still count (see touchBucket in counting.ts). */
export function bucketHorizon(g: Granularity, bucket: number, lastIngest: number, uniquesRetentionSec: number): number {
  return Math.max(bucketEnd(g, bucket), lastIngest) + uniquesRetentionSec;
}

/**
 * True when a bucket's markers are to be deleted by the sweep at `cutoff`, whose previous
 * sweep of the group was at `previousCutoff`: its horizon passed before the cutoff, and not
 * already before the previous one (that sweep deleted them; a horizon only moves forward).
 */
export function markersExpireNow(horizon: number, previousCutoff: number, cutoff: number): boolean {
  return horizon < cutoff && horizon >= previousCutoff;
}
