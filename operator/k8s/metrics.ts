import { Counter, Gauge, Histogram } from 'prom-client';
import { createRegistry } from '../../common/metrics';

/** The operator's own metrics, on its own registry (served on --metrics-port). */
export function createOperatorMetrics() {
  const registry = createRegistry();
  return {
    registry,
    reconciles: new Counter({
      name: 'abacus_operator_reconciles_total',
      help: 'Reconciles of AbacusJobs, by result (success, error, requeue; advance: a hand-over phase published on a worker report outside the queue), in reconciles.',
      labelNames: ['result'],
      registers: [registry],
    }),
    reconcileErrors: new Counter({
      name: 'abacus_operator_reconcile_errors_total',
      help: 'Reconciles that failed and were retried with backoff, in reconciles.',
      registers: [registry],
    }),
    reconcileDuration: new Histogram({
      name: 'abacus_operator_reconcile_duration_seconds',
      help: 'Time of one reconcile, in seconds.',
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers: [registry],
    }),
    queueDepth: new Gauge({
      name: 'abacus_operator_workqueue_depth',
      help: 'Keys waiting in the work queue, in keys.',
      registers: [registry],
    }),
    applies: new Counter({
      name: 'abacus_operator_applies_total',
      help: 'Server-side applies of owned objects, by kind and outcome (Created, Configured, Unchanged), in applies.',
      labelNames: ['kind', 'outcome'],
      registers: [registry],
    }),
    watchEvents: new Counter({
      name: 'abacus_operator_watch_events_total',
      help: 'Changes to watched objects seen by the informers (watch events and relist differences), by resource, in events.',
      labelNames: ['resource'],
      registers: [registry],
    }),
    leader: new Gauge({
      name: 'abacus_operator_leader',
      help: '1 while this replica holds the leader Lease, else 0.',
      registers: [registry],
    }),
    jobWorkers: new Gauge({
      name: 'abacus_operator_job_workers',
      // job_namespace, not namespace: a scrape's own namespace label (the operator's) would win.
      help: "Workers of each AbacusJob by state: desired (the job's replicas) and ready (its StatefulSet's ready pods), in pods.",
      labelNames: ['job_namespace', 'abacusjob', 'state'],
      registers: [registry],
    }),
    handoverSeconds: new Histogram({
      name: 'abacus_operator_handover_duration_seconds',
      help: 'Duration of a whole rescale hand-over, from publishing its first step to the last group acquired, in seconds.',
      buckets: [1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800],
      registers: [registry],
    }),
    handoverGroups: new Counter({
      name: 'abacus_operator_handover_key_groups_moved_total',
      help: 'Key groups moved from one worker to another by rescale hand-overs, in key groups.',
      registers: [registry],
    }),
    handoverBytes: new Counter({
      name: 'abacus_operator_handover_moved_bytes_total',
      help: 'State of the moved key groups as the old owners reported it, in bytes.',
      registers: [registry],
    }),
    handoverPause: new Histogram({
      name: 'abacus_operator_handover_group_pause_seconds',
      help: 'Per moved key group: from the old owner stopping it to the new owner counting it, in seconds.',
      buckets: [0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60],
      registers: [registry],
    }),
    jobs: new Gauge({
      name: 'abacus_operator_jobs',
      help: 'AbacusJobs known to the operator, by phase, in jobs.',
      labelNames: ['phase'],
      registers: [registry],
    }),
  };
}

export type OperatorMetrics = ReturnType<typeof createOperatorMetrics>;
