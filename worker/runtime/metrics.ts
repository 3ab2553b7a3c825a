import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

/**
 * The worker's metrics, one registry per process. Names follow Prometheus conventions:
 * `abacus_` prefix, base units (seconds, bytes) in the name, `_total` for counters. Other
 * modules (Kafka, Cassandra edges) register theirs on the same `registry`.
 */
export const registry = new Registry();
collectDefaultMetrics({ register: registry, prefix: 'abacus_process_' });

export const metrics = {
  eventsIn: new Counter({
    name: 'abacus_events_in_total',
    help: 'Input records read by the count stage (valid or not), in records.',
    registers: [registry],
  }),
  eventsCounted: new Counter({
    name: 'abacus_events_counted_total',
    help: 'Valid, first-seen events added to counters, in events.',
    registers: [registry],
  }),
  invalid: new Counter({
    name: 'abacus_events_invalid_total',
    help: 'Invalid records sent to the dead-letter destination, by reason code.',
    labelNames: ['reason'],
    registers: [registry],
  }),
  duplicates: new Counter({
    name: 'abacus_events_duplicate_total',
    help: 'Events dropped because an event with the same identity was already counted, in events.',
    registers: [registry],
  }),
  uniquesBeyondHorizon: new Counter({
    name: 'abacus_uniques_beyond_horizon_total',
    help: 'Counter updates whose bucket had outlived its uniqueness horizon: the customer was counted as new, so uniques may overcount, in updates.',
    registers: [registry],
  }),
  countersTouched: new Histogram({
    name: 'abacus_window_counters_touched',
    help: 'Distinct counters changed per window flush, in counters.',
    buckets: [1, 10, 100, 1_000, 10_000, 100_000, 1_000_000],
    registers: [registry],
  }),
  windowFlushSeconds: new Histogram({
    name: 'abacus_window_flush_duration_seconds',
    help: 'Time to flush one window: hydrate, commit state and offsets, write the sink, in seconds.',
    buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers: [registry],
  }),
  stateSizeBytes: new Gauge({
    name: 'abacus_state_size_bytes',
    help: 'Size of the RocksDB state files on disk (SST, write-ahead log, manifest), in bytes.',
    registers: [registry],
  }),
  inputLagSeconds: new Gauge({
    name: 'abacus_input_lag_seconds',
    help: 'Ingest time of the newest committed record subtracted from now, in seconds.',
    registers: [registry],
  }),
  inputLagRecords: new Gauge({
    name: 'abacus_input_lag_records',
    help: 'Records not yet read from the input, per partition, in records.',
    labelNames: ['partition'],
    registers: [registry],
  }),
  sinkWriteRetries: new Counter({
    name: 'abacus_sink_write_retries_total',
    help: 'Failed sink calls (writes and hydration reads) that were retried after backoff, in attempts.',
    registers: [registry],
  }),
};
