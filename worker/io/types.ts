/**
 * The edges of the worker: where records come from, where final counts go, where invalid
 * records go. The task loop (worker/runtime/task.ts) only sees these interfaces, so local
 * mode (file, generator, embedded sink) and cluster mode (Kafka, Cassandra) run the same
 * counting code.
 */

/** One input record, as read from a source partition. */
export interface SourceRecord {
  /** Raw bytes of the event (one JSONL line without its newline, or a Kafka record value). */
  readonly value: Buffer;
  /**
   * Ingest time in milliseconds since the epoch, carried by the record (the Kafka record
   * timestamp; in local mode the time the input was first ingested). Retention decisions use
   * this, never the wall clock, so a replay makes the same decisions as the first run.
   */
  readonly ingestTimeMs: number;
  /** The source partition the record came from, e.g. `kg:17` or `file:/abs/path`. */
  readonly partition: string;
  /** The position to resume from *after* this record (opaque to the task). */
  readonly nextPosition: string;
  /** Set when the partition is a key group (the keyed topic); its position is then stored with that group's state. */
  readonly keyGroup?: number;
  /** Where the record was read, for dead-letter reports (e.g. `events/3@1234` or `input.jsonl:17`). */
  readonly origin: string;
  /** The record's true size when `value` holds only its first bytes (a line too large to buffer). */
  readonly byteLength?: number;
}

/** A stream of records that can resume from committed positions. */
export interface Source {
  /**
   * Begins reading. `positions` maps partition → the `nextPosition` committed with state;
   * partitions absent from it start at their beginning.
   */
  start(positions: ReadonlyMap<string, string>): Promise<void>;
  /**
   * Up to `max` records; an empty array when nothing is available right now; `null` once a
   * bounded source (a file, the demo generator) is exhausted.
   */
  poll(max: number): Promise<SourceRecord[] | null>;
  /** Pauses fetching (backpressure) until resume(); records already returned stay valid. */
  pause?(): void;
  resume?(): void;
  /** Sources split by key group (the keyed topic): start reading more groups from these positions while running. */
  addGroups?(groups: readonly number[], positions: ReadonlyMap<string, string>): void;
  /** Stop reading these groups; records of them not yet returned by poll() are dropped. */
  removeGroups?(groups: readonly number[]): void;
  close(): Promise<void>;
}

export type { CounterKey, Granularity } from '../../common/counter-id';
import type { CounterKey } from '../../common/counter-id';

export interface CounterValue {
  readonly count: number;
  /** Account level only; absent at customer level. */
  readonly uniques?: number;
}

export interface CounterRow extends CounterKey, CounterValue {
  /** counterId() of this row when its producer already has it, so sinks need not encode it again (see idOf). */
  readonly id?: string;
}

/**
 * A window's totals in columns, as the native engine hands them over: no object and no
 * string per counter. Counter i's id is the UTF-8 bytes `ids[idEnds[i - 1] ?? 0 .. idEnds[i])`.
 */
export interface CounterColumns {
  readonly length: number;
  readonly ids: Buffer;
  readonly idEnds: Uint32Array;
  readonly counts: Float64Array;
  /** Absent for a customer-level job (no uniques). */
  readonly uniques: Float64Array | undefined;
  /** The same totals as rows, for sinks that need a counter's fields. */
  rows(): readonly CounterRow[];
}

/**
 * Where final counts go. Writes set a counter's totals (idempotent), so writing the same
 * rows twice is harmless and a replay converges.
 */
export interface CountSink {
  /** Writes final counts; resolves once durable; rejects when the sink is unavailable (the caller retries). */
  write(rows: readonly CounterRow[]): Promise<void>;
  /**
   * write() for totals in columns (optional): a sink that keys its rows by counter id alone
   * implements it to skip making a row object per counter. Without it, rows() is written.
   */
  writeColumns?(columns: CounterColumns): Promise<void>;
  /** Hydration: the current values of counters this worker has no local value for, keyed by counterId() from ./counter-id (missing ones are absent). */
  read(keys: readonly CounterKey[]): Promise<Map<string, CounterValue>>;
  /** Every counter, for `abacus counts`. */
  scan(): AsyncIterable<CounterRow>;
  /**
   * True only when the sink provably holds no counter at all (optional: a sink that cannot
   * tell cheaply leaves it out). A task that opens over such a sink hydrates none of the groups
   * it opens with: every counter of theirs the sink gets afterwards is committed to the task's
   * state first. Groups it starts later are hydrated as usual.
   */
  holdsNoCounters?(): Promise<boolean>;
  /**
   * True when a write waits on another server (Cassandra): while it is outstanding the task
   * keeps filling the next window instead of waiting (CountTask.windowDue). An embedded sink
   * writes with this process's own CPU, so its windows close on time: a longer window would
   * only hold more in memory.
   */
  readonly remote?: boolean;
  close(): Promise<void>;
}

/** Where invalid records go, with the reason. Must not lose records while it is unavailable. */
export interface DeadLetterSink {
  send(record: SourceRecord, reason: string): Promise<void>;
  close(): Promise<void>;
}
