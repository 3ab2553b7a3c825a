import { DEFAULT_GENERATOR, type GeneratorOptions } from '../worker/io/generator';

/**
 * The workload of issue 2 that `npm run bench` and the hot-path prototypes (bench/hotpath/)
 * both run: Zipf customers (s = 1), 6 companies and statistics, 6 facets (21 counters per
 * event at 3 granularities), 2 % re-delivered duplicates, 5 % late or back-filled, every
 * event with an id, 50,000 events per simulated second of ingest time.
 */
export function benchWorkload(events: number, customers: number): GeneratorOptions {
  return {
    ...DEFAULT_GENERATOR,
    events,
    customers,
    companies: 6,
    statistics: 6,
    facets: 6,
    duplicateRate: 0.02,
    lateRate: 0.05,
    noIdRate: 0,
    ratePerSecond: 50_000,
  };
}
