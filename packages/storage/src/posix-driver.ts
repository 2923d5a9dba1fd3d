/**
 * Posix repository driver. Atomicity comes from the classic sequence: write a temp file in the
 * same directory, fsync it, rename over the final name, fsync the directory (so the rename itself
 * survives a power loss). Temp files carry a recognisable suffix and are never listed.
 */
import { createWriteStream } from 'node:fs';
import { mkdir, open, readdir, rename, rm, stat } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { dirname, join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { PgfleetError } from '@pgfleet/core';
import { checkKey, type ObjectInfo, type RepositoryDriver } from './driver.js';

const TMP_MARK = '.pgfleet-tmp-';

async function fsyncPath(path: string): Promise<void> {
  const fh = await open(path, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

function ioError(what: string, err: unknown): PgfleetError {
  return new PgfleetError('RepoIoFailed', `${what}: ${(err as Error).message}`, { cause: err });
}

export class PosixDriver implements RepositoryDriver {
  readonly kind = 'posix' as const;

  constructor(readonly root: string) {}

  get location(): string {
    return this.root;
  }

  private path(key: string): string {
    checkKey(key);
    return join(this.root, ...key.split('/'));
  }

  async put(key: string, body: Readable | Buffer): Promise<void> {
    const final = this.path(key);
    const dir = dirname(final);
    const tmp = `${final}${TMP_MARK}${randomBytes(6).toString('hex')}`;
    try {
      await mkdir(dir, { recursive: true });
      const out = createWriteStream(tmp, { flags: 'wx', highWaterMark: 1 << 20 });
      await pipeline(Buffer.isBuffer(body) ? Readable.from([body]) : body, out);
      await fsyncPath(tmp);
      await rename(tmp, final);
      await fsyncPath(dir);
    } catch (err) {
      await rm(tmp, { force: true }).catch(() => {});
      if (err instanceof PgfleetError) throw err;
      throw ioError(`cannot write ${key} in repository ${this.root}`, err);
    }
  }

  async get(key: string): Promise<Readable> {
    const path = this.path(key);
    try {
      const fh = await open(path, 'r');
      return fh.createReadStream({ highWaterMark: 1 << 20 });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
        throw new PgfleetError('RepoFileMissing', `repository file ${key} is missing from ${this.root}`, { cause: err });
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

  async *list(prefix: string): AsyncIterable<ObjectInfo> {
    // Walk from the deepest directory the prefix names, then filter by the full prefix.
    const slash = prefix.lastIndexOf('/');
    const base = slash >= 0 ? prefix.slice(0, slash) : '';
    const out: ObjectInfo[] = [];
    const walk = async (rel: string): Promise<void> => {
      let entries;
      try {
        entries = await readdir(rel ? join(this.root, rel) : this.root, { withFileTypes: true });
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT' || (err as NodeJS.ErrnoException).code === 'ENOTDIR') return;
        throw ioError(`cannot list ${rel || '/'} in repository ${this.root}`, err);
      }
      for (const e of entries) {
        const key = rel ? `${rel}/${e.name}` : e.name;
        if (e.isDirectory()) {
          if (key.startsWith(prefix) || prefix.startsWith(`${key}/`)) await walk(key);
        } else if (e.isFile() && key.startsWith(prefix) && !e.name.includes(TMP_MARK)) {
          const s = await stat(join(this.root, key));
          out.push({ key, size: s.size });
        }
      }
    };
    await walk(base);
    out.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
    yield* out;
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

/** Reads a whole small object (manifests, info files). */
export async function readSmall(driver: RepositoryDriver, key: string): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of await driver.get(key)) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

