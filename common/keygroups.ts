/**
 * Key-group math, shared by the operator and the worker.
 *
 * A job has K key groups, fixed for its life (like Flink's max parallelism). Every piece
 * of state belongs to exactly one key group, and a key group is the unit of state
 * ownership, checkpointing and rescaling. Checkpoints depend on this byte-level hash, so
 * it is specified precisely and pinned by golden vectors in test/unit/keygroups.test.ts:
 *
 *   keyGroup(routingKey) = murmur3_x86_32(utf8(routingKey), seed 0) mod K   (unsigned)
 *
 * Worker i of N owns the contiguous range [ceil(i*K/N), ceil((i+1)*K/N) - 1], the same
 * split as Flink's KeyGroupRangeAssignment, so neighbouring workers' ranges never overlap
 * and every group has exactly one owner.
 */

export const MAX_KEY_GROUPS = 32768;

/** MurmurHash3 x86 32-bit over bytes. */
export function murmur3_32(bytes: Uint8Array, seed = 0): number {
  const c1 = 0xcc9e2d51;
  const c2 = 0x1b873593;
  const len = bytes.length;
  const blocks = len & ~3;
  let h = seed >>> 0;
  for (let i = 0; i < blocks; i += 4) {
    let k =
      (bytes[i]! | (bytes[i + 1]! << 8) | (bytes[i + 2]! << 16) | (bytes[i + 3]! << 24)) >>> 0;
    k = Math.imul(k, c1);
    k = (k << 15) | (k >>> 17);
    k = Math.imul(k, c2);
    h ^= k;
    h = (h << 13) | (h >>> 19);
    h = (Math.imul(h, 5) + 0xe6546b64) >>> 0;
  }
  // Tail: the remaining 1-3 bytes, little-endian, mixed like a block.
  const tail = len & 3;
  if (tail > 0) {
    let k = 0;
    if (tail === 3) k ^= bytes[blocks + 2]! << 16;
    if (tail >= 2) k ^= bytes[blocks + 1]! << 8;
    k ^= bytes[blocks]!;
    k = Math.imul(k, c1);
    k = (k << 15) | (k >>> 17);
    k = Math.imul(k, c2);
    h ^= k;
  }
  return fmix32(h ^ len);
}

/** MurmurHash3's 32-bit finaliser: spreads every input bit over the whole word. */
export function fmix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

const encoder = new TextEncoder();

/** The key group of a routing key string (UTF-8 encoded before hashing). */
export function keyGroupOf(routingKey: string, keyGroups: number): number {
  return murmur3_32(encoder.encode(routingKey)) % keyGroups;
}

/**
 * The routing key of an event. Account-level jobs route by (company, statistic) so that an
 * event's dedup identity, its uniqueness markers and its counters all live in one key group;
 * customer-level jobs route by customer. The NUL separator cannot be confused with content
 * because ids are compared whole, and it keeps ("a","bc") apart from ("ab","c").
 */
export function routingKey(
  level: 'account' | 'customer',
  companyId: string,
  statisticId: string,
  customerId: string,
): string {
  return level === 'account' ? `${companyId}\u0000${statisticId}` : customerId;
}

/** Inclusive range of key groups. */
export interface KeyGroupRange {
  readonly start: number;
  readonly end: number;
}

/** The key groups worker `index` of `parallelism` owns. */
export function rangeForWorker(keyGroups: number, parallelism: number, index: number): KeyGroupRange {
  checkParallelism(keyGroups, parallelism);
  if (!Number.isInteger(index) || index < 0 || index >= parallelism) {
    throw new RangeError(`worker index ${index} is outside 0..${parallelism - 1}`);
  }
  const start = Math.ceil((index * keyGroups) / parallelism);
  const end = Math.ceil(((index + 1) * keyGroups) / parallelism) - 1;
  return { start, end };
}

/** The worker index that owns `keyGroup` when `parallelism` workers share `keyGroups`. */
export function workerForKeyGroup(keyGroups: number, parallelism: number, keyGroup: number): number {
  checkParallelism(keyGroups, parallelism);
  if (!Number.isInteger(keyGroup) || keyGroup < 0 || keyGroup >= keyGroups) {
    throw new RangeError(`key group ${keyGroup} is outside 0..${keyGroups - 1}`);
  }
  return Math.floor((keyGroup * parallelism) / keyGroups);
}

function checkParallelism(keyGroups: number, parallelism: number): void {
  if (!Number.isInteger(keyGroups) || keyGroups < 1 || keyGroups > MAX_KEY_GROUPS) {
    throw new RangeError(`keyGroups must be an integer in 1..${MAX_KEY_GROUPS}, got ${keyGroups}`);
  }
  if (!Number.isInteger(parallelism) || parallelism < 1 || parallelism > keyGroups) {
    throw new RangeError(`replicas must be an integer in 1..keyGroups (${keyGroups}), got ${parallelism}`);
  }
}

/** Every key group in a range, in order. */
export function keyGroupsIn(range: KeyGroupRange): number[] {
  const out: number[] = [];
  for (let g = range.start; g <= range.end; g++) out.push(g);
  return out;
}
