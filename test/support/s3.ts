import { ListObjectsV2Command, S3Client } from '@aws-sdk/client-s3';
import { need } from './node-cluster';

/** What the test S3 really holds under a prefix (every page), read with the SDK directly — never through the code under test. */
export async function listS3(prefix: string): Promise<Array<{ key: string; lastModified: Date }>> {
  const s3 = new S3Client({
    endpoint: need('ABACUS_TEST_S3_ENDPOINT'),
    region: process.env.ABACUS_TEST_S3_REGION ?? 'us-east-1',
    credentials: { accessKeyId: need('ABACUS_TEST_S3_ACCESS_KEY'), secretAccessKey: need('ABACUS_TEST_S3_SECRET_KEY') },
    forcePathStyle: true,
  });
  try {
    const out: Array<{ key: string; lastModified: Date }> = [];
    let token: string | undefined;
    do {
      const page = await s3.send(new ListObjectsV2Command({ Bucket: need('ABACUS_TEST_S3_BUCKET'), Prefix: prefix, ContinuationToken: token }));
      for (const o of page.Contents ?? []) out.push({ key: o.Key!, lastModified: o.LastModified! });
      token = page.IsTruncated === true ? page.NextContinuationToken : undefined;
    } while (token !== undefined);
    return out;
  } finally {
    s3.destroy();
  }
}
