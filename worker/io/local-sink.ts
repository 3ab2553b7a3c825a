import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { AbacusError } from '../../common/errors';
import type { RocksDbTuning } from '../../common/job-config';
import { RocksStore } from '../state/rocks';
import { idOf, parseCounterId } from '../../common/counter-id';
import type { CountSink, CounterColumns, CounterKey, CounterRow, CounterValue } from './types';

/** Sink metadata; `~` sorts after every counter id (they start with a digit). */
const LEVEL_KEY = '~level';

/**
 * The embedded sink of local mode: final counts in a RocksDB of their own
 * (`<data-dir>/sink`), keyed by counter id, read by `abacus counts` and the demo. Kept apart
 * from the state so that losing the state does not lose the counts (hydration reads them).
 */
export class LocalSink implements CountSink {
  private constructor(
    private readonly store: RocksStore,
    /** The level of the job whose counts these are. */
    readonly level: 'account' | 'customer',
  ) {}

  /** True for an account-level job's counts (rows carry uniques). */
  get hasUniques(): boolean {
    return this.level === 'account';
  }

  /** Opens for a job of `level`, recorded in the sink so readers know whether rows carry uniques. */
  static async open(dir: string, tuning: RocksDbTuning, level: 'account' | 'customer'): Promise<LocalSink> {
    // The caller checked an existing sink's level first (worker/runtime/data-dir.ts): this only records it in a new one.
    const store = await RocksStore.open(dir, tuning);
    if ((await store.get(LEVEL_KEY)) !== level) await store.write([[LEVEL_KEY, level]], [], true);
    return new LocalSink(store, level);
  }

  /** Opens an existing sink read-only (nothing in `dir` changes); fails when `dir` holds none. */
  static async openExisting(dir: string, tuning: RocksDbTuning): Promise<LocalSink> {
    if (!existsSync(join(dir, 'CURRENT'))) {
      throw new AbacusError('NoCounts', `no counts in ${dir}`, 'run `abacus run --input FILE --data-dir DIR` first, or check --data-dir');
    }
    const store = await RocksStore.openReadOnly(dir, tuning);
    const level = await store.get(LEVEL_KEY);
    return new LocalSink(store, level === 'customer' ? 'customer' : 'account');
  }

  async write(rows: readonly CounterRow[]): Promise<void> {
    await this.store.writeEach(
      rows.length,
      (i) => idOf(rows[i]!),
      (i) => encodeValue(rows[i]!.count, rows[i]!.uniques),
      true,
    );
  }

  /** write() from columns: each counter's id bytes are its key, with no row or id string made. */
  async writeColumns(columns: CounterColumns): Promise<void> {
    const { ids, idEnds, counts, uniques } = columns;
    await this.store.writeEach(
      columns.length,
      (i) => ids.subarray(i === 0 ? 0 : idEnds[i - 1], idEnds[i]),
      (i) => encodeValue(counts[i]!, uniques?.[i]),
      true,
    );
  }

  async read(keys: readonly CounterKey[]): Promise<Map<string, CounterValue>> {
    const ids = keys.map(idOf);
    const values = await this.store.getMany(ids);
    const out = new Map<string, CounterValue>();
    ids.forEach((id, i) => {
      const text = values[i];
      if (text !== undefined) out.set(id, this.decode(text));
    });
    return out;
  }

  /** True when the sink holds no counter (a new data dir): hydrating from it would find nothing the state lacks. */
  async holdsNoCounters(): Promise<boolean> {
    const reader = this.store.reader({ gte: '', lt: LEVEL_KEY }, true);
    try {
      return !(await reader.first());
    } finally {
      await reader.end();
    }
  }

  /** Every counter in id order, streamed from the store (never all in memory). */
  async *scan(): AsyncIterable<CounterRow> {
    for await (const [key, value] of this.store.entries({ gte: '', lt: LEVEL_KEY })) yield { ...parseCounterId(key), ...this.decode(value) };
  }

  private decode(text: string): CounterValue {
    const comma = text.indexOf(',');
    const count = Number(text.slice(0, comma));
    return this.hasUniques ? { count, uniques: Number(text.slice(comma + 1)) } : { count };
  }

  close(): Promise<void> {
    return this.store.close();
  }
}

/** A counter's value in the sink: `count,uniques` (uniques 0 at customer level); decode() reads it. */
function encodeValue(count: number, uniques: number | undefined): string {
  return `${count},${uniques ?? 0}`;
}
