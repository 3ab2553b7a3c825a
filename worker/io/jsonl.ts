/**
 * Splits a JSONL byte stream into records, the same way for a file and for standard input
 * (docs/semantics.md, "JSONL input"):
 *
 * - a line ends at LF; one CR before it is not part of the line; a last line without a
 *   newline is still a line;
 * - a UTF-8 byte-order mark at the very start of the stream is skipped;
 * - a line made only of JSON whitespace (space, tab, CR) is not a record, whatever its length;
 * - a line longer than `maxLineBytes` is never buffered whole: its first 4 KiB are kept for
 *   the dead-letter report and its true size travels in `byteLength`.
 *
 * Offsets count bytes from the start of the stream, so a file source can resume after the
 * last line it committed.
 */
export interface JsonlLine {
  /** The line without its line end (only the first bytes of an oversized line). */
  readonly value: Buffer;
  /** Offset of the line's first byte. */
  readonly start: number;
  /** Offset after the line and its newline: where the next line starts. */
  readonly end: number;
  /** The line's true size, set when `value` holds only its first bytes. */
  readonly byteLength?: number;
}

const LF = 0x0a;
const CR = 0x0d;
const BOM = Buffer.from([0xef, 0xbb, 0xbf]);
const OVERSIZE_KEEP = 4096;

export function isJsonWhitespace(bytes: Buffer): boolean {
  for (let i = 0; i < bytes.length; i++) {
    const b = bytes[i];
    if (b !== 0x20 && b !== 0x09 && b !== CR) return false;
  }
  return true;
}

export class JsonlSplitter {
  private carry: Buffer = Buffer.alloc(0);
  /** An oversized line in progress: its head, its size so far, and whether it is all whitespace so far. */
  private oversize: { keep: Buffer; size: number; blank: boolean } | undefined;
  /** Offset of the start of the current (unfinished) line. */
  private lineStart: number;
  private bomPending: boolean;

  constructor(
    startOffset: number,
    private readonly maxLineBytes: number,
    private readonly emit: (line: JsonlLine) => void,
  ) {
    this.lineStart = startOffset;
    this.bomPending = startOffset === 0;
  }

  /** The offset the next pushed chunk starts at. */
  get fedTo(): number {
    return this.lineStart + (this.oversize?.size ?? 0) + this.carry.length;
  }

  push(chunk: Buffer): void {
    let data = this.carry.length > 0 ? Buffer.concat([this.carry, chunk]) : chunk;
    if (this.bomPending) {
      if (data.length < BOM.length && BOM.subarray(0, data.length).equals(data)) {
        this.carry = Buffer.from(data); // not decided yet
        return;
      }
      this.bomPending = false;
      if (data.subarray(0, BOM.length).equals(BOM)) {
        data = data.subarray(BOM.length);
        this.lineStart += BOM.length;
      }
    }
    let start = 0;
    for (let nl = data.indexOf(LF); nl >= 0; nl = data.indexOf(LF, start)) {
      this.finishLine(data.subarray(start, nl), 1);
      start = nl + 1;
    }
    const rest = data.subarray(start);
    if (this.oversize !== undefined || rest.length > this.maxLineBytes) {
      this.oversize ??= { keep: Buffer.from(rest.subarray(0, OVERSIZE_KEEP)), size: 0, blank: true };
      this.oversize.size += rest.length;
      this.oversize.blank &&= isJsonWhitespace(rest);
      this.carry = Buffer.alloc(0);
    } else {
      this.carry = Buffer.from(rest);
    }
  }

  /** The end of the stream: a last line without a newline is a line too. */
  end(): void {
    this.bomPending = false;
    const rest = this.carry;
    this.carry = Buffer.alloc(0);
    if (rest.length > 0 || this.oversize !== undefined) this.finishLine(rest, 0);
  }

  /** `tail` is the last piece of the line (after any oversized part); `newline` is 1 when a LF ends it. */
  private finishLine(tail: Buffer, newline: number): void {
    const over = this.oversize;
    this.oversize = undefined;
    const start = this.lineStart;
    const size = (over?.size ?? 0) + tail.length;
    this.lineStart = start + size + newline;
    if (over !== undefined) {
      if (over.blank && isJsonWhitespace(tail)) return;
      this.emit({ value: over.keep, start, end: this.lineStart, byteLength: size });
      return;
    }
    const value = tail.length > 0 && tail[tail.length - 1] === CR ? tail.subarray(0, tail.length - 1) : tail;
    if (isJsonWhitespace(value)) return;
    this.emit({ value: Buffer.from(value), start, end: this.lineStart });
  }
}
