import { createHash } from 'node:crypto';
import type { V1ConfigMap } from '@kubernetes/client-node';
import { stringify } from 'yaml';
import { resolveJobConfig, stateFingerprint, type JobConfig } from '../../common/job-config';
import type { AbacusJob, AbacusJobSpec } from '../api/abacusjob';
import { childMeta, names } from './names';

export const CONFIG_KEY = 'job.yaml';

/**
 * The worker's job document (common/job-config.ts format) for a job. Only settings the worker's
 * format knows go in; credentials never do (they reach the worker as environment variables
 * from Secrets, see statefulset.ts).
 */
export function jobDocument(name: string, spec: AbacusJobSpec, namespace: string): Record<string, unknown> {
  const kafka = spec.source.kafka;
  const cassandra = spec.sink.cassandra;
  // Both lists pass through as given, so the worker's own parser judges the combination.
  const facets = dropUndefined({ include: spec.facets.include, exclude: spec.facets.exclude });
  return {
    name,
    namespace,
    level: spec.level,
    keyGroups: spec.keyGroups,
    granularities: spec.granularities,
    facets,
    window: spec.window,
    maxEventBytes: spec.maxEventBytes,
    dedup: { retention: spec.dedup.retention },
    uniques: { retention: spec.uniques.retention },
    // A memory budget sizes the cache and RocksDB's memory itself (the worker refuses both set).
    ...(spec.memoryBudget === undefined
      ? { state: { engine: spec.engine, cacheEntries: spec.stateCacheEntries }, rocksdb: { ...spec.rocksdb } }
      : { state: { engine: spec.engine, memoryBudget: spec.memoryBudget }, rocksdb: { blockSize: spec.rocksdb.blockSize, maxOpenFiles: spec.rocksdb.maxOpenFiles } }),
    metrics: { port: spec.metrics.port },
    kafka: dropUndefined({
      brokers: kafka.brokers,
      topic: kafka.topic,
      keyedTopic: kafka.keyedTopic,
      deadLetterTopic: kafka.deadLetterTopic,
      inputKeyed: kafka.inputKeyed,
      bundles: kafka.bundles,
      clientId: kafka.clientId,
      tls: kafka.tls.enabled,
      saslMechanism: kafka.sasl?.mechanism,
    }),
    cassandra: {
      contactPoints: cassandra.contactPoints,
      localDataCenter: cassandra.localDataCenter,
      keyspace: cassandra.keyspace,
      table: cassandra.table,
      consistency: cassandra.consistency,
      mode: cassandra.mode,
      createSchema: cassandra.createSchema,
      replicationFactor: cassandra.replicationFactor,
    },
    ...(spec.checkpoints === undefined ? {} : { checkpoints: checkpointsDocument(name, namespace, spec.checkpoints) }),
  };
}

/** The job's checkpoint root is `<s3.prefix><namespace>/<job>/`: jobs of the same name in two namespaces never share one. */
export function checkpointRoot(name: string, namespace: string, s3: NonNullable<AbacusJobSpec['checkpoints']>['s3']): string {
  return `${s3.prefix}${s3.prefix === '' || s3.prefix.endsWith('/') ? '' : '/'}${namespace}/${name}/`;
}

function checkpointsDocument(name: string, namespace: string, cp: NonNullable<AbacusJobSpec['checkpoints']>): Record<string, unknown> {
  const s3 = cp.s3;
  const prefix = checkpointRoot(name, namespace, s3);
  return {
    interval: cp.interval,
    retention: cp.retention,
    s3: dropUndefined({ endpoint: s3.endpoint, region: s3.region, bucket: s3.bucket, prefix, forcePathStyle: s3.forcePathStyle }),
  };
}

export function jobYaml(job: AbacusJob): string {
  return `# Written by abacus-operator from AbacusJob ${job.metadata.namespace}/${job.metadata.name}; edits are overwritten.\n` +
    stringify(jobDocument(job.metadata.name, job.spec, job.metadata.namespace), { lineWidth: 0 });
}

/** Resolves the document exactly as the worker will; throws the worker's ConfigError if it would refuse it. */
export function resolvedConfig(job: AbacusJob): JobConfig {
  return resolveJobConfig(jobDocument(job.metadata.name, job.spec, job.metadata.namespace));
}

export function shortHash(text: string): string {
  return createHash('sha256').update(text).digest('hex').slice(0, 16);
}

/** Hash of what state means; a change makes existing RocksDB state and checkpoints unusable. */
export function stateFingerprintHash(job: AbacusJob): string {
  return shortHash(JSON.stringify(stateFingerprint(resolvedConfig(job))));
}

export function desiredConfigMap(job: AbacusJob): V1ConfigMap {
  return {
    apiVersion: 'v1',
    kind: 'ConfigMap',
    metadata: childMeta(job, names.config(job.metadata.name), 'config'),
    data: { [CONFIG_KEY]: jobYaml(job) },
  };
}

function dropUndefined(o: Record<string, unknown>): Record<string, unknown> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined));
}
