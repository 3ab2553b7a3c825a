import type { FacetSelection } from '../config';
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

export type InvalidCode = 'too_large' | 'malformed_json' | 'not_an_object' | 'missing_field' | 'wrong_type' | 'timestamp_out_of_range';

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
}

/**
 * Validates one raw record (size measured on the raw bytes; `byteLength` is the true size
 * when the source kept only the first bytes of an oversized record).
 */
export function parseEvent(raw: Buffer, options: ParseOptions, byteLength = raw.length): ParseResult {
  if (byteLength > options.maxEventBytes) {
    return invalid('too_large', `event is ${byteLength} bytes, larger than maxEventBytes (${options.maxEventBytes}); split it or raise maxEventBytes`);
  }
  let doc: unknown;
  try {
    doc = JSON.parse(raw.toString('utf8'));
  } catch (err) {
    return invalid('malformed_json', `not valid JSON: ${(err as Error).message}`);
  }
  return validateEvent(doc, options.facets);
}

/** Validates an already parsed JSON value. */
export function validateEvent(doc: unknown, facetSelection: FacetSelection): ParseResult {
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) {
    return invalid('not_an_object', `event must be a JSON object, got ${doc === null ? 'null' : Array.isArray(doc) ? 'an array' : typeof doc}`);
  }
  const fields = doc as Record<string, unknown>;
  for (const name of REQUIRED_IDS) {
    const v = fields[name];
    if (v === undefined || v === null) return invalid('missing_field', `missing required field ${name}`);
    if (typeof v !== 'string') return invalid('wrong_type', `${name} must be a string, got ${jsonType(v)}`);
    if (v === '') return invalid('wrong_type', `${name} must be a non-empty string`);
  }
  const ts = fields.timestamp;
  let seconds: number;
  if (ts === undefined || ts === null) return invalid('missing_field', 'missing required field timestamp');
  if (typeof ts === 'number') {
    seconds = ts;
  } else if (typeof ts === 'string') {
    seconds = parseIsoSeconds(ts);
    if (Number.isNaN(seconds)) {
      return invalid('wrong_type', `timestamp "${truncate(ts)}" is not an ISO-8601 date-time with a zone (e.g. 2018-12-07T22:15:00Z) nor a number of Unix seconds`);
    }
  } else {
    return invalid('wrong_type', `timestamp must be a number of Unix seconds or an ISO-8601 string, got ${jsonType(ts)}`);
  }
  if (!(seconds >= MIN_EVENT_SECONDS && seconds < MAX_EVENT_SECONDS_EXCLUSIVE)) {
    return invalid('timestamp_out_of_range', `timestamp ${typeof ts === 'string' ? `"${truncate(ts)}"` : ts} is outside the years 1970 through 9999 UTC`);
  }
  const wholeSeconds = Math.floor(seconds);
  const eventId = canonicalEventId(fields.event_id);
  return {
    ok: true,
    event: {
      companyId: wellFormed(fields.company_id as string),
      statisticId: wellFormed(fields.statistic_id as string),
      customerId: wellFormed(fields.customer_id as string),
      seconds: wholeSeconds,
      identity: eventId === undefined ? `t${wholeSeconds}` : `i${eventId}`,
      facets: collectFacets(fields, facetSelection),
    },
  };
}

/** A string or number id as canonical text; anything else (null, "", objects) is absent. */
function canonicalEventId(v: unknown): string | undefined {
  if (typeof v === 'string') return v === '' ? undefined : wellFormed(v);
  if (typeof v === 'number' && Number.isFinite(v)) return JSON.stringify(v);
  return undefined;
}

function collectFacets(fields: Record<string, unknown>, selection: FacetSelection): Array<[string, string]> {
  const out: Array<[string, string]> = [];
  const names = selection.include ?? Object.keys(fields);
  for (const name of names) {
    if (RESERVED.has(name)) continue;
    if (selection.include === undefined && selection.exclude.includes(name)) continue;
    const value = facetValue(fields[name]);
    if (value !== undefined) out.push([wellFormed(name), value]);
  }
  return out;
}

/** Strings as they are; numbers and booleans as their canonical JSON text; the rest is not a facet value. */
function facetValue(v: unknown): string | undefined {
  switch (typeof v) {
    case 'string':
      return v === '' ? undefined : wellFormed(v);
    case 'number':
      return Number.isFinite(v) ? JSON.stringify(v) : undefined;
    case 'boolean':
      return v ? 'true' : 'false';
    default:
      return undefined;
  }
}

/**
 * JSON may carry lone UTF-16 surrogates (`"\ud800"`), which cannot round-trip through the
 * UTF-8 state keys; they are replaced by U+FFFD so that keys stay decodable.
 */
function wellFormed(s: string): string {
  return s.isWellFormed() ? s : s.toWellFormed();
}

function jsonType(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  return typeof v === 'object' ? 'an object' : `a ${typeof v}`;
}

function truncate(s: string): string {
  return s.length > 64 ? `${s.slice(0, 61)}...` : s;
}
