/**
 * Posix repository driver. Atomicity comes from the classic sequence: write a temp file in the
 * same directory, fsync it, rename over the final name, fsync the directory (so the rename itself
 * survives a power loss), and fsync the parent of every directory the write had to create (so the
 * new directory's own entry survives too: without ordered metadata, ext4 data=writeback or XFS, a
 * power loss could otherwise drop a new wal/<timeline+log>/ directory with the acknowledged
 * segment in it). Temp files carry a recognisable suffix and are never listed.
 *
 * Modes: a repository holds every cluster's data files (pg_authid included), so what this driver
 * creates is for its owner only: directories 0700, files 0600 (the umask can only take more away).
 * Agents of different clusters run as different OS users sharing one root (docs/security.md): each
 * cluster's directory is then its agent user's alone. Objects at the root itself (the format marker
 * pgfleet.json) are 0644, since every agent sharing the repository must read them; they hold no data.
 */
import { createWriteStream, statSync } from 'node:fs';
import { type FileHandle, mkdir, open, readdir, rename, rm, stat } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { dirname, join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
// The light entries of core (no pino/zod/yaml): copy worker threads load this driver on their own.
import { PgfleetError } from '@pgfleet/core/errors';
import { fsyncPath } from '@pgfleet/core/fsync';
import {
  checkKey,
  checkLevelPrefix,
  checkPrefix,
  checkRange,
  type KeyLevel,
  type LocalObjectFiles,
  type ObjectInfo,
  type ObjectWriter,
  type PutOptions,
  type RepositoryDriver,
} from './driver.js';
import type { RepositorySpec } from './repository-url.js';

const TMP_MARK = '.pgfleet-tmp-';
/** Files stat'ed between two turns of the event loop while listing (statAll). */
const STAT_BATCH = 128;

/** Modes of what the driver creates (see the header). */
export const POSIX_DIR_MODE = 0o700;
export const POSIX_FILE_MODE = 0o600;
const ROOT_OBJECT_MODE = 0o644;

/** A key at the repository root (no '/'): shared by every cluster, e.g. the format marker. */
function fileMode(key: string): number {
  return key.includes('/') ? POSIX_FILE_MODE : ROOT_OBJECT_MODE;
}

function ioError(what: string, err: unknown): PgfleetError {
  return new PgfleetError('RepoIoFailed', `${what}: ${(err as Error).message}`, { cause: err });
}

export class PosixDriver implements RepositoryDriver, LocalObjectFiles {
  readonly kind = 'posix' as const;

  constructor(readonly root: string) {}

  get location(): string {
    return this.root;
  }

  /** Capability: objects are files here (driver.ts LocalObjectFiles). */
  get localFiles(): LocalObjectFiles {
    return this;
  }

  /** Capability: a path is all another thread needs to open this repository. */
  get spec(): RepositorySpec {
    return { case: 'posix', value: { path: this.root } };
  }

  private path(key: string): string {
    checkKey(key);
    return join(this.root, ...key.split('/'));
  }

  /** The file holding `key` (for readers that do their own positional I/O). */
  filePath(key: string): string {
    return this.path(key);
  }

  /** Directories known to exist (mkdir -p once per directory, not once per object). */
  private readonly made = new Set<string>();

  /**
   * Directories this driver created whose entry in their parent is not known to be durable yet.
   * Shared by concurrent writes: one that finds a directory another write just created still
   * syncs its parent before returning. (A directory created by another process is not tracked:
   * that process syncs it.)
   */
  private readonly unsyncedDirs = new Set<string>();

  /** mkdir -p that remembers the directories it created (syncNewDirs makes them durable). */
  private async makeDir(dir: string): Promise<void> {
    const first = await mkdir(dir, { recursive: true, mode: POSIX_DIR_MODE });
    if (first === undefined) return;
    // mkdir returns the first (shallowest) directory it created, spelled like `dir`'s prefix.
    for (let d = dir; ; d = dirname(d)) {
      this.unsyncedDirs.add(d);
      if (d === first || d === dirname(d)) break;
    }
  }

  /** Fsyncs the parent of every not-yet-synced directory on the way up from `dir`, deepest first; no I/O when none. */
  private async syncNewDirs(dir: string): Promise<void> {
    for (let d = dir; this.unsyncedDirs.size > 0 && d !== dirname(d); d = dirname(d)) {
      if (!this.unsyncedDirs.has(d)) continue;
      await this.syncDir(dirname(d));
      this.unsyncedDirs.delete(d); // only once synced: a concurrent write meanwhile syncs it too
    }
  }

  /** Fsyncs a directory (protected: the seam a test uses to see which directories were synced). */
  protected async syncDir(path: string): Promise<void> {
    await fsyncPath(path);
  }

  /** Fsyncs a file found in the repository (protected, like syncDir, for tests). */
  protected async syncFile(path: string): Promise<void> {
    await fsyncPath(path);
  }

  /**
   * An atomic writer for `key` driven by the caller, write by write (no stream machinery): a temp
   * file, then on commit fsync + rename (+ directory fsync unless deferred, see PutOptions).
   */
  async openWriter(key: string): Promise<ObjectWriter> {
    const final = this.path(key);
    const dir = dirname(final);
    const tmp = `${final}${TMP_MARK}${randomBytes(6).toString('hex')}`;
    let fh;
    try {
      if (!this.made.has(dir)) {
        await this.makeDir(dir);
        this.made.add(dir);
      }
      fh = await open(tmp, 'wx', fileMode(key));
    } catch (err) {
      throw ioError(`cannot write ${key} in repository ${this.root}`, err);
    }
    const handle = fh;
    const fail = async (err: unknown): Promise<never> => {
      await handle.close().catch(() => {});
      await rm(tmp, { force: true }).catch(() => {});
      throw err instanceof PgfleetError ? err : ioError(`cannot write ${key} in repository ${this.root}`, err);
    };
    return {
      write: async (data: Uint8Array) => {
        try {
          let done = 0;
          while (done < data.length) done += (await handle.write(data, done, data.length - done)).bytesWritten;
        } catch (err) {
          await fail(err);
        }
      },
      commit: async (options?: PutOptions) => {
        try {
          await handle.sync();
          await handle.close();
          await rename(tmp, final);
          if (!options?.deferDirSync) await this.syncWritten(dir);
        } catch (err) {
          await fail(err);
        }
      },
      abort: async () => {
        await handle.close().catch(() => {});
        await rm(tmp, { force: true }).catch(() => {});
      },
    };
  }

  /** Makes a rename into `dir` durable: the directory, then the entries of directories created for it. */
  private async syncWritten(dir: string): Promise<void> {
    await this.syncDir(dir);
    await this.syncNewDirs(dir);
  }

  async put(key: string, body: Readable | Buffer, options?: PutOptions): Promise<void> {
    const final = this.path(key);
    const dir = dirname(final);
    const tmp = `${final}${TMP_MARK}${randomBytes(6).toString('hex')}`;
    try {
      await this.makeDir(dir);
      const out = createWriteStream(tmp, { flags: 'wx', mode: fileMode(key), highWaterMark: 1 << 20 });
      await pipeline(Buffer.isBuffer(body) ? Readable.from([body]) : body, out);
      await fsyncPath(tmp);
      await rename(tmp, final);
      if (!options?.deferDirSync) await this.syncWritten(dir);
    } catch (err) {
      await rm(tmp, { force: true }).catch(() => {});
      if (err instanceof PgfleetError) throw err;
      throw ioError(`cannot write ${key} in repository ${this.root}`, err);
    }
  }

  async get(key: string): Promise<Readable> {
    const fh = await this.openObject(key);
    return fh.createReadStream({ highWaterMark: 1 << 20 });
  }

  async getRange(key: string, start: number, end: number): Promise<Readable> {
    checkRange(start, end);
    const fh = await this.openObject(key);
    if (end === start) {
      await fh.close();
      return Readable.from([]);
    }
    // A start past the end of the file reads nothing: the stream just ends.
    return fh.createReadStream({ start, end: end - 1, highWaterMark: Math.min(1 << 20, end - start) });
  }

  /** The object's file, open for reading: RepoFileMissing when it does not exist. */
  private async openObject(key: string): Promise<FileHandle> {
    const path = this.path(key);
    try {
      return await open(path, 'r');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
        throw new PgfleetError('RepoFileMissing', `repository file ${key} is missing from ${this.root}`, {
          cause: err,
        });
      }
      throw ioError(`cannot read ${key} in repository ${this.root}`, err);
    }
  }

  async stat(key: string): Promise<ObjectInfo | undefined> {
    try {
      const s = await stat(this.path(key));
      return s.isFile() ? { key, size: s.size } : undefined;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw ioError(`cannot stat ${key} in repository ${this.root}`, err);
    }
  }

  /**
   * Walks from the deepest directory the prefix names, in key order, a directory at a time:
   * nothing but the directory being read is held (a million WAL files are never one array).
   */
  async *list(prefix: string): AsyncIterable<ObjectInfo> {
    const slash = prefix.lastIndexOf('/');
    // Batches inside, one object at a time outside: a generator level per object costs as much as its stat.
    for await (const keys of this.walk(slash >= 0 ? prefix.slice(0, slash) : '', prefix))
      for await (const batch of this.statAll(keys)) yield* batch;
  }

  /** As list, without a stat per file (RepositoryDriver.listKeys): a batch per directory read. */
  async *listKeys(prefix: string): AsyncIterable<string[]> {
    const slash = prefix.lastIndexOf('/');
    for await (const keys of this.walk(slash >= 0 ? prefix.slice(0, slash) : '', prefix))
      if (keys.length > 0) yield keys;
  }

  /** The file keys under `rel` that start with `prefix`, in key order, one batch per run of files between directories. */
  private async *walk(rel: string, prefix: string): AsyncGenerator<string[]> {
    let entries;
    try {
      entries = await readdir(rel ? join(this.root, rel) : this.root, { withFileTypes: true });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT' || (err as NodeJS.ErrnoException).code === 'ENOTDIR') return;
      throw ioError(`cannot list ${rel || '/'} in repository ${this.root}`, err);
    }
    // Key order: a directory's keys continue with '/', so 'a.txt' comes before 'a/x'.
    const items = entries
      .map((e) => ({ dir: e.isDirectory(), file: e.isFile(), key: rel ? `${rel}/${e.name}` : e.name, name: e.name }))
      .map((e) => ({ ...e, order: e.dir ? `${e.key}/` : e.key }))
      .sort((a, b) => (a.order < b.order ? -1 : a.order > b.order ? 1 : 0));
    let files: string[] = [];
    for (const e of items) {
      if (e.dir) {
        if (!(e.key.startsWith(prefix) || prefix.startsWith(`${e.key}/`))) continue;
        yield files;
        files = [];
        yield* this.walk(e.key, prefix);
      } else if (e.file && e.key.startsWith(prefix) && !e.name.includes(TMP_MARK)) files.push(e.key);
    }
    yield files;
  }

  /**
   * The files' sizes, in the order given; a file removed since its directory was read is not
   * there any more. Stat'ed synchronously, STAT_BATCH at a time with the event loop let through in
   * between: a stat of a file whose directory was just read is a few microseconds, and the thread
   * pool round trip of an asynchronous one cost three times that (a million WAL files: 13 s
   * instead of 4.5). The batch bounds how long anything else waits (a slow network filesystem's
   * stats included).
   */
  private async *statAll(keys: readonly string[]): AsyncGenerator<ObjectInfo[]> {
    for (let i = 0; i < keys.length; i += STAT_BATCH) {
      if (i > 0) await new Promise((resolve) => setImmediate(resolve));
      const batch: ObjectInfo[] = [];
      for (const key of keys.slice(i, i + STAT_BATCH)) {
        let size: number;
        try {
          size = statSync(join(this.root, key)).size;
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue;
          throw ioError(`cannot stat ${key} in repository ${this.root}`, err);
        }
        batch.push({ key, size });
      }
      yield batch;
    }
  }

  /**
   * One readdir: files are objects (stat'ed for their size), directories are levels. An empty
   * directory (left by a deleted backup on another host) is a level holding nothing: listed
   * anyway, as its emptiness costs another read to learn.
   */
  async listLevel(prefix: string): Promise<KeyLevel> {
    checkLevelPrefix(prefix);
    const rel = prefix.slice(0, -1);
    const dir = rel ? join(this.root, ...rel.split('/')) : this.root;
    let entries;
    try {
      entries = await readdir(dir, { withFileTypes: true });
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ENOTDIR') return { objects: [], levels: [] };
      throw ioError(`cannot list ${prefix || '/'} in repository ${this.root}`, err);
    }
    const byKey = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);
    const files = entries.filter((e) => e.isFile() && !e.name.includes(TMP_MARK)).map((e) => e.name);
    const objects: ObjectInfo[] = [];
    // As list(): synchronous stats in batches (statAll).
    for await (const batch of this.statAll(files.sort(byKey).map((name) => `${prefix}${name}`))) objects.push(...batch);
    const levels = entries.filter((e) => e.isDirectory()).map((e) => e.name);
    return { objects, levels: levels.sort(byKey) };
  }

  async syncKeys(keys: readonly string[]): Promise<void> {
    // Every directory holding a key, and its parents (mkdir -p may have created them), once each.
    const dirs = new Set<string>();
    for (const key of keys) {
      checkKey(key);
      const parts = key.split('/');
      for (let i = parts.length - 1; i >= 0; i--) {
        const d = parts.slice(0, i).join('/');
        if (dirs.has(d)) break;
        dirs.add(d);
      }
    }
    // Deepest first: a directory's entry in its parent is synced after its own contents.
    const ordered = [...dirs].sort((a, b) => b.split('/').length - a.split('/').length);
    for (const d of ordered) {
      try {
        await this.syncDir(d === '' ? this.root : join(this.root, ...d.split('/')));
      } catch (err) {
        throw ioError(`cannot sync directory ${d || '/'} in repository ${this.root}`, err);
      }
    }
    // Every directory below the root was synced along with its parent: none is new any more.
    for (const d of ordered) if (d !== '') this.unsyncedDirs.delete(join(this.root, ...d.split('/')));
  }

  async syncObjects(keys: readonly string[]): Promise<void> {
    for (const key of keys) {
      try {
        await this.syncFile(this.path(key));
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT')
          throw new PgfleetError('RepoFileMissing', `repository file ${key} is missing from ${this.root}`, {
            cause: err,
          });
        throw ioError(`cannot sync ${key} in repository ${this.root}`, err);
      }
    }
    await this.syncKeys(keys);
  }

  /** The prefix's directory with everything in it (files, temp files of failed writes, emptied directories). */
  async deletePrefix(prefix: string): Promise<void> {
    checkPrefix(prefix);
    const dir = join(this.root, ...prefix.slice(0, -1).split('/'));
    try {
      await rm(dir, { recursive: true, force: true });
    } catch (err) {
      throw ioError(`cannot delete ${prefix} in repository ${this.root}`, err);
    }
    // A later write under the prefix creates its directories again.
    for (const d of this.made) if (d === dir || d.startsWith(`${dir}/`)) this.made.delete(d);
  }

  async delete(keys: readonly string[]): Promise<void> {
    for (const key of keys) {
      try {
        await rm(this.path(key), { force: true });
      } catch (err) {
        throw ioError(`cannot delete ${key} in repository ${this.root}`, err);
      }
    }
  }
}

export type { ObjectWriter } from './driver.js';

/** Reads a whole small object (manifests, info files). */
export async function readSmall(driver: RepositoryDriver, key: string): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of await driver.get(key)) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}
