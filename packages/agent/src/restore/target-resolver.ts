/**
 * Named restore points and transaction ids exist only inside the WAL, so the backup to restore
 * for them cannot be picked from the catalog. The agent decodes the archived WAL with PostgreSQL's
 * own pg_waldump (the binary matching the backup's major version) and looks for the
 * RESTORE_POINT record of that name, or the COMMIT/ABORT record of that xid; the backup is the
 * newest one that is consistent (stop LSN) before that record.
 */
import { PgfleetError, type Logger } from '@pgfleet/core';
import { Lsn } from '@pgfleet/pg';
import type { BackupFacts, Repository } from '@pgfleet/storage';
import { scanArchivedWal } from './wal-scan.js';

export interface TargetLsn<B extends BackupFacts = BackupFacts> {
  lsn: Lsn;
  backup: B;
}

/** Where a restore point or transaction end was found: its LSN and the timeline whose WAL holds it. */
export interface TargetHit {
  lsn: Lsn;
  timeline: number;
}

/** What a search of the archived WAL found: the target's places, and (name targets) every restore point name passed on the way. */
export interface TargetScan {
  hits: TargetHit[];
  restorePointNames: string[];
}

type WalTarget = { kind: 'name'; name: string } | { kind: 'xid'; xid: string };

const RESTORE_POINT_DESC = 'desc: RESTORE_POINT ';

/** The restore point name of a pg_waldump line (the description is the line's last field). */
export function restorePointName(line: string): string | undefined {
  const at = line.indexOf(RESTORE_POINT_DESC);
  return at < 0 ? undefined : line.slice(at + RESTORE_POINT_DESC.length).trimEnd();
}

/**
 * Every place in the archived WAL (from the oldest backup's start on) where the target is: the
 * RESTORE_POINT record of that name, or the COMMIT/ABORT of that xid. Sorted by LSN. The same
 * record can be found on two timelines when it precedes a switch (the new timeline's first
 * segment holds a copy of its parent's WAL up to the switch point).
 */
export async function findTargetHits(
  repo: Repository,
  cluster: string,
  oldest: Pick<BackupFacts, 'pgVersionNum' | 'walStart' | 'walSegmentSize'>,
  target: WalTarget,
  opts: { pgBinDir?: string },
): Promise<TargetScan> {
  const hits: TargetHit[] = [];
  const names = new Set<string>();
  const xidRe = target.kind === 'xid' ? new RegExp(`tx:\\s+${target.xid},`) : undefined;
  const scanned = await scanArchivedWal(
    {
      repo,
      cluster,
      fromSegment: oldest.walStart,
      pgVersionNum: oldest.pgVersionNum,
      walSegmentSize: oldest.walSegmentSize,
      // Restore points are XLOG records, commits and aborts Transaction ones: pg_waldump prints only those.
      rmgr: target.kind === 'name' ? 'XLOG' : 'Transaction',
      ...(opts.pgBinDir ? { pgBinDir: opts.pgBinDir } : {}),
    },
    ({ line, lsn, timeline }) => {
      if (target.kind === 'name') {
        const name = restorePointName(line);
        if (name === undefined) return;
        names.add(name);
        if (name === target.name) hits.push({ lsn, timeline });
      } else if (xidRe!.test(line) && /desc: (COMMIT|ABORT)/.test(line)) {
        hits.push({ lsn, timeline });
      }
    },
  );
  if (scanned.segmentsRead === 0)
    throw new PgfleetError('RestorePointNotFound', `no archived WAL for cluster ${cluster}`);
  return { hits: hits.sort((a, b) => a.lsn.compare(b.lsn) || a.timeline - b.timeline), restorePointNames: [...names] };
}

export function describeWalTarget(target: WalTarget): string {
  return target.kind === 'name' ? `restore point '${target.name}'` : `transaction ${target.xid}`;
}

/** The newest backup consistent before the first place the target is found (single-timeline use: drills). */
export async function findTargetLsn<B extends BackupFacts>(
  repo: Repository,
  cluster: string,
  backups: B[],
  target: WalTarget,
  opts: { pgBinDir?: string; log: Logger },
): Promise<TargetLsn<B>> {
  const oldest = backups[0]!;
  const scan = await findTargetHits(repo, cluster, oldest, target, opts);
  for (const hit of scan.hits) {
    const candidates = backups.filter((b) => Lsn.parse(b.stopLsn).compare(hit.lsn) <= 0);
    if (candidates.length > 0) {
      opts.log.info(
        { target, lsn: hit.lsn.toString(), backup: candidates.at(-1)!.label },
        'recovery target found in archived WAL',
      );
      return { lsn: hit.lsn, backup: candidates.at(-1)! };
    }
  }
  throw targetNotFound(cluster, oldest, target, scan);
}

export function targetNotFound(
  cluster: string,
  oldest: BackupFacts,
  target: WalTarget,
  { hits, restorePointNames }: TargetScan,
): PgfleetError {
  const what = describeWalTarget(target);
  if (hits.length > 0)
    return new PgfleetError(
      'TargetBeforeOldestBackup',
      `${what} (at ${hits[0]!.lsn.toString()}) is before the end of the oldest backup ${oldest.label} (${oldest.stopLsn})`,
    );
  // A name target says which names there are: a typo is then one look away.
  // The archive is read from the oldest backup's first segment on: an older transaction (one
  // that committed before any backup) cannot be told from one that never committed.
  const known =
    target.kind !== 'name'
      ? `; the archived WAL is read from the oldest backup ${oldest.label}'s first segment ${oldest.walStart} on, so a transaction that committed before it is not found either (recovery could not stop there: PostgreSQL needs a backup that ends before the target)`
      : restorePointNames.length === 0
        ? '; the archived WAL since the oldest backup holds no restore points'
        : `; the archived WAL since the oldest backup holds restore points ${listNames(restorePointNames)} (pgfleet restore-points ${cluster} lists them with times and LSNs)`;
  return new PgfleetError('RestorePointNotFound', `${what} is not in the archived WAL of cluster ${cluster}${known}`);
}

/** 'a', 'b', 'c' (at most 20, then how many more). */
function listNames(names: readonly string[]): string {
  const shown = names.slice(0, 20).map((n) => `'${n}'`);
  return names.length > 20 ? `${shown.join(', ')} and ${names.length - 20} more` : shown.join(', ');
}
