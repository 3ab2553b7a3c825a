/**
 * The keyed topic's bundles: the route stage writes the events of one key group from one
 * chunk (a fetched batch) of an input partition as ONE keyed-topic record, and the count
 * stage reads them back as the events they were. A Kafka client's cost is mostly per record (kafkajs encodes,
 * checksums and decodes each record and its headers in JavaScript): one record per event cost
 * the routed path about 60 µs of worker CPU per event, most of it in producing and consuming
 * the keyed topic (docs/adr/0011-keyed-topic-bundles.md).
 *
 * A bundle is marked by the header `abacus-bundle: 1`; a keyed-topic record without it is one
 * event (what a producer that keys its own input writes, `kafka.inputKeyed`). Its value:
 *
 *   [0..2)   0xAB 0x01                       magic, format version
 *   [2..6)   u32 n                           events in the bundle
 *   n × 16   u32 byte length, u32 offset delta, f64 ingest time (ms)
 *   ...      the events' bytes back to back
 *
 * all big-endian. The offset delta is the event's input offset minus the bundle's base offset,
 * which the header `abacus-routed-from` (`<topic>/<partition>@<base offset>`) names: the count
 * stage rebuilds each event's input origin from it for dead-letter reports. Each event keeps
 * its own ingest time, which every retention decision downstream is made on.
 *
 * Positions inside a bundle: the count stage may commit state after part of a bundle, so a
 * keyed-topic position is `<offset>` (resume at this record) or `<offset>:<k>` (resume at the
 * record at `offset`, its first k events already consumed).
 */

import type { IHeaders, KafkaMessage, Message } from 'kafkajs';

export const BUNDLE_HEADER = 'abacus-bundle';
/** Where a keyed record was routed from: `<topic>/<partition>@<offset>` (of a bundle, its base offset). */
export const ROUTED_FROM_HEADER = 'abacus-routed-from';
export const BUNDLE_VERSION = 1;
const MAGIC = 0xab;
const PREAMBLE = 6;
const ENTRY = 16;

/** One event as the route stage bundles it. */
export interface BundledEvent {
  readonly value: Buffer;
  readonly ingestTimeMs: number;
  /** Its input offset minus the bundle's base offset (0 ≤ delta < 2^32). */
  readonly offsetDelta: number;
}

/** The bytes a bundle of these events takes. */
export function bundleBytes(count: number, valueBytes: number): number {
  return PREAMBLE + count * ENTRY + valueBytes;
}

export function encodeBundle(events: readonly BundledEvent[]): Buffer {
  let valueBytes = 0;
  for (const e of events) valueBytes += e.value.length;
  const out = Buffer.allocUnsafe(bundleBytes(events.length, valueBytes));
  out[0] = MAGIC;
  out[1] = BUNDLE_VERSION;
  out.writeUInt32BE(events.length, 2);
  let entry = PREAMBLE;
  let body = PREAMBLE + events.length * ENTRY;
  for (const e of events) {
    out.writeUInt32BE(e.value.length, entry);
    out.writeUInt32BE(e.offsetDelta, entry + 4);
    out.writeDoubleBE(e.ingestTimeMs, entry + 8);
    entry += ENTRY;
    body += e.value.copy(out, body);
  }
  return out;
}

/**
 * The events of a bundle, each value a view into `bundle` (no copy). Throws an Error naming
 * what is wrong when the bytes are not a bundle of a known version.
 */
export function decodeBundle(bundle: Buffer): BundledEvent[] {
  if (bundle.length < PREAMBLE || bundle[0] !== MAGIC) throw new Error('not a bundle (no magic byte)');
  if (bundle[1] !== BUNDLE_VERSION) throw new Error(`bundle format version ${bundle[1]} is unknown to this worker (it reads version ${BUNDLE_VERSION}): upgrade the worker`);
  const n = bundle.readUInt32BE(2);
  let body = PREAMBLE + n * ENTRY;
  if (body > bundle.length) throw new Error(`bundle claims ${n} events but has only ${bundle.length} bytes`);
  const events = new Array<BundledEvent>(n);
  for (let i = 0, entry = PREAMBLE; i < n; i++, entry += ENTRY) {
    const length = bundle.readUInt32BE(entry);
    if (body + length > bundle.length) throw new Error(`bundle event ${i} of ${n} runs past the bundle's ${bundle.length} bytes`);
    events[i] = { value: bundle.subarray(body, body + length), offsetDelta: bundle.readUInt32BE(entry + 4), ingestTimeMs: bundle.readDoubleBE(entry + 8) };
    body += length;
  }
  if (body !== bundle.length) throw new Error(`bundle has ${bundle.length - body} bytes after its ${n} events`);
  return events;
}

/** A keyed-topic position: the record to resume at and how many of its (bundled) events were already consumed. */
export interface KeyedPosition {
  readonly offset: bigint;
  readonly consumed: number;
}

export function formatKeyedPosition(offset: bigint, consumed: number): string {
  return consumed === 0 ? offset.toString() : `${offset}:${consumed}`;
}

export function parseKeyedPosition(text: string): KeyedPosition {
  const m = /^(\d+)(?::(\d+))?$/.exec(text);
  if (m === null) throw new Error(`keyed-topic position ${JSON.stringify(text)} is neither <offset> nor <offset>:<events already consumed>`);
  return { offset: BigInt(m[1]!), consumed: m[2] === undefined ? 0 : Number(m[2]) };
}

/** Above this size an event is re-published as a record of its own rather than in a bundle. */
export const BUNDLE_MAX_BYTES = 256 * 1024;
/** A partition's bytes in one produce request, below the brokers' default max.message.bytes (1 MB) with room for record overheads. */
export const WAVE_PARTITION_BYTES = 768 * 1024;

/**
 * The keyed-topic records of one chunk of an input partition: a bundle per key group (the
 * layout above), cut at BUNDLE_MAX_BYTES; an event too large for a bundle
 * keeps a record of its own with its original key, headers and timestamp.
 */
export class Bundler {
  private readonly open = new Map<number, { base: bigint; events: BundledEvent[]; bytes: number; latest: number }>();
  private readonly sealed: Message[] = [];
  /** Events added. */
  events = 0;

  constructor(
    private readonly inputPartition: string,
    /** False (`kafka.bundles: false`): every event a record of its own, as versions before bundles wrote them. */
    private readonly bundling: boolean,
  ) {}

  add(group: number, m: Pick<KafkaMessage, 'offset' | 'key' | 'headers'>, value: Buffer, ingestTimeMs: number): void {
    this.events++;
    const offset = BigInt(m.offset);
    if (!this.bundling || bundleBytes(1, value.length) > BUNDLE_MAX_BYTES) {
      // After the group's events before it: a key group's events keep their input order.
      const open = this.open.get(group);
      if (open !== undefined) this.seal(group, open);
      const headers: IHeaders = { ...(m.headers ?? {}), [ROUTED_FROM_HEADER]: `${this.inputPartition}@${m.offset}` };
      this.sealed.push({ partition: group, key: m.key, value, timestamp: String(ingestTimeMs), headers });
      return;
    }
    let b = this.open.get(group);
    if (b !== undefined && (b.bytes + bundleBytes(1, value.length) > BUNDLE_MAX_BYTES || offset - b.base > 0xffffffffn)) {
      this.seal(group, b);
      b = undefined;
    }
    if (b === undefined) {
      b = { base: offset, events: [], bytes: bundleBytes(0, 0), latest: ingestTimeMs };
      this.open.set(group, b);
    }
    b.events.push({ value, ingestTimeMs, offsetDelta: Number(offset - b.base) });
    b.bytes += bundleBytes(1, value.length) - bundleBytes(0, 0);
    if (ingestTimeMs > b.latest) b.latest = ingestTimeMs;
  }

  /** Records written to the keyed topic. */
  get records(): number {
    return this.sealed.length;
  }

  /**
   * The records to produce, in waves sent one after the other: kafkajs sends a partition's
   * records of one request as one record batch, which the broker refuses above the topic's
   * max.message.bytes (1 MB by default), so a wave holds at most WAVE_PARTITION_BYTES of a
   * partition (or one record, if larger). A partition's records keep their order.
   */
  finish(): Message[][] {
    for (const [group, b] of this.open) this.seal(group, b);
    this.open.clear();
    const waves: Message[][] = [];
    const at = new Map<number, { wave: number; bytes: number }>();
    for (const record of this.sealed) {
      const bytes = (record.value as Buffer).length;
      const p = at.get(record.partition!) ?? { wave: 0, bytes: 0 };
      if (p.bytes > 0 && p.bytes + bytes > WAVE_PARTITION_BYTES) {
        p.wave++;
        p.bytes = 0;
      }
      p.bytes += bytes;
      at.set(record.partition!, p);
      (waves[p.wave] ??= []).push(record);
    }
    return waves;
  }

  private seal(group: number, b: { base: bigint; events: BundledEvent[]; latest: number }): void {
    // The record's timestamp (the keyed topic's time-based retention goes by it) is its newest event's.
    const headers: IHeaders = { [BUNDLE_HEADER]: String(BUNDLE_VERSION), [ROUTED_FROM_HEADER]: `${this.inputPartition}@${b.base}` };
    this.sealed.push({ partition: group, value: encodeBundle(b.events), timestamp: String(b.latest), headers });
    this.open.delete(group);
  }
}
