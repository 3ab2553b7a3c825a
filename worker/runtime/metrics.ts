import { Counter, Gauge, Histogram } from 'prom-client';
import { createRegistry } from '../../common/metrics';

/**
 * The worker's metrics, one registry per process. Names follow Prometheus conventions:
 * `abacus_` prefix, base units (seconds, bytes) in the name, `_total` for counters. Other
 * modules (Kafka, Cassandra edges) register theirs on the same `registry`.
 */
export const registry = createRegistry();

export const metrics = {
  handoverStepSeconds: new Histogram({
    name: 'abacus_handover_step_seconds',
    help: 'Time this worker spent on one hand-over step (prepare = pre-copy restore, release = stop + final checkpoint, acquire = restore + start), in seconds.',
    labelNames: ['step'],
    buckets: [0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300],
    registers: [registry],
  }),
  handoverGroups: new Counter({
    name: 'abacus_handover_groups_total',
    help: 'Key groups this worker prepared, released or acquired in hand-overs, in key groups.',
    labelNames: ['step'],
    registers: [registry],
  }),
  assignmentGeneration: new Gauge({
    name: 'abacus_assignment_generation',
    help: 'Generation of the newest assignment document this worker has applied.',
    registers: [registry],
  }),
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
  stateExpired: new Counter({
    name: 'abacus_state_expired_records_total',
    help: 'State records deleted because they were past their retention (kind: dedup = event identities, marker = uniqueness markers), in records.',
    labelNames: ['kind'],
    registers: [registry],
  }),
  stateSpilled: new Counter({
    name: 'abacus_state_spilled_records_total',
    help: 'Native engine under a memory budget: entries evicted from memory into spill records (kind: dedup = event identities, customer_markers = a customer\'s uniqueness markers), in records.',
    labelNames: ['kind'],
    registers: [registry],
  }),
  nativeStateBytes: new Gauge({
    name: 'abacus_native_state_bytes',
    help: "Native engine under a memory budget: the kernel's tables after the last eviction (compare with the budget's state share), in bytes.",
    registers: [registry],
  }),
  nativeStateLimitBytes: new Gauge({
    name: 'abacus_native_state_limit_bytes',
    help: "Native engine under a memory budget: the kernel's share of the budget, which it spills to stay within, in bytes.",
    registers: [registry],
  }),
  stateSpillReads: new Counter({
    name: 'abacus_state_spill_reads_total',
    help: 'Native engine under a memory budget: spill records read back because an event needed them, in records.',
    registers: [registry],
  }),
  countersTouched: new Histogram({
    name: 'abacus_window_counters_touched',
    help: 'Distinct counters changed per window flush, in counters.',
    buckets: [1, 10, 100, 1_000, 10_000, 100_000, 1_000_000],
    registers: [registry],
  }),
  windowOpenSeconds: new Histogram({
    name: 'abacus_window_open_duration_seconds',
    help: 'How long each window was open before it closed, in seconds: the configured window, or with Cassandra longer while the previous window\'s write was outstanding (at most 4 windows; longer only when a stop held the close).',
    buckets: [0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 60],
    registers: [registry],
  }),
  windowFlushSeconds: new Histogram({
    name: 'abacus_window_flush_duration_seconds',
    help: 'Time to flush one window: hydrate, commit state and offsets, write the sink, in seconds.',
    buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers: [registry],
  }),
  stateSweepSeconds: new Histogram({
    name: 'abacus_state_sweep_duration_seconds',
    help: 'Time a window flush spent sweeping state past its retention (records engine: finding the expired records; native engine: the kernel deleting them and rewriting the swept key groups as one segment each), in seconds; flushes that sweep nothing are not observed.',
    buckets: [0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
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
    help: 'Records not yet read from the input, per partition, in records (a keyed-topic record the router wrote bundles the events of one key group from one chunk of input).',
    labelNames: ['partition'],
    registers: [registry],
  }),
  sinkWriteRetries: new Counter({
    name: 'abacus_sink_write_retries_total',
    help: 'Failed sink calls (writes and hydration reads) that were retried after backoff, in attempts.',
    registers: [registry],
  }),
  checkpointSeconds: new Histogram({
    name: 'abacus_checkpoint_duration_seconds',
    help: 'Time from a checkpoint\'s snapshot to its committed manifest (upload included), in seconds.',
    buckets: [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300],
    registers: [registry],
  }),
  checkpointUploadedBytes: new Counter({
    name: 'abacus_checkpoint_uploaded_bytes_total',
    help: 'Bytes of chunks and manifests uploaded by committed and failed checkpoints, in bytes.',
    registers: [registry],
  }),
  checkpointFailures: new Counter({
    name: 'abacus_checkpoint_failures_total',
    help: 'Checkpoints that failed (object store unavailable, write error); each is retried with backoff, in checkpoints.',
    registers: [registry],
  }),
  checkpointLastSuccess: new Gauge({
    name: 'abacus_checkpoint_last_success_timestamp_seconds',
    help: 'When this worker last committed a complete checkpoint (manifest written), in seconds since the epoch; 0 before the first.',
    registers: [registry],
  }),
  checkpointAgeSeconds: new Gauge({
    name: 'abacus_checkpoint_age_seconds',
    help: 'Age of this worker\'s last complete checkpoint, in seconds; absent before the first.',
    registers: [registry],
    collect() {
      const last = lastCheckpointMs;
      if (last > 0) this.set((Date.now() - last) / 1000);
    },
  }),
  restoreSeconds: new Histogram({
    name: 'abacus_restore_duration_seconds',
    help: 'Time to restore a set of key groups from a checkpoint (download, verify, write), in seconds.',
    buckets: [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300],
    registers: [registry],
  }),
  restoreBytes: new Counter({
    name: 'abacus_restore_downloaded_bytes_total',
    help: 'Bytes of checkpoint chunks downloaded by restores, in bytes.',
    registers: [registry],
  }),
};

let lastCheckpointMs = 0;
let lastInputLagSeconds: number | undefined;

/** Records the input lag for the gauge and for the worker's report to the operator. */
export function inputLagObserved(seconds: number): void {
  lastInputLagSeconds = seconds;
  metrics.inputLagSeconds.set(seconds);
}

/** The figures the worker reports to the operator (status.json): last checkpoint time, input lag. */
export function progressFigures(): { lastCheckpointMs?: number; inputLagSeconds?: number } {
  return { ...(lastCheckpointMs > 0 ? { lastCheckpointMs } : {}), ...(lastInputLagSeconds === undefined ? {} : { inputLagSeconds: lastInputLagSeconds }) };
}

/** Records a committed checkpoint for the last-success and age gauges. */
export function checkpointCommitted(atMs: number): void {
  lastCheckpointMs = atMs;
  metrics.checkpointLastSuccess.set(atMs / 1000);
}
