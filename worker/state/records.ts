import { fmix32 } from '../../common/keygroups';

/**
 * The value encodings of state records. Values stay in their encoded string form in the
 * cache as well as in RocksDB: strings are leaf objects for the garbage collector, so a
 * cache of millions of records costs little to trace, and a commit writes them unchanged.
 *
 *   D  dedup     `${firstIngestSecond}`
 *   B  bucket    `${lastIngestSecond},${markerEpoch}`
 *   U  markers   `${markerEpoch}`, `#` (or `+`) once full, then `\u0001${token}` per facet token counted, then `\u0001`
 *   W  shard     the same form as U: the markers of the tokens that hash to the shard, once U is full (`#`)
 *   V  marker    `${markerEpoch}` (one token's marker, once its shard is full — or its U record, when that is marked `+`)
 *   C  counter   `${count},${uniques}`
 *
 * Marker tokens are `*` or `=`… (see common/counter-id.ts); a token that contains the U+0001
 * separator (or starts with `"`) is stored JSON-quoted, so a membership test is one
 * substring search for `\u0001${token}\u0001`.
 *
 * A U record holds at most MARKER_RECORD_MAX characters, so searching and copying it costs a
 * bounded time per token: a customer with thousands of distinct facet values in a bucket,
 * or one event with thousands of facets, costs time linear in its tokens. Tokens that do not
 * fit go to one of MARKER_SHARDS shard records (W) chosen by a hash of the token, each bounded
 * the same way, and the U record is marked full (`#`) so that readers know to look there; a
 * token whose shard is full too gets a V record of its own. Shards keep the records a wide
 * event or a heavy customer writes few (20,000 new tokens: about 1,000 shard records, not
 * 20,000 V records) while every record stays bounded, whatever the hash does: tokens crafted
 * to fall into one shard only fill it and go on to V records. A U record marked `+` (state
 * written before shards existed) has its overflow in V records only, and is read that way.
 */

export interface BucketRecord {
  /** Latest ingest second of any event counted in the bucket. */
  readonly lastIngest: number;
  /** Bumped each time the bucket outlives its uniqueness horizon and its markers are dropped. */
  readonly epoch: number;
}

export interface CounterRecord {
  count: number;
  uniques: number;
}

const SEP = '\u0001';

export function encodeBucket(b: BucketRecord): string {
  return `${b.lastIngest},${b.epoch}`;
}

export function decodeBucket(text: string): BucketRecord {
  const comma = text.indexOf(',');
  return { lastIngest: Number(text.slice(0, comma)), epoch: Number(text.slice(comma + 1)) };
}

export function encodeCounter(c: CounterRecord): string {
  return `${c.count},${c.uniques}`;
}

export function decodeCounter(text: string): CounterRecord {
  const comma = text.indexOf(',');
  return { count: Number(text.slice(0, comma)), uniques: Number(text.slice(comma + 1)) };
}

/** The search needle of a facet token in a marker record. */
export function markerNeedle(token: string): string {
  return token.includes(SEP) || token.startsWith('"') ? `${SEP}${JSON.stringify(token)}${SEP}` : `${SEP}${token}${SEP}`;
}

/** An empty marker record of an epoch. */
export function emptyMarkers(epoch: number): string {
  return `${epoch}${SEP}`;
}

/** Characters a U or W record may reach; beyond it, markers go to W, then V records. Normal events (a handful of short tokens) stay far below. */
export const MARKER_RECORD_MAX = 1024;

/** Shard records (W) of a customer in a bucket, once its U record is full. */
export const MARKER_SHARDS = 1024;

/** The bounds of the marker records; tests shrink them to reach every tier with a few tokens. */
export interface MarkerLimits {
  readonly recordMax: number;
  /** 0: no shards, overflow goes straight to V records (how state before shards was written). */
  readonly shards: number;
}

export const MARKER_LIMITS: MarkerLimits = { recordMax: MARKER_RECORD_MAX, shards: MARKER_SHARDS };

export function markerEpoch(record: string): number {
  return parseInt(record, 10);
}

/** True once the record is full: some of the customer's markers are in W or V records. */
export function markersFull(record: string): boolean {
  const c = record.charCodeAt(record.indexOf(SEP) - 1);
  return c === FULL_SHARDED || c === FULL_TOKENS;
}

/** True for a full U record whose overflow is in shard (W) records. */
export function markersSharded(record: string): boolean {
  return record.charCodeAt(record.indexOf(SEP) - 1) === FULL_SHARDED;
}

const FULL_SHARDED = 0x23; // '#'
const FULL_TOKENS = 0x2b; // '+'

/** The same record, marked full: its overflow goes to shard records (`sharded`) or straight to V records. */
export function markFull(record: string, sharded: boolean): string {
  const sep = record.indexOf(SEP);
  return `${record.slice(0, sep)}${sharded ? '#' : '+'}${record.slice(sep)}`;
}

/**
 * One marker record (U or W) as one event changes it. The tokens the event adds are appended
 * once, when the event is done, instead of into a new string per token (each of which the
 * next search would have to flatten). Membership is asked of the record as the event found
 * it (`found`): an event's tokens are distinct, so none is among those it added itself.
 */
export class MarkerAppend {
  private length: number;
  private readonly added: string[] = [];
  private full: boolean;
  private marked: 'sharded' | 'tokens' | undefined;

  /** `found`: the record (ending with the separator) as the event found it. */
  constructor(
    readonly found: string,
    private readonly recordMax: number,
  ) {
    this.length = found.length;
    this.full = markersFull(found);
  }

  /** True once the record is full: new tokens go to the next tier. */
  get isFull(): boolean {
    return this.full;
  }

  /** Adds the token of `needle` (from markerNeedle) when it fits; false when the record is or becomes full. */
  tryAdd(needle: string): boolean {
    if (this.full) return false;
    if (this.length + needle.length - 1 > this.recordMax) return false;
    this.added.push(needle);
    this.length += needle.length - 1;
    return true;
  }

  /** Marks the record full: its overflow goes to shard records (`sharded`) or straight to V records. */
  markFull(sharded: boolean): void {
    if (this.full) return;
    this.full = true;
    this.marked = sharded ? 'sharded' : 'tokens';
  }

  /** The record as the event leaves it, or undefined when the event did not change it. */
  result(): string | undefined {
    if (this.added.length === 0 && this.marked === undefined) return undefined;
    let record = this.found;
    for (const needle of this.added) record += needle.slice(1);
    return this.marked === undefined ? record : markFull(record, this.marked === 'sharded');
  }
}

/** The shard (0 … shards-1) of a facet token: FNV-1a over its UTF-16 code units, finalised with murmur3's fmix32. */
export function markerShard(token: string, shards: number): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < token.length; i++) h = Math.imul(h ^ token.charCodeAt(i), 0x01000193);
  return fmix32(h) % shards;
}

/** The entry of a token in a marker record: the needle without its separators (allocates only for quoted tokens). */
export function markerEntry(token: string, needle: string): string {
  return needle.length === token.length + 2 ? token : needle.slice(1, -1);
}

/** The entries of a full marker record, as a set (a full record never changes, so its set can be kept). */
export function markerEntries(record: string): Set<string> {
  return new Set(record.split(SEP).slice(1, -1));
}

/** The value of a V record for an epoch. */
export function tokenMarker(epoch: number): string {
  return String(epoch);
}

/** Every token of a marker record (for tests and tools). */
export function markerTokens(record: string): string[] {
  return record
    .split(SEP)
    .slice(1, -1)
    .map((t) => (t.startsWith('"') ? (JSON.parse(t) as string) : t));
}
