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
