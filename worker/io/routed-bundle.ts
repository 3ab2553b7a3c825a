/**
 * The keyed topic's bundles: the route stage writes the events of one key group from one
 * chunk of an input partition as ONE keyed-topic record, and the count stage reads them back
 * as the events they were. A Kafka client's cost is mostly per record (kafkajs encodes,
 * checksums and decodes each record and its headers in JavaScript): one record per event cost
 * the routed path about 60 µs of worker CPU per event, most of it in producing and consuming
 * the keyed topic (docs/performance.md, "The route stage").
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
 * record at `offset`, skipping its first k events).
 */

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

/** A keyed-topic position: the record to resume at and how many of its (bundled) events to skip. */
export interface KeyedPosition {
  readonly offset: bigint;
  readonly skip: number;
}

export function formatKeyedPosition(offset: bigint, skip: number): string {
  return skip === 0 ? offset.toString() : `${offset}:${skip}`;
}

export function parseKeyedPosition(text: string): KeyedPosition {
  const m = /^(\d+)(?::(\d+))?$/.exec(text);
  if (m === null) throw new Error(`keyed-topic position ${JSON.stringify(text)} is neither <offset> nor <offset>:<events to skip>`);
  return { offset: BigInt(m[1]!), skip: m[2] === undefined ? 0 : Number(m[2]) };
}
