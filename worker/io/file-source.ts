import { open, realpath, stat, type FileHandle } from 'node:fs/promises';
import { crc32 } from 'node:zlib';
import { AbacusError } from '../../common/errors';
import { JsonlSplitter, type JsonlLine } from './jsonl';
import type { Source, SourceRecord } from './types';

/**
 * JSONL input of local mode (`abacus run --input`): a regular file, resumable from a byte
 * offset, or standard input (`--input -`), read once from its start. Lines are split by
 * JsonlSplitter (./jsonl.ts), the same way for both.
 *
 * Position: `<byte offset of the next line>@<ingest ms>@<start of the last line>:<its CRC-32>`.
 * The ingest time of a file is the time it was first ingested (or `ingestTimeMs` when given)
 * and travels in the committed position, so a run resumed after a crash makes the same
 * retention decisions as the first. The last line's place and checksum let a resumed run
 * see that the file at that path is no longer the one it counted (replaced, rewritten,
 * edited before the position) instead of counting from the middle of another file.
 */
export interface FilePosition {
  /** Byte offset where the next line starts. */
  readonly offset: number;
  readonly ingestTimeMs: number;
  /** The last counted line: where it starts and the CRC-32 of its text (absent in positions written before it existed). */
  readonly lastLine?: { readonly start: number; readonly crc: number };
}

export function formatFilePosition(p: FilePosition): string {
  const base = `${p.offset}@${p.ingestTimeMs}`;
  return p.lastLine === undefined ? base : `${base}@${p.lastLine.start}:${p.lastLine.crc.toString(16)}`;
}

/** Reads a position of formatFilePosition, or undefined when it is not one. */
export function parseFilePosition(text: string): FilePosition | undefined {
  const m = /^(\d+)@(\d+)(?:@(\d+):([0-9a-f]{1,8}))?$/.exec(text);
  if (m === null) return undefined;
  const base = { offset: Number(m[1]), ingestTimeMs: Number(m[2]) };
  return m[3] === undefined ? base : { ...base, lastLine: { start: Number(m[3]), crc: parseInt(m[4]!, 16) } };
}
export interface LineSourceOptions {
  readonly maxLineBytes: number;
  readonly ingestTimeMs?: number;
  readonly clock?: () => number;
  readonly chunkBytes?: number;
}

/** What opening `--input PATH` found, when it is not a file that can be counted. */
function unusableInput(path: string, stats: { isDirectory(): boolean; isFIFO(): boolean; isSocket(): boolean; isCharacterDevice(): boolean }): AbacusError | undefined {
  const stream = 'read it through standard input instead (`--input -`, e.g. `producer | abacus run --input - ...`); only a regular file can be resumed after a crash';
  if (stats.isDirectory()) return new AbacusError('InputUnreadable', `input ${path} is a directory`, 'give the path of a JSONL file with --input');
  if (stats.isFIFO()) return new AbacusError('InputUnreadable', `input ${path} is a pipe`, stream);
  if (stats.isSocket()) return new AbacusError('InputUnreadable', `input ${path} is a socket`, stream);
  if (stats.isCharacterDevice()) return new AbacusError('InputUnreadable', `input ${path} is a device`, stream);
  return undefined;
}

/** Records of lines, in order, with the positions that resume after them. */
class LineBuffer {
  readonly pending: SourceRecord[] = [];
  ingestTimeMs = 0;

  constructor(
    readonly partition: string,
    private readonly originPrefix: string,
  ) {}

  add(line: JsonlLine): void {
    this.pending.push({
      value: line.value,
      ingestTimeMs: this.ingestTimeMs,
      partition: this.partition,
      nextPosition: formatFilePosition({ offset: line.end, ingestTimeMs: this.ingestTimeMs, lastLine: { start: line.start, crc: crc32(line.value) } }),
      origin: `${this.originPrefix}@${line.start}`,
      ...(line.byteLength === undefined ? {} : { byteLength: line.byteLength }),
    });
  }

  take(max: number): SourceRecord[] | null {
    return this.pending.length === 0 ? null : this.pending.splice(0, max);
  }
}

export class FileSource implements Source {
  readonly partition: string;
  private readonly lines: LineBuffer;
  private splitter: JsonlSplitter | undefined;
  private eof = false;

  private constructor(
    private readonly path: string,
    private readonly handle: FileHandle,
    private readonly options: LineSourceOptions,
  ) {
    this.partition = `file:${path}`;
    this.lines = new LineBuffer(this.partition, path);
  }

  /**
   * Opens `path` for counting, before anything else happens, so that a wrong --input is
   * reported before a data dir is created. `/dev/stdin` and other links resolve to what they
   * name: a redirected regular file is a file; a pipe, directory or device is refused.
   */
  static async open(path: string, options: LineSourceOptions): Promise<FileSource> {
    let resolved: string;
    let handle: FileHandle;
    try {
      const unusable = unusableInput(path, await stat(path));
      if (unusable !== undefined) throw unusable;
      resolved = await realpath(path);
      handle = await open(resolved, 'r');
    } catch (err) {
      if (err instanceof AbacusError) throw err;
      throw new AbacusError('InputUnreadable', `cannot read input ${path}: ${(err as Error).message}`, 'give the path of an existing JSONL file with --input');
    }
    return new FileSource(resolved, handle, options);
  }

  async start(positions: ReadonlyMap<string, string>): Promise<void> {
    const committed = positions.get(this.partition);
    let offset = 0;
    if (committed !== undefined) {
      const position = parseFilePosition(committed);
      if (position === undefined) {
        throw new AbacusError('StateCorrupt', `the committed position of input ${this.path} is not a file position: ${JSON.stringify(committed)}`, 'count the file into a fresh --data-dir');
      }
      const size = (await this.handle.stat()).size;
      if (position.offset > size) {
        throw new AbacusError('InputShrunk', `input ${this.path} is ${size} bytes, shorter than the committed position ${position.offset}: it was replaced or truncated`, 'restore the original file, or count the new file into a fresh --data-dir');
      }
      if (position.lastLine !== undefined && !(await this.lastLineMatches(position.lastLine.start, position.offset, position.lastLine.crc))) {
        throw new AbacusError('InputReplaced', `input ${this.path} is not the file this data dir counted up to byte ${position.offset}: the line before that position has changed (the file was replaced or rewritten)`, 'restore the original file (appending to it is fine), or count the new file into a fresh --data-dir');
      }
      offset = position.offset;
      this.lines.ingestTimeMs = position.ingestTimeMs;
    } else {
      this.lines.ingestTimeMs = this.options.ingestTimeMs ?? (this.options.clock ?? Date.now)();
    }
    this.splitter = new JsonlSplitter(offset, this.options.maxLineBytes, (line) => this.lines.add(line));
  }

  /** Whether the bytes [start, end) still split into the line whose CRC-32 was committed. */
  private async lastLineMatches(start: number, end: number, crc: number): Promise<boolean> {
    if (start > end) return false;
    const bytes = Buffer.alloc(end - start);
    const { bytesRead } = await this.handle.read(bytes, 0, bytes.length, start);
    const seen: JsonlLine[] = [];
    const splitter = new JsonlSplitter(start, this.options.maxLineBytes, (line) => seen.push(line));
    splitter.push(bytes.subarray(0, bytesRead));
    splitter.end();
    return seen.length === 1 && seen[0]!.end === end && crc32(seen[0]!.value) === crc;
  }

  async poll(max: number): Promise<SourceRecord[] | null> {
    while (this.lines.pending.length < max && !this.eof) await this.readChunk();
    return this.lines.take(max);
  }

  private async readChunk(): Promise<void> {
    const splitter = this.splitter!;
    const chunk = Buffer.allocUnsafe(this.options.chunkBytes ?? 1 << 22);
    const { bytesRead } = await this.handle.read(chunk, 0, chunk.length, splitter.fedTo);
    if (bytesRead === 0) {
      this.eof = true;
      splitter.end();
    } else {
      splitter.push(chunk.subarray(0, bytesRead));
    }
  }

  async close(): Promise<void> {
    await this.handle.close();
  }
}

/**
 * Standard input (`--input -`): read once, from its start, to its end. A stream cannot be
 * re-read, so the position committed with the state is not used to resume: a run that
 * stopped midway is re-run by sending the whole input again, and the copies of events
 * already counted are dropped as duplicates (within dedup.retention of ingest time).
 */
export class StreamSource implements Source {
  readonly partition = 'stdin';
  private readonly lines = new LineBuffer(this.partition, '-');
  private readonly splitter: JsonlSplitter;
  private readonly chunks: AsyncIterator<Buffer>;
  private eof = false;

  constructor(
    stream: NodeJS.ReadableStream,
    private readonly options: LineSourceOptions,
  ) {
    this.splitter = new JsonlSplitter(0, options.maxLineBytes, (line) => this.lines.add(line));
    this.chunks = (stream as AsyncIterable<Buffer>)[Symbol.asyncIterator]();
  }

  start(): Promise<void> {
    this.lines.ingestTimeMs = this.options.ingestTimeMs ?? (this.options.clock ?? Date.now)();
    return Promise.resolve();
  }

  async poll(max: number): Promise<SourceRecord[] | null> {
    while (this.lines.pending.length < max && !this.eof) {
      const next = await this.chunks.next();
      if (next.done === true) {
        this.eof = true;
        this.splitter.end();
      } else {
        this.splitter.push(typeof next.value === 'string' ? Buffer.from(next.value) : next.value);
      }
    }
    return this.lines.take(max);
  }

  async close(): Promise<void> {
    await this.chunks.return?.();
  }
}
