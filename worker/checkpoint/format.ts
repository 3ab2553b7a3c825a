import { createHash } from 'node:crypto';
import { promisify } from 'node:util';
import { gunzip, gzip } from 'node:zlib';
import { AbacusError } from '../../common/errors';

/**
 * The byte formats of a checkpoint — chunks and manifests — independent of the store binding:
 * a chunk is a list of (key, value) records as UTF-8 strings, whatever wrote them.
 *
 * Chunk (gzip of):
 *   "ABACUS-CHUNK/1\n"
 *   per record: op byte ('P' put | 'D' delete), u32be key length, key bytes,
 *               for a put: u32be value length, value bytes
 * A base chunk holds only puts (a full scan of one key group); a delta chunk holds the puts
 * and deletes of one key group since the previous checkpoint of that group.
 *
 * Manifest: one line of JSON (the Manifest below), then `sha256:<hex of that line>\n`, so a
 * truncated or altered manifest is recognised as damaged rather than misread.
 */

export const CHUNK_MAGIC = 'ABACUS-CHUNK/1\n';
export const MANIFEST_FORMAT = 'abacus-checkpoint/1';

const OP_PUT = 0x50; // 'P'
const OP_DEL = 0x44; // 'D'

/** One change of a chunk: a put (value is a string) or a delete (value is null). */
export type ChunkEntry = readonly [key: string, value: string | null];

export type ChunkKind = 'base' | 'delta';

/** A chunk as a manifest names it: where it is, what it holds, how to check it. */
export interface ChunkRef {
  /** Object key relative to the job's checkpoint root, e.g. `w0/chunks/000000000042/0011-base.chunk`. */
  readonly key: string;
  readonly kind: ChunkKind;
  /** sha256 of the stored (compressed) bytes, hex. */
  readonly sha256: string;
  /** Stored bytes. */
  readonly bytes: number;
  /** Records (puts + deletes) in the chunk. */
  readonly records: number;
}

export interface GroupEntry {
  /**
   * Applied in order to an empty range: a base (a full scan) then deltas. A group that was
   * empty when its base was taken has no base object: its chain starts with its deltas, or is
   * empty.
   */
  readonly chunks: readonly ChunkRef[];
  /** The group's input positions (partition → next position) as of this checkpoint. */
  readonly positions: Readonly<Record<string, string>>;
  /** Sequence of the checkpoint whose snapshot this entry is (older than the manifest when carried forward). */
  readonly snapshotSequence: number;
}

export interface Manifest {
  readonly format: typeof MANIFEST_FORMAT;
  /** `<writer>/<sequence, 12 digits>`: unique in the job, and ordered within a writer. */
  readonly id: string;
  readonly job: string;
  /** The writer's namespace: `w<ordinal>` in a cluster, `local` in local mode. */
  readonly writer: string;
  /** Per writer, increasing. */
  readonly sequence: number;
  /** The assignment generation the writer owned its groups under. */
  readonly generation: number;
  readonly createdAtMs: number;
  /** Why it was written: `periodic`, `final`, `handover`, … */
  readonly reason: string;
  /** The settings that decide what state means (common/job-config.ts stateFingerprint): restore refuses a mismatch. */
  readonly fingerprint: Readonly<Record<string, unknown>>;
  /** Key group (decimal) → its chunk chain. */
  readonly groups: Readonly<Record<string, GroupEntry>>;
  /** Local mode only: `~meta` and the unkeyed positions, taken in the same snapshot as the groups. */
  readonly unkeyed?: { readonly chunk: ChunkRef; readonly positions: Readonly<Record<string, string>> };
}

const gzipAsync = promisify(gzip);
const gunzipAsync = promisify(gunzip);

export function sha256(bytes: Buffer): string {
  return createHash('sha256').update(bytes).digest('hex');
}

/** Serialises entries (uncompressed) into one buffer sized up front. Pure. */
export function encodeChunkRaw(entries: readonly ChunkEntry[]): Buffer {
  let size = Buffer.byteLength(CHUNK_MAGIC);
  for (const [key, value] of entries) size += 5 + Buffer.byteLength(key, 'utf8') + (value === null ? 0 : 4 + Buffer.byteLength(value, 'utf8'));
  const out = Buffer.allocUnsafe(size);
  let at = out.write(CHUNK_MAGIC, 0, 'utf8');
  for (const [key, value] of entries) {
    out[at] = value === null ? OP_DEL : OP_PUT;
    const keyLength = out.write(key, at + 5, 'utf8');
    out.writeUInt32BE(keyLength, at + 1);
    at += 5 + keyLength;
    if (value !== null) {
      const valueLength = out.write(value, at + 4, 'utf8');
      out.writeUInt32BE(valueLength, at);
      at += 4 + valueLength;
    }
  }
  return out;
}

/** Parses an uncompressed chunk; throws a ChunkCorrupt error naming `where` on any inconsistency. Pure. */
export function decodeChunkRaw(raw: Buffer, where: string): ChunkEntry[] {
  const magic = Buffer.from(CHUNK_MAGIC, 'utf8');
  if (raw.length < magic.length || !raw.subarray(0, magic.length).equals(magic)) throw corrupt(where, 'it does not start with the chunk header');
  const out: ChunkEntry[] = [];
  let at = magic.length;
  const need = (n: number): void => {
    if (at + n > raw.length) throw corrupt(where, `it ends inside a record (offset ${at})`);
  };
  while (at < raw.length) {
    need(5);
    const op = raw[at]!;
    const keyLength = raw.readUInt32BE(at + 1);
    at += 5;
    need(keyLength);
    const key = raw.toString('utf8', at, at + keyLength);
    at += keyLength;
    if (op === OP_DEL) {
      out.push([key, null]);
    } else if (op === OP_PUT) {
      need(4);
      const valueLength = raw.readUInt32BE(at);
      at += 4;
      need(valueLength);
      out.push([key, raw.toString('utf8', at, at + valueLength)]);
      at += valueLength;
    } else {
      throw corrupt(where, `unknown record op 0x${op.toString(16)} at offset ${at - 5}`);
    }
  }
  return out;
}

/** A chunk ready to store: its compressed bytes and their checksum. */
export interface EncodedChunk {
  readonly body: Buffer;
  readonly sha256: string;
  readonly records: number;
}

/** Encodes and compresses off the event loop's thread (zlib runs in the thread pool). */
export async function encodeChunk(entries: readonly ChunkEntry[]): Promise<EncodedChunk> {
  const body = await gzipAsync(encodeChunkRaw(entries), { level: 1 });
  return { body, sha256: sha256(body), records: entries.length };
}

/** Checks a stored chunk against its reference, then decodes it. Never returns records of a chunk that fails its checksum. */
export async function decodeChunk(body: Buffer, ref: ChunkRef): Promise<ChunkEntry[]> {
  if (body.length !== ref.bytes) throw corrupt(ref.key, `it is ${body.length} bytes, the manifest says ${ref.bytes}`);
  const actual = sha256(body);
  if (actual !== ref.sha256) throw corrupt(ref.key, `its sha256 is ${actual}, the manifest says ${ref.sha256}`);
  let raw: Buffer;
  try {
    raw = await gunzipAsync(body);
  } catch (err) {
    throw corrupt(ref.key, `it does not decompress (${(err as Error).message})`);
  }
  const entries = decodeChunkRaw(raw, ref.key);
  if (entries.length !== ref.records) throw corrupt(ref.key, `it holds ${entries.length} records, the manifest says ${ref.records}`);
  return entries;
}

export function encodeManifest(m: Manifest): Buffer {
  const line = JSON.stringify(m);
  return Buffer.from(`${line}\nsha256:${sha256(Buffer.from(line, 'utf8'))}\n`, 'utf8');
}

/** Parses and checks a manifest; throws ManifestCorrupt naming `where` when it is damaged or not a manifest. Pure. */
export function decodeManifest(body: Buffer, where: string): Manifest {
  const text = body.toString('utf8');
  const nl = text.indexOf('\n');
  const tail = nl < 0 ? '' : text.slice(nl + 1);
  const m = /^sha256:([0-9a-f]{64})\n?$/.exec(tail);
  if (nl < 0 || m === null) throw damagedManifest(where, 'it has no checksum line (truncated?)');
  const line = text.slice(0, nl);
  if (sha256(Buffer.from(line, 'utf8')) !== m[1]) throw damagedManifest(where, 'its checksum does not match its content');
  let doc: unknown;
  try {
    doc = JSON.parse(line);
  } catch (err) {
    throw damagedManifest(where, `it is not JSON (${(err as Error).message})`);
  }
  return validateManifest(doc, where);
}

function validateManifest(doc: unknown, where: string): Manifest {
  const bad = (what: string): never => {
    throw damagedManifest(where, what);
  };
  if (!isObject(doc)) return bad('it is not a JSON object');
  if (doc.format !== MANIFEST_FORMAT) return bad(`its format is ${JSON.stringify(doc.format)}, expected ${MANIFEST_FORMAT}`);
  for (const f of ['id', 'job', 'writer', 'reason'] as const) if (typeof doc[f] !== 'string') bad(`${f} is not a string`);
  for (const f of ['sequence', 'generation', 'createdAtMs'] as const) if (!Number.isInteger(doc[f])) bad(`${f} is not an integer`);
  if (!isObject(doc.fingerprint)) bad('fingerprint is missing');
  if (!isObject(doc.groups)) bad('groups is missing');
  for (const [g, entry] of Object.entries(doc.groups as Record<string, unknown>)) {
    if (!/^[0-9]+$/.test(g)) bad(`group ${JSON.stringify(g)} is not a key group number`);
    if (!isObject(entry) || !Array.isArray(entry.chunks) || !isObject(entry.positions)) bad(`group ${g} has no chunk chain`);
    const chunks = (entry as { chunks: unknown[] }).chunks;
    chunks.forEach((c, i) => checkChunkRef(c, `group ${g} chunk ${i}`, bad));
    if (chunks.slice(1).some((c) => (c as ChunkRef).kind !== 'delta')) bad(`group ${g}'s chain has a base after its first chunk`);
  }
  if (doc.unkeyed !== undefined) {
    if (!isObject(doc.unkeyed) || !isObject(doc.unkeyed.positions)) bad('unkeyed is malformed');
    checkChunkRef((doc.unkeyed as { chunk: unknown }).chunk, 'unkeyed chunk', bad);
  }
  return doc as unknown as Manifest;
}

function checkChunkRef(c: unknown, what: string, bad: (what: string) => never): void {
  if (!isObject(c) || typeof c.key !== 'string' || (c.kind !== 'base' && c.kind !== 'delta') || typeof c.sha256 !== 'string' || !/^[0-9a-f]{64}$/.test(c.sha256) || !Number.isInteger(c.bytes) || !Number.isInteger(c.records)) {
    bad(`${what} is malformed`);
  }
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function corrupt(where: string, problem: string): AbacusError {
  return new AbacusError('CheckpointCorrupt', `checkpoint object ${where} is damaged: ${problem}`, 'this checkpoint cannot be used; restore from an older complete checkpoint');
}

function damagedManifest(where: string, problem: string): AbacusError {
  return new AbacusError('ManifestDamaged', `checkpoint manifest ${where} is damaged: ${problem}`, 'this checkpoint cannot be used; restore from an older complete checkpoint');
}

// --- the layout of a job's checkpoint root ------------------------------------------------

/** `<writer>/manifests/<sequence>.manifest` — written last: the commit point of a checkpoint. */
export function manifestKey(writer: string, sequence: number): string {
  return `${writer}/manifests/${seqText(sequence)}.manifest`;
}

export function manifestId(writer: string, sequence: number): string {
  return `${writer}/${seqText(sequence)}`;
}

/** The object key of a manifest id (`w0/000000000042`). */
export function manifestKeyOfId(id: string): string | undefined {
  const m = /^([A-Za-z0-9_.-]+)\/([0-9]{12})$/.exec(id);
  return m === null ? undefined : manifestKey(m[1]!, Number(m[2]));
}

/** Parses `<writer>/manifests/<sequence>.manifest`; undefined for any other key. */
export function parseManifestKey(key: string): { writer: string; sequence: number } | undefined {
  const m = /^([A-Za-z0-9_.-]+)\/manifests\/([0-9]{12})\.manifest$/.exec(key);
  return m === null ? undefined : { writer: m[1]!, sequence: Number(m[2]) };
}

/**
 * `<writer>/chunks/<sequence>/<group hex>-<kind>.chunk` (group `unkeyed` for local mode's
 * unkeyed records): the chunks of one checkpoint share a folder, so a local store syncs one
 * directory per checkpoint rather than one per group.
 */
export function chunkKey(writer: string, group: number | 'unkeyed', sequence: number, kind: ChunkKind): string {
  const g = group === 'unkeyed' ? 'unkeyed' : group.toString(16).padStart(4, '0');
  return `${writer}/chunks/${seqText(sequence)}/${g}-${kind}.chunk`;
}

/** Parses a chunk key; undefined for any other key. */
export function parseChunkKey(key: string): { writer: string; sequence: number } | undefined {
  const m = /^([A-Za-z0-9_.-]+)\/chunks\/([0-9]{12})\/[0-9a-z]+-(base|delta)\.chunk$/.exec(key);
  return m === null ? undefined : { writer: m[1]!, sequence: Number(m[2]) };
}

function seqText(sequence: number): string {
  return String(sequence).padStart(12, '0');
}

/** Every chunk key a manifest references. */
export function referencedKeys(m: Manifest): string[] {
  const keys: string[] = [];
  for (const entry of Object.values(m.groups)) for (const c of entry.chunks) keys.push(c.key);
  if (m.unkeyed !== undefined) keys.push(m.unkeyed.chunk.key);
  return keys;
}
