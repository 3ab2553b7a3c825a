import type { RocksDbTuning } from '../config';
import { RocksStore } from '../state/rocks';
import { counterId, parseCounterId } from './counter-id';
import type { CountSink, CounterKey, CounterRow, CounterValue } from './types';

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

  static async open(dir: string, tuning: RocksDbTuning, level: 'account' | 'customer'): Promise<LocalSink> {
    return new LocalSink(await RocksStore.open(dir, tuning), level === 'account');
  }

  async write(rows: readonly CounterRow[]): Promise<void> {
    await this.store.write(
      rows.map((r) => [counterId(r), `${r.count},${r.uniques ?? 0}`] as const),
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
    await this.store.scan({ gte: '', lt: '\uffff' }, (key, value) => rows.push({ ...parseCounterId(key), ...this.decode(value) }));
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
