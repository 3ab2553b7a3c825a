/**
 * Errors with a stable code and a recovery hint, so that a person reading a log line or a
 * Kubernetes condition knows what went wrong and what to do about it.
 */
export class AbacusError extends Error {
  constructor(
    readonly code: string,
    message: string,
    readonly fix: string,
  ) {
    super(`${message} — ${fix}`);
    this.name = 'AbacusError';
  }
}

/** A configuration value is missing or malformed; `field` is its path, e.g. `window`. */
export class ConfigError extends AbacusError {
  constructor(
    readonly field: string,
    problem: string,
    fix: string,
  ) {
    super('InvalidConfig', `${field}: ${problem}`, fix);
    this.name = 'ConfigError';
  }
}

/**
 * An error and the errors it wraps, outermost first: `cause` (kafkajs' retry wrappers, ES2022
 * causes) and `innerErrors` (cassandra-driver's NoHostAvailableError, one per host tried).
 */
export function errorChain(err: unknown): Array<Error & { code?: unknown }> {
  const out: Array<Error & { code?: unknown }> = [];
  const queue: unknown[] = [err];
  while (queue.length > 0 && out.length < 32) {
    const e = queue.shift();
    if (!(e instanceof Error) || out.includes(e)) continue;
    out.push(e);
    queue.push((e as { cause?: unknown }).cause);
    const inner = (e as { innerErrors?: unknown }).innerErrors;
    if (inner !== null && typeof inner === 'object') queue.push(...(Object.values(inner) as unknown[]));
  }
  return out;
}
