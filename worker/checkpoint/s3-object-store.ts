import { DeleteObjectsCommand, GetObjectCommand, HeadObjectCommand, ListObjectsV2Command, PutObjectCommand, S3Client, S3ServiceException } from '@aws-sdk/client-s3';
import type { CheckpointConfig, CheckpointS3Config } from '../../common/job-config';
import { LocalObjectStore, objectMissing, type ObjectInfo, type ObjectStore } from './object-store';

/** Where a job's checkpoints live in S3 (the `checkpoints.s3` section of the job config). */
export type S3Location = CheckpointS3Config;

/** The object store a job's checkpoint settings name. */
export function objectStoreFor(config: CheckpointConfig): ObjectStore & { close?(): void } {
  return config.s3 !== undefined ? new S3ObjectStore(config.s3) : new LocalObjectStore(config.dir!);
}

/** The S3 client for a location; credentials from the SDK's default chain unless given (the operator passes a job Secret's). */
export function s3ClientFor(location: S3Location, credentials?: { accessKeyId: string; secretAccessKey: string }): S3Client {
  return new S3Client({
    region: location.region,
    forcePathStyle: location.forcePathStyle,
    ...(location.endpoint === undefined ? {} : { endpoint: location.endpoint }),
    ...(credentials === undefined ? {} : { credentials }),
    // Our own sha256 in the manifest guards content; the SDK's optional CRC headers are
    // not understood by every S3-compatible store.
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
    // A store that is down must fail the call (and the checkpoint) in seconds, not hang it.
    requestHandler: { connectionTimeout: 5_000, requestTimeout: 60_000 },
  });
}

/**
 * S3 (or any S3-compatible store) as an object store. A PUT is atomic in S3 — a reader sees
 * the old object, the whole new one or nothing — so no temp-object dance is needed.
 * Credentials come from the SDK's default chain (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY
 * in the environment, filled from a Secret by the operator). The SDK's own retries (3
 * attempts) cover a blip; a longer outage fails the call and the checkpoint is retried
 * later by the checkpointer with its own backoff.
 */
export class S3ObjectStore implements ObjectStore {
  private readonly client: S3Client;

  constructor(
    private readonly location: S3Location,
    client?: S3Client,
  ) {
    this.client = client ?? s3ClientFor(location);
  }

  get description(): string {
    return `s3://${this.location.bucket}/${this.location.prefix}`;
  }

  async put(key: string, body: Buffer, signal?: AbortSignal): Promise<void> {
    await this.client.send(new PutObjectCommand({ Bucket: this.location.bucket, Key: this.full(key), Body: body, ContentLength: body.length }), signal === undefined ? {} : { abortSignal: signal });
  }

  async get(key: string): Promise<Buffer> {
    try {
      const out = await this.client.send(new GetObjectCommand({ Bucket: this.location.bucket, Key: this.full(key) }));
      return Buffer.from(await out.Body!.transformToByteArray());
    } catch (err) {
      if (isNotFound(err)) throw objectMissing(this, key);
      throw err;
    }
  }

  async size(key: string): Promise<number | undefined> {
    try {
      const out = await this.client.send(new HeadObjectCommand({ Bucket: this.location.bucket, Key: this.full(key) }));
      return out.ContentLength ?? 0;
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw err;
    }
  }

  async list(prefix: string): Promise<ObjectInfo[]> {
    const out: ObjectInfo[] = [];
    let token: string | undefined;
    do {
      const page = await this.client.send(new ListObjectsV2Command({ Bucket: this.location.bucket, Prefix: this.full(prefix), ContinuationToken: token }));
      for (const o of page.Contents ?? []) {
        if (o.Key !== undefined) out.push({ key: o.Key.slice(this.location.prefix.length), size: o.Size ?? 0 });
      }
      token = page.IsTruncated === true ? page.NextContinuationToken : undefined;
    } while (token !== undefined);
    return out;
  }

  async delete(keys: readonly string[]): Promise<void> {
    for (let i = 0; i < keys.length; i += 1000) {
      const batch = keys.slice(i, i + 1000);
      const out = await this.client.send(
        new DeleteObjectsCommand({ Bucket: this.location.bucket, Delete: { Objects: batch.map((k) => ({ Key: this.full(k) })), Quiet: true } }),
      );
      const failed = (out.Errors ?? []).filter((e) => e.Code !== 'NoSuchKey');
      if (failed.length > 0) throw new Error(`deleting ${failed.length} checkpoint objects failed, e.g. ${failed[0]!.Key}: ${failed[0]!.Code} ${failed[0]!.Message}`);
    }
  }

  /** An S3 PUT is durable when it returns. */
  barrier(): Promise<void> {
    return Promise.resolve();
  }

  /** Closes the client's sockets. */
  close(): void {
    this.client.destroy();
  }

  private full(key: string): string {
    return `${this.location.prefix}${key}`;
  }
}

function isNotFound(err: unknown): boolean {
  if (err instanceof S3ServiceException) return err.name === 'NoSuchKey' || err.name === 'NotFound' || err.$metadata.httpStatusCode === 404;
  return false;
}
