import type { Granularity } from '../io/types';

/**
 * Calendar buckets in UTC. All times here are whole seconds since the epoch: a bucket is
 * the start of the hour, day or month that contains the event's timestamp.
 */

const HOUR = 3600;
const DAY = 86_400;

/** Smallest and largest accepted event time: 1970-01-01 through the end of 9999, UTC. */
export const MIN_EVENT_SECONDS = 0;
export const MAX_EVENT_SECONDS_EXCLUSIVE = Date.UTC(10000, 0, 1) / 1000;

export function bucketStart(granularity: Granularity, seconds: number): number {
  switch (granularity) {
    case 'hour':
      return seconds - (seconds % HOUR);
    case 'day':
      return seconds - (seconds % DAY);
    case 'month': {
      const d = new Date(seconds * 1000);
      return Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), 1) / 1000;
    }
  }
}

/** The first second after the bucket that starts at `start`. */
export function bucketEnd(granularity: Granularity, start: number): number {
  switch (granularity) {
    case 'hour':
      return start + HOUR;
    case 'day':
      return start + DAY;
    case 'month': {
      const d = new Date(start * 1000);
      return Date.UTC(d.getUTCFullYear(), d.getUTCMonth() + 1, 1) / 1000;
    }
  }
}

/** `2018-12-07T22:00:00Z`: ISO-8601 UTC without fractions, as counters are written. */
export function formatBucket(seconds: number): string {
  return new Date(seconds * 1000).toISOString().replace('.000Z', 'Z');
}

/** Inverse of formatBucket, for readers of the sink. */
export function parseBucket(text: string): number {
  return Date.parse(text) / 1000;
}

/**
 * RFC 3339's date-time plus what common producers write beside it: the separator `T`, `t`
 * or a space (RFC 3339 §5.6 allows lower case and a space), the zone `Z`, `z`, `±hh:mm`,
 * `±hhmm` (Java's and Python's `%z`) or `±hh`. Extended date and time only.
 */
const ISO_DATE_TIME = /^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2})(?::(\d{2})(\.\d+)?)?(?:[Zz]|([+-])(\d{2})(?::?(\d{2}))?)$/;

/**
 * Parses an ISO-8601 date-time with a zone (see ISO_DATE_TIME) to **whole** seconds since the
 * epoch, computed from the text's integer parts only: fractional digits, however many, are
 * dropped (truncated toward the whole second, never rounded — `23:59:59.9999999Z` is still
 * 23:59:59). Offsets are whole minutes, so the result is exact. Returns NaN for anything
 * malformed, including impossible calendar values such as February 30th, hour 24 or second
 * 60, which Date.parse would silently roll over.
 */
export function parseIsoSeconds(text: string): number {
  const m = ISO_DATE_TIME.exec(text);
  if (!m) return NaN;
  const [year, month, day, hour, minute] = [m[1], m[2], m[3], m[4], m[5]].map(Number) as [number, number, number, number, number];
  const second = m[6] === undefined ? 0 : Number(m[6]);
  if (month < 1 || month > 12 || hour > 23 || minute > 59 || second > 59) return NaN;
  const daysInMonth = new Date(Date.UTC(2000, month, 0)).getUTCDate() - (month === 2 && !isLeapYear(year) ? 1 : 0);
  if (day < 1 || day > daysInMonth) return NaN;
  let offsetSeconds = 0;
  const [sign, offsetHours, offsetMinutes] = [m[8], m[9], m[10]];
  if (sign !== undefined) {
    const oh = Number(offsetHours);
    const om = offsetMinutes === undefined ? 0 : Number(offsetMinutes);
    if (oh > 23 || om > 59) return NaN;
    offsetSeconds = (sign === '-' ? -1 : 1) * (oh * HOUR + om * 60);
  }
  return daysFromCivil(year, month, day) * DAY + hour * HOUR + minute * 60 + second - offsetSeconds;
}

function isLeapYear(y: number): boolean {
  return (y % 4 === 0 && y % 100 !== 0) || y % 400 === 0;
}

/** Days from 1970-01-01 to a proleptic Gregorian date, in integer arithmetic (H. Hinnant's days_from_civil). */
function daysFromCivil(year: number, month: number, day: number): number {
  const y = month <= 2 ? year - 1 : year;
  const era = Math.floor(y / 400);
  const yoe = y - era * 400;
  const doy = Math.floor((153 * (month + (month > 2 ? -3 : 9)) + 2) / 5) + day - 1;
  const doe = yoe * 365 + Math.floor(yoe / 4) - Math.floor(yoe / 100) + doy;
  return era * 146097 + doe - 719468;
}
