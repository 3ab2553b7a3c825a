import { BloomFilter } from './bloom';
import { kindOf } from './keys';
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
  /** Reads that reached RocksDB / were answered by the filter / by memory, for metrics and benchmarks. */
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
    this.absent.clear();
    for (const key of keys) {
      if (this.dirty.has(key) || this.clean.has(key)) this.stats.cacheHits++;
      else if (this.filter.mightContain(key)) {
        // Marked absent until the read says otherwise; also keeps a key listed twice from being read twice.
        this.clean.set(key, null);
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
      if (text !== undefined) this.clean.set(toRead[i]!, text);
    }
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

  /** Records a change, to be committed with the window. */
  set(key: string, value: string): void {
    this.filter.add(key);
    this.dirty.set(key, value);
  }

  delete(key: string): void {
    this.dirty.set(key, null);
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
    return { puts, deletes };
  }

  /**
   * Call after the commit batch is durable. Dedup records are not kept in memory: nearly
   * all of them are never read again (only a duplicate reads one), and keeping them would
   * crowd out the marker and counter records that hot customers re-read.
   */
  markCommitted(): void {
    for (const [key, value] of this.dirty) {
      if (kindOf(key) === 'D') this.clean.delete(key);
      else this.clean.set(key, value);
    }
    this.dirty.clear();
    this.evict();
  }

  /** Forgets uncommitted changes (a failed commit); the next load re-reads RocksDB. */
  discardUncommitted(): void {
    for (const key of this.dirty.keys()) this.clean.delete(key);
    this.dirty.clear();
  }

  private evict(): void {
    let excess = this.clean.size - this.capacity;
    if (excess <= 0) return;
    for (const key of this.clean.keys()) {
      if (excess-- <= 0) break;
      this.clean.delete(key);
    }
  }
}
