/**
 * The Node.js flags a worker runs with (the operator puts them in the pod's NODE_OPTIONS;
 * the benchmarks start their workers the same way, so they measure what production runs).
 *
 * A 128 MiB young generation: the engine allocates short-lived strings per event, and a
 * larger nursery lets them die young (measured +50 % events/s, docs/performance.md).
 */
export const WORKER_NODE_OPTIONS = '--max-semi-space-size=128';
