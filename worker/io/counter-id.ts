import type { CounterKey, Granularity } from './types';

/**
 * The canonical text of a counter's identity, independent of where it is stored. State
 * keys embed it after the key-group prefix, and CountSink.read() returns values keyed by it.
 *
 * Layout: lp(scope) lp(statistic) g bucket '|' token, where lp(s) = `${s.length}:${s}`
 * (length-prefixed, so any characters are safe), g is h/d/m, bucket is seconds, and token
 * is `*` for the total or `=` lp(facet) value for one facet value. A facet literally named
 * `*` therefore never collides with the total.
 */
export function lp(s: string): string {
  return `${s.length}:${s}`;
}

const GRANULARITY_CODE: Readonly<Record<Granularity, string>> = { hour: 'h', day: 'd', month: 'm' };
const CODE_GRANULARITY: Readonly<Record<string, Granularity>> = { h: 'hour', d: 'day', m: 'month' };

export function granularityCode(g: Granularity): string {
  return GRANULARITY_CODE[g];
}

/** `*` for the total, else `=` lp(facet) value. */
export function facetToken(facet: string, value: string): string {
  return facet === '*' && value === '*' ? '*' : `=${lp(facet)}${value}`;
}

/** The stem shared by every facet token of one (scope, statistic, granularity, bucket). */
export function counterStem(scope: string, statisticId: string, g: Granularity, bucket: number): string {
  return `${lp(scope)}${lp(statisticId)}${GRANULARITY_CODE[g]}${bucket}|`;
}

export function counterId(key: CounterKey): string {
  return counterStem(key.scope, key.statisticId, key.granularity, key.bucket) + facetToken(key.facet, key.value);
}

/** A row's counter id: the one it carries, else encoded from its fields. */
export function idOf(row: CounterKey & { readonly id?: string }): string {
  return row.id ?? counterId(row);
}

/** Inverse of counterId. Throws on text that counterId cannot have produced. */
export function parseCounterId(id: string): CounterKey {
  let pos = 0;
  const readLp = (): string => {
    const colon = id.indexOf(':', pos);
    const len = Number(id.slice(pos, colon));
    if (colon < 0 || !Number.isInteger(len)) throw new Error(`malformed counter id ${JSON.stringify(id)}`);
    const s = id.slice(colon + 1, colon + 1 + len);
    pos = colon + 1 + len;
    return s;
  };
  const scope = readLp();
  const statisticId = readLp();
  const granularity = CODE_GRANULARITY[id[pos] ?? ''];
  const bar = id.indexOf('|', pos);
  if (granularity === undefined || bar < 0) throw new Error(`malformed counter id ${JSON.stringify(id)}`);
  const bucket = Number(id.slice(pos + 1, bar));
  pos = bar + 1;
  if (id[pos] === '*') return { scope, statisticId, granularity, bucket, facet: '*', value: '*' };
  pos += 1; // '='
  const facet = readLp();
  return { scope, statisticId, granularity, bucket, facet, value: id.slice(pos) };
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
