import { open, type FileHandle } from 'node:fs/promises';
import { resolve } from 'node:path';
import { AbacusError } from '../../common/errors';
import type { Source, SourceRecord } from './types';

/**
 * A JSONL file as a bounded source: one record per line, resumable from a byte offset.
 *
 * Position: `<byte offset of the next line>@<ingest ms>`. The ingest time of a file is the
 * time it was first ingested (or `ingestTimeMs` when given) and travels in the committed
 * position, so a run resumed after a crash makes the same retention decisions as the first.
 * Blank lines are skipped; a last line without a newline is still read; CRLF line ends are
 * accepted. A line longer than `maxLineBytes` is not buffered whole: its first bytes are
 * kept for the dead-letter report and its true size travels in `byteLength`.
 */
export class FileSource implements Source {
  readonly partition: string;
  private handle: FileHandle | undefined;
  private offset = 0;
  private ingestTimeMs = 0;
  private carry: Buffer = Buffer.alloc(0);
  private oversize: { keep: Buffer; size: number } | undefined;
  private eof = false;
  private readonly pending: SourceRecord[] = [];

  constructor(
    path: string,
    private readonly options: { maxLineBytes: number; ingestTimeMs?: number; clock?: () => number; chunkBytes?: number },
  ) {
    this.path = resolve(path);
    this.partition = `file:${this.path}`;
  }

  private readonly path: string;

  async start(positions: ReadonlyMap<string, string>): Promise<void> {
    try {
      this.handle = await open(this.path, 'r');
    } catch (err) {
      throw new AbacusError('InputUnreadable', `cannot read input ${this.path}: ${(err as Error).message}`, 'give the path of an existing JSONL file with --input');
    }
    const committed = positions.get(this.partition);
    if (committed !== undefined) {
      const [offset, ingest] = committed.split('@').map(Number) as [number, number];
      const size = (await this.handle.stat()).size;
      if (offset > size) {
        throw new AbacusError('InputShrunk', `input ${this.path} is ${size} bytes, shorter than the committed position ${offset}: it was replaced or truncated`, 'restore the original file, or count the new file into a fresh --data-dir');
      }
      this.offset = offset;
      this.ingestTimeMs = ingest;
    } else {
      this.ingestTimeMs = this.options.ingestTimeMs ?? (this.options.clock ?? Date.now)();
    }
  }

  async poll(max: number): Promise<SourceRecord[] | null> {
    while (this.pending.length < max && !this.eof) await this.readChunk();
    if (this.pending.length === 0) return null;
    return this.pending.splice(0, max);
  }

  private async readChunk(): Promise<void> {
    const chunk = Buffer.allocUnsafe(this.options.chunkBytes ?? 1 << 22);
    const readAt = this.offset + this.carry.length + (this.oversize?.size ?? 0);
    const { bytesRead } = await this.handle!.read(chunk, 0, chunk.length, readAt);
    if (bytesRead === 0) {
      this.eof = true;
      this.emitLine(this.carry, true);
      this.carry = Buffer.alloc(0);
      return;
    }
    let data = this.carry.length > 0 ? Buffer.concat([this.carry, chunk.subarray(0, bytesRead)]) : chunk.subarray(0, bytesRead);
    let start = 0;
    for (;;) {
      const nl = data.indexOf(0x0a, start);
      if (nl < 0) break;
      this.emitLine(data.subarray(start, nl), false);
      start = nl + 1;
    }
    data = data.subarray(start);
    if (this.oversize !== undefined || data.length > this.options.maxLineBytes) {
      // A line larger than any valid event: keep its head for the report, count the rest.
      this.oversize ??= { keep: Buffer.from(data.subarray(0, Math.min(data.length, 4096))), size: 0 };
      this.oversize.size += data.length;
      this.carry = Buffer.alloc(0);
    } else {
      this.carry = Buffer.from(data);
    }
  }

  /** Emits one line (without its newline); advances the committed offset past it. */
  private emitLine(line: Buffer, atEof: boolean): void {
    const over = this.oversize;
    this.oversize = undefined;
    const lineStart = this.offset;
    this.offset += (over?.size ?? 0) + line.length + (atEof ? 0 : 1);
    const size = (over?.size ?? 0) + line.length;
    if (size === 0 && atEof) return;
    let value = over === undefined ? Buffer.from(line) : over.keep;
    if (over === undefined && value.length > 0 && value[value.length - 1] === 0x0d) value = value.subarray(0, value.length - 1);
    if (over === undefined && (value.length === 0 || isSpace(value[0]!)) && value.toString('utf8').trim() === '') return;
    this.pending.push({
      value,
      ingestTimeMs: this.ingestTimeMs,
      partition: this.partition,
      nextPosition: `${this.offset}@${this.ingestTimeMs}`,
      origin: `${this.path}@${lineStart}`,
      ...(over === undefined ? {} : { byteLength: size }),
    });
  }

  async close(): Promise<void> {
    await this.handle?.close();
  }
}

function isSpace(byte: number): boolean {
  return byte === 0x20 || byte === 0x09 || byte === 0x0d;
}
