import { ConfigError } from './errors';

/**
 * Durations are written like `1ms`, `500ms`, `2s`, `5m`, `1h`, `7d` (one number, one
 * unit). Sizes like `64Mi`, `1Gi`, `512Ki`, `1000` (bytes) or `10MB`.
 */
const DURATION_UNITS_MS: Readonly<Record<string, number>> = {
  ms: 1,
  s: 1000,
  m: 60_000,
  h: 3_600_000,
  d: 86_400_000,
};

export const DURATION_PATTERN = '^[0-9]+(\\.[0-9]+)?(ms|s|m|h|d)$';
export const SIZE_PATTERN = '^[0-9]+(Ki|Mi|Gi|Ti|KB|MB|GB|TB|k|K|M|G|T)?$';

/** Parses a duration to milliseconds; `field` names the setting in the error message. */
export function parseDuration(text: string, field: string): number {
  const match = /^([0-9]+(?:\.[0-9]+)?)(ms|s|m|h|d)$/.exec(text.trim());
  if (!match) {
    throw new ConfigError(field, `"${text}" is not a duration`, 'write a number and a unit, e.g. 500ms, 2s, 5m, 1h or 7d');
  }
  const ms = Math.round(Number(match[1]) * DURATION_UNITS_MS[match[2]!]!);
  if (!Number.isSafeInteger(ms)) throw new ConfigError(field, `"${text}" is too long to be exact`, 'write a duration under 285,000 years');
  return ms;
}

const SIZE_UNITS: Readonly<Record<string, number>> = {
  '': 1,
  Ki: 1024,
  Mi: 1024 ** 2,
  Gi: 1024 ** 3,
  Ti: 1024 ** 4,
  k: 1000,
  K: 1000,
  KB: 1000,
  M: 1000 ** 2,
  MB: 1000 ** 2,
  G: 1000 ** 3,
  GB: 1000 ** 3,
  T: 1000 ** 4,
  TB: 1000 ** 4,
};

/** Parses a byte size such as `64Mi` or `1048576`. */
export function parseSize(text: string | number, field: string): number {
  if (typeof text === 'number' && Number.isSafeInteger(text) && text >= 0) return text;
  const match = /^([0-9]+)(Ki|Mi|Gi|Ti|KB|MB|GB|TB|k|K|M|G|T)?$/.exec(String(text).trim());
  if (!match) {
    throw new ConfigError(field, `"${text}" is not a size`, 'write bytes as a number, or with a unit, e.g. 64Mi or 1Gi');
  }
  const bytes = Number(match[1]) * SIZE_UNITS[match[2] ?? '']!;
  if (!Number.isSafeInteger(bytes)) throw new ConfigError(field, `"${text}" is too large to be exact`, 'write a size under 8Pi');
  return bytes;
}

/** Formats milliseconds back into the shortest exact duration text. */
export function formatDuration(ms: number): string {
  for (const unit of ['d', 'h', 'm', 's'] as const) {
    const size = DURATION_UNITS_MS[unit]!;
    if (ms >= size && ms % size === 0) return `${ms / size}${unit}`;
  }
  return `${ms}ms`;
}
