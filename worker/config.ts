import { readFileSync } from 'node:fs';
import { parse as parseYaml } from 'yaml';
import { parseDuration, parseSize } from '../common/duration';
import { ConfigError } from '../common/errors';
import { MAX_KEY_GROUPS } from '../common/keygroups';
import type { Granularity } from './io/types';

/**
 * The job configuration: parsed once at the edge (YAML file + command-line overrides) into a
 * typed, resolved object. Every error names the field and the fix. The same YAML format is
 * what the operator writes into the job's ConfigMap, so this file is the one definition of it;
 * docs/config.md documents every field.
 */
export type Level = 'account' | 'customer';

export const ALL_GRANULARITIES: readonly Granularity[] = ['hour', 'day', 'month'];

export interface FacetSelection {
  /** When set, only these top-level fields are facets. */
  readonly include?: readonly string[];
  /** Otherwise every top-level scalar field except these (and the reserved ones). */
  readonly exclude: readonly string[];
}

export interface RocksDbTuning {
  readonly blockCacheSize: number;
  readonly writeBufferSize: number;
  readonly blockSize: number;
  readonly maxOpenFiles: number;
}

export interface KafkaConfig {
  readonly brokers: readonly string[];
  /** Input topic, any partitioning. */
  readonly topic: string;
  /** The job's keyed topic: one partition per key group. */
  readonly keyedTopic: string;
  /** Invalid records go here, with the reason in a header. */
  readonly deadLetterTopic: string;
  /** True when the input topic is already keyed by key group (routing is then skipped). */
  readonly inputKeyed: boolean;
  readonly clientId: string;
  readonly tls: boolean;
  /** SASL credentials come from the environment (ABACUS_KAFKA_USERNAME / ABACUS_KAFKA_PASSWORD), filled from a Secret. */
  readonly saslMechanism?: 'plain' | 'scram-sha-256' | 'scram-sha-512';
}

export interface CassandraConfig {
  readonly contactPoints: readonly string[];
  readonly localDataCenter: string;
  readonly keyspace: string;
  readonly table: string;
  readonly consistency: 'ONE' | 'LOCAL_ONE' | 'QUORUM' | 'LOCAL_QUORUM' | 'ALL';
  /** `final` (default) writes totals; `delta` adds increments to a counter table for legacy readers. */
  readonly mode: 'final' | 'delta';
  readonly createSchema: boolean;
  readonly replicationFactor: number;
}

export interface JobConfig {
  readonly name: string;
  readonly level: Level;
  readonly keyGroups: number;
  readonly granularities: readonly Granularity[];
  readonly facets: FacetSelection;
  /** Processing-time window: how often accumulated changes are flushed. Never changes a count. */
  readonly windowMs: number;
  readonly maxEventBytes: number;
  readonly dedupRetentionMs: number;
  readonly uniquesRetentionMs: number;
  /** How many state records the in-memory cache keeps across windows. */
  readonly stateCacheEntries: number;
  readonly rocksdb: RocksDbTuning;
  readonly metricsPort: number;
  readonly kafka?: KafkaConfig;
  readonly cassandra?: CassandraConfig;
}

/** Settings that decide what state means: a data dir written with other values cannot be reused. */
export function stateFingerprint(config: JobConfig): Record<string, unknown> {
  return {
    level: config.level,
    keyGroups: config.keyGroups,
    granularities: [...config.granularities],
    facets: config.facets,
    maxEventBytes: config.maxEventBytes,
  };
}

export const DEFAULTS = {
  name: 'abacus',
  level: 'account' as Level,
  keyGroups: 128,
  window: '1s',
  maxEventBytes: '1Mi',
  dedupRetention: '7d',
  uniquesRetention: '7d',
  stateCacheEntries: 2_000_000,
  blockCacheSize: '256Mi',
  writeBufferSize: '64Mi',
  blockSize: '16Ki',
  maxOpenFiles: 1000,
  metricsPort: 9400,
};

type Raw = Record<string, unknown>;

/** Reads a YAML job file; `overrides` (from flags) win over the file. */
export function loadJobConfig(path: string | undefined, overrides: Raw = {}): JobConfig {
  let raw: Raw = {};
  if (path !== undefined) {
    let text: string;
    try {
      text = readFileSync(path, 'utf8');
    } catch (err) {
      throw new ConfigError('--config', `cannot read ${path}: ${(err as Error).message}`, 'give the path of an existing job YAML file');
    }
    const doc: unknown = parseYaml(text);
    if (doc !== null && doc !== undefined && (typeof doc !== 'object' || Array.isArray(doc))) {
      throw new ConfigError('--config', `${path} is not a YAML mapping`, 'write the job as `key: value` lines (see docs/config.md)');
    }
    raw = (doc ?? {}) as Raw;
  }
  return resolveJobConfig(deepMerge(raw, overrides));
}

function deepMerge(base: Raw, over: Raw): Raw {
  const out: Raw = { ...base };
  for (const [k, v] of Object.entries(over)) {
    if (v === undefined) continue;
    const b = out[k];
    out[k] = isRecord(b) && isRecord(v) ? deepMerge(b, v) : v;
  }
  return out;
}

function isRecord(v: unknown): v is Raw {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

const KNOWN_TOP_LEVEL = new Set([
  'name', 'level', 'keyGroups', 'granularities', 'facets', 'window', 'maxEventBytes', 'dedup', 'uniques',
  'state', 'rocksdb', 'metrics', 'kafka', 'cassandra',
]);

/** Resolves a raw (already merged) document into a JobConfig. Pure. */
export function resolveJobConfig(raw: Raw): JobConfig {
  for (const key of Object.keys(raw)) {
    if (!KNOWN_TOP_LEVEL.has(key)) {
      throw new ConfigError(key, 'is not a known setting', `remove it or check its spelling; known settings: ${[...KNOWN_TOP_LEVEL].join(', ')}`);
    }
  }
  const level = oneOf(raw.level ?? DEFAULTS.level, ['account', 'customer'] as const, 'level');
  const keyGroups = integer(raw.keyGroups ?? DEFAULTS.keyGroups, 'keyGroups', 1, MAX_KEY_GROUPS);
  const granularities = resolveGranularities(raw.granularities);
  const facets = resolveFacets(raw.facets);
  const dedup = section(raw.dedup, 'dedup', ['retention']);
  const uniques = section(raw.uniques, 'uniques', ['retention']);
  const state = section(raw.state, 'state', ['cacheEntries']);
  const rocks = section(raw.rocksdb, 'rocksdb', ['blockCacheSize', 'writeBufferSize', 'blockSize', 'maxOpenFiles']);
  const metrics = section(raw.metrics, 'metrics', ['port']);
  return {
    name: nonEmptyString(raw.name ?? DEFAULTS.name, 'name'),
    level,
    keyGroups,
    granularities,
    facets,
    windowMs: positiveDuration(raw.window ?? DEFAULTS.window, 'window'),
    maxEventBytes: positiveSize(raw.maxEventBytes ?? DEFAULTS.maxEventBytes, 'maxEventBytes'),
    dedupRetentionMs: positiveDuration(dedup.retention ?? DEFAULTS.dedupRetention, 'dedup.retention'),
    uniquesRetentionMs: positiveDuration(uniques.retention ?? DEFAULTS.uniquesRetention, 'uniques.retention'),
    stateCacheEntries: integer(state.cacheEntries ?? DEFAULTS.stateCacheEntries, 'state.cacheEntries', 1000, 1e9),
    rocksdb: {
      blockCacheSize: positiveSize(rocks.blockCacheSize ?? DEFAULTS.blockCacheSize, 'rocksdb.blockCacheSize'),
      writeBufferSize: positiveSize(rocks.writeBufferSize ?? DEFAULTS.writeBufferSize, 'rocksdb.writeBufferSize'),
      blockSize: positiveSize(rocks.blockSize ?? DEFAULTS.blockSize, 'rocksdb.blockSize'),
      maxOpenFiles: integer(rocks.maxOpenFiles ?? DEFAULTS.maxOpenFiles, 'rocksdb.maxOpenFiles', -1, 1e6),
    },
    metricsPort: integer(metrics.port ?? DEFAULTS.metricsPort, 'metrics.port', 0, 65535),
    kafka: raw.kafka === undefined ? undefined : resolveKafka(section(raw.kafka, 'kafka', ['brokers', 'topic', 'keyedTopic', 'deadLetterTopic', 'inputKeyed', 'clientId', 'tls', 'saslMechanism']), nonEmptyString(raw.name ?? DEFAULTS.name, 'name')),
    cassandra: raw.cassandra === undefined ? undefined : resolveCassandra(section(raw.cassandra, 'cassandra', ['contactPoints', 'localDataCenter', 'keyspace', 'table', 'consistency', 'mode', 'createSchema', 'replicationFactor']), nonEmptyString(raw.name ?? DEFAULTS.name, 'name')),
  };
}

function resolveGranularities(value: unknown): Granularity[] {
  if (value === undefined) return [...ALL_GRANULARITIES];
  if (!Array.isArray(value) || value.length === 0) {
    throw new ConfigError('granularities', 'must be a non-empty list', 'list some of hour, day, month, e.g. [hour, day]');
  }
  const chosen = new Set(value.map((g, i) => oneOf(g, ALL_GRANULARITIES, `granularities[${i}]`)));
  return ALL_GRANULARITIES.filter((g) => chosen.has(g));
}

const RESERVED_FIELDS = ['company_id', 'statistic_id', 'customer_id', 'timestamp', 'event_id'];

function resolveFacets(value: unknown): FacetSelection {
  const facets = section(value, 'facets', ['include', 'exclude']);
  const include = facets.include === undefined ? undefined : stringList(facets.include, 'facets.include');
  const exclude = facets.exclude === undefined ? [] : stringList(facets.exclude, 'facets.exclude');
  if (include !== undefined && facets.exclude !== undefined) {
    throw new ConfigError('facets', 'sets both include and exclude', 'use include (only these fields) or exclude (all fields but these), not both');
  }
  for (const name of include ?? []) {
    if (RESERVED_FIELDS.includes(name)) {
      throw new ConfigError('facets.include', `"${name}" is a reserved field and is never a facet`, `remove "${name}" from the list`);
    }
  }
  return include === undefined ? { exclude } : { include, exclude: [] };
}

function resolveKafka(raw: Raw, jobName: string): KafkaConfig {
  const brokers = stringList(raw.brokers, 'kafka.brokers');
  if (brokers.length === 0) throw new ConfigError('kafka.brokers', 'is empty', 'list at least one broker as host:port');
  const sasl = raw.saslMechanism === undefined ? undefined : oneOf(raw.saslMechanism, ['plain', 'scram-sha-256', 'scram-sha-512'] as const, 'kafka.saslMechanism');
  return {
    brokers,
    topic: nonEmptyString(raw.topic, 'kafka.topic'),
    keyedTopic: nonEmptyString(raw.keyedTopic ?? `${jobName}-keyed`, 'kafka.keyedTopic'),
    deadLetterTopic: nonEmptyString(raw.deadLetterTopic ?? `${jobName}-dead-letter`, 'kafka.deadLetterTopic'),
    inputKeyed: bool(raw.inputKeyed ?? false, 'kafka.inputKeyed'),
    clientId: nonEmptyString(raw.clientId ?? `abacus-${jobName}`, 'kafka.clientId'),
    tls: bool(raw.tls ?? false, 'kafka.tls'),
    ...(sasl === undefined ? {} : { saslMechanism: sasl }),
  };
}

/**
 * A job's own table unless one is named, so that jobs sharing a keyspace never share a table:
 * the job name made a CQL identifier, plus `_counts`.
 */
export function defaultTableName(job: string): string {
  const base = job.toLowerCase().replace(/[^a-z0-9_]/g, '_').replace(/^[^a-z]+/, '');
  return `${(base === '' ? 'abacus' : base).slice(0, 40)}_counts`;
}

function resolveCassandra(raw: Raw, jobName: string): CassandraConfig {
  const contactPoints = stringList(raw.contactPoints, 'cassandra.contactPoints');
  if (contactPoints.length === 0) throw new ConfigError('cassandra.contactPoints', 'is empty', 'list at least one host:port');
  return {
    contactPoints,
    localDataCenter: nonEmptyString(raw.localDataCenter ?? 'datacenter1', 'cassandra.localDataCenter'),
    keyspace: identifier(raw.keyspace ?? 'abacus', 'cassandra.keyspace'),
    table: identifier(raw.table ?? defaultTableName(jobName), 'cassandra.table'),
    consistency: oneOf(raw.consistency ?? 'LOCAL_QUORUM', ['ONE', 'LOCAL_ONE', 'QUORUM', 'LOCAL_QUORUM', 'ALL'] as const, 'cassandra.consistency'),
    mode: oneOf(raw.mode ?? 'final', ['final', 'delta'] as const, 'cassandra.mode'),
    createSchema: bool(raw.createSchema ?? false, 'cassandra.createSchema'),
    replicationFactor: integer(raw.replicationFactor ?? 1, 'cassandra.replicationFactor', 1, 32),
  };
}

// --- small typed readers; each names its field in the error -------------------------------

function section(value: unknown, field: string, known: readonly string[]): Raw {
  if (value === undefined || value === null) return {};
  if (!isRecord(value)) throw new ConfigError(field, 'must be a mapping', `write it as nested \`key: value\` lines under ${field}:`);
  for (const key of Object.keys(value)) {
    if (!known.includes(key)) throw new ConfigError(`${field}.${key}`, 'is not a known setting', `remove it or check its spelling; known settings under ${field}: ${known.join(', ')}`);
  }
  return value;
}

function nonEmptyString(value: unknown, field: string): string {
  if (typeof value !== 'string' || value.trim() === '') {
    throw new ConfigError(field, value === undefined ? 'is missing' : `must be a non-empty string, got ${JSON.stringify(value)}`, `set ${field} to a non-empty string`);
  }
  return value;
}

function identifier(value: unknown, field: string): string {
  const s = nonEmptyString(value, field);
  if (!/^[a-zA-Z][a-zA-Z0-9_]{0,47}$/.test(s)) {
    throw new ConfigError(field, `"${s}" is not a valid CQL identifier`, 'use letters, digits and underscores, starting with a letter (at most 48 characters)');
  }
  return s;
}

function stringList(value: unknown, field: string): string[] {
  if (!Array.isArray(value) || value.some((v) => typeof v !== 'string' || v === '')) {
    throw new ConfigError(field, 'must be a list of non-empty strings', `write ${field}: [a, b]`);
  }
  return value as string[];
}

function oneOf<T extends string>(value: unknown, allowed: readonly T[], field: string): T {
  if (typeof value !== 'string' || !(allowed as readonly string[]).includes(value)) {
    throw new ConfigError(field, `${JSON.stringify(value)} is not allowed`, `use one of: ${allowed.join(', ')}`);
  }
  return value as T;
}

function integer(value: unknown, field: string, min: number, max: number): number {
  const n = typeof value === 'string' && /^-?[0-9]+$/.test(value) ? Number(value) : value;
  if (typeof n !== 'number' || !Number.isInteger(n) || n < min || n > max) {
    throw new ConfigError(field, `${JSON.stringify(value)} is not an integer in ${min}..${max}`, `set ${field} to an integer between ${min} and ${max}`);
  }
  return n;
}

function bool(value: unknown, field: string): boolean {
  if (typeof value === 'boolean') return value;
  if (value === 'true' || value === 'false') return value === 'true';
  throw new ConfigError(field, `${JSON.stringify(value)} is not a boolean`, `set ${field} to true or false`);
}

function positiveDuration(value: unknown, field: string): number {
  const ms = parseDuration(String(value), field);
  if (ms <= 0) throw new ConfigError(field, 'must be greater than zero', `set ${field} to e.g. 1s`);
  return ms;
}

function positiveSize(value: unknown, field: string): number {
  const bytes = parseSize(value as string | number, field);
  if (bytes <= 0) throw new ConfigError(field, 'must be greater than zero', `set ${field} to e.g. 64Mi`);
  return bytes;
}
