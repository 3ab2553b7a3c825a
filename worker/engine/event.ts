import { isUtf8 } from 'node:buffer';
import type { FacetSelection, Level } from '../../common/job-config';
import { floorOfNumberText } from './decimal';
import { topLevelMemberText } from './json-source';
import { MAX_EVENT_SECONDS_EXCLUSIVE, MIN_EVENT_SECONDS, parseIsoSeconds } from './time';

/**
 * Event validation, exactly as the contract (semantics.md, "Input event") defines it.
 * Pure: bytes in, a typed event or a reason out.
 */

/** A valid event, reduced to what counting needs. */
export interface CountableEvent {
  readonly companyId: string;
  readonly statisticId: string;
  readonly customerId: string;
  /** Event time in whole seconds (the bucket and the id-less identity use this). */
  readonly seconds: number;
  /** The producer's id as canonical text, or the whole-second timestamp when absent. */
  readonly identity: string;
  /** Counted facets as [facet, value] pairs, in the event's field order. */
  readonly facets: ReadonlyArray<readonly [string, string]>;
}

export type InvalidCode = 'too_large' | 'id_too_long' | 'invalid_utf8' | 'invalid_unicode' | 'malformed_json' | 'not_an_object' | 'missing_field' | 'wrong_type' | 'timestamp_out_of_range';

export type ParseResult =
  | { readonly ok: true; readonly event: CountableEvent }
  | { readonly ok: false; readonly code: InvalidCode; readonly reason: string };

const RESERVED = new Set(['company_id', 'statistic_id', 'customer_id', 'timestamp', 'event_id']);
const REQUIRED_IDS = ['company_id', 'statistic_id', 'customer_id'] as const;

function invalid(code: InvalidCode, reason: string): ParseResult {
  return { ok: false, code, reason };
}

export interface ParseOptions {
  readonly maxEventBytes: number;
  readonly facets: FacetSelection;
  /** Decides which id is the counters' scope, and so part of the sink's key. */
  readonly level: Level;
}

/**
 * A counter's key in the sink must fit Cassandra's partition key (65,535 bytes for scope,
 * statistic, granularity, facet and value together). So the ids in that key (statistic_id,
 * and the scope: company_id at account level, customer_id at customer level) hold at most
 * MAX_KEY_ID_BYTES of UTF-8 each — longer makes the event invalid — and a facet whose name
 * and value together exceed MAX_FACET_BYTES is not counted as a facet (the event is, like an
 * event whose facet is an object). 2 × 16,384 + 32,000 + the rest stays under the limit.
 */
export const MAX_KEY_ID_BYTES = 16_384;
export const MAX_FACET_BYTES = 32_000;

/** UTF-8 length above `max`; a string of at most max/3 UTF-16 units never is, so most cost nothing. */
function utf8LongerThan(text: string, max: number): boolean {
  return text.length > max / 3 && Buffer.byteLength(text, 'utf8') > max;
}

/**
 * Validates one raw record (size measured on the raw bytes; `byteLength` is the true size
 * when the source kept only the first bytes of an oversized record).
 */
export function parseEvent(raw: Buffer, options: ParseOptions, byteLength = raw.length): ParseResult {
  if (byteLength > options.maxEventBytes) {
    return invalid('too_large', `event is ${byteLength} bytes, larger than maxEventBytes (${options.maxEventBytes}); split it or raise maxEventBytes`);
  }
  // JSON text is UTF-8 (RFC 8259 section 8.1). Decoding would silently turn every invalid
  // sequence into U+FFFD and merge different ids, so the bytes are checked first.
  if (!isUtf8(raw)) {
    return invalid('invalid_utf8', 'event is not valid UTF-8 (JSON text must be UTF-8, RFC 8259 section 8.1); fix the encoding of the producer');
  }
  const json = raw.toString('utf8');
  let doc: unknown;
  try {
    doc = JSON.parse(json);
  } catch (err) {
    return invalid('malformed_json', `not valid JSON: ${(err as Error).message}`);
  }
  return validateEvent(doc, json, options.facets, options.level);
}

/** Validates a JSON value parsed from `json` (the text is read again only for rare timestamps). */
export function validateEvent(doc: unknown, json: string, facetSelection: FacetSelection, level: Level): ParseResult {
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) {
    return invalid('not_an_object', `event must be a JSON object, got ${doc === null ? 'null' : Array.isArray(doc) ? 'an array' : typeof doc}`);
  }
  const fields = doc as Record<string, unknown>;
  for (const name of REQUIRED_IDS) {
    const v = fields[name];
    if (v === undefined || v === null) return invalid('missing_field', `missing required field ${name}`);
    if (typeof v !== 'string') return invalid('wrong_type', `${name} must be a string, got ${jsonType(v)}`);
    if (v === '') return invalid('wrong_type', `${name} must be a non-empty string`);
    if (!v.isWellFormed()) return loneSurrogate(name);
  }
  for (const name of ['statistic_id', level === 'account' ? 'company_id' : 'customer_id'] as const) {
    const v = fields[name] as string;
    if (utf8LongerThan(v, MAX_KEY_ID_BYTES)) {
      return invalid('id_too_long', `${name} is ${Buffer.byteLength(v, 'utf8')} bytes of UTF-8, more than the ${MAX_KEY_ID_BYTES} that fit a counter's key in the sink; send a shorter id (e.g. a hash of it)`);
    }
  }
  const ts = fields.timestamp;
  // The bucket and the id-less identity use the whole second, exactly: a number is floored
  // (from its text where the double may have rounded), an ISO-8601 text is read from its
  // integer parts (fractional digits dropped, never rounded).
  let wholeSeconds: number;
  if (ts === undefined || ts === null) return invalid('missing_field', 'missing required field timestamp');
  if (typeof ts === 'number') {
    wholeSeconds = wholeSecondsOfNumber(ts, json);
  } else if (typeof ts === 'string') {
    wholeSeconds = parseIsoSeconds(ts);
    if (Number.isNaN(wholeSeconds)) {
      return invalid('wrong_type', `timestamp "${truncate(ts)}" is not an ISO-8601 date-time with a zone (e.g. 2018-12-07T22:15:00Z) nor a number of Unix seconds`);
    }
  } else {
    return invalid('wrong_type', `timestamp must be a number of Unix seconds or an ISO-8601 string, got ${jsonType(ts)}`);
  }
  if (!(wholeSeconds >= MIN_EVENT_SECONDS && wholeSeconds < MAX_EVENT_SECONDS_EXCLUSIVE)) {
    return invalid('timestamp_out_of_range', `timestamp ${typeof ts === 'string' ? `"${truncate(ts)}"` : truncate(topLevelMemberText(json, 'timestamp') ?? String(ts))} is outside the years 1970 through 9999 UTC`);
  }
  const eventId = canonicalEventId(fields.event_id);
  if (eventId !== undefined && !eventId.isWellFormed()) return loneSurrogate('event_id');
  const facets = collectFacets(fields, facetSelection);
  if (typeof facets === 'string') return loneSurrogate(`facet ${JSON.stringify(facets)}`);
  return {
    ok: true,
    event: {
      companyId: fields.company_id as string,
      statisticId: fields.statistic_id as string,
      customerId: fields.customer_id as string,
      seconds: wholeSeconds,
      identity: eventId === undefined ? `t${wholeSeconds}` : `i${eventId}`,
      facets,
    },
  };
}

/**
 * A member written `timestamp": <digits>` followed by `.`, `e` or `E`, or any `\u` escape
 * (a name that decodes to `timestamp` is written with one): without either, the top-level
 * timestamp is not written with a fraction or an exponent.
 */
const FRACTIONAL_TIMESTAMP = /timestamp"[ \t\n\r]*:[ \t\n\r]*-?\d+[.eE]/;

function mayHaveFractionalTimestamp(json: string): boolean {
  return FRACTIONAL_TIMESTAMP.test(json) || json.includes('\\u');
}

/**
 * The whole second of a numeric timestamp. A double that is not an integer floors exactly:
 * were an integer between it and the written value, that integer (a double too, below 2^53)
 * would have been the nearer double. Only a double that IS an integer may stand for a
 * written value just below it (`1543658399.9999999` parses to 1543658400, `-1e-400` to -0):
 * then, if the text has a fraction or exponent at all, the whole second comes from the
 * timestamp's source text, floored digit by digit. Integer timestamps written as integers,
 * the common case, cost two searches of the text.
 */
function wholeSecondsOfNumber(ts: number, json: string): number {
  if (Number.isInteger(ts) && mayHaveFractionalTimestamp(json)) {
    const text = topLevelMemberText(json, 'timestamp');
    if (text !== undefined) return floorOfNumberText(text) + 0;
  }
  return Math.floor(ts) + 0; // + 0 turns -0 into 0
}

/**
 * JSON may escape a lone UTF-16 surrogate (`"\ud800"`): valid JSON text, but no Unicode
 * character, and not representable in the UTF-8 state keys (it would become U+FFFD and merge
 * with other ids). An event whose ids, event_id or counted facets hold one is invalid.
 */
function loneSurrogate(where: string): ParseResult {
  return invalid('invalid_unicode', `${where} holds a lone UTF-16 surrogate escape (\\ud800-\\udfff without its pair), which is not Unicode text; send well-formed Unicode`);
}

/** A string or number id as canonical text; anything else (null, "", objects) is absent. */
function canonicalEventId(v: unknown): string | undefined {
  if (typeof v === 'string') return v === '' ? undefined : v;
  if (typeof v === 'number' && Number.isFinite(v)) return JSON.stringify(v);
  return undefined;
}

/** Sets of a facet selection, built once per selection (the config's lists stay lists). */
const selectionSets = new WeakMap<FacetSelection, { include?: ReadonlySet<string>; exclude: ReadonlySet<string> }>();

function setsOf(selection: FacetSelection): { include?: ReadonlySet<string>; exclude: ReadonlySet<string> } {
  let sets = selectionSets.get(selection);
  if (sets === undefined) {
    sets = { exclude: new Set(selection.exclude), ...(selection.include === undefined ? {} : { include: new Set(selection.include) }) };
    selectionSets.set(selection, sets);
  }
  return sets;
}

/**
 * The counted facets, one per field of the event (each field is counted once, whatever the
 * selection lists), or the name of the first counted facet that is not well-formed Unicode.
 */
function collectFacets(fields: Record<string, unknown>, selection: FacetSelection): Array<[string, string]> | string {
  const out: Array<[string, string]> = [];
  const { include, exclude } = setsOf(selection);
  for (const name of Object.keys(fields)) {
    if (RESERVED.has(name)) continue;
    if (include === undefined ? exclude.has(name) : !include.has(name)) continue;
    const value = facetValue(fields[name]);
    if (value === undefined) continue;
    if (!name.isWellFormed() || !value.isWellFormed()) return name;
    if (utf8LongerThan(name + value, MAX_FACET_BYTES)) continue; // does not fit the sink's key
    out.push([name, value]);
  }
  return out;
}

/** Strings as they are; numbers and booleans as their canonical JSON text; the rest is not a facet value. */
function facetValue(v: unknown): string | undefined {
  switch (typeof v) {
    case 'string':
      return v === '' ? undefined : v;
    case 'number':
      return Number.isFinite(v) ? JSON.stringify(v) : undefined;
    case 'boolean':
      return v ? 'true' : 'false';
    default:
      return undefined;
  }
}

function jsonType(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  return typeof v === 'object' ? 'an object' : `a ${typeof v}`;
}

function truncate(s: string): string {
  return s.length > 64 ? `${s.slice(0, 61)}...` : s;
}
