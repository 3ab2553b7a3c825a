/**
 * Exact arithmetic on the text of a JSON number, for where a double's rounding would change
 * a result the contract fixes (the whole second of a timestamp).
 */

const JSON_NUMBER = /^(-?)(\d+)(?:\.(\d+))?(?:[eE]([+-]?\d+))?$/;

/** Beyond this many integer digits a value is far outside any range Abacus accepts. */
const MAX_INTEGER_DIGITS = 15;

/**
 * The floor of a JSON number given as its text (`-?int[.frac][e±exp]`), computed from its
 * digits, so `1543658399.9999999` is 1543658399 however many nines follow (a double would
 * round it to 1543658400). Exact while the result has at most 15 digits; larger magnitudes
 * give ±Infinity. `-0`, `0.0e5` and the like are 0; any other negative value is at most -1.
 * NaN when the text is not a JSON number.
 */
export function floorOfNumberText(text: string): number {
  const m = JSON_NUMBER.exec(text);
  if (m === null) return NaN;
  const negative = m[1] === '-';
  const intDigits = m[2]!;
  // The value is 0.<digits> × 10^point, with leading zeros taken off the digits.
  let digits = intDigits + (m[3] ?? '');
  const firstNonZero = digits.search(/[1-9]/);
  if (firstNonZero === -1) return 0;
  digits = digits.slice(firstNonZero);
  // Number() of an exponent too long for a double gives ±Infinity, which still orders right.
  const point = intDigits.length - firstNonZero + (m[4] === undefined ? 0 : Number(m[4]));
  if (point > MAX_INTEGER_DIGITS) return negative ? -Infinity : Infinity;
  const integer = point <= 0 ? 0 : Number(digits.slice(0, point).padEnd(point, '0'));
  if (!negative) return integer;
  // floor(-x) = -ceil(x): one more when x has a non-zero fraction.
  const fraction = point <= 0 ? digits : digits.slice(point);
  return -(integer + (/[1-9]/.test(fraction) ? 1 : 0));
}
