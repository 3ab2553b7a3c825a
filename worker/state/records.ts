import type { RecordKind } from './keys';
import { kindOf } from './keys';

/**
 * The value encodings of state records. Values are small UTF-8 strings; the record kind
 * comes from the key, so values carry no type tag.
 */

/** Uniqueness markers of one customer in one bucket: the facet tokens already counted. */
export interface MarkerRecord {
  /** The bucket's marker epoch these markers belong to (see BucketRecord). */
  epoch: number;
  tokens: Set<string>;
}

/** Per (company, statistic, granularity, bucket): when it was last touched, and its marker epoch. */
export interface BucketRecord {
  /** Latest ingest second of any event counted in the bucket. */
  lastIngest: number;
  /** Bumped each time the bucket outlives its uniqueness horizon and its markers are dropped. */
  epoch: number;
}

export interface CounterRecord {
  count: number;
  uniques: number;
}

/** Dedup records hold the ingest second of the first copy. */
export type DedupRecord = number;

export type StateRecord = DedupRecord | MarkerRecord | BucketRecord | CounterRecord | string;

export function encodeRecord(key: string, value: StateRecord): string {
  switch (kindOf(key)) {
    case 'D':
      return String(value as DedupRecord);
    case 'B': {
      const b = value as BucketRecord;
      return `${b.lastIngest},${b.epoch}`;
    }
    case 'U': {
      const m = value as MarkerRecord;
      return JSON.stringify([m.epoch, ...m.tokens]);
    }
    case 'C': {
      const c = value as CounterRecord;
      return `${c.count},${c.uniques}`;
    }
    default:
      return value as string;
  }
}

export function decodeRecord(key: string, text: string): StateRecord {
  const kind: RecordKind | undefined = kindOf(key);
  switch (kind) {
    case 'D':
      return Number(text);
    case 'B': {
      const comma = text.indexOf(',');
      return { lastIngest: Number(text.slice(0, comma)), epoch: Number(text.slice(comma + 1)) };
    }
    case 'U': {
      const [epoch, ...tokens] = JSON.parse(text) as [number, ...string[]];
      return { epoch, tokens: new Set(tokens) };
    }
    case 'C': {
      const comma = text.indexOf(',');
      return { count: Number(text.slice(0, comma)), uniques: Number(text.slice(comma + 1)) };
    }
    default:
      return text;
  }
}
