/**
 * Calendar arithmetic on whole seconds without Date objects or regular expressions (the
 * hot path may not allocate): days ↔ civil dates in the proleptic Gregorian calendar, the
 * buckets of semantics.md, and a strict ISO-8601 parser with the same rules as
 * worker/engine/time.ts (a zone is required; impossible dates are NaN).
 */

const DAY = 86_400;

/** Days since 1970-01-01 of a civil date (month 1-12). */
export function daysFromCivil(year: number, month: number, day: number): number {
  const y = month <= 2 ? year - 1 : year;
  const era = Math.floor(y / 400);
  const yoe = y - era * 400;
  const doy = Math.floor((153 * (month > 2 ? month - 3 : month + 9) + 2) / 5) + day - 1;
  const doe = yoe * 365 + Math.floor(yoe / 4) - Math.floor(yoe / 100) + doy;
  return era * 146_097 + doe - 719_468;
}

/** Year * 16 + month of the day `days` since the epoch (packed: no object to return). */
function yearMonthOfDays(days: number): number {
  const z = days + 719_468;
  const era = Math.floor(z / 146_097);
  const doe = z - era * 146_097;
  const yoe = Math.floor((doe - Math.floor(doe / 1460) + Math.floor(doe / 36_524) - Math.floor(doe / 146_096)) / 365);
  const doy = doe - (365 * yoe + Math.floor(yoe / 4) - Math.floor(yoe / 100));
  const mp = Math.floor((5 * doy + 2) / 153);
  const month = mp < 10 ? mp + 3 : mp - 9;
  const year = yoe + era * 400 + (month <= 2 ? 1 : 0);
  return year * 16 + month;
}

export const HOUR_CODE = 0;
export const DAY_CODE = 1;
export const MONTH_CODE = 2;

/** Start second of the bucket of `g` (HOUR_CODE, DAY_CODE, MONTH_CODE) holding second `s`. */
export function bucketStartOf(g: number, s: number): number {
  if (g === HOUR_CODE) return s - (s % 3600);
  if (g === DAY_CODE) return s - (s % DAY);
  const ym = yearMonthOfDays(Math.floor(s / DAY));
  return daysFromCivil(Math.floor(ym / 16), ym % 16, 1) * DAY;
}

/** First second after the bucket of `g` starting at `start`. */
export function bucketEndOf(g: number, start: number): number {
  if (g === HOUR_CODE) return start + 3600;
  if (g === DAY_CODE) return start + DAY;
  const ym = yearMonthOfDays(Math.floor(start / DAY));
  const year = Math.floor(ym / 16);
  const month = ym % 16;
  return (month === 12 ? daysFromCivil(year + 1, 1, 1) : daysFromCivil(year, month + 1, 1)) * DAY;
}

function digits(s: string, at: number, n: number): number {
  let v = 0;
  for (let i = at; i < at + n; i++) {
    const c = s.charCodeAt(i) - 48;
    if (!(c >= 0 && c <= 9)) return -1;
    v = v * 10 + c;
  }
  return v;
}

function daysInMonth(year: number, month: number): number {
  return month === 12 ? 31 : daysFromCivil(year, month + 1, 1) - daysFromCivil(year, month, 1);
}

/** `YYYY-MM-DDTHH:MM[:SS[.fff…]](Z|±hh:mm)` → seconds since the epoch (fractions kept), or NaN. */
export function isoSeconds(s: string): number {
  const n = s.length;
  if (n < 17 || s.charCodeAt(4) !== 45 || s.charCodeAt(7) !== 45 || s.charCodeAt(10) !== 84 || s.charCodeAt(13) !== 58) return NaN;
  const year = digits(s, 0, 4);
  const month = digits(s, 5, 2);
  const day = digits(s, 8, 2);
  const hour = digits(s, 11, 2);
  const minute = digits(s, 14, 2);
  if (year < 0 || month < 1 || month > 12 || day < 1 || hour < 0 || hour > 23 || minute < 0 || minute > 59) return NaN;
  if (day > daysInMonth(year, month)) return NaN;
  let i = 16;
  let second = 0;
  let fraction = 0;
  if (s.charCodeAt(i) === 58) {
    second = digits(s, i + 1, 2);
    if (second < 0 || second > 59) return NaN;
    i += 3;
    if (s.charCodeAt(i) === 46) {
      const from = i + 1;
      i = from;
      while (i < n && s.charCodeAt(i) >= 48 && s.charCodeAt(i) <= 57) i++;
      if (i === from) return NaN;
      // Up to 15 digits the quotient of two exact doubles is correctly rounded, as Number() is.
      fraction = i - from <= 15 ? digits(s, from, i - from) / 10 ** (i - from) : Number(s.slice(from - 1, i));
    }
  }
  let offset = 0;
  const z = s.charCodeAt(i);
  if (z === 90) {
    if (i + 1 !== n) return NaN;
  } else if (z === 43 || z === 45) {
    if (i + 6 !== n || s.charCodeAt(i + 3) !== 58) return NaN;
    const oh = digits(s, i + 1, 2);
    const om = digits(s, i + 4, 2);
    if (oh < 0 || oh > 23 || om < 0 || om > 59) return NaN;
    offset = (z === 45 ? -1 : 1) * (oh * 3600 + om * 60);
  } else {
    return NaN;
  }
  return daysFromCivil(year, month, day) * DAY + hour * 3600 + minute * 60 + second + fraction - offset;
}
