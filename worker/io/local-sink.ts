import { existsSync } from 'node:fs';
import { AbacusError } from '../../common/errors';
import type { RocksDbTuning } from '../config';
import { RocksStore } from '../state/rocks';
import { counterId, idOf, parseCounterId } from './counter-id';
import type { CountSink, CounterKey, CounterRow, CounterValue } from './types';

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
    private readonly withUniques: boolean,
  ) {}

  /** True for an account-level job's counts (rows carry uniques). */
  get hasUniques(): boolean {
    return this.withUniques;
  }

  /** Opens for a job of `level`, recorded in the sink so readers know whether rows carry uniques. */
  static async open(dir: string, tuning: RocksDbTuning, level: 'account' | 'customer'): Promise<LocalSink> {
    const store = await RocksStore.open(dir, tuning);
    await store.write([[LEVEL_KEY, level]], [], true);
    return new LocalSink(store, level === 'account');
  }

  /** Opens an existing sink for reading; fails when `dir` holds none. */
  static async openExisting(dir: string, tuning: RocksDbTuning): Promise<LocalSink> {
    if (!existsSync(dir)) {
      throw new AbacusError('NoCounts', `no counts in ${dir}`, 'run `abacus run --input FILE --data-dir DIR` first, or check --data-dir');
    }
    const store = await RocksStore.open(dir, tuning);
    const level = await store.get(LEVEL_KEY);
    return new LocalSink(store, level !== 'customer');
  }

  async write(rows: readonly CounterRow[]): Promise<void> {
    await this.store.write(
      rows.map((r) => [idOf(r), `${r.count},${r.uniques ?? 0}`] as const),
      [],
      true,
    );
  }

  async read(keys: readonly CounterKey[]): Promise<Map<string, CounterValue>> {
    const ids = keys.map(counterId);
    const values = await this.store.getMany(ids);
    const out = new Map<string, CounterValue>();
    ids.forEach((id, i) => {
      const text = values[i];
      if (text !== undefined) out.set(id, this.decode(text));
    });
    return out;
  }

  async *scan(): AsyncIterable<CounterRow> {
    const rows: CounterRow[] = [];
    await this.store.scan({ gte: '', lt: LEVEL_KEY }, (key, value) => rows.push({ ...parseCounterId(key), ...this.decode(value) }));
    yield* rows;
  }

  private decode(text: string): CounterValue {
    const comma = text.indexOf(',');
    const count = Number(text.slice(0, comma));
    return this.withUniques ? { count, uniques: Number(text.slice(comma + 1)) } : { count };
  }

  close(): Promise<void> {
    return this.store.close();
  }
}
