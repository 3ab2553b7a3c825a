import { counterStem, facetToken, granularityCode, lp, parseCounterId } from '../io/counter-id';
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
 *   gggg U g bucket '|' lp(company) lp(statistic) customer      uniqueness markers of one customer
 *   gggg C counterId                                            counter: count, uniques
 *   gggg P partition                                            input position of a keyed partition
 *   ~meta                                                       settings fingerprint
 *   ~pos partition                                              input position of an unkeyed source
 *   ~outbox                                                     counters committed but not yet confirmed by the sink
 *
 * lp(s) is `${length}:${s}` so that no separator has to be forbidden in ids.
 */

export type RecordKind = 'D' | 'B' | 'U' | 'C' | 'P';

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

/** The state key of a counter, from its stem (counterStem) and facet token. */
export function counterKeyFromParts(kgPrefix: string, stem: string, token: string): string {
  return `${kgPrefix}C${stem}${token}`;
}

export function counterKey(keyGroup: number, key: CounterKey): string {
  return counterKeyFromParts(keyGroupPrefix(keyGroup), counterStem(key.scope, key.statisticId, key.granularity, key.bucket), facetToken(key.facet, key.value));
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
