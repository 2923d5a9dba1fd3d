/**
 * The seam between the S3 driver and an S3 client: the few bucket-scoped operations the driver
 * uses, and the driver's options. Types only, so the driver, the SDK binding (s3-client.ts) and
 * test fakes can all depend on it without depending on each other.
 */
import type { Readable } from 'node:stream';
import type { ObjectInfo } from './driver.js';

/** One page of a listing; `nextToken` is set when there are more. */
export interface S3ListPage {
  objects: ObjectInfo[];
  /** With a delimiter: the common prefixes (full, each ending with the delimiter). */
  prefixes?: string[];
  nextToken?: string;
}

/** A per-key failure reported by a batch delete. */
export interface S3DeleteFailure {
  key: string;
  code: string;
  message: string;
}

/**
 * The S3 operations the driver uses, on one bucket, with full object keys (prefix included).
 * "Not found" is a return value, not an error, so a fake needs to know nothing about SDK error
 * shapes; anything thrown is reported as RepoIoFailed.
 */
export interface S3Like {
  putObject(key: string, body: Buffer): Promise<void>;
  createMultipartUpload(key: string): Promise<string>;
  /** Returns the part's ETag. */
  uploadPart(key: string, uploadId: string, partNumber: number, body: Buffer, signal?: AbortSignal): Promise<string>;
  completeMultipartUpload(
    key: string,
    uploadId: string,
    parts: readonly { partNumber: number; etag: string }[],
  ): Promise<void>;
  abortMultipartUpload(key: string, uploadId: string): Promise<void>;
  /**
   * The object's bytes, or undefined when it does not exist. With `range`, bytes [start, end)
   * (end > start; GetObject Range): fewer when the object ends before `end`, an empty stream when
   * it ends at or before `start` (S3 answers 416 InvalidRange).
   */
  getObject(key: string, range?: { start: number; end: number }): Promise<Readable | undefined>;
  /** The object's size, or undefined when it does not exist. */
  headObject(key: string): Promise<{ size: number } | undefined>;
  /**
   * Keys starting with `prefix`, in key order, at most `maxKeys` per page. With `delimiter`, keys
   * holding it after the prefix are rolled up into `prefixes` (ListObjectsV2 Delimiter).
   */
  listObjects(prefix: string, maxKeys: number, continuationToken?: string, delimiter?: string): Promise<S3ListPage>;
  /** Deletes up to 1000 keys; missing keys are not failures. */
  deleteObjects(keys: readonly string[]): Promise<S3DeleteFailure[]>;
  /** Releases sockets. */
  destroy(): void;
}

export interface S3DriverOptions {
  bucket: string;
  /** Key prefix inside the bucket ('' or e.g. 'pgfleet/prod'); a trailing '/' is implied. */
  prefix?: string;
  /** Multipart part size; bodies smaller than one part go up with a single PutObject. Default 8 MiB. */
  partSizeBytes?: number;
  /** Keys per ListObjectsV2 page (S3 caps it at 1000). Default 1000. */
  listPageSize?: number;
}

export interface CreateS3DriverOptions extends S3DriverOptions {
  /** Custom endpoint for S3-compatible services (MinIO, Ceph, ...), e.g. http://127.0.0.1:9000. */
  endpoint?: string;
  /** Default: the SDK's resolution (AWS_REGION, profile); us-east-1 with a custom endpoint. */
  region?: string;
  /** Path-style URLs (endpoint/bucket/key), needed by most S3-compatible services. */
  forcePathStyle?: boolean;
  /** Static credentials; without them the SDK's default chain (env, profile, instance role) applies. */
  accessKeyId?: string;
  secretAccessKey?: string;
  /** Attempts per request, first one included (SDK standard retry mode). Default 5. */
  maxAttempts?: number;
}
