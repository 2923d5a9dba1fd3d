/**
 * The repository driver: the one seam between pgfleet and where backup bytes live (a directory,
 * an S3 bucket). Drivers know keys and bytes, nothing about PostgreSQL. Every driver passes the
 * shared suite in driver-suite.ts.
 */
import type { Readable } from 'node:stream';
// The light entry of core: copy worker threads load the drivers on their own.
import { PgfleetError } from '@pgfleet/core/errors';
import type { RepositorySpec } from './repository-url.js';

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
  /**
   * Streams the object's bytes [start, end): fewer when the object ends before `end`, none when
   * it ends at or before `start` (or start = end); RepoFileMissing when it does not exist. What
   * lets a reader fetch only the parts of a large object it needs (S3: GetObject with a Range),
   * e.g. the frames of a prior backup's objects that hold the blocks a backup builds deltas on
   * (object-io.ts RangedReader).
   */
  getRange(key: string, start: number, end: number): Promise<Readable>;
  /** Size of the object, or undefined when it does not exist. */
  stat(key: string): Promise<ObjectInfo | undefined>;
  /** Every object whose key starts with `prefix`, in key order. */
  list(prefix: string): AsyncIterable<ObjectInfo>;
  /**
   * Capability: the keys `list` would give, in key order and in batches, without their sizes,
   * for a caller that learns each size when it reads the object anyway (verify, which reads every
   * archived WAL file). Where a size costs a call per object (posix: a stat each, a million for a
   * million WAL segments) this skips them; a driver whose listing carries sizes for free (S3)
   * need not implement it (Repository falls back to list).
   */
  listKeys?(prefix: string): AsyncIterable<string[]>;
  /**
   * One level of the key tree under `prefix` ('' for the root, else ending with '/'): the objects
   * directly under it and the names of the levels below it, each in key order. What one directory
   * read (posix) or one delimiter listing (S3) answers: readers walk the layout (a backup's label,
   * a WAL timeline+log) instead of listing every object beneath, so a question about backups costs
   * what there is of backups, not of their files.
   */
  listLevel(prefix: string): Promise<KeyLevel>;
  /** Removes the objects; keys that do not exist are ignored. */
  delete(keys: readonly string[]): Promise<void>;
  /**
   * Removes every object whose key starts with `prefix` (which ends with '/'), and whatever a
   * driver keeps for the prefix besides its objects (posix: the emptied directories), so nothing
   * of the prefix is left. A prefix holding nothing is a no-op.
   */
  deletePrefix(prefix: string): Promise<void>;
  /**
   * Makes puts done with `deferDirSync` durable: fsyncs the directories holding `keys` (and their
   * parents up to the root). Drivers whose puts are durable on return need not implement it.
   */
  syncKeys?(keys: readonly string[]): Promise<void>;
  /**
   * Makes objects found in the repository durable whoever wrote them: fsyncs each object and the
   * directories holding it up to the root (a writer that died between its rename and its
   * directory fsync left an object that a listing shows but a power loss can still take away).
   * RepoFileMissing when an object is gone. Drivers whose visible objects are durable (S3: a
   * listing or GET shows only completed uploads) need not implement it.
   */
  syncObjects?(keys: readonly string[]): Promise<void>;
  /** Releases connections (S3 sockets); the driver is unusable afterwards. */
  close?(): void;
  /**
   * Capability: objects are local files (posix). The object I/O layer (object-io.ts) then writes
   * and reads them block by block with positional I/O on the caller's thread, no streams.
   */
  readonly localFiles?: LocalObjectFiles;
  /**
   * Capability: several repositories as one (mirrored-driver.ts). Repository decides what is
   * written only when missing (WAL, the format marker, cluster identity) per member.
   */
  readonly members?: readonly RepositoryDriver[];
  /**
   * Capability: how another thread opens this driver again by itself (open-repository.ts), with no
   * credentials or connections to share; copy worker threads do (agent copy/pool.ts).
   */
  readonly spec?: RepositorySpec;
}

/** One level of the key tree (RepositoryDriver.listLevel). */
export interface KeyLevel {
  /** Objects whose key is the prefix followed by a name without '/'. */
  objects: ObjectInfo[];
  /** Names (no '/') of the levels below the prefix that hold objects. */
  levels: string[];
}

/** Rejects a listLevel prefix that is not '' or whole key segments ending with '/'. */
export function checkLevelPrefix(prefix: string): void {
  if (prefix !== '') checkPrefix(prefix);
}

/** Objects as local files (RepositoryDriver.localFiles). */
export interface LocalObjectFiles {
  /** The file holding `key` (it may not exist), for positional reads. */
  filePath(key: string): string;
  /** An atomic writer for `key` driven write by write: a temp file made visible by commit (put's guarantees). */
  openWriter(key: string): Promise<ObjectWriter>;
}

export interface ObjectWriter {
  write(data: Uint8Array): Promise<void>;
  /** Makes the object visible under its key (atomically); the writer is done. */
  commit(options?: PutOptions): Promise<void>;
  /** Drops the temp file; nothing becomes visible. */
  abort(): Promise<void>;
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
    throw new PgfleetError('Internal', `invalid repository key '${key}'`);
  }
}

/** Rejects a byte range for getRange that is not [start, end) of non-negative integers with start <= end. */
export function checkRange(start: number, end: number): void {
  if (!Number.isSafeInteger(start) || !Number.isSafeInteger(end) || start < 0 || end < start)
    throw new PgfleetError('Internal', `invalid byte range [${start}, ${end}) of a repository object`);
}

/** Rejects a prefix for deletePrefix that is not one or more whole key segments ending with '/' (the root included). */
export function checkPrefix(prefix: string): void {
  if (!prefix.endsWith('/'))
    throw new PgfleetError('InvalidArgument', `invalid repository prefix '${prefix}': it must end with '/'`);
  checkKey(prefix.slice(0, -1));
}
