import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

/** The operator's own metrics, on its own registry (served on --metrics-port). */
export function createOperatorMetrics() {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'abacus_operator_process_' });
  return {
    registry,
    reconciles: new Counter({
      name: 'abacus_operator_reconciles_total',
      help: 'Reconciles of AbacusJobs, by result (success, error, requeue), in reconciles.',
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
    jobs: new Gauge({
      name: 'abacus_operator_jobs',
      help: 'AbacusJobs known to the operator, by phase, in jobs.',
      labelNames: ['phase'],
      registers: [registry],
    }),
  };
}

export type OperatorMetrics = ReturnType<typeof createOperatorMetrics>;
