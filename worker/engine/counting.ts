import { counterStem, facetToken } from '../io/counter-id';
import type { Granularity } from '../io/types';
import { bucketKey, counterKeyFromParts, dedupKey, markerKey } from '../state/keys';
import type { BucketRecord, CounterRecord, DedupRecord, MarkerRecord, StateRecord } from '../state/records';
import type { CountableEvent } from './event';
import { bucketEnd, bucketStart } from './time';

/**
 * The counting step for one valid event: deduplicate, judge uniqueness, fan out into the
 * window. Synchronous and free of I/O: every state record it reads must have been loaded
 * (see stateKeysFor), and every change goes through `state.set`, to be committed with the
 * window. The rules are those of semantics.md; the choices it leaves open are:
 *
 * - Dedup memory: an identity is remembered with the ingest second of its first copy and
 *   forgotten once a later copy arrives more than `dedupRetentionSec` of ingest time after it.
 * - Uniqueness horizon: a bucket's markers live while the bucket is within
 *   `uniquesRetentionSec` of ingest time after the later of the bucket's end and the last
 *   event counted in it. A bucket that goes quiet past that drops all its markers at once
 *   (its epoch is bumped); a customer counted in it afterwards is counted as new, which may
 *   overcount uniques, and every such update is counted in abacus_uniques_beyond_horizon_total.
 *   A back-fill into a bucket never seen before is exact.
 */

export interface CountingSettings {
  readonly level: 'account' | 'customer';
  readonly granularities: readonly Granularity[];
  readonly dedupRetentionSec: number;
  readonly uniquesRetentionSec: number;
}

export interface StateView {
  get(key: string): StateRecord | null;
  set(key: string, value: StateRecord): void;
}

/** Per-window deltas: counter state key → changes since the last flush. */
export class WindowAccumulator {
  readonly deltas = new Map<string, CounterRecord>();

  add(counterStateKey: string, uniques: number): void {
    const d = this.deltas.get(counterStateKey);
    if (d === undefined) this.deltas.set(counterStateKey, { count: 1, uniques });
    else {
      d.count += 1;
      d.uniques += uniques;
    }
  }

  get size(): number {
    return this.deltas.size;
  }

  clear(): void {
    this.deltas.clear();
  }
}

export interface CountingTally {
  counted: number;
  duplicates: number;
  /** Counter updates made after their bucket's markers had been dropped. */
  beyondHorizon: number;
}

/** Every state key countEvent will read for this event. */
export function stateKeysFor(ev: CountableEvent, kgPrefix: string, s: CountingSettings, out: string[]): void {
  out.push(dedupKey(kgPrefix, ev.companyId, ev.statisticId, ev.customerId, ev.identity));
  if (s.level !== 'account') return;
  for (const g of s.granularities) {
    const bucket = bucketStart(g, ev.seconds);
    out.push(bucketKey(kgPrefix, g, bucket, ev.companyId, ev.statisticId));
    out.push(markerKey(kgPrefix, g, bucket, ev.companyId, ev.statisticId, ev.customerId));
  }
}

/** Counts one event; returns false when it is a duplicate. */
export function countEvent(
  ev: CountableEvent,
  kgPrefix: string,
  ingestSec: number,
  s: CountingSettings,
  state: StateView,
  window: WindowAccumulator,
  tally: CountingTally,
): boolean {
  const dk = dedupKey(kgPrefix, ev.companyId, ev.statisticId, ev.customerId, ev.identity);
  const firstSeen = state.get(dk) as DedupRecord | null;
  if (firstSeen !== null && ingestSec - firstSeen <= s.dedupRetentionSec) {
    tally.duplicates++;
    return false;
  }
  state.set(dk, ingestSec);
  tally.counted++;

  const account = s.level === 'account';
  const scope = account ? ev.companyId : ev.customerId;
  const tokens = ['*'];
  for (const [facet, value] of ev.facets) tokens.push(facetToken(facet, value));

  for (const g of s.granularities) {
    const bucket = bucketStart(g, ev.seconds);
    const stem = counterStem(scope, ev.statisticId, g, bucket);
    if (!account) {
      for (const token of tokens) window.add(counterKeyFromParts(kgPrefix, stem, token), 0);
      continue;
    }
    const epoch = touchBucket(kgPrefix, g, bucket, ev, ingestSec, s, state);
    const mk = markerKey(kgPrefix, g, bucket, ev.companyId, ev.statisticId, ev.customerId);
    let markers = state.get(mk) as MarkerRecord | null;
    if (markers === null || markers.epoch !== epoch) markers = { epoch, tokens: new Set() };
    let changed = false;
    for (const token of tokens) {
      let isNew = 0;
      if (!markers.tokens.has(token)) {
        markers.tokens.add(token);
        isNew = 1;
        changed = true;
        if (epoch > 0) tally.beyondHorizon++;
      }
      window.add(counterKeyFromParts(kgPrefix, stem, token), isNew);
    }
    if (changed) state.set(mk, markers);
  }
  return true;
}

/** Updates the bucket's last-touched time; drops its markers (new epoch) once it has outlived its horizon. Returns the epoch in force. */
function touchBucket(kgPrefix: string, g: Granularity, bucket: number, ev: CountableEvent, ingestSec: number, s: CountingSettings, state: StateView): number {
  const bk = bucketKey(kgPrefix, g, bucket, ev.companyId, ev.statisticId);
  const record = state.get(bk) as BucketRecord | null;
  if (record === null) {
    state.set(bk, { lastIngest: ingestSec, epoch: 0 });
    return 0;
  }
  const horizon = Math.max(bucketEnd(g, bucket), record.lastIngest) + s.uniquesRetentionSec;
  if (ingestSec > horizon) {
    record.epoch += 1;
    record.lastIngest = ingestSec;
    state.set(bk, record);
  } else if (ingestSec > record.lastIngest) {
    record.lastIngest = ingestSec;
    state.set(bk, record);
  }
  return record.epoch;
}
