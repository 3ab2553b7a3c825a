import { isUtf8 } from 'node:buffer';
import { appendFile } from 'node:fs/promises';
import type { DeadLetterSink, SourceRecord } from './types';

/**
 * Local mode's dead-letter destination: one JSON line per invalid record in
 * `<data-dir>/dead-letter.jsonl`, with where it came from, why it was refused, and the
 * record itself (its first 64 KiB for oversized ones) — as text in `record`, or, when its bytes
 * are not UTF-8, unchanged in `record_base64`. At-least-once: a run resumed after a
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
      ...recordField(record.value.subarray(0, 65536)),
    });
    await appendFile(this.path, `${line}\n`);
  }

  async close(): Promise<void> {}
}

/** The record as text when its bytes are UTF-8, else the exact bytes (decoding would replace them). */
function recordField(head: Buffer): { record: string } | { record_base64: string } {
  return isUtf8(head) ? { record: head.toString('utf8') } : { record_base64: head.toString('base64') };
}
