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

const ISO_DATE_TIME = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})(?::(\d{2})(\.\d+)?)?(Z|[+-]\d{2}:\d{2})$/;

/**
 * Parses an ISO-8601 date-time with a zone (`Z` or `±hh:mm`) to seconds since the epoch
 * (fractions kept). Returns NaN for anything malformed, including impossible calendar
 * values such as February 30th or hour 24, which Date.parse would silently roll over.
 */
export function parseIsoSeconds(text: string): number {
  const m = ISO_DATE_TIME.exec(text);
  if (!m) return NaN;
  const [year, month, day, hour, minute] = [m[1], m[2], m[3], m[4], m[5]].map(Number) as [number, number, number, number, number];
  const second = m[6] === undefined ? 0 : Number(m[6]);
  if (month < 1 || month > 12 || hour > 23 || minute > 59 || second > 59) return NaN;
  const daysInMonth = new Date(Date.UTC(year, month, 0)).getUTCDate();
  if (day < 1 || day > daysInMonth) return NaN;
  let offsetSeconds = 0;
  const zone = m[8]!;
  if (zone !== 'Z') {
    const oh = Number(zone.slice(1, 3));
    const om = Number(zone.slice(4, 6));
    if (oh > 23 || om > 59) return NaN;
    offsetSeconds = (zone[0] === '-' ? -1 : 1) * (oh * HOUR + om * 60);
  }
  // Date.UTC maps years 0-99 to 1900-1999; setUTCFullYear does not.
  const date = new Date(Date.UTC(2000, month - 1, day, hour, minute, second));
  date.setUTCFullYear(year);
  const fraction = m[7] === undefined ? 0 : Number(m[7]);
  return date.getTime() / 1000 + fraction - offsetSeconds;
}
