import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { parse as parseYaml } from 'yaml';
import { parseDuration, parseSize } from './duration';
import { AbacusError, ConfigError } from './errors';
import { MAX_KEY_GROUPS } from './keygroups';
import { parseMemoryBudget, planMemory, SINK_MEMORY, type MemoryPlan } from './memory-budget';
import type { Granularity } from './counter-id';

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
  /**
   * The router writes the events of a key group from a chunk of input as one keyed-topic
   * record (worker/io/routed-bundle.ts). False: one record per event, which workers of
   * versions before bundles can read (set it while upgrading from one: docs/operator.md, "Upgrading a running job").
   */
  readonly bundles: boolean;
  readonly clientId: string;
  /** The router's consumer group. */
  readonly routeGroup: string;
  /** Prefix of the count consumers' groups (`<prefix>-<ordinal>-<random>`). */
  readonly countGroupPrefix: string;
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

/** Where and how often a job checkpoints (docs/config.md, `checkpoints:`). */
export interface CheckpointConfig {
  /** Time between periodic checkpoints. */
  readonly intervalMs: number;
  /** Complete checkpoints each worker keeps. */
  readonly retention: number;
  /** S3 (or S3-compatible) location of the job's checkpoint root; credentials from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY. */
  readonly s3?: CheckpointS3Config;
  /** A local directory as the checkpoint root instead of S3 (local mode, tests). */
  readonly dir?: string;
}

export interface CheckpointS3Config {
  /** Omit for AWS; e.g. `http://minio:9000` for an S3-compatible store. */
  readonly endpoint?: string;
  readonly region: string;
  readonly bucket: string;
  /** The job's root inside the bucket: '' or ending with '/'. Default `abacus/<job name>/`. */
  readonly prefix: string;
  readonly forcePathStyle: boolean;
}

export interface JobConfig {
  readonly name: string;
  /**
   * The Kubernetes namespace of the AbacusJob (set by the operator). With the name it makes
   * the job's identity on shared servers: see jobIdentity.
   */
  readonly namespace?: string;
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
  /**
   * Which counting engine keeps the state (docs/adr/0007-hot-path.md): `records` (default) —
   * string records in RocksDB behind a cache; `native` — the Rust kernel's fixed-width tables in
   * memory, persisted as per-key-group segments (experimental: no expiry or memory budget
   * yet; docs/config.md, "Counting engine").
   */
  readonly engine: StateEngine;
  /**
   * The memory budget's division (common/memory-budget.ts), when `state.memoryBudget` is set:
   * the cache is then bounded by its estimated bytes, and the Bloom filter and RocksDB's
   * block cache and write buffers are sized from it too.
   */
  readonly memory?: MemoryPlan;
  readonly rocksdb: RocksDbTuning;
  readonly metricsPort: number;
  readonly kafka?: KafkaConfig;
  readonly cassandra?: CassandraConfig;
  readonly checkpoints?: CheckpointConfig;
}

/** Settings that decide what state means: a data dir written with other values cannot be reused. */
export function stateFingerprint(config: JobConfig): Record<string, unknown> {
  return {
    level: config.level,
    keyGroups: config.keyGroups,
    granularities: [...config.granularities],
    facets: config.facets,
    maxEventBytes: config.maxEventBytes,
    // Only when it is not the default, so that state written before engines existed still matches.
    ...(config.engine === 'records' ? {} : { engine: config.engine }),
  };
}

/**
 * The refusal of state written with other settings (`stored` is the fingerprint text kept in
 * the state), or undefined when the settings agree. One definition for the check before a
 * local run writes anything and for the check when a task opens its state.
 */
export function fingerprintMismatch(stored: string, config: JobConfig, dataDir: string): AbacusError | undefined {
  const wanted = JSON.stringify(stateFingerprint(config));
  if (stored === wanted) return undefined;
  const before = JSON.parse(stored) as Record<string, unknown>;
  const now = JSON.parse(wanted) as Record<string, unknown>;
  const diffs = Object.keys(now)
    .filter((k) => JSON.stringify(before[k]) !== JSON.stringify(now[k]))
    .map((k) => `${k} was ${JSON.stringify(before[k])}, now ${JSON.stringify(now[k])}`);
  return new AbacusError('StateMismatch', `the data dir ${dataDir} holds state written with other settings (${diffs.join('; ')})`, 'run with the original settings, or start over with a fresh --data-dir');
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
  checkpointInterval: '5m',
  checkpointRetention: 3,
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
    let doc: unknown;
    try {
      doc = parseYaml(text);
    } catch (err) {
      throw new ConfigError('--config', `${path} is not valid YAML: ${(err as Error).message.split('\n')[0]}`, 'fix the YAML at that line (see docs/config.md for the format)');
    }
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
  'name', 'namespace', 'level', 'keyGroups', 'granularities', 'facets', 'window', 'maxEventBytes', 'dedup', 'uniques',
  'state', 'rocksdb', 'metrics', 'kafka', 'cassandra', 'checkpoints',
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
  const state = section(raw.state, 'state', ['cacheEntries', 'memoryBudget', 'engine']);
  const rocks = section(raw.rocksdb, 'rocksdb', ['blockCacheSize', 'writeBufferSize', 'blockSize', 'maxOpenFiles']);
  const memory = resolveMemory(state, rocks);
  const metrics = section(raw.metrics, 'metrics', ['port']);
  const name = nonEmptyString(raw.name ?? DEFAULTS.name, 'name');
  const namespace = raw.namespace === undefined ? undefined : dnsLabel(raw.namespace, 'namespace');
  const identity = jobIdentity(name, namespace);
  return {
    name,
    ...(namespace === undefined ? {} : { namespace }),
    level,
    keyGroups,
    granularities,
    facets,
    windowMs: timerDuration(raw.window ?? DEFAULTS.window, 'window'),
    maxEventBytes: positiveSize(raw.maxEventBytes ?? DEFAULTS.maxEventBytes, 'maxEventBytes'),
    dedupRetentionMs: positiveDuration(dedup.retention ?? DEFAULTS.dedupRetention, 'dedup.retention'),
    uniquesRetentionMs: positiveDuration(uniques.retention ?? DEFAULTS.uniquesRetention, 'uniques.retention'),
    // With a budget the cache is bounded by bytes, not by a count of records.
    stateCacheEntries: memory !== undefined ? 1e9 : integer(state.cacheEntries ?? DEFAULTS.stateCacheEntries, 'state.cacheEntries', 1000, 1e9),
    ...(memory === undefined ? {} : { memory }),
    engine: resolveEngine(state.engine),
    rocksdb: {
      blockCacheSize: memory?.blockCacheSize ?? positiveSize(rocks.blockCacheSize ?? DEFAULTS.blockCacheSize, 'rocksdb.blockCacheSize'),
      writeBufferSize: memory?.writeBufferSize ?? positiveSize(rocks.writeBufferSize ?? DEFAULTS.writeBufferSize, 'rocksdb.writeBufferSize'),
      blockSize: positiveSize(rocks.blockSize ?? DEFAULTS.blockSize, 'rocksdb.blockSize'),
      maxOpenFiles: integer(rocks.maxOpenFiles ?? DEFAULTS.maxOpenFiles, 'rocksdb.maxOpenFiles', -1, 1e6),
    },
    metricsPort: integer(metrics.port ?? DEFAULTS.metricsPort, 'metrics.port', 0, 65535),
    kafka: raw.kafka === undefined ? undefined : resolveKafka(section(raw.kafka, 'kafka', ['brokers', 'topic', 'keyedTopic', 'deadLetterTopic', 'inputKeyed', 'bundles', 'clientId', 'tls', 'saslMechanism']), identity),
    cassandra: raw.cassandra === undefined ? undefined : resolveCassandra(section(raw.cassandra, 'cassandra', ['contactPoints', 'localDataCenter', 'keyspace', 'table', 'consistency', 'mode', 'createSchema', 'replicationFactor']), identity),
    checkpoints: raw.checkpoints === undefined ? undefined : resolveCheckpoints(section(raw.checkpoints, 'checkpoints', ['interval', 'retention', 's3', 'dir']), nonEmptyString(raw.name ?? DEFAULTS.name, 'name')),
  };
}

export type StateEngine = 'records' | 'native';

function resolveEngine(raw: unknown): StateEngine {
  return oneOf(raw ?? 'records', ['records', 'native'] as const, 'state.engine');
}

/** RocksDB settings of local mode's embedded sink: under a memory budget, the small share the reserve holds for it. */
export function sinkTuning(config: JobConfig): RocksDbTuning {
  return config.memory === undefined ? config.rocksdb : { ...config.rocksdb, ...SINK_MEMORY };
}

/** The memory budget, which replaces the settings it sizes: setting both is refused rather than one silently ignored. */
function resolveMemory(state: Raw, rocks: Raw): MemoryPlan | undefined {
  if (state.memoryBudget === undefined) return undefined;
  const budget = parseMemoryBudget(state.memoryBudget, 'state.memoryBudget');
  const sized = [
    ['state.cacheEntries', state.cacheEntries],
    ['rocksdb.blockCacheSize', rocks.blockCacheSize],
    ['rocksdb.writeBufferSize', rocks.writeBufferSize],
  ].filter(([, v]) => v !== undefined);
  if (sized.length > 0) {
    const names = sized.map(([name]) => name as string);
    throw new ConfigError('state.memoryBudget', `is set together with ${names.join(', ')}, which the budget sizes`, `remove ${names.join(' and ')} (the budget divides itself among them), or remove state.memoryBudget`);
  }
  return planMemory(budget);
}

function resolveCheckpoints(raw: Raw, jobName: string): CheckpointConfig {
  const intervalMs = timerDuration(raw.interval ?? DEFAULTS.checkpointInterval, 'checkpoints.interval');
  const retention = integer(raw.retention ?? DEFAULTS.checkpointRetention, 'checkpoints.retention', 1, 1000);
  if ((raw.s3 === undefined) === (raw.dir === undefined)) {
    throw new ConfigError('checkpoints', raw.s3 === undefined ? 'names no store' : 'names both s3 and dir', 'set either checkpoints.s3 (bucket, region, …) or checkpoints.dir (a local directory)');
  }
  if (raw.dir !== undefined) return { intervalMs, retention, dir: nonEmptyString(raw.dir, 'checkpoints.dir') };
  const s3 = section(raw.s3, 'checkpoints.s3', ['endpoint', 'region', 'bucket', 'prefix', 'forcePathStyle']);
  const endpoint = s3.endpoint === undefined ? undefined : nonEmptyString(s3.endpoint, 'checkpoints.s3.endpoint');
  if (endpoint !== undefined && !/^https?:\/\/.+/.test(endpoint)) throw new ConfigError('checkpoints.s3.endpoint', `"${endpoint}" is not an http(s) URL`, 'write it like http://minio:9000, or omit it for AWS');
  const bucket = nonEmptyString(s3.bucket, 'checkpoints.s3.bucket');
  if (!/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/.test(bucket)) throw new ConfigError('checkpoints.s3.bucket', `"${bucket}" is not a valid bucket name`, 'use 3-63 lowercase letters, digits, dots and hyphens');
  let prefix = s3.prefix === undefined ? `abacus/${jobName}/` : typeof s3.prefix === 'string' ? s3.prefix : nonEmptyString(s3.prefix, 'checkpoints.s3.prefix');
  if (prefix.startsWith('/')) throw new ConfigError('checkpoints.s3.prefix', `"${prefix}" starts with /`, 'write the key prefix without a leading slash, e.g. abacus/my-job/');
  if (prefix !== '' && !prefix.endsWith('/')) prefix += '/';
  return {
    intervalMs,
    retention,
    s3: {
      ...(endpoint === undefined ? {} : { endpoint }),
      region: nonEmptyString(s3.region ?? 'us-east-1', 'checkpoints.s3.region'),
      bucket,
      prefix,
      forcePathStyle: bool(s3.forcePathStyle ?? true, 'checkpoints.s3.forcePathStyle'),
    },
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
  const include = facets.include === undefined ? undefined : noDuplicates(stringList(facets.include, 'facets.include'), 'facets.include');
  const exclude = facets.exclude === undefined ? [] : noDuplicates(stringList(facets.exclude, 'facets.exclude'), 'facets.exclude');
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

/**
 * What names a job's objects on servers that several jobs share (Kafka topics and consumer
 * groups, the Cassandra table): the name, qualified by the namespace when there is one, so
 * that jobs of the same name in two namespaces never share a topic, a group or a table. A
 * namespace (a DNS label) holds no dot, so `<namespace>.<name>` is unambiguous.
 */
export function jobIdentity(name: string, namespace?: string): string {
  return namespace === undefined ? name : `${namespace}.${name}`;
}

/** Kafka's rule for topic and group names (the broker refuses others, with a less clear message). */
const KAFKA_NAME = /^[a-zA-Z0-9._-]{1,249}$/;

function kafkaName(value: unknown, field: string): string {
  const text = nonEmptyString(value, field);
  if (!KAFKA_NAME.test(text) || text === '.' || text === '..') {
    throw new ConfigError(field, `${JSON.stringify(text)} is not a valid Kafka name (letters, digits, '.', '_' and '-', at most 249)`, `name it explicitly with ${field}, or give the job a name made of those characters`);
  }
  return text;
}

function dnsLabel(value: unknown, field: string): string {
  const text = nonEmptyString(value, field);
  if (!/^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/.test(text)) {
    throw new ConfigError(field, `${JSON.stringify(text)} is not a Kubernetes namespace name`, 'use lower-case letters, digits and -, at most 63');
  }
  return text;
}

function resolveKafka(raw: Raw, jobName: string): KafkaConfig {
  const brokers = stringList(raw.brokers, 'kafka.brokers');
  if (brokers.length === 0) throw new ConfigError('kafka.brokers', 'is empty', 'list at least one broker as host:port');
  const sasl = raw.saslMechanism === undefined ? undefined : oneOf(raw.saslMechanism, ['plain', 'scram-sha-256', 'scram-sha-512'] as const, 'kafka.saslMechanism');
  const topic = nonEmptyString(raw.topic, 'kafka.topic');
  const inputKeyed = bool(raw.inputKeyed ?? false, 'kafka.inputKeyed');
  // An input that is already keyed is what the count stage reads: there is no separate keyed topic.
  const keyedTopic = kafkaName(raw.keyedTopic ?? (inputKeyed ? topic : `${jobName}-keyed`), 'kafka.keyedTopic');
  if (inputKeyed && keyedTopic !== topic) {
    throw new ConfigError(
      'kafka.keyedTopic',
      `is ${JSON.stringify(keyedTopic)} but kafka.inputKeyed says the input topic ${JSON.stringify(topic)} is already keyed, so nothing would fill it`,
      'leave kafka.keyedTopic out (with inputKeyed the input topic is the keyed topic), or set inputKeyed: false so the router fills it',
    );
  }
  return {
    brokers,
    topic,
    keyedTopic,
    deadLetterTopic: kafkaName(raw.deadLetterTopic ?? `${jobName}-dead-letter`, 'kafka.deadLetterTopic'),
    inputKeyed,
    bundles: bool(raw.bundles ?? true, 'kafka.bundles'),
    clientId: nonEmptyString(raw.clientId ?? `abacus-${jobName}`, 'kafka.clientId'),
    routeGroup: kafkaName(`${jobName}-route`, 'name'),
    countGroupPrefix: kafkaName(`${jobName}-count`, 'name'),
    tls: bool(raw.tls ?? false, 'kafka.tls'),
    ...(sasl === undefined ? {} : { saslMechanism: sasl }),
  };
}

/**
 * A job's own table unless one is named, so that jobs sharing a keyspace never share a table.
 * `identity` (jobIdentity) already a short lower-case CQL identifier is kept as it is, plus
 * `_counts`; any other is made one (lower case, other characters as `_`, at most 28) and
 * followed by 12 hex digits of its SHA-256, since that rewriting and the 48-character limit
 * of table names would otherwise map two jobs to one table (`a.b` and `a-b`, or two long
 * names with a common start).
 */
export function defaultTableName(identity: string): string {
  if (/^[a-z][a-z0-9_]{0,40}$/.test(identity)) return `${identity}_counts`;
  const base = identity.toLowerCase().replace(/[^a-z0-9_]/g, '_').replace(/^[^a-z]+/, '').slice(0, 28);
  const hash = createHash('sha256').update(identity).digest('hex').slice(0, 12);
  return `${base === '' ? 'abacus' : base}_${hash}_counts`;
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

/** A list that names a set: a name given twice is refused rather than silently folded (it is most likely a typo for another name). */
function noDuplicates(list: string[], field: string): string[] {
  const seen = new Set<string>();
  for (const name of list) {
    if (seen.has(name)) throw new ConfigError(field, `lists "${name}" twice`, `list each field once in ${field}`);
    seen.add(name);
  }
  return list;
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

/** Node's timers hold at most 2^31 - 1 ms (24.8 days); a longer one would fire at once. */
const MAX_TIMER_MS = 2 ** 31 - 1;

/** A period that drives a timer (window, checkpoint interval). */
function timerDuration(value: unknown, field: string): number {
  const ms = positiveDuration(value, field);
  if (ms > MAX_TIMER_MS) throw new ConfigError(field, `${JSON.stringify(value)} is longer than 24 days`, `set ${field} to at most 24d`);
  return ms;
}

function positiveSize(value: unknown, field: string): number {
  const bytes = parseSize(value as string | number, field);
  if (bytes <= 0) throw new ConfigError(field, 'must be greater than zero', `set ${field} to e.g. 64Mi`);
  return bytes;
}
