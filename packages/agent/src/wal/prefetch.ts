/**
 * WAL prefetch for restore_command. Recovery asks for one segment at a time and replays it
 * before asking for the next, so downloads and replay would alternate. When PostgreSQL asks for
 * segment N, wal-fetch starts a detached `wal-prefetch` that downloads N+1..N+k into a spool;
 * the later wal-fetch of N+1 then only renames a file.
 *
 * The spool is pg_wal/.pgfleet-prefetch: PostgreSQL ignores directories in pg_wal and never
 * takes a name there for WAL, base backups skip pg_wal's content, and a rename from there to
 * %p (pg_wal/RECOVERYXLOG) stays on one filesystem. Entries:
 *   <segment>-<sha256>           a complete download; sha256 is the content checksum the
 *                                repository records for the segment
 *   <segment>.pgfleet-tmp        a download in progress (created exclusively: one owner)
 * A spool file is trusted only after its content hashes to the checksum the repository holds
 * *now* for that name, so garbage, a torn file or a file from another archive is never given to
 * PostgreSQL: it is removed and the segment downloaded directly.
 */
import { createWriteStream } from 'node:fs';
import { mkdir, open, readdir, rename, rm, stat } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { DEFAULT_WAL_SEGMENT_SIZE, WalSegmentName, walFileKind } from '@pgfleet/pg/wal-segment-name';
import type { Repository } from '@pgfleet/storage';
import { hashFile } from '../pgdata/hash-file.js';
import { mapLimit } from '@pgfleet/core/async';

export const PREFETCH_DIR = '.pgfleet-prefetch';
const TMP_SUFFIX = '.pgfleet-tmp';
/** A download not renamed for this long belongs to a prefetcher that died. */
const STALE_TMP_MS = 2 * 60_000;
/** Spooled segments nobody asked for within this time are left over from an ended recovery. */
const STALE_FILE_MS = 15 * 60_000;
const SPOOL_FILE_RE = /^([0-9A-F]{24})-([0-9a-f]{64})$/;
const SPOOL_TMP_RE = /^([0-9A-F]{24})\.pgfleet-tmp$/;

/** The spool beside %p (which is pg_wal/RECOVERYXLOG under PGDATA). */
export function prefetchSpoolFor(dest: string): string {
  return join(dirname(dest), PREFETCH_DIR);
}

/** The k segment names after `name` on the same timeline. */
export function nextSegments(name: string, k: number, segmentSize: number = DEFAULT_WAL_SEGMENT_SIZE): string[] {
  const out: string[] = [];
  let s = WalSegmentName.parse(name, segmentSize);
  for (let i = 0; i < k; i++) {
    s = s.next();
    out.push(s.toString());
  }
  return out;
}

async function listSpool(spool: string): Promise<string[]> {
  try {
    return await readdir(spool);
  } catch {
    return [];
  }
}

/**
 * Moves the spooled copy of `name` to `dest` if it holds exactly the content the repository
 * records (`sha256`); removes any other copy of `name`. Returns false when there is none.
 */
export async function takeFromSpool(spool: string, name: string, sha256: string, dest: string): Promise<boolean> {
  let taken = false;
  for (const entry of await listSpool(spool)) {
    const m = SPOOL_FILE_RE.exec(entry);
    if (!m || m[1] !== name) continue;
    const path = join(spool, entry);
    if (!taken && m[2] === sha256) {
      const actual = await hashFile(path).catch(() => undefined);
      if (actual === sha256) {
        await rename(path, dest);
        taken = true;
        continue;
      }
    }
    await rm(path, { force: true });
  }
  return taken;
}

/**
 * Housekeeping after recovery took `name`, then (prefetch > 0) starts a prefetcher when at
 * least half of the next `prefetch` segments are neither spooled nor being downloaded, so a
 * prefetcher process starts every few segments, not on every one.
 */
export async function afterFetch(
  spool: string,
  name: string,
  prefetch: number,
  start: ((name: string, spool: string) => void) | undefined,
  repo: Repository,
  cluster: string,
): Promise<void> {
  const entries = await listSpool(spool);
  const present = new Set<string>();
  const now = Date.now();
  for (const entry of entries) {
    const m = SPOOL_FILE_RE.exec(entry) ?? SPOOL_TMP_RE.exec(entry);
    const path = join(spool, entry);
    if (!m) continue;
    const seg = m[1]!;
    const isTmp = entry.endsWith(TMP_SUFFIX);
    let age: number;
    try {
      age = now - (await stat(path)).mtimeMs;
    } catch {
      continue;
    }
    // Same timeline and not after `name`: recovery is past it. Other timelines: by age only.
    const passed = seg.slice(0, 8) === name.slice(0, 8) && seg <= name;
    if (passed || age > (isTmp ? STALE_TMP_MS : STALE_FILE_MS)) {
      await rm(path, { force: true });
      continue;
    }
    present.add(seg);
  }
  if (prefetch <= 0 || !start) return;
  const segmentSize =
    (await repo.readClusterInfo(cluster).catch(() => undefined))?.walSegmentSize ?? DEFAULT_WAL_SEGMENT_SIZE;
  const missing = nextSegments(name, prefetch, segmentSize).filter((s) => !present.has(s));
  if (missing.length >= Math.ceil(prefetch / 2)) start(name, spool);
}

export interface PrefetchOptions {
  repo: Repository;
  cluster: string;
  prefetch: number;
  /** parallel downloads */
  workers?: number;
}

/**
 * Downloads the `prefetch` segments after `name` that are not spooled yet into `spool`. Each
 * download goes to an exclusively created temp file (so two prefetchers never fetch the same
 * segment) and is renamed to <segment>-<sha256> once the repository's checksum verified it.
 * Stops quietly at the end of the archive. Returns the names it downloaded.
 */
export async function prefetchSegments(name: string, spool: string, o: PrefetchOptions): Promise<string[]> {
  if (walFileKind(name) !== 'segment' || o.prefetch <= 0) return [];
  await mkdir(spool, { recursive: true, mode: 0o700 });
  const segmentSize =
    (await o.repo.readClusterInfo(o.cluster).catch(() => undefined))?.walSegmentSize ?? DEFAULT_WAL_SEGMENT_SIZE;
  const entries = new Set(await listSpool(spool));
  const spooled = new Set(
    [...entries].map((e) => SPOOL_FILE_RE.exec(e)?.[1]).filter((s): s is string => s !== undefined),
  );
  const wanted = nextSegments(name, o.prefetch, segmentSize).filter((s) => !spooled.has(s));
  const done: string[] = [];
  let endOfArchive: string | undefined;
  await mapLimit(wanted, o.workers ?? 2, async (seg) => {
    if (endOfArchive !== undefined && seg > endOfArchive) return;
    const tmp = join(spool, `${seg}${TMP_SUFFIX}`);
    let fh;
    try {
      fh = await open(tmp, 'wx', 0o600);
    } catch {
      // Someone else is downloading it, unless that someone died long ago.
      const s = await stat(tmp).catch(() => undefined);
      if (!s || Date.now() - s.mtimeMs < STALE_TMP_MS) return;
      await rm(tmp, { force: true });
      fh = await open(tmp, 'wx', 0o600).catch(() => undefined);
      if (!fh) return;
    }
    await fh.close();
    try {
      if ((await o.repo.findWal(o.cluster, seg)).length === 0) {
        if (endOfArchive === undefined || seg < endOfArchive) endOfArchive = seg;
        await rm(tmp, { force: true });
        return;
      }
      // Only an authenticated copy (WalUnauthenticated otherwise), checked against its checksum.
      const fetched = await o.repo.fetchWal(o.cluster, seg, createWriteStream(tmp));
      await rename(tmp, join(spool, `${seg}-${fetched.sha256}`));
      done.push(seg);
    } catch {
      // A failed prefetch costs nothing but time: wal-fetch downloads the segment itself.
      await rm(tmp, { force: true });
    }
  });
  return done.sort();
}
