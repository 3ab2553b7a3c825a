import { closeSync, existsSync, openSync, readSync, renameSync, writeSync } from 'node:fs';
import { EventGenerator } from '../../worker/io/generator';
import { benchWorkload } from '../workload';

/**
 * The benchmark workload as files, written once and then read in micro-batches, so the
 * kernels are measured without the generator's cost: `<base>.jsonl` (one event per line)
 * and `<base>.ingest` (each record's ingest second, little-endian uint32).
 */
export function workloadFiles(dir: string, events: number, customers: number): { jsonl: string; ingest: string } {
  const base = `${dir}/hotpath-${events}-${customers}`;
  const files = { jsonl: `${base}.jsonl`, ingest: `${base}.ingest` };
  if (existsSync(files.jsonl) && existsSync(files.ingest)) return files;
  const gen = new EventGenerator(benchWorkload(events, customers));
  const out = openSync(`${files.jsonl}.tmp`, 'w');
  const ing = openSync(`${files.ingest}.tmp`, 'w');
  const chunk = 65_536;
  for (let from = 0; from < events; from += chunk) {
    const to = Math.min(events, from + chunk);
    const lines: string[] = [];
    const secs = new Uint32Array(to - from);
    for (let i = from; i < to; i++) {
      const r = gen.recordAt(i);
      lines.push(r.value);
      secs[i - from] = Math.floor(r.ingestTimeMs / 1000);
    }
    writeSync(out, `${lines.join('\n')}\n`);
    writeSync(ing, Buffer.from(secs.buffer));
  }
  closeSync(out);
  closeSync(ing);
  renameSync(`${files.jsonl}.tmp`, files.jsonl);
  renameSync(`${files.ingest}.tmp`, files.ingest);
  return files;
}

/**
 * Reads a workload file in micro-batches of up to `batchSize` whole lines. After next()
 * returns true, lines [starts[i], ends[i]) of `buf` for i < count are the batch and
 * ingest[i] their ingest seconds. Buffers are reused: nothing is allocated per batch.
 */
export class BatchReader {
  buf = Buffer.alloc(8 << 20);
  readonly starts: Int32Array;
  readonly ends: Int32Array;
  readonly ingest: Uint32Array;
  count = 0;
  private filled = 0;
  private consumed = 0;
  private eof = false;
  private readonly fd: number;
  private readonly ingestFd: number;
  private readonly ingestBytes: Buffer;

  constructor(
    files: { jsonl: string; ingest: string },
    readonly batchSize: number,
  ) {
    this.fd = openSync(files.jsonl, 'r');
    this.ingestFd = openSync(files.ingest, 'r');
    this.starts = new Int32Array(batchSize);
    this.ends = new Int32Array(batchSize);
    this.ingestBytes = Buffer.alloc(batchSize * 4);
    this.ingest = new Uint32Array(this.ingestBytes.buffer, this.ingestBytes.byteOffset, batchSize);
  }

  next(): boolean {
    this.count = 0;
    for (;;) {
      let at = this.consumed;
      while (this.count < this.batchSize) {
        const nl = this.buf.indexOf(10, at);
        if (nl < 0 || nl >= this.filled) break;
        this.starts[this.count] = at;
        this.ends[this.count] = nl;
        this.count++;
        at = nl + 1;
      }
      if (this.count === this.batchSize || (this.eof && this.count > 0)) {
        this.consumed = at;
        readSync(this.ingestFd, this.ingestBytes, 0, this.count * 4, null);
        return true;
      }
      if (this.eof) return false;
      // Not a whole batch in the buffer: move the rest to the front and read more.
      this.count = 0;
      this.buf.copy(this.buf, 0, this.consumed, this.filled);
      this.filled -= this.consumed;
      this.consumed = 0;
      const n = readSync(this.fd, this.buf, this.filled, this.buf.length - this.filled, null);
      if (n === 0) this.eof = true;
      this.filled += n;
    }
  }

  close(): void {
    closeSync(this.fd);
    closeSync(this.ingestFd);
  }
}
