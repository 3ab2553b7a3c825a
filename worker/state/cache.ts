import { BloomFilter } from './bloom';
import { kindOf } from './keys';
import type { KeyRange, RocksStore } from './rocks';

/**
 * The state the counting engine sees: an in-memory write-back cache over RocksDB.
 *
 * The engine is synchronous: before a micro-batch is counted, `load()` brings every key it
 * will touch into the cache (one getMany for the keys the Bloom filter cannot rule out).
 * Changes stay in memory, marked dirty, until the window commits them in one batch; so
 * RocksDB sees each touched record once per window, not once per event. Clean entries are
 * evicted oldest-first when the cache grows past its capacity, only between windows, so a
 * loaded key is never evicted before the batch that needs it is counted.
 */
export class StateCache {
  private readonly entries = new Map<string, string | null>();
  private readonly dirty = new Set<string>();
  private readonly pendingDeletes = new Set<string>();
  /** Reads that reached RocksDB / were answered by the filter, for metrics and benchmarks. */
  readonly stats = { storeReads: 0, filteredReads: 0, cacheHits: 0 };

  constructor(
    private readonly store: RocksStore,
    private readonly filter: BloomFilter,
    private readonly capacity: number,
  ) {}

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

  /** Makes every key in `keys` available to get(). */
  async load(keys: Iterable<string>): Promise<void> {
    const toRead: string[] = [];
    for (const key of keys) {
      if (this.entries.has(key)) {
        this.stats.cacheHits++;
        continue;
      }
      // Absent until the read says otherwise; also keeps a key listed twice from being read twice.
      this.entries.set(key, null);
      if (this.filter.mightContain(key)) toRead.push(key);
      else this.stats.filteredReads++;
    }
    if (toRead.length === 0) return;
    this.stats.storeReads += toRead.length;
    // No set() can run while this read is in flight: the engine counts only after load() resolves.
    const values = await this.store.getMany(toRead);
    for (let i = 0; i < toRead.length; i++) {
      const text = values[i];
      if (text !== undefined) this.entries.set(toRead[i]!, text);
    }
  }

  /** The record for a loaded key, or null when it does not exist. */
  get(key: string): string | null {
    const value = this.entries.get(key);
    if (value === undefined) throw new Error(`state key not loaded before use: ${JSON.stringify(key)}`);
    return value;
  }

  /** Records a change (also after mutating a record in place) to be committed with the window. */
  set(key: string, value: string): void {
    if (this.entries.get(key) == null) this.filter.add(key);
    this.entries.set(key, value);
    this.dirty.add(key);
    this.pendingDeletes.delete(key);
  }

  delete(key: string): void {
    this.entries.set(key, null);
    this.dirty.delete(key);
    this.pendingDeletes.add(key);
  }

  get dirtyCount(): number {
    return this.dirty.size + this.pendingDeletes.size;
  }

  get size(): number {
    return this.entries.size;
  }

  /** The window's changes, encoded for the commit batch. */
  changes(): { puts: Array<[string, string]>; deletes: string[] } {
    const puts: Array<[string, string]> = [];
    for (const key of this.dirty) puts.push([key, this.entries.get(key)!]);
    return { puts, deletes: [...this.pendingDeletes] };
  }

  /**
   * Call after the commit batch is durable. Dedup records are dropped from memory at once:
   * nearly all of them are never read again (only a duplicate reads one), and keeping them
   * would crowd out the marker and counter records that hot customers re-read.
   */
  markCommitted(): void {
    for (const key of this.dirty) if (kindOf(key) === 'D') this.entries.delete(key);
    this.dirty.clear();
    this.pendingDeletes.clear();
    this.evict();
  }

  /** Forgets uncommitted changes (a failed commit); the next load re-reads RocksDB. */
  discardUncommitted(): void {
    for (const key of this.dirty) this.entries.delete(key);
    for (const key of this.pendingDeletes) this.entries.delete(key);
    this.dirty.clear();
    this.pendingDeletes.clear();
  }

  private evict(): void {
    if (this.entries.size <= this.capacity) return;
    let excess = this.entries.size - this.capacity;
    for (const key of this.entries.keys()) {
      if (excess-- <= 0) break;
      this.entries.delete(key);
    }
  }
}
