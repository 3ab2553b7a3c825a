import { counterStem, facetToken } from '../io/counter-id';
import type { Granularity } from '../io/types';
import { bucketKey, counterKeyFromParts, dedupKey, markerKey } from '../state/keys';
import { addMarker, decodeBucket, emptyMarkers, encodeBucket, markerEpoch, markerNeedle, type CounterRecord } from '../state/records';
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
 *   `uniquesRetentionSec` of ingest time after the later of the bucket's end and the hour
 *   of the last event counted in it. A bucket that goes quiet past that drops all its markers at once
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
  /** The encoded record (see state/records.ts), or null when there is none. */
  get(key: string): string | null;
  set(key: string, value: string): void;
}

/**
 * Per-window deltas, two levels deep: counter stem (key group, scope, statistic, granularity,
 * bucket) → facet token → changes since the last flush. An event touches 3 stems and
 * 1 + F tokens; building and hashing 3 stems plus F short tokens is far cheaper than
 * 3 × (1 + F) full counter keys, and this runs for every counted event.
 */
export class WindowAccumulator {
  private readonly stems = new Map<string, Map<string, CounterRecord>>();
  private counters = 0;

  /** The token map of one stem, created on first use; pass it to add(). */
  stem(stemKey: string): Map<string, CounterRecord> {
    let tokens = this.stems.get(stemKey);
    if (tokens === undefined) {
      tokens = new Map();
      this.stems.set(stemKey, tokens);
    }
    return tokens;
  }

  add(tokens: Map<string, CounterRecord>, token: string, uniques: number): void {
    const d = tokens.get(token);
    if (d === undefined) {
      tokens.set(token, { count: 1, uniques });
      this.counters++;
    } else {
      d.count += 1;
      d.uniques += uniques;
    }
  }

  /** Distinct counters touched in this window. */
  get size(): number {
    return this.counters;
  }

  /** Every touched counter as [counter state key, delta]. */
  *entries(): IterableIterator<[string, CounterRecord]> {
    for (const [stemKey, tokens] of this.stems) {
      for (const [token, delta] of tokens) yield [stemKey + token, delta];
    }
  }

  clear(): void {
    this.stems.clear();
    this.counters = 0;
  }
}

export interface CountingTally {
  counted: number;
  duplicates: number;
  /** Counter updates made after their bucket's markers had been dropped. */
  beyondHorizon: number;
}

/** The state keys and counter stems of one event, built once and used to load and to count. */
export interface EventKeys {
  readonly dedup: string;
  /** Per configured granularity: the counter stem key (state-key prefix of its counters). */
  readonly stems: string[];
  /** Per configured granularity (account level only): the bucket record key. */
  readonly buckets: string[];
  /** Per configured granularity (account level only): the customer's marker record key. */
  readonly markers: string[];
  /** Per configured granularity: the bucket's start second. */
  readonly bucketStarts: number[];
  /** `*` then one token per counted facet value. */
  readonly tokens: string[];
  /** Per token (account level only): its search needle in a marker record. */
  readonly needles: string[];
}

/** Builds the keys of an event and appends the state keys to load to `toLoad`. */
export function eventKeys(ev: CountableEvent, kgPrefix: string, s: CountingSettings, toLoad: string[]): EventKeys {
  const dedup = dedupKey(kgPrefix, ev.companyId, ev.statisticId, ev.customerId, ev.identity);
  toLoad.push(dedup);
  const account = s.level === 'account';
  const scope = account ? ev.companyId : ev.customerId;
  const keys: EventKeys = { dedup, stems: [], buckets: [], markers: [], bucketStarts: [], tokens: ['*'], needles: [] };
  for (const [facet, value] of ev.facets) keys.tokens.push(facetToken(facet, value));
  if (account) for (const token of keys.tokens) keys.needles.push(markerNeedle(token));
  for (const g of s.granularities) {
    const bucket = bucketStart(g, ev.seconds);
    keys.bucketStarts.push(bucket);
    keys.stems.push(counterKeyFromParts(kgPrefix, counterStem(scope, ev.statisticId, g, bucket), ''));
    if (account) {
      const bk = bucketKey(kgPrefix, g, bucket, ev.companyId, ev.statisticId);
      const mk = markerKey(kgPrefix, g, bucket, ev.companyId, ev.statisticId, ev.customerId);
      keys.buckets.push(bk);
      keys.markers.push(mk);
      toLoad.push(bk, mk);
    }
  }
  return keys;
}

/** Counts one event whose keys were built by eventKeys and loaded; returns false when it is a duplicate. */
export function countEvent(keys: EventKeys, ingestSec: number, s: CountingSettings, state: StateView, window: WindowAccumulator, tally: CountingTally): boolean {
  const firstSeen = state.get(keys.dedup);
  if (firstSeen !== null && ingestSec - Number(firstSeen) <= s.dedupRetentionSec) {
    tally.duplicates++;
    return false;
  }
  state.set(keys.dedup, String(ingestSec));
  tally.counted++;

  const { tokens, needles } = keys;
  for (let i = 0; i < s.granularities.length; i++) {
    const counters = window.stem(keys.stems[i]!);
    if (s.level !== 'account') {
      for (const token of tokens) window.add(counters, token, 0);
      continue;
    }
    const epoch = touchBucket(keys.buckets[i]!, s.granularities[i]!, keys.bucketStarts[i]!, ingestSec, s, state);
    const mk = keys.markers[i]!;
    let markers = state.get(mk);
    if (markers === null || markerEpoch(markers) !== epoch) markers = emptyMarkers(epoch);
    const before = markers;
    for (let t = 0; t < tokens.length; t++) {
      let isNew = 0;
      if (!markers.includes(needles[t]!)) {
        markers = addMarker(markers, needles[t]!);
        isNew = 1;
        if (epoch > 0) tally.beyondHorizon++;
      }
      window.add(counters, tokens[t]!, isNew);
    }
    if (markers !== before) state.set(mk, markers);
  }
  return true;
}

/** Updates the bucket's last-touched time; drops its markers (new epoch) once it has outlived its horizon. Returns the epoch in force. */
function touchBucket(bk: string, g: Granularity, bucket: number, ingestSec: number, s: CountingSettings, state: StateView): number {
  // Kept to the hour: the horizon is at least bucket end + retention either way, and the
  // record then changes once an hour instead of with every event.
  const ingestHour = ingestSec - (ingestSec % 3600);
  const text = state.get(bk);
  if (text === null) {
    state.set(bk, encodeBucket({ lastIngest: ingestHour, epoch: 0 }));
    return 0;
  }
  const record = decodeBucket(text);
  const horizon = Math.max(bucketEnd(g, bucket), record.lastIngest) + s.uniquesRetentionSec;
  if (ingestSec > horizon) {
    state.set(bk, encodeBucket({ lastIngest: ingestHour, epoch: record.epoch + 1 }));
    return record.epoch + 1;
  }
  if (ingestHour > record.lastIngest) state.set(bk, encodeBucket({ lastIngest: ingestHour, epoch: record.epoch }));
  return record.epoch;
}
