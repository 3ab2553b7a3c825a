import { counterStem, counterToken, granularityCode, granularityOfCode, lp, parseCounterId } from '../../common/counter-id';
import type { CounterKey, Granularity } from '../io/types';

/**
 * The byte layout of every state key — the one module that owns it.
 *
 * Every key of a key group starts with the group as 4 lowercase hex digits, so one key group
 * is one contiguous range [prefix(g), prefix(g+1)) that can be scanned, exported, deleted
 * and imported on its own. Keys that belong to no key group (metadata, the sink outbox)
 * start with `~`, which sorts after every hex digit.
 *
 *   gggg D lp(company) lp(statistic) lp(customer) identity      dedup: first ingest second
 *   gggg B g bucket '|' lp(company) statistic                   bucket: last ingest, marker epoch
 *   gggg U g bucket '|' lp(company) lp(statistic) customer      uniqueness markers of one customer (up to MARKER_RECORD_MAX chars)
 *   gggg W g bucket '|' lp(company) lp(statistic) lp(customer) shard   markers beyond that record, by a hash of the token (up to MARKER_RECORD_MAX chars each)
 *   gggg V g bucket '|' lp(company) lp(statistic) lp(customer) token   one marker beyond a full shard (or a full U record of older state)
 *   gggg C counterId                                            counter: count, uniques
 *   gggg P partition                                            input position of a keyed partition
 *   gggg G                                                      presence: the group has local state (worker/checkpoint/presence.ts)
 *   gggg X                                                      expiry: the cutoff of the group's last sweep (worker/state/expiry.ts)
 *   gggg S seq                                                  native engine: one commit's changes of the group but its counters (12 hex digits of sequence; base64 of the kernel's segment)
 *   gggg T seq                                                  native engine: one commit's new counters and totals of the group (same sequence as S: a group's S and T segments load merged in sequence order)
 *   gggg I fp                                                   native engine under a budget: a spilled dedup identity (32 hex digits of fingerprint; worker/state/spill-records.ts)
 *   gggg M fp                                                   native engine under a budget: a customer's spilled uniqueness markers
 *   ~meta                                                       settings fingerprint
 *   ~pos partition                                              input position of an unkeyed source
 *   ~outbox                                                     counters committed but not yet confirmed by the sink
 *
 * lp(s) is `${length}:${s}` so that no separator has to be forbidden in ids.
 */

export type RecordKind = 'D' | 'B' | 'U' | 'W' | 'V' | 'C' | 'P' | 'G' | 'X' | 'S' | 'T' | 'I' | 'M';

/** The native engine's segment kinds: state (S: customers, dedup, buckets, markers) and counters (T: counters with their ids, totals). */
export type SegmentKind = 'S' | 'T';

export const KEY_GROUP_PREFIX_WIDTH = 4;
/** Position of the record-kind letter in a key-group key. */
export const KIND_OFFSET = KEY_GROUP_PREFIX_WIDTH;

export const META_KEY = '~meta';
export const OUTBOX_KEY = '~outbox';
export const UNKEYED_POSITION_PREFIX = '~pos';

const PREFIXES: string[] = [];

/** `0x1f` → `001f`. Cached: it is on the hot path. */
export function keyGroupPrefix(keyGroup: number): string {
  let p = PREFIXES[keyGroup];
  if (p === undefined) {
    p = keyGroup.toString(16).padStart(KEY_GROUP_PREFIX_WIDTH, '0');
    PREFIXES[keyGroup] = p;
  }
  return p;
}

/** The half-open key range [gte, lt) that holds exactly one key group. */
export function keyGroupRange(keyGroup: number): { gte: string; lt: string } {
  return { gte: keyGroupPrefix(keyGroup), lt: keyGroupPrefix(keyGroup + 1) };
}

export function kindOf(key: string): RecordKind | undefined {
  return key.charCodeAt(0) === 0x7e ? undefined : (key[KIND_OFFSET] as RecordKind);
}

export function dedupKey(kgPrefix: string, companyId: string, statisticId: string, customerId: string, identity: string): string {
  return `${kgPrefix}D${lp(companyId)}${lp(statisticId)}${lp(customerId)}${identity}`;
}

export function bucketKey(kgPrefix: string, g: Granularity, bucket: number, companyId: string, statisticId: string): string {
  return `${kgPrefix}B${granularityCode(g)}${bucket}|${lp(companyId)}${statisticId}`;
}

export function markerKey(kgPrefix: string, g: Granularity, bucket: number, companyId: string, statisticId: string, customerId: string): string {
  return `${kgPrefix}U${granularityCode(g)}${bucket}|${lp(companyId)}${lp(statisticId)}${customerId}`;
}

/**
 * What the overflow marker keys of a customer in a bucket share after their kind letter:
 * a V key appends a facet token, a W key a shard number (both after lp(customer), so
 * neither can run into the other's or another customer's keys).
 */
export function overflowMarkerStem(g: Granularity, bucket: number, companyId: string, statisticId: string, customerId: string): string {
  return `${granularityCode(g)}${bucket}|${lp(companyId)}${lp(statisticId)}${lp(customerId)}`;
}

/** The key of one token's marker (V) beyond its customer's marker records. */
export function tokenMarkerKey(kgPrefix: string, overflowStem: string, token: string): string {
  return `${kgPrefix}V${overflowStem}${token}`;
}

/** The key of one marker shard (W) of a customer in a bucket. */
export function markerShardKey(kgPrefix: string, overflowStem: string, shard: number): string {
  return `${kgPrefix}W${overflowStem}${shard}`;
}

/** The key range of every record of one kind in a key group (kinds are single letters, so the next letter bounds the range). */
export function kindRange(kgPrefix: string, kind: RecordKind): { gte: string; lt: string } {
  return { gte: kgPrefix + kind, lt: kgPrefix + String.fromCharCode(kind.charCodeAt(0) + 1) };
}

/** The parts of a bucket record key (see bucketKey). */
export interface BucketKeyParts {
  readonly granularity: Granularity;
  readonly bucket: number;
  /** What the keys of its uniqueness markers hold after the kind letter and before the customer (see markerScope, markerRanges). */
  readonly scope: string;
}

export function parseBucketKey(key: string): BucketKeyParts {
  const bar = key.indexOf('|', KIND_OFFSET + 2);
  const g = granularityOfCode(key[KIND_OFFSET + 1]!);
  const bucket = Number(key.slice(KIND_OFFSET + 2, bar));
  const companyLp = lpAt(key, bar + 1);
  const statistic = key.slice(bar + 1 + companyLp.length);
  return { granularity: g, bucket, scope: `${granularityCode(g)}${bucket}|${companyLp}${lp(statistic)}` };
}

/**
 * The key ranges of the markers (U, W and V records) of one bucket, company and statistic.
 * Their keys continue the scope with the customer; lp() is prefix-free, so the scope's
 * prefix holds exactly those markers.
 */
export function markerRanges(kgPrefix: string, scope: string): { markers: { gte: string; lt: Buffer }; shardMarkers: { gte: string; lt: Buffer }; tokenMarkers: { gte: string; lt: Buffer } } {
  return { markers: prefixRange(`${kgPrefix}U${scope}`), shardMarkers: prefixRange(`${kgPrefix}W${scope}`), tokenMarkers: prefixRange(`${kgPrefix}V${scope}`) };
}

/** The bucket, company and statistic part of a marker (U, W or V) key: equal to the `scope` of its bucket key's parts. */
export function markerScope(key: string): string {
  const bar = key.indexOf('|', KIND_OFFSET + 2);
  const company = lpAt(key, bar + 1);
  const statistic = lpAt(key, bar + 1 + company.length);
  return key.slice(KIND_OFFSET + 1, bar + 1 + company.length + statistic.length);
}

/** The key of a key group's segment number `seq` (native engine): fixed width, so keys of a kind sort in the order the segments were written. */
export function segmentKey(kgPrefix: string, seq: number, kind: SegmentKind = 'S'): string {
  return `${kgPrefix}${kind}${seq.toString(16).padStart(12, '0')}`;
}

/** The sequence number of a segment key. */
export function segmentSeq(key: string): number {
  return parseInt(key.slice(KIND_OFFSET + 1), 16);
}

/** The expiry record of a key group (see worker/state/expiry.ts). */
export function expiryKey(kgPrefix: string): string {
  return `${kgPrefix}X`;
}

/**
 * Every key that starts with `prefix`. RocksDB orders keys as UTF-8 bytes, in which 0xff
 * never occurs, so the prefix's bytes followed by 0xff bound the range whatever characters
 * (astral ones included) follow the prefix.
 */
export function prefixRange(prefix: string): { gte: string; lt: Buffer } {
  return { gte: prefix, lt: Buffer.concat([Buffer.from(prefix, 'utf8'), Buffer.from([0xff])]) };
}

/** The `${length}:${s}` encoding that starts at `at`, whole. */
function lpAt(key: string, at: number): string {
  const colon = key.indexOf(':', at);
  const length = Number(key.slice(at, colon));
  return key.slice(at, colon + 1 + length);
}

/** The state key of a counter, from its stem (counterStem) and facet token. */
export function counterKeyFromParts(kgPrefix: string, stem: string, token: string): string {
  return `${kgPrefix}C${stem}${token}`;
}

export function counterKey(keyGroup: number, key: CounterKey): string {
  return counterKeyFromParts(keyGroupPrefix(keyGroup), counterStem(key.scope, key.statisticId, key.granularity, key.bucket), counterToken(key));
}

/** The counter id part of a counter state key. */
export function counterIdOfKey(stateKey: string): string {
  return stateKey.slice(KIND_OFFSET + 1);
}

export function counterOfKey(stateKey: string): CounterKey {
  return parseCounterId(counterIdOfKey(stateKey));
}

export function keyGroupOfKey(stateKey: string): number {
  return parseInt(stateKey.slice(0, KEY_GROUP_PREFIX_WIDTH), 16);
}

/** Positions of keyed partitions live with their key group; others under `~pos`. */
export function positionKey(partition: string, keyGroup: number | undefined): string {
  return keyGroup === undefined ? `${UNKEYED_POSITION_PREFIX}${partition}` : `${keyGroupPrefix(keyGroup)}P${partition}`;
}
