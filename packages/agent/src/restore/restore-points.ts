/**
 * `pgfleet restore-points`: the named restore points (pg_create_restore_point) the archive
 * holds, with their LSN, timeline and time, so an operator can pick a `--target-name` that
 * exists. Found with pg_waldump over the archived WAL (restore/wal-scan.ts, XLOG records only);
 * the time, which pg_waldump does not print, is read from the record itself (pg restore-point.ts).
 *
 * The work is bounded by what restores can use: from the first segment of the oldest complete
 * backup (WAL before it cannot be replayed from any backup), or of the newest backup started at
 * or before `since`, to the newest archived segment.
 */
import { readFile } from 'node:fs/promises';
import type { Logger } from '@pgfleet/core';
import { type Lsn, restorePointAt } from '@pgfleet/pg';
import type { Repository } from '@pgfleet/storage';
import { restorePointName } from './target-resolver.js';
import { scanArchivedWal, type WalScanOutcome } from './wal-scan.js';

export interface RestorePointFound {
  name: string;
  lsn: Lsn;
  timeline: number;
  /** Absent when its record could not be read back (it ends in the next segment). */
  time?: Date;
}

export interface RestorePointsOptions {
  repo: Repository;
  cluster: string;
  /** Read WAL of backups started at or before this time on (see the module comment). */
  since?: Date;
  /** Start at this segment instead. */
  fromSegment?: string;
  pgBinDir?: string;
  log: Logger;
  signal?: AbortSignal;
}

/** Where to start: the first segment of the backup that bounds the search, and the cluster's WAL format. */
async function scanStart(
  o: RestorePointsOptions,
): Promise<{ fromSegment: string; pgVersionNum: number; walSegmentSize: number }> {
  let oldest: { walStart: string; startMs: number } | undefined;
  let since: { walStart: string; startMs: number } | undefined;
  let format: { pgVersionNum: number; walSegmentSize: number } | undefined;
  // One manifest at a time: only each backup's start is kept.
  for await (const m of o.repo.manifests(o.cluster)) {
    const b = { walStart: m.walStart, startMs: Date.parse(m.startTime) };
    format ??= { pgVersionNum: m.pgVersionNum, walSegmentSize: m.walSegmentSize };
    if (!oldest || b.startMs < oldest.startMs) oldest = b;
    if (o.since && b.startMs <= o.since.getTime() && (!since || b.startMs > since.startMs)) since = b;
  }
  const info = await o.repo.readClusterInfo(o.cluster);
  const pgVersionNum = info?.pgVersionNum || format?.pgVersionNum || 0;
  const walSegmentSize = info?.walSegmentSize || format?.walSegmentSize || 16 << 20;
  // No backup at all: nothing bounds the search but the archive itself.
  const fromSegment = o.fromSegment ?? (since ?? oldest)?.walStart ?? '000000000000000000000000';
  return { fromSegment, pgVersionNum, walSegmentSize };
}

export async function listRestorePoints(
  o: RestorePointsOptions,
): Promise<{ points: RestorePointFound[]; scanned: WalScanOutcome }> {
  const start = await scanStart(o);
  const points: RestorePointFound[] = [];
  const offsetMask = BigInt(start.walSegmentSize - 1);
  const seen = new Set<string>();
  const scanned = await scanArchivedWal(
    {
      repo: o.repo,
      cluster: o.cluster,
      ...start,
      rmgr: 'XLOG',
      ...(o.pgBinDir ? { pgBinDir: o.pgBinDir } : {}),
      ...(o.signal ? { signal: o.signal } : {}),
    },
    ({ line, lsn, timeline, segmentPath }) => {
      const name = restorePointName(line);
      if (name === undefined) return;
      // A point before a timeline switch is also in the new timeline's first segment (a copy of
      // its parent's WAL up to the switch): listed once, on the timeline that wrote it.
      const key = `${name}@${lsn.toString()}`;
      if (seen.has(key)) return;
      seen.add(key);
      const point: RestorePointFound = { name, lsn, timeline };
      points.push(point);
      // The scan keeps the segment until this read is done.
      return readFile(segmentPath).then(
        (segment) => {
          const record = restorePointAt(segment, Number(lsn.value & offsetMask));
          if (record?.name === name) point.time = record.time;
        },
        () => {},
      );
    },
  );
  o.log.info(
    { points: points.length, from: scanned.first, to: scanned.last, segments: scanned.segmentsRead },
    'restore points listed',
  );
  return { points, scanned };
}
