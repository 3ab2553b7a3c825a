/**
 * Counter identity: the contract's `(scope, statistic_id, granularity, facet, value, bucket)`,
 * its canonical text (the counter id) and its printed form. Shared by the engine, the state
 * keys, every sink and `abacus counts`.
 *
 * The total of a statistic is the counter with facet `*` and value `*` (semantics.md). An
 * event may carry a facet literally named `*` (or `**`, …) too; so that no facet can ever
 * be mistaken for the total, a facet whose name consists only of asterisks is written with
 * one more asterisk (`facetColumn`): a facet named `*` with value `*` is the counter
 * `**`/`*`, and `*` alone in the facet column always means the total. This is the form a
 * CounterKey holds, the sink stores (Cassandra's `facet` column) and `abacus counts` prints.
 *
 * Layout of a counter id: lp(scope) lp(statistic) g bucket '|' token, where lp(s) =
 * `${s.length}:${s}` (length-prefixed, so any characters are safe), g is h/d/m, bucket is
 * seconds, and token is `*` for the total or `=` lp(facet) value for one facet value (facet
 * in its column form). Every part before the token is length-prefixed or fixed-form, and
 * the token's first character tells the two kinds apart, so distinct counters have
 * distinct ids (property-tested over arbitrary strings in test/unit/state-encoding.test.ts).
 */

export type Granularity = 'hour' | 'day' | 'month';

/** Identifies one counter: (scope, statistic_id, granularity, facet, value, bucket). */
export interface CounterKey {
  readonly scope: string;
  readonly statisticId: string;
  readonly granularity: Granularity;
  /** `*` for the statistic's total; otherwise the facet's column form (see facetColumn). */
  readonly facet: string;
  /** `*` for the statistic's total. */
  readonly value: string;
  /** Bucket start, seconds since the epoch (UTC). */
  readonly bucket: number;
}

/** The facet and value of a statistic's total. */
export const TOTAL = '*';

/** The token of the total in counter ids and marker records. */
export const TOTAL_TOKEN = '*';

export function lp(s: string): string {
  return `${s.length}:${s}`;
}

/** Only asterisks (at least one). */
const ALL_STARS = /^\*+$/;

/** A facet name as the counter's facet column holds it: names of only asterisks get one more, so `*` stays the total's. */
export function facetColumn(name: string): string {
  return ALL_STARS.test(name) ? `${name}*` : name;
}

/** Inverse of facetColumn (for a column that is not the total's `*`). */
export function facetName(column: string): string {
  return ALL_STARS.test(column) ? column.slice(1) : column;
}

/** True for the counter key of a statistic's total. */
export function isTotal(key: Pick<CounterKey, 'facet' | 'value'>): boolean {
  return key.facet === TOTAL && key.value === TOTAL;
}

const GRANULARITY_CODE: Readonly<Record<Granularity, string>> = { hour: 'h', day: 'd', month: 'm' };
const CODE_GRANULARITY: Readonly<Record<string, Granularity>> = { h: 'hour', d: 'day', m: 'month' };

export function granularityCode(g: Granularity): string {
  return GRANULARITY_CODE[g];
}

/** The granularity of a one-letter code (granularityCode); throws on any other letter. */
export function granularityOfCode(code: string): Granularity {
  const g = CODE_GRANULARITY[code];
  if (g === undefined) throw new Error(`not a granularity code: ${JSON.stringify(code)}`);
  return g;
}

/** The token of one counted facet value of an event (`facet` is the name as the event has it). Never the total's. */
export function facetToken(facet: string, value: string): string {
  return `=${lp(facetColumn(facet))}${value}`;
}

/** The token of a counter key: the total's, or its facet column and value. */
export function counterToken(key: Pick<CounterKey, 'facet' | 'value'>): string {
  return isTotal(key) ? TOTAL_TOKEN : `=${lp(key.facet)}${key.value}`;
}

/** The stem shared by every facet token of one (scope, statistic, granularity, bucket). */
export function counterStem(scope: string, statisticId: string, g: Granularity, bucket: number): string {
  return `${lp(scope)}${lp(statisticId)}${GRANULARITY_CODE[g]}${bucket}|`;
}

export function counterId(key: CounterKey): string {
  return counterStem(key.scope, key.statisticId, key.granularity, key.bucket) + counterToken(key);
}

/** A row's counter id: the one it carries, else encoded from its fields. */
export function idOf(row: CounterKey & { readonly id?: string }): string {
  return row.id ?? counterId(row);
}

/** The parts of a counter stem (counterStem): every counter id field but the facet and value. */
export type CounterStemParts = Pick<CounterKey, 'scope' | 'statisticId' | 'granularity' | 'bucket'>;

/**
 * Inverse of counterStem for the stem that starts at `from` in `text` (a counter id, or a
 * state key holding one). Returns the parts and where the token begins; throws on text
 * counterStem cannot have produced (`whole` names it in the message).
 */
export function parseCounterStem(text: string, from = 0, whole: string = text): { parts: CounterStemParts; end: number } {
  let pos = from;
  const malformed = (): Error => new Error(`malformed counter id ${JSON.stringify(whole)}`);
  const readLp = (): string => {
    const colon = text.indexOf(':', pos);
    const len = Number(text.slice(pos, colon));
    if (colon < 0 || !Number.isInteger(len)) throw malformed();
    const s = text.slice(colon + 1, colon + 1 + len);
    pos = colon + 1 + len;
    return s;
  };
  const scope = readLp();
  const statisticId = readLp();
  const granularity = CODE_GRANULARITY[text[pos] ?? ''];
  const bar = text.indexOf('|', pos);
  if (granularity === undefined || bar < 0) throw malformed();
  return { parts: { scope, statisticId, granularity, bucket: Number(text.slice(pos + 1, bar)) }, end: bar + 1 };
}

/** Inverse of counterToken: the facet (column form) and value of a token; throws on text counterToken cannot have produced (`whole` names it). */
export function parseCounterToken(token: string, whole: string = token): Pick<CounterKey, 'facet' | 'value'> {
  if (token === TOTAL_TOKEN) return { facet: TOTAL, value: TOTAL };
  const colon = token.indexOf(':');
  const len = Number(token.slice(1, colon));
  if (token.charCodeAt(0) !== 0x3d || colon < 0 || !Number.isInteger(len) || colon + 1 + len > token.length) throw new Error(`malformed counter id ${JSON.stringify(whole)}`);
  return { facet: token.slice(colon + 1, colon + 1 + len), value: token.slice(colon + 1 + len) };
}

/** Inverse of counterId. Throws on text that counterId cannot have produced. */
export function parseCounterId(id: string): CounterKey {
  const { parts, end } = parseCounterStem(id);
  return { ...parts, ...parseCounterToken(id.slice(end), id) };
}

/** The JSON-lines shape `abacus counts` prints (bucket ISO-8601 UTC; uniques at account level only). */
export interface CountLine {
  scope: string;
  statistic_id: string;
  granularity: Granularity;
  facet: string;
  value: string;
  bucket: string;
  count: number;
  uniques?: number;
}

export function countLine(row: CounterKey & { count: number; uniques?: number }, withUniques: boolean): CountLine {
  const line: CountLine = {
    scope: row.scope,
    statistic_id: row.statisticId,
    granularity: row.granularity,
    facet: row.facet,
    value: row.value,
    bucket: new Date(row.bucket * 1000).toISOString().replace('.000Z', 'Z'),
    count: row.count,
  };
  if (withUniques) line.uniques = row.uniques ?? 0;
  return line;
}
