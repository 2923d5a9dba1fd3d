/**
 * The repository driver: the one seam between pgfleet and where backup bytes live (a directory,
 * an S3 bucket). Drivers know keys and bytes, nothing about PostgreSQL. Every driver passes the
 * shared suite in driver-suite.ts.
 */
import type { Readable } from 'node:stream';

export interface ObjectInfo {
  /** Key relative to the repository root, '/'-separated. */
  key: string;
  size: number;
}

export interface RepositoryDriver {
  /** 'mirrored': several repositories as one (mirrored-driver.ts). */
  readonly kind: 'posix' | 's3' | 'mirrored';
  /** Human-readable location for messages (a path or s3://bucket/prefix). */
  readonly location: string;
  /**
   * Stores `body` under `key` atomically: a reader sees the whole object or nothing, never a
   * prefix, even if the process dies mid-write. Overwrites an existing object.
   */
  put(key: string, body: Readable | Buffer, options?: PutOptions): Promise<void>;
  /** Streams the object; throws PgfleetError RepoFileMissing when it does not exist. */
  get(key: string): Promise<Readable>;
  /** Size of the object, or undefined when it does not exist. */
  stat(key: string): Promise<ObjectInfo | undefined>;
  /** Every object whose key starts with `prefix`, in key order. */
  list(prefix: string): AsyncIterable<ObjectInfo>;
  /** Removes the objects; keys that do not exist are ignored. */
  delete(keys: readonly string[]): Promise<void>;
  /**
   * Makes puts done with `deferDirSync` durable: fsyncs the directories holding `keys` (and their
   * parents up to the root). Drivers whose puts are durable on return need not implement it.
   */
  syncKeys?(keys: readonly string[]): Promise<void>;
  /** Releases connections (S3 sockets); the driver is unusable afterwards. */
  close?(): void;
}

export interface PutOptions {
  /**
   * Posix: fsync the file but not its directory; the caller calls syncKeys() once for a batch
   * before anything (a manifest) declares the batch complete. Saves one fsync per object.
   */
  deferDirSync?: boolean;
}

/** Rejects keys that could escape the repository root or alias another key. */
export function checkKey(key: string): void {
  if (key === '' || key.startsWith('/') || key.split('/').some((p) => p === '' || p === '.' || p === '..')) {
    throw new Error(`invalid repository key '${key}'`);
  }
}
