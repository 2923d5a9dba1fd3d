/**
 * archive_command and restore_command. wal-push validates a file before anything reaches the
 * repository (an empty, truncated or foreign segment makes archiving fail, so PostgreSQL keeps
 * the file and retries), hashes it, and stores it idempotently. wal-fetch writes to a temp name
 * and renames, so PostgreSQL never reads a half-written segment.
 */
import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { open, rename, rm, stat } from 'node:fs/promises';
import { basename, dirname, resolve } from 'node:path';
import { PgfleetError, type Logger } from '@pgfleet/core';
import { validateWalSegment, walFileKind, WAL_LONG_HEADER_SIZE } from '@pgfleet/pg';
import { type Codec, PosixDriver, Repository } from '@pgfleet/storage';
import { readPgdataFacts } from './pgdata.js';

export interface WalPushOptions {
  cluster: string;
  repoPath: string;
  compress: Codec;
  log: Logger;
}

async function hashFile(path: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(path, { highWaterMark: 1 << 20 })) h.update(chunk as Buffer);
  return h.digest('hex');
}

export async function walPush(pathArg: string, opts: WalPushOptions): Promise<'stored' | 'exists'> {
  const path = resolve(pathArg);
  const name = basename(path);
  const kind = walFileKind(name);
  if (!kind) throw new PgfleetError('WalFileInvalid', `'${name}' is not a WAL file name PostgreSQL archives`);
  let size: number;
  try {
    size = (await stat(path)).size;
  } catch (err) {
    throw new PgfleetError('WalFileMissing', `WAL file ${path} does not exist`, { cause: err });
  }
  if (size === 0) throw new PgfleetError('WalFileEmpty', `WAL file ${name} is empty (0 bytes)`);

  const repo = new Repository(new PosixDriver(opts.repoPath));
  if (kind === 'segment' || kind === 'partial') {
    // %p is pg_wal/<name> relative to PGDATA; pg_control there says which system this WAL must belong to.
    const pgdata = dirname(dirname(path));
    const facts = await readPgdataFacts(pgdata).catch(() => undefined);
    const fh = await open(path, 'r');
    const header = Buffer.alloc(WAL_LONG_HEADER_SIZE);
    try {
      await fh.read(header, 0, header.length, 0);
    } finally {
      await fh.close();
    }
    const h = validateWalSegment(name.slice(0, 24), size < WAL_LONG_HEADER_SIZE ? header.subarray(0, size) : header, size, facts?.systemIdentifier);
    await repo.ensureClusterInfo(opts.cluster, { systemIdentifier: h.systemIdentifier, pgVersionNum: (h.pgMajor ?? facts?.majorVersion ?? 0) * 10000, walSegmentSize: h.segmentSize });
  }
  const sha256 = await hashFile(path);
  const result = await repo.pushWal(opts.cluster, name, sha256, () => createReadStream(path, { highWaterMark: 1 << 20 }), kind === 'segment' || kind === 'partial' ? opts.compress : 'none');
  opts.log.info({ wal: name, result }, result === 'stored' ? 'archived WAL file' : 'WAL file already archived with the same content');
  return result;
}

export interface WalFetchOptions {
  cluster: string;
  repoPath: string;
  log: Logger;
}

/** Returns false when the file is not archived (restore_command then exits 1, which PostgreSQL expects at the end of WAL). */
export async function walFetch(name: string, destArg: string, opts: WalFetchOptions): Promise<boolean> {
  const dest = resolve(destArg);
  const repo = new Repository(new PosixDriver(opts.repoPath));
  const found = await repo.findWal(opts.cluster, name);
  if (found.length === 0) return false;
  const tmp = `${dest}.pgfleet-tmp`;
  try {
    await repo.fetchWal(opts.cluster, name, createWriteStream(tmp));
    await rename(tmp, dest);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
  opts.log.debug({ wal: name }, 'restored WAL file');
  return true;
}
