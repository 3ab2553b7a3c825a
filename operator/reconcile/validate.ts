import { parseMemoryBudget } from '../../common/memory-budget';
import { AbacusError } from '../../common/errors';
import { parseSize } from '../../common/duration';
import type { AbacusJob } from '../api/abacusjob';
import { resolvedConfig } from '../model/config';

/**
 * Checks the CRD schema and CEL rules cannot make: the operator runs them before applying
 * anything, so an invalid spec is reported (condition + Warning event) while the objects built
 * from the last good spec keep running.
 */
export interface Problem {
  readonly field: string;
  readonly message: string;
}

export interface Validation {
  /** Block the apply. */
  readonly errors: Problem[];
  /** Reported as Warning events; the apply goes ahead. */
  readonly warnings: Problem[];
}

export const MAX_JOB_NAME = 52;

export function validateJobName(name: string): Problem[] {
  if (name.length > MAX_JOB_NAME) {
    return [{ field: 'metadata.name', message: `"${name}" is ${name.length} characters; at most ${MAX_JOB_NAME} fit the StatefulSet's pod labels` }];
  }
  return [];
}

export function validateReplicas(job: AbacusJob): Problem[] {
  const { replicas, keyGroups } = job.spec;
  if (!Number.isInteger(replicas) || replicas < 1 || replicas > keyGroups) {
    return [{ field: 'spec.replicas', message: `${replicas} is outside 1..keyGroups (${keyGroups}); every worker needs at least one key group` }];
  }
  return [];
}

/** The worker's own config parser is the judge of job.yaml: whatever it would refuse is refused here. */
export function validateWorkerConfig(job: AbacusJob): Problem[] {
  try {
    resolvedConfig(job);
    return [];
  } catch (err) {
    if (err instanceof AbacusError) {
      const field = (err as AbacusError & { field?: string }).field;
      return [{ field: field === undefined ? 'spec' : `spec (job.yaml ${field})`, message: err.message }];
    }
    return [{ field: 'spec', message: (err as Error).message }];
  }
}

function memoryBytes(q: string | number | undefined): number | undefined {
  if (q === undefined) return undefined;
  if (typeof q === 'number') return q;
  const m = /^([0-9]+)(Ki|Mi|Gi|Ti|k|M|G|T)?$/.exec(q);
  if (!m) return undefined;
  return parseSize(`${m[1]}${m[2] ?? ''}`, 'resources.limits.memory');
}

/**
 * The state's memory lives inside the container's memory limit: the memory budget when set,
 * else RocksDB's block cache and write buffers.
 */
export function validateMemory(job: AbacusJob): Problem[] {
  const mi = (b: number) => `${Math.round(b / 2 ** 20)}Mi`;
  const limit = memoryBytes(job.spec.resources?.limits?.memory);
  if (job.spec.memoryBudget !== undefined) {
    let budget: number;
    try {
      budget = parseMemoryBudget(job.spec.memoryBudget, 'memoryBudget');
    } catch {
      return []; // an unusable budget is an error of the worker config (validateWorkerConfig)
    }
    if (limit !== undefined && budget > limit) {
      return [{ field: 'spec.memoryBudget', message: `${mi(budget)} is more than resources.limits.memory (${mi(limit)}); the workers would be OOM-killed — lower memoryBudget to at most the limit, or raise the limit` }];
    }
    return [];
  }
  if (limit === undefined) return [];
  const r = job.spec.rocksdb;
  let need: number;
  try {
    need = parseSize(r.blockCacheSize, 'rocksdb.blockCacheSize') + 2 * parseSize(r.writeBufferSize, 'rocksdb.writeBufferSize');
  } catch {
    return [];
  }
  if (need >= limit) {
    return [{
      field: 'spec.resources.limits.memory',
      message: `${mi(limit)} leaves no room beside RocksDB (block cache + 2 write buffers = ${mi(need)}); the workers would be OOM-killed — raise the limit or shrink rocksdb.blockCacheSize`,
    }];
  }
  return [];
}

export function validateSecurity(job: AbacusJob): Problem[] {
  const kafka = job.spec.source.kafka;
  if (kafka.sasl?.mechanism === 'plain' && !kafka.tls.enabled) {
    return [{ field: 'spec.source.kafka.sasl', message: 'SASL/PLAIN without TLS sends the Kafka password in clear text — enable source.kafka.tls' }];
  }
  return [];
}

export function validateJob(job: AbacusJob): Validation {
  const errors = [...validateJobName(job.metadata.name), ...validateReplicas(job)];
  // The worker config check assumes a sane replica count and name; skip it when those failed.
  if (errors.length === 0) errors.push(...validateWorkerConfig(job));
  return { errors, warnings: [...validateMemory(job), ...validateSecurity(job)] };
}

export function describeProblems(problems: readonly Problem[]): string {
  return problems.map((p) => `${p.field}: ${p.message}`).join('; ');
}
