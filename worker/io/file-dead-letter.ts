import { appendFile } from 'node:fs/promises';
import type { DeadLetterSink, SourceRecord } from './types';

/**
 * Local mode's dead-letter destination: one JSON line per invalid record in
 * `<data-dir>/dead-letter.jsonl`, with where it came from, why it was refused, and the
 * record itself (its first 64 KiB for oversized ones). At-least-once: a run resumed after a
 * crash may report a record again.
 */
export class FileDeadLetter implements DeadLetterSink {
  constructor(private readonly path: string) {}

  async send(record: SourceRecord, reason: string): Promise<void> {
    const line = JSON.stringify({
      origin: record.origin,
      reason,
      ingest_time: new Date(record.ingestTimeMs).toISOString(),
      bytes: record.byteLength ?? record.value.length,
      record: record.value.subarray(0, 65536).toString('utf8'),
    });
    await appendFile(this.path, `${line}\n`);
  }

  async close(): Promise<void> {}
}
