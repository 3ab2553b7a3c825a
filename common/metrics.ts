import { collectDefaultMetrics, Registry } from 'prom-client';

/**
 * A process's metrics registry, shared by the worker and the operator: their own metrics
 * (named `abacus_…`, base units in the name, `_total` for counters) plus prom-client's
 * default process and Node.js metrics under their standard names (`process_cpu_seconds_total`,
 * `process_resident_memory_bytes`, `nodejs_eventloop_lag_p99_seconds`, …). No prefix: those
 * names already say what they are, and dashboards and alerts everywhere expect them; the
 * scrape's labels (namespace, pod, service) tell a worker from the operator.
 */
export function createRegistry(): Registry {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  // prom-client also exports these gauges, duplicates of nodejs_active_{handles,requests,
  // resources} summed over types; a gauge must not end in _total (promtool check metrics).
  for (const name of ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total']) registry.removeSingleMetric(name);
  return registry;
}

/**
 * Liveness that a wedged event loop fails: a timer records when the loop last ran; the
 * check fails once it has not for `maxStallMs`. A loop blocked outright also stops
 * answering the probe, which fails by timeout; this catches a loop that still answers now
 * and then but no longer gets through its work (timers starved for tens of seconds).
 */
export function eventLoopLiveness(maxStallMs = 30_000, now: () => number = Date.now): () => boolean {
  let last = now();
  const timer = setInterval(() => {
    last = now();
  }, 1000);
  timer.unref();
  return () => now() - last <= maxStallMs;
}
