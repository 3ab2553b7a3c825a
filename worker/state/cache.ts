import { BloomFilter } from './bloom';
import { KEY_GROUP_PREFIX_WIDTH, kindOf } from './keys';
import type { KeyRange, RocksStore } from './rocks';

/**
 * The state the counting engine sees: an in-memory write-back cache over RocksDB.
 *
 * The engine is synchronous: before a micro-batch is counted, `load()` brings every key it
 * will touch into memory — one getMany for the keys the Bloom filter cannot rule out; the
 * keys it rules out are remembered as absent until the next load(). Changes stay in
 * `dirty` until the window commits them in one batch, so RocksDB sees each touched record
 * once per window, not once per event. Committed records move to `clean`, which is trimmed
 * oldest-first past its capacity, only between windows, so a loaded key is never evicted
 * before the batch that needs it is counted.
 */
export class StateCache {
  /** Committed records read or written earlier; null = known absent (read from RocksDB). */
  private readonly clean = new Map<string, string | null>();
  /** This window's changes; null = deleted. */
  private readonly dirty = new Map<string, string | null>();
  /**
   * Keys of the last load() that the filter ruled out. get() cannot ask the filter again:
   * keys set since the load may have turned their bits on (a false positive born mid-batch).
   */
  private readonly absent = new Set<string>();
  /** See stage(). */
  private stagedKeys: readonly string[] = [];
  private stagedValues: readonly string[] = [];
  /** Estimated bytes of `clean` (entryBytes). */
  private cleanBytes = 0;
  /**
   * Records of `clean` per key group (by the group number in a key's prefix): forgetting
   * groups that hold none — a restore of a group that was pre-copied, a start — costs no pass
   * over a cache of millions of records (hundreds of ms, inside a moved group's pause).
   */
  private readonly perGroup = new Int32Array(1 << (4 * KEY_GROUP_PREFIX_WIDTH));
  /** Reads that reached RocksDB / were answered by the filter / by memory, for metrics and benchmarks. */
  readonly stats = { storeReads: 0, filteredReads: 0, cacheHits: 0 };
  private readonly capacity: CacheCapacity;

  /** `capacity`: a number of records, or records and estimated bytes (the memory budget's share); `clean` is trimmed to both. */
  constructor(
    private readonly store: RocksStore,
    private readonly filter: BloomFilter,
    capacity: number | CacheCapacity,
  ) {
    this.capacity = typeof capacity === 'number' ? { entries: capacity, bytes: Number.POSITIVE_INFINITY } : capacity;
  }

  /** Adds keys just written to the store to the index (see indexRange). */
  index(keys: readonly string[]): void {
    for (const key of keys) this.filter.add(key);
  }

  /** Adds every existing key in `range` to the filter (start-up, or a key group restored). */
  async indexRange(range: KeyRange): Promise<number> {
    let n = 0;
    await this.store.scan(
      range,
      (key) => {
        this.filter.add(key);
        n++;
      },
      true,
    );
    return n;
  }

  /** Makes every key in `keys` available to get(), for the next batch (keys of earlier loads may be evicted). */
  load(keys: Iterable<string>): Promise<void> {
    this.absent.clear();
    return this.loadMore(keys);
  }

  /** Makes `keys` available too, keeping what the last load() made available (a second round of the same batch). */
  async loadMore(keys: Iterable<string>): Promise<void> {
    const toRead: string[] = [];
    for (const key of keys) {
      if (this.dirty.has(key) || this.clean.has(key)) this.stats.cacheHits++;
      else if (this.filter.mightContain(key)) {
        // Marked absent until the read says otherwise; also keeps a key listed twice from being read twice.
        this.setClean(key, null);
        toRead.push(key);
      } else {
        this.absent.add(key);
        this.stats.filteredReads++;
      }
    }
    if (toRead.length === 0) return;
    this.stats.storeReads += toRead.length;
    // No set() can run while this read is in flight: the engine counts only after load() resolves.
    const values = await this.store.getMany(toRead);
    for (let i = 0; i < toRead.length; i++) {
      const text = values[i];
      if (text !== undefined) this.setClean(toRead[i]!, text);
    }
  }

  /**
   * The committed records of keys that are written only through stage() (a window's
   * counters), in order, null where absent — without load()'s bookkeeping: no get() follows,
   * and the one filter hash that rules a new key out also indexes it for its commit.
   */
  async readCommitted(keys: readonly string[]): Promise<Array<string | null>> {
    const values = new Array<string | null>(keys.length);
    const toRead: string[] = [];
    const at: number[] = [];
    for (let i = 0; i < keys.length; i++) {
      const key = keys[i]!;
      const value = this.clean.get(key);
      if (value !== undefined) {
        values[i] = value;
        this.stats.cacheHits++;
        continue;
      }
      values[i] = null;
      if (this.filter.addReporting(key)) {
        toRead.push(key);
        at.push(i);
      } else this.stats.filteredReads++;
    }
    if (toRead.length === 0) return values;
    this.stats.storeReads += toRead.length;
    const read = await this.store.getMany(toRead);
    for (let j = 0; j < toRead.length; j++) values[at[j]!] = read[j] ?? null;
    return values;
  }

  /**
   * Records to commit with the window that nothing reads before (the window's counters, read
   * with readCommitted): they go to the commit batch and, once it is durable, to memory,
   * without passing through the window's change map — a wide event's window holds tens of
   * thousands of them. Replaces what an earlier stage() of the window staged.
   */
  stage(keys: readonly string[], values: readonly string[]): void {
    this.stagedKeys = keys;
    this.stagedValues = values;
  }

  /** The encoded record of a loaded key, or null when it does not exist. */
  get(key: string): string | null {
    const changed = this.dirty.get(key);
    if (changed !== undefined) return changed;
    const committed = this.clean.get(key);
    if (committed !== undefined) return committed;
    if (this.absent.has(key)) return null;
    throw new Error(`state key not loaded before use: ${JSON.stringify(key)}`);
  }

  /** Like get(), but a key that was not loaded reads as absent. */
  getIfLoaded(key: string): string | null {
    const changed = this.dirty.get(key);
    if (changed !== undefined) return changed;
    return this.clean.get(key) ?? null;
  }

  /** Records a change, to be committed with the window. */
  set(key: string, value: string): void {
    this.filter.add(key);
    this.dirty.set(key, value);
  }

  delete(key: string): void {
    this.dirty.set(key, null);
  }

  /** The window's uncommitted value of a key (null = deleted), or undefined when the window did not change it. */
  pending(key: string): string | null | undefined {
    return this.dirty.get(key);
  }

  /** This window's changes whose key starts with `prefix` (null = deleted). */
  *pendingWithPrefix(prefix: string): IterableIterator<[string, string | null]> {
    for (const entry of this.dirty) if (entry[0].startsWith(prefix)) yield entry;
  }

  /** Drops a committed record from memory (it is being deleted from the store by the caller's commit). */
  forget(key: string): void {
    this.deleteClean(key);
  }

  get dirtyCount(): number {
    return this.dirty.size;
  }

  get size(): number {
    return this.clean.size + this.dirty.size;
  }

  /** The window's changes, for the commit batch. */
  changes(): { puts: Array<[string, string]>; deletes: string[] } {
    const puts: Array<[string, string]> = [];
    const deletes: string[] = [];
    for (const [key, value] of this.dirty) {
      if (value === null) deletes.push(key);
      else puts.push([key, value]);
    }
    for (let i = 0; i < this.stagedKeys.length; i++) puts.push([this.stagedKeys[i]!, this.stagedValues[i]!]);
    return { puts, deletes };
  }

  /**
   * Call after the commit batch is durable. Dedup records are not kept in memory: nearly
   * all of them are never read again (only a duplicate reads one), and keeping them would
   * crowd out the marker and counter records that hot customers re-read.
   */
  markCommitted(): void {
    for (const [key, value] of this.dirty) {
      if (kindOf(key) === 'D') this.deleteClean(key);
      else this.setClean(key, value);
    }
    for (let i = 0; i < this.stagedKeys.length; i++) this.setClean(this.stagedKeys[i]!, this.stagedValues[i]!);
    this.unstage();
    this.dirty.clear();
    this.evict();
  }

  /**
   * Forgets every cached record of these key groups (their records are about to be replaced
   * underneath by a restore, or read afresh by a start). One pass over the cache whatever the
   * number of groups, and none when the cache holds no record of them: with millions of
   * cached records a pass takes 0.3-1.5 s on a busy worker (bench/rescale.ts, session 11), and
   * an acquire, which its moved groups wait for, restores groups its pre-copy already forgot.
   */
  forgetGroups(groups: Iterable<number>): void {
    const requested = new Set(groups);
    for (const key of this.dirty.keys()) if (requested.has(groupOfKey(key))) this.dirty.delete(key);
    let cached = 0;
    for (const g of requested) cached += this.perGroup[g] ?? 0;
    if (cached === 0) return;
    for (const key of this.clean.keys()) if (requested.has(groupOfKey(key))) this.deleteClean(key);
  }

  /** Forgets uncommitted changes (a failed commit); the next load re-reads RocksDB. */
  discardUncommitted(): void {
    for (const key of this.dirty.keys()) this.deleteClean(key);
    this.dirty.clear();
    this.unstage();
  }

  private unstage(): void {
    this.stagedKeys = [];
    this.stagedValues = [];
  }

  /** Estimated bytes of committed records held in memory (see entryBytes). */
  get bytes(): number {
    return this.cleanBytes;
  }

  /** Records of `clean` that belong to key group `g` (what forgetGroups would drop of it). */
  cachedInGroup(g: number): number {
    return this.perGroup[g] ?? 0;
  }

  /** Adds `delta` to the count of the key's group; keys outside every group (`~…`) count nowhere. */
  private countIn(key: string, delta: number): void {
    const g = groupOfKey(key);
    if (g >= 0) this.perGroup[g]! += delta;
  }

  private setClean(key: string, value: string | null): void {
    const before = this.clean.get(key);
    if (before !== undefined) this.cleanBytes -= entryBytes(key, before);
    else if (this.clean.has(key)) this.cleanBytes -= entryBytes(key, null);
    else this.countIn(key, 1);
    // Keys and records are built by concatenation: V8 keeps them as trees of cons strings
    // (measured 712 bytes per marker record and key instead of 222 flat). Reading a character
    // flattens a string in place, and the garbage collector then drops the tree.
    key.charCodeAt(0);
    value?.charCodeAt(0);
    this.clean.set(key, value);
    this.cleanBytes += entryBytes(key, value);
  }

  private deleteClean(key: string): void {
    const before = this.clean.get(key);
    if (before === undefined && !this.clean.has(key)) return;
    this.cleanBytes -= entryBytes(key, before ?? null);
    this.clean.delete(key);
    this.countIn(key, -1);
  }

  /** Oldest first, until both the record count and the estimated bytes are within capacity. */
  private evict(): void {
    const { entries, bytes } = this.capacity;
    if (this.clean.size <= entries && this.cleanBytes <= bytes) return;
    for (const [key, value] of this.clean) {
      if (this.clean.size <= entries && this.cleanBytes <= bytes) break;
      this.cleanBytes -= entryBytes(key, value);
      this.clean.delete(key);
      this.countIn(key, -1);
    }
  }
}

/** The key group of a state key from its hex prefix without allocating; -1 for a key outside every group. */
function groupOfKey(key: string): number {
  if (key.length < KEY_GROUP_PREFIX_WIDTH) return -1;
  let g = 0;
  for (let i = 0; i < KEY_GROUP_PREFIX_WIDTH; i++) {
    const c = key.charCodeAt(i);
    const digit = c >= 48 && c <= 57 ? c - 48 : c >= 97 && c <= 102 ? c - 87 : -1;
    if (digit < 0) return -1;
    g = g * 16 + digit;
  }
  return g;
}

export interface CacheCapacity {
  readonly entries: number;
  readonly bytes: number;
}

/**
 * Estimated heap bytes of one cached record: a Map entry (key, value and chain pointers plus
 * its share of the hash table, ~56 bytes) and two strings (a 16-byte header each, one byte per
 * character for the Latin-1 text that ids nearly always are). An estimate: two-byte strings
 * take twice their characters. docs/performance.md compares it with measured RSS.
 */
export function entryBytes(key: string, value: string | null): number {
  return 88 + key.length + (value === null ? 0 : value.length);
}
