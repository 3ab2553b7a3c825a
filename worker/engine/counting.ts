import { counterStem, facetToken, TOTAL_TOKEN } from '../../common/counter-id';
import type { Granularity } from '../io/types';
import type { JobConfig } from '../../common/job-config';
import { bucketKey, counterKeyFromParts, dedupKey, markerKey, markerShardKey, overflowMarkerStem, tokenMarkerKey } from '../state/keys';
import { decodeBucket, emptyMarkers, encodeBucket, MARKER_LIMITS, MarkerAppend, markerEntries, markerEntry, markerEpoch, markerNeedle, markersFull, markersSharded, markerShard, tokenMarker, type CounterRecord, type MarkerLimits } from '../state/records';
import type { CountableEvent } from './event';
import { bucketHorizon, pastHorizon, withinDedupRetention } from '../state/expiry';
import { bucketStart } from './time';

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
  /** Bounds of the marker records (default MARKER_LIMITS). */
  readonly markerLimits?: MarkerLimits;
}

/** A job's counting settings. */
export function countingSettings(config: Pick<JobConfig, 'level' | 'granularities' | 'dedupRetentionMs' | 'uniquesRetentionMs'>): CountingSettings {
  return {
    level: config.level,
    granularities: config.granularities,
    dedupRetentionSec: config.dedupRetentionMs / 1000,
    uniquesRetentionSec: config.uniquesRetentionMs / 1000,
  };
}

export interface StateView {
  /** The encoded record (see state/records.ts), or null when there is none. */
  get(key: string): string | null;
  /** Like get(), but a key that was not loaded reads as absent (for records that provably cannot exist unless loaded or set in this batch). */
  getIfLoaded(key: string): string | null;
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

  /** The touched counters grouped by stem: stem key → facet token → delta (the state key of a counter is stem key + token). */
  byStem(): ReadonlyMap<string, ReadonlyMap<string, CounterRecord>> {
    return this.stems;
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
  readonly ev: CountableEvent;
  readonly kgPrefix: string;
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
  /**
   * Per granularity, the stem of the customer's overflow (W, V) keys, and per token its
   * shard: built on first use, which only events of a customer whose marker record is full make.
   */
  overflowStems: Array<string | undefined> | undefined;
  shards: number[] | undefined;
}

/** Builds the keys of an event and appends the state keys to load to `toLoad`. */
export function eventKeys(ev: CountableEvent, kgPrefix: string, s: CountingSettings, toLoad: string[]): EventKeys {
  const dedup = dedupKey(kgPrefix, ev.companyId, ev.statisticId, ev.customerId, ev.identity);
  toLoad.push(dedup);
  const account = s.level === 'account';
  const scope = account ? ev.companyId : ev.customerId;
  const keys: EventKeys = { ev, kgPrefix, dedup, stems: [], buckets: [], markers: [], bucketStarts: [], tokens: [TOTAL_TOKEN], needles: [], overflowStems: undefined, shards: undefined };
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

function overflowStemOf(keys: EventKeys, i: number, s: CountingSettings): string {
  keys.overflowStems ??= [];
  let stem = keys.overflowStems[i];
  if (stem === undefined) {
    const { ev } = keys;
    stem = overflowMarkerStem(s.granularities[i]!, keys.bucketStarts[i]!, ev.companyId, ev.statisticId, ev.customerId);
    keys.overflowStems[i] = stem;
  }
  return stem;
}

function shardsOf(keys: EventKeys, limits: MarkerLimits): number[] {
  if (keys.shards === undefined) keys.shards = keys.tokens.map((token) => markerShard(token, limits.shards));
  return keys.shards;
}

/**
 * Membership of a token in a marker record. A full record never changes (tokens go on to the
 * next tier), so its entries are kept as a set, looked up by the record text itself (the
 * same string object on every use, so its hash is computed once): a heavy customer's full
 * records are split once per batch, not searched once per token. Bounded; cleared when full.
 */
const fullRecordEntries = new Map<string, Set<string>>();
const FULL_RECORD_ENTRIES_MAX = 4096;

function holds(record: string, keys: EventKeys, t: number): boolean {
  if (!markersFull(record)) return record.includes(keys.needles[t]!);
  let entries = fullRecordEntries.get(record);
  if (entries === undefined) {
    if (fullRecordEntries.size >= FULL_RECORD_ENTRIES_MAX) fullRecordEntries.clear();
    entries = markerEntries(record);
    fullRecordEntries.set(record, entries);
  }
  return entries.has(markerEntry(keys.tokens[t]!, keys.needles[t]!));
}

/**
 * The second load of an event (after its keys from eventKeys are loaded): for each bucket
 * whose marker record is full, the records its other tokens may be in — their shard (W)
 * records, or their V records when the record is of older state (`+`). Only customers whose
 * record is full have any, so a normal event adds nothing here. A record that becomes full
 * while its batch is counted needs nothing loaded: overflow records of its epoch can only
 * have been written since.
 */
export function overflowKeys(keys: EventKeys, s: CountingSettings, state: StateView, toLoad: string[]): void {
  const limits = s.markerLimits ?? MARKER_LIMITS;
  for (let i = 0; i < keys.markers.length; i++) {
    const record = state.get(keys.markers[i]!);
    if (record === null || !markersFull(record)) continue;
    const stem = overflowStemOf(keys, i, s);
    const sharded = markersSharded(record);
    const shards = sharded ? shardsOf(keys, limits) : undefined;
    for (let t = 0; t < keys.tokens.length; t++) {
      if (holds(record, keys, t)) continue;
      toLoad.push(shards !== undefined ? markerShardKey(keys.kgPrefix, stem, shards[t]!) : tokenMarkerKey(keys.kgPrefix, stem, keys.tokens[t]!));
    }
  }
}

/**
 * The third load (after overflowKeys' keys are loaded): the V records of tokens whose shard
 * record is full. As above, a shard that becomes full during the batch needs none.
 */
export function shardOverflowKeys(keys: EventKeys, state: StateView, toLoad: string[]): void {
  if (keys.shards === undefined || keys.overflowStems === undefined) return;
  for (let i = 0; i < keys.markers.length; i++) {
    const stem = keys.overflowStems[i];
    if (stem === undefined) continue;
    const record = state.get(keys.markers[i]!);
    if (record === null || !markersSharded(record)) continue;
    for (let t = 0; t < keys.tokens.length; t++) {
      if (holds(record, keys, t)) continue;
      const shard = state.get(markerShardKey(keys.kgPrefix, stem, keys.shards[t]!));
      if (shard !== null && markersFull(shard) && !holds(shard, keys, t)) toLoad.push(tokenMarkerKey(keys.kgPrefix, stem, keys.tokens[t]!));
    }
  }
}

/** Counts one event whose keys were built by eventKeys and loaded; returns false when it is a duplicate. */
export function countEvent(keys: EventKeys, ingestSec: number, s: CountingSettings, state: StateView, window: WindowAccumulator, tally: CountingTally): boolean {
  const firstSeen = state.get(keys.dedup);
  if (firstSeen !== null && withinDedupRetention(Number(firstSeen), ingestSec, s.dedupRetentionSec)) {
    tally.duplicates++;
    return false;
  }
  state.set(keys.dedup, String(ingestSec));
  tally.counted++;

  const { tokens, needles } = keys;
  const limits = s.markerLimits ?? MARKER_LIMITS;
  for (let i = 0; i < s.granularities.length; i++) {
    const counters = window.stem(keys.stems[i]!);
    if (s.level !== 'account') {
      for (const token of tokens) window.add(counters, token, 0);
      continue;
    }
    const epoch = touchBucket(keys.buckets[i]!, s.granularities[i]!, keys.bucketStarts[i]!, ingestSec, s, state);
    const mk = keys.markers[i]!;
    const stored = state.get(mk);
    const markers = new MarkerAppend(stored === null || markerEpoch(stored) !== epoch ? emptyMarkers(epoch) : stored, limits.recordMax);
    // Every record is bounded (recordMax), so each search costs O(1) per token; where a full
    // record's overflow goes is worked out once per event and bucket, not per token.
    let overflow: Overflow | undefined;
    for (let t = 0; t < tokens.length; t++) {
      let isNew = 0;
      if (!holds(markers.found, keys, t)) {
        if (markers.tryAdd(needles[t]!)) isNew = 1;
        else {
          markers.markFull(limits.shards > 0);
          overflow ??= new Overflow(keys, i, s, limits, epoch, markers.found, state);
          isNew = overflow.add(t);
        }
        if (isNew === 1 && epoch > 0) tally.beyondHorizon++;
      }
      window.add(counters, tokens[t]!, isNew);
    }
    const changed = markers.result();
    if (changed !== undefined) state.set(mk, changed);
    overflow?.commit();
  }
  return true;
}

/**
 * The markers of one event in one bucket beyond its customer's full U record: in shard
 * records (changed ones set once at the end of the event, not once per token), then in V
 * records for tokens whose shard is full; or straight in V records for a U record of older
 * state (`+`). Records are read with getIfLoaded: the loads of overflowKeys and
 * shardOverflowKeys brought in every one that can exist (see there).
 */
class Overflow {
  private readonly stem: string;
  private readonly marker: string;
  private readonly shards: number[] | undefined;
  /** The shard records this event touched, with their keys (built once per event and shard). */
  private readonly touched = new Map<number, { key: string; record: MarkerAppend }>();

  /** `found`: the U record as the event found it (full already, or about to be marked full by this event). */
  constructor(
    private readonly keys: EventKeys,
    i: number,
    s: CountingSettings,
    private readonly limits: MarkerLimits,
    private readonly epoch: number,
    found: string,
    private readonly state: StateView,
  ) {
    this.stem = overflowStemOf(keys, i, s);
    this.marker = tokenMarker(epoch);
    const sharded = markersFull(found) ? markersSharded(found) : limits.shards > 0;
    this.shards = sharded ? shardsOf(keys, limits) : undefined;
  }

  /** Marks token t, which the U record does not hold; 1 when it was not marked yet. */
  add(t: number): number {
    if (this.shards === undefined) return this.addToken(t);
    const shard = this.shards[t]!;
    let record = this.touched.get(shard)?.record;
    if (record === undefined) {
      const key = markerShardKey(this.keys.kgPrefix, this.stem, shard);
      const stored = this.state.getIfLoaded(key);
      record = new MarkerAppend(stored === null || markerEpoch(stored) !== this.epoch ? emptyMarkers(this.epoch) : stored, this.limits.recordMax);
      this.touched.set(shard, { key, record });
    }
    if (holds(record.found, this.keys, t)) return 0;
    if (record.tryAdd(this.keys.needles[t]!)) return 1;
    record.markFull(false);
    return this.addToken(t);
  }

  private addToken(t: number): number {
    const vk = tokenMarkerKey(this.keys.kgPrefix, this.stem, this.keys.tokens[t]!);
    if (this.state.getIfLoaded(vk) === this.marker) return 0;
    this.state.set(vk, this.marker);
    return 1;
  }

  commit(): void {
    for (const { key, record } of this.touched.values()) {
      const changed = record.result();
      if (changed !== undefined) this.state.set(key, changed);
    }
  }
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
  const horizon = bucketHorizon(g, bucket, record.lastIngest, s.uniquesRetentionSec);
  if (pastHorizon(ingestSec, horizon)) {
    state.set(bk, encodeBucket({ lastIngest: ingestHour, epoch: record.epoch + 1 }));
    return record.epoch + 1;
  }
  if (ingestHour > record.lastIngest) state.set(bk, encodeBucket({ lastIngest: ingestHour, epoch: record.epoch }));
  return record.epoch;
}
