/**
 * The value encodings of state records. Values stay in their encoded string form in the
 * cache as well as in RocksDB: strings are leaf objects for the garbage collector, so a
 * cache of millions of records costs little to trace, and a commit writes them unchanged.
 *
 *   D  dedup     `${firstIngestSecond}`
 *   B  bucket    `${lastIngestSecond},${markerEpoch}`
 *   U  markers   `${markerEpoch}` then `\u0001${token}` per facet token counted, then `\u0001`
 *   C  counter   `${count},${uniques}`
 *
 * Marker tokens are `*` or `=`… (see counter-id.ts); a token that contains the U+0001
 * separator (or starts with `"`) is stored JSON-quoted, so a
 * membership test is one substring search for `\u0001${token}\u0001`.
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

export function markerEpoch(record: string): number {
  return Number(record.slice(0, record.indexOf(SEP)));
}

/** The record with a token added (needle from markerNeedle; the record ends with the separator). */
export function addMarker(record: string, needle: string): string {
  return record + needle.slice(1);
}

/** Every token of a marker record (for tests and tools). */
export function markerTokens(record: string): string[] {
  return record
    .split(SEP)
    .slice(1, -1)
    .map((t) => (t.startsWith('"') ? (JSON.parse(t) as string) : t));
}
