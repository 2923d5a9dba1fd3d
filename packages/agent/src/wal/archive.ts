/**
 * Storing one WAL file for archive_command. It is validated before anything reaches the
 * repository (an empty, truncated or foreign segment makes archiving fail, so PostgreSQL keeps
 * the file and retries), hashed, and stored idempotently. The same function runs in the agent
 * daemon (archive-server.ts: wal-push hands it the path over the unix socket), in the WAL stream
 * (stream.ts) and in wal-push itself when no daemon runs (push-client.ts). restore_command's
 * side is fetch.ts.
 */
import { open, readFile, stat } from 'node:fs/promises';
import { basename, dirname, resolve } from 'node:path';
import { ErrorCodes, PgfleetError, type Logger } from '@pgfleet/core';
import { TimelineHistory, timelineOfWalName, validateWalSegment, walFileKind, WAL_LONG_HEADER_SIZE } from '@pgfleet/pg';
import type { Codec, Repository } from '@pgfleet/storage';
import { readPgdataFacts } from '../pgdata/pgdata.js';
import { checkHistoryLineage, historyForArchiving } from './timelines.js';

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
  /** Stored copies that vanished or failed their checksum when found, replaced by this push (Repository.archiveWal). */
  replaced?: string[];
}

/** Warns about archived copies a push found damaged and replaced: the storage under the repository lost or changed bytes. */
export function reportReplacedCopies(out: ArchivedFile, log: Logger): void {
  if (!out.replaced?.length) return;
  log.warn(
    { wal: out.name, code: ErrorCodes.WalCopyDamaged.code, keys: out.replaced },
    `an archived copy of WAL file ${out.name} vanished or failed its checksum when found; it was replaced with the file PostgreSQL holds`,
  );
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
  const { result, sha256, replaced } = await repo.archiveWal(
    cluster,
    name,
    path,
    kind === 'segment' || kind === 'partial' ? codec : 'none',
    size,
  );
  return { name, result, sha256, ...(replaced.length > 0 ? { replaced } : {}) };
}

export async function walPush(pathArg: string, opts: WalPushOptions): Promise<'stored' | 'exists'> {
  const out = await archiveWalFile(pathArg, opts.repo, opts.cluster, opts.compress);
  const { name, result } = out;
  reportReplacedCopies(out, opts.log);
  opts.log.info(
    { wal: name, result },
    result === 'stored' ? 'archived WAL file' : 'WAL file already archived with the same content',
  );
  return result;
}
