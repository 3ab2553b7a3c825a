import { Counter, Gauge } from 'prom-client';
import { registry } from '../runtime/metrics';

/** Metrics of the Kafka edges (router, keyed source, dead-letter sink), on the worker's registry. */
export const kafkaMetrics = {
  routed: new Counter({
    name: 'abacus_route_records_total',
    help: 'Input records handled by the router, by outcome (routed to the keyed topic, or invalid and sent to the dead-letter topic), in records.',
    labelNames: ['outcome'],
    registers: [registry],
  }),
  routedRecords: new Counter({
    name: 'abacus_route_keyed_records_total',
    help: 'Records the router wrote to the keyed topic (a record bundles the events of one key group from one chunk of input; abacus_route_records_total{outcome="routed"} counts the events), in records.',
    registers: [registry],
  }),
  routeLag: new Gauge({
    name: 'abacus_route_lag_records',
    help: 'Records of the input topic not yet routed, per input partition this worker routes, in records.',
    labelNames: ['partition'],
    registers: [registry],
  }),
  routeProduceErrors: new Counter({
    name: 'abacus_route_produce_errors_total',
    help: 'Failed produce attempts to the keyed or dead-letter topic (retried; input offsets are not committed meanwhile), in attempts.',
    registers: [registry],
  }),
  sourceRecords: new Counter({
    name: 'abacus_source_records_total',
    help: 'Events of the keyed topic handed to the count task (every event of a bundle the router wrote counts), in events.',
    registers: [registry],
  }),
  sourceLag: new Gauge({
    name: 'abacus_source_lag_records',
    help: 'Records of the keyed topic not yet handed to the count task, per key group this worker owns, in records.',
    labelNames: ['key_group'],
    registers: [registry],
  }),
  sourceBuffered: new Gauge({
    name: 'abacus_source_buffered_records',
    help: 'Records fetched from the keyed topic and waiting for the count task, in records.',
    registers: [registry],
  }),
  pauses: new Counter({
    name: 'abacus_backpressure_pauses_total',
    help: 'Times fetching was paused for backpressure, by reason (buffer: the task is behind; task: the task asked, e.g. the sink is failing), in pauses.',
    labelNames: ['reason'],
    registers: [registry],
  }),
  paused: new Gauge({
    name: 'abacus_backpressure_paused',
    help: '1 while fetching from the keyed topic is paused for backpressure, else 0.',
    registers: [registry],
  }),
  rejoins: new Counter({
    name: 'abacus_source_group_joins_total',
    help: 'Times the keyed-topic consumer (re)joined its group and re-sought to the positions it owns, in joins.',
    registers: [registry],
  }),
  deadLetters: new Counter({
    name: 'abacus_dead_letter_records_total',
    help: 'Records written to the dead-letter topic, in records.',
    registers: [registry],
  }),
  deadLetterErrors: new Counter({
    name: 'abacus_dead_letter_errors_total',
    help: 'Failed attempts to write to the dead-letter topic (retried until they succeed), in attempts.',
    registers: [registry],
  }),
};
