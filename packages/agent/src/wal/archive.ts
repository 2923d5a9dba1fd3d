/**
 * archive_command and restore_command. wal-push validates a file before anything reaches the
 * repository (an empty, truncated or foreign segment makes archiving fail, so PostgreSQL keeps
 * the file and retries), hashes it, and stores it idempotently. The same function runs in the
 * agent daemon (wal-push hands it the path over the unix socket) and in wal-push itself when no
 * daemon runs. wal-fetch writes to a temp name and renames, so PostgreSQL never reads a
 * half-written segment, and takes segments the prefetcher already downloaded (wal-prefetch.ts).
 */
import { createWriteStream } from 'node:fs';
import { open, readFile, rename, rm, stat } from 'node:fs/promises';
import { basename, dirname, resolve } from 'node:path';
import { PgfleetError, type Logger } from '@pgfleet/core';
import { TimelineHistory, timelineOfWalName, validateWalSegment, walFileKind, WAL_LONG_HEADER_SIZE } from '@pgfleet/pg';
import type { Codec, Repository } from '@pgfleet/storage';
import { readPgdataFacts } from '../pgdata/pgdata.js';
import { checkHistoryLineage, historyForArchiving } from './timelines.js';
import { afterFetch, prefetchSpoolFor, takeFromSpool } from './prefetch.js';

export interface WalPushOptions {
  cluster: string;
  /** every repository of the cluster (a mirror when there are several) */
  repo: Repository;
  compress: Codec;
  log: Logger;
}

export interface ArchivedFile {
  name: string;
  result: 'stored' | 'exists';
  sha256: string;
}

/**
 * Validates and archives one WAL file (a segment, .partial, .history or .backup file) into
 * `repo`. `pgWalDir` is the cluster's pg_wal when the file is elsewhere (a streamed copy). Segments must be complete and belong to the database system of the PGDATA they sit in
 * (or `systemIdentifier` when given). Resolves only after the repository stored the object.
 */
export async function archiveWalFile(
  pathArg: string,
  repo: Repository,
  cluster: string,
  codec: Codec,
  systemIdentifier?: string,
  pgWalDir?: string,
): Promise<ArchivedFile> {
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

  if (kind === 'segment' || kind === 'partial') {
    // %p is pg_wal/<name> relative to PGDATA; pg_control there says which system this WAL must belong to.
    const facts =
      systemIdentifier === undefined ? await readPgdataFacts(dirname(dirname(path))).catch(() => undefined) : undefined;
    const sysid = systemIdentifier ?? facts?.systemIdentifier;
    const fh = await open(path, 'r');
    const header = Buffer.alloc(WAL_LONG_HEADER_SIZE);
    try {
      await fh.read(header, 0, header.length, 0);
    } finally {
      await fh.close();
    }
    const head = size < WAL_LONG_HEADER_SIZE ? header.subarray(0, size) : header;
    // The first segment of a new timeline carries its parent's id in its first page: the
    // timeline's history says whether that is the switch PostgreSQL made (timelines.ts).
    const nameTimeline = timelineOfWalName(name);
    const history =
      head.length === WAL_LONG_HEADER_SIZE && nameTimeline > 1 && head.readUInt32LE(4) !== nameTimeline
        ? await historyForArchiving(nameTimeline, pgWalDir ?? dirname(path), repo, cluster)
        : undefined;
    const h = validateWalSegment(name.slice(0, 24), head, size, sysid, history);
    await repo.ensureClusterInfo(cluster, {
      systemIdentifier: h.systemIdentifier,
      pgVersionNum: (h.pgMajor ?? facts?.majorVersion ?? 0) * 10000,
      walSegmentSize: h.segmentSize,
    });
  }
  if (kind === 'history') {
    if (size > 1 << 20)
      throw new PgfleetError(
        'WalFileInvalid',
        `timeline history ${name} has ${size} bytes; PostgreSQL writes a few lines per ancestor`,
      );
    // A history PostgreSQL would not write, or one contradicting its parent's archived history, is refused.
    const history = TimelineHistory.parse(timelineOfWalName(name), await readFile(path, 'utf8'));
    await checkHistoryLineage(history, repo, cluster);
  }
  // One read: hashed and compressed together (Repository.archiveWal).
  const { result, sha256 } = await repo.archiveWal(
    cluster,
    name,
    path,
    kind === 'segment' || kind === 'partial' ? codec : 'none',
    size,
  );
  return { name, result, sha256 };
}

export async function walPush(pathArg: string, opts: WalPushOptions): Promise<'stored' | 'exists'> {
  const { name, result } = await archiveWalFile(pathArg, opts.repo, opts.cluster, opts.compress);
  opts.log.info(
    { wal: name, result },
    result === 'stored' ? 'archived WAL file' : 'WAL file already archived with the same content',
  );
  return result;
}

export interface WalFetchOptions {
  cluster: string;
  /** the cluster's repositories: a segment is read from the first that holds it */
  repo: Repository;
  log: Logger;
  /** segments to download ahead of recovery (0 = off) */
  prefetch?: number;
  /** starts the background download of the segments after `name` into `spool` (bin.ts spawns wal-prefetch) */
  startPrefetch?: (name: string, spool: string) => void;
}

/** Returns false when the file is not archived (restore_command then exits 1, which PostgreSQL expects at the end of WAL). */
export async function walFetch(name: string, destArg: string, opts: WalFetchOptions): Promise<boolean> {
  const dest = resolve(destArg);
  const repo = opts.repo;
  const found = await repo.findWal(opts.cluster, name);
  const wal = found[0];
  if (!wal) return false;
  const prefetch = opts.prefetch ?? 0;
  const spool = prefetchSpoolFor(dest);
  const segment = walFileKind(name) === 'segment';
  if (segment && prefetch > 0 && (await takeFromSpool(spool, name, wal.sha256, dest))) {
    opts.log.debug({ wal: name }, 'restored WAL file from the prefetch spool');
  } else {
    const tmp = `${dest}.pgfleet-tmp`;
    try {
      await repo.fetchWal(opts.cluster, name, createWriteStream(tmp));
      await rename(tmp, dest);
    } catch (err) {
      await rm(tmp, { force: true });
      throw err;
    }
    opts.log.debug({ wal: name }, 'restored WAL file');
  }
  if (segment) await afterFetch(spool, name, prefetch, opts.startPrefetch, repo, opts.cluster);
  return true;
}
