/**
 * Binds the AWS SDK's S3Client to the driver's `S3Like` interface. This is the only module that
 * imports '@aws-sdk/client-s3', and nothing imports it statically: `createS3Driver` loads it with
 * a dynamic import, so the SDK stays out of the start-up of every other '@pgfleet/storage' user.
 * It is deliberately not exported from the package index.
 */
import { Readable } from 'node:stream';
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  DeleteObjectsCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
  UploadPartCommand,
} from '@aws-sdk/client-s3';
import type { CreateS3DriverOptions, S3Like } from './s3-like.js';

function httpStatus(err: unknown): number | undefined {
  return (err as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode;
}

function errorName(err: unknown): string | undefined {
  return (err as { name?: string }).name;
}

export function bindS3Client(opts: CreateS3DriverOptions): S3Like {
  const Bucket = opts.bucket;
  const client = new S3Client({
    ...(opts.endpoint ? { endpoint: opts.endpoint } : {}),
    // Without a region the SDK resolves one (AWS_REGION, profile); S3-compatible services behind a
    // custom endpoint usually do not care, so do not make their users invent one.
    ...(opts.region ? { region: opts.region } : opts.endpoint ? { region: 'us-east-1' } : {}),
    ...(opts.forcePathStyle !== undefined ? { forcePathStyle: opts.forcePathStyle } : {}),
    ...(opts.accessKeyId && opts.secretAccessKey
      ? { credentials: { accessKeyId: opts.accessKeyId, secretAccessKey: opts.secretAccessKey } }
      : {}),
    // Standard mode: exponential backoff with full jitter, retrying 5xx, throttling (429,
    // SlowDown) and transient network errors (ECONNRESET, timeouts). Safe because every request
    // body the driver sends is a Buffer the SDK can resend.
    retryMode: 'standard',
    maxAttempts: opts.maxAttempts ?? 5,
    // A dead endpoint should fail (and be retried) promptly. No socket idle timeout: a GET body
    // legitimately sits idle while a slow consumer applies backpressure.
    requestHandler: { connectionTimeout: 10_000 },
  });

  return {
    async putObject(key: string, body: Buffer): Promise<void> {
      await client.send(new PutObjectCommand({ Bucket, Key: key, Body: body, ContentLength: body.length }));
    },

    async createMultipartUpload(key: string): Promise<string> {
      const res = await client.send(new CreateMultipartUploadCommand({ Bucket, Key: key }));
      if (!res.UploadId) throw new Error('CreateMultipartUpload returned no UploadId');
      return res.UploadId;
    },

    async uploadPart(
      key: string,
      uploadId: string,
      partNumber: number,
      body: Buffer,
      signal?: AbortSignal,
    ): Promise<string> {
      const res = await client.send(
        new UploadPartCommand({
          Bucket,
          Key: key,
          UploadId: uploadId,
          PartNumber: partNumber,
          Body: body,
          ContentLength: body.length,
        }),
        signal ? { abortSignal: signal } : {},
      );
      if (!res.ETag) throw new Error(`UploadPart ${partNumber} returned no ETag`);
      return res.ETag;
    },

    async completeMultipartUpload(key, uploadId, parts): Promise<void> {
      await client.send(
        new CompleteMultipartUploadCommand({
          Bucket,
          Key: key,
          UploadId: uploadId,
          MultipartUpload: { Parts: parts.map((p) => ({ PartNumber: p.partNumber, ETag: p.etag })) },
        }),
      );
    },

    async abortMultipartUpload(key: string, uploadId: string): Promise<void> {
      await client.send(new AbortMultipartUploadCommand({ Bucket, Key: key, UploadId: uploadId }));
    },

    async getObject(key: string, range?: { start: number; end: number }): Promise<Readable | undefined> {
      try {
        const res = await client.send(
          new GetObjectCommand({
            Bucket,
            Key: key,
            // HTTP ranges are inclusive at both ends.
            ...(range ? { Range: `bytes=${range.start}-${range.end - 1}` } : {}),
          }),
        );
        // In Node the body is the http.IncomingMessage (a Readable) with SDK helpers mixed in.
        return res.Body as Readable;
      } catch (err) {
        // Only NoSuchKey: a 404 NoSuchBucket is a misconfiguration, not a missing file.
        if (errorName(err) === 'NoSuchKey') return undefined;
        // A range starting at or past the end of an existing object: nothing there to read.
        if (range && (errorName(err) === 'InvalidRange' || httpStatus(err) === 416)) return Readable.from([]);
        throw err;
      }
    },

    async headObject(key: string): Promise<{ size: number } | undefined> {
      try {
        const res = await client.send(new HeadObjectCommand({ Bucket, Key: key }));
        return { size: res.ContentLength ?? 0 };
      } catch (err) {
        // HEAD responses have no body, so a 404 carries no error code to tell key from bucket.
        if (httpStatus(err) === 404 || errorName(err) === 'NotFound' || errorName(err) === 'NoSuchKey')
          return undefined;
        throw err;
      }
    },

    async listObjects(prefix: string, maxKeys: number, continuationToken?: string, delimiter?: string) {
      const res = await client.send(
        new ListObjectsV2Command({
          Bucket,
          Prefix: prefix,
          MaxKeys: maxKeys,
          ...(continuationToken ? { ContinuationToken: continuationToken } : {}),
          ...(delimiter ? { Delimiter: delimiter } : {}),
        }),
      );
      if (res.IsTruncated && !res.NextContinuationToken)
        throw new Error('ListObjectsV2 returned a truncated page without a continuation token');
      return {
        objects: (res.Contents ?? []).map((o) => ({ key: o.Key!, size: o.Size ?? 0 })),
        ...(delimiter ? { prefixes: (res.CommonPrefixes ?? []).map((p) => p.Prefix!) } : {}),
        ...(res.IsTruncated ? { nextToken: res.NextContinuationToken! } : {}),
      };
    },

    async deleteObjects(keys: readonly string[]) {
      if (keys.length === 0) return [];
      const res = await client.send(
        new DeleteObjectsCommand({ Bucket, Delete: { Objects: keys.map((Key) => ({ Key })), Quiet: true } }),
      );
      return (res.Errors ?? []).map((e) => ({
        key: e.Key ?? '?',
        code: e.Code ?? 'Unknown',
        message: e.Message ?? '',
      }));
    },

    destroy(): void {
      client.destroy();
    },
  };
}
