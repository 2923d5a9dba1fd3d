/**
 * The cluster's timelines as the repository knows them: the archived history files, where each
 * timeline began (read from its own WAL), and which lineage a restore follows. Every part of the
 * agent that crosses a timeline switch asks here: wal-push (the switch segment carries its
 * parent's timeline id), verify (continuity through switch points), restore (which timeline
 * holds the target).
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { PgfleetError } from '@pgfleet/core';
import {
  Lsn,
  TimelineHistory,
  timelineHistoryName,
  timelineOfWalName,
  timelineStartFromSegment,
  WalSegmentName,
} from '@pgfleet/pg';
import type { Repository } from '@pgfleet/storage';

/**
 * Reads and parses the archived history of `timeline`; undefined when none is archived with a
 * matching MAC: a history planted without the cluster's key is never followed, and never blocks
 * archiving the genuine one either (verify reports it).
 */
export async function archivedHistory(
  repo: Repository,
  cluster: string,
  timeline: number,
): Promise<TimelineHistory | undefined> {
  const text = await readAuthenticWal(repo, cluster, timelineHistoryName(timeline));
  return text === undefined ? undefined : TimelineHistory.parse(timeline, text.toString('utf8'));
}

/**
 * The history of `timeline` for checking a segment about to be archived: the cluster's own file
 * in pg_wal beside it (PostgreSQL writes it there before the first segment of the timeline), else
 * the archived one.
 */
export async function historyForArchiving(
  timeline: number,
  pgWalDir: string,
  repo: Repository,
  cluster: string,
): Promise<TimelineHistory | undefined> {
  const local = await readFile(join(pgWalDir, timelineHistoryName(timeline)), 'utf8').catch(() => undefined);
  if (local !== undefined) return TimelineHistory.parse(timeline, local);
  return archivedHistory(repo, cluster, timeline);
}

/**
 * A history file may enter the archive only as a child of the lineage the repository holds: when
 * its parent's history is archived, this one must start with exactly those lines. A history from
 * another lineage (a copy of another system restored under this name, a crafted file) would make
 * every default restore follow a timeline that never ran here.
 */
export async function checkHistoryLineage(history: TimelineHistory, repo: Repository, cluster: string): Promise<void> {
  const parent = history.parent;
  if (parent === undefined || parent <= 1) return;
  const parentHistory = await archivedHistory(repo, cluster, parent);
  if (parentHistory && !history.extends(parentHistory)) {
    throw new PgfleetError(
      'TimelineHistoryConflict',
      `${timelineHistoryName(history.timeline)} says timeline ${history.timeline} branched off timeline ${parent} at ${Lsn.fromBigInt(history.startLsn).toString()}, but its ancestry does not match ${timelineHistoryName(parent)} in ${repo.location}`,
    );
  }
}

/**
 * Every usable archived timeline history of the cluster, by timeline (the files are a few hundred
 * bytes). A history that does not parse, or contradicts its parent's archived history (another
 * lineage, a crafted file), is left out: verify reports it, restores never follow it.
 */
export async function loadTimelineHistories(repo: Repository, cluster: string): Promise<Map<number, TimelineHistory>> {
  const out = new Map<number, TimelineHistory>();
  for (const h of await repo.listTimelineHistories(cluster)) {
    const tli = timelineOfWalName(h.name);
    if (out.has(tli)) continue;
    const text = await readAuthenticWal(repo, cluster, h.name);
    if (text === undefined) continue;
    try {
      out.set(tli, TimelineHistory.parse(tli, text.toString('utf8')));
    } catch {
      // unusable: verify names it
    }
  }
  for (const [tli, h] of [...out]) {
    const parent = h.parent === undefined ? undefined : out.get(h.parent);
    if (parent && !h.extends(parent)) out.delete(tli);
  }
  return out;
}

/**
 * An archived WAL file's content; undefined when no copy with the cluster's MAC is archived (a
 * planted file never counts). Any other failure (a repository that times out or refuses, a
 * damaged object) is thrown with its code: a timeline left out for a failed read would make a
 * restore follow its parent without a word and end before a target on it.
 */
async function readAuthenticWal(
  repo: Repository,
  cluster: string,
  name: string,
  maxBytes?: number,
): Promise<Buffer | undefined> {
  try {
    return await repo.readWalFile(cluster, name, maxBytes);
  } catch (err) {
    if (PgfleetError.is(err, 'WalUnauthenticated')) return undefined;
    throw err;
  }
}

/** A timeline a restore may follow, with where and when it began. */
export interface TimelineInfo {
  history: TimelineHistory;
  /** When it began: from its end-of-recovery record; undefined for a root or when unreadable. */
  startedAt: Date | undefined;
}

/**
 * The timelines that ran against this repository, and when each began, read from the record at
 * its switch point in its first segment. A timeline whose first segment is not archived never
 * ran here (a crafted history, or a copy that did not archive): it is left out. Reading a start
 * costs one segment download, so only the timelines `needStart` names are read (the others are
 * checked by a listing); their start counts as unknown.
 */
export async function timelinesWithStart(
  repo: Repository,
  cluster: string,
  histories: ReadonlyMap<number, TimelineHistory>,
  segmentSize: number,
  needStart: (timeline: number) => boolean = () => true,
): Promise<Map<number, TimelineInfo>> {
  const out = new Map<number, TimelineInfo>();
  for (const [tli, history] of histories) {
    const first = WalSegmentName.fromLsn(tli, Lsn.fromBigInt(history.startLsn), segmentSize).toString();
    if (!needStart(tli)) {
      if (await repo.authenticWal(cluster, first)) out.set(tli, { history, startedAt: undefined });
      continue;
    }
    const segment = await readAuthenticWal(repo, cluster, first, segmentSize);
    if (segment === undefined) continue;
    const start = timelineStartFromSegment(segment, history.startLsn, segmentSize, tli, history.parent!);
    out.set(tli, { history, startedAt: start?.time });
  }
  return out;
}

/** What a restore needs to know of the backup it starts from. */
export interface BackupOnTimeline {
  timeline: number;
  /** Where the backup is consistent (pg_backup_stop's LSN). */
  stopLsn: bigint;
}

/**
 * The timeline a restore follows (written as recovery_target_timeline), chosen like the cluster
 * lived: every archived timeline was the cluster's live one from its start until a newer one
 * began, so at time `at` (default: now) the cluster ran on the timeline that started last at or
 * before `at`, walking down from the backup's timeline. Only timelines whose history holds the
 * backup (it branched off the backup's lineage after the backup became consistent) qualify:
 * PostgreSQL refuses the others ("requested timeline is not a child of this server's history").
 * `only` restricts the walk to one lineage (the live cluster's, when the controller knows it), so
 * a fork archived by a copy elsewhere is never taken for the cluster.
 *
 * A timeline's parent in the walk is its newest ancestor that is known here (archived, or the
 * backup's own): a timeline that ran too briefly to leave a segment of its own (two promotions in
 * one segment) or whose history was never archived here is stepped over.
 */
export function timelineLivingAt(
  backup: BackupOnTimeline,
  timelines: ReadonlyMap<number, TimelineInfo>,
  at?: number,
  only?: ReadonlySet<number>,
): number {
  const known = (t: number) => t === backup.timeline || timelines.has(t);
  const parentOf = (info: TimelineInfo) => [...info.history.entries].reverse().find((e) => known(e.timeline))?.timeline;
  let current = backup.timeline;
  for (;;) {
    let next: { tli: number; start: number } | undefined;
    for (const [tli, info] of timelines) {
      if (
        (only && !only.has(tli)) ||
        parentOf(info) !== current ||
        !info.history.contains(backup.timeline, backup.stopLsn)
      )
        continue;
      // Without a readable start time the timeline is taken as old as its number allows (after its parent's other children).
      const start = info.startedAt?.getTime() ?? -Infinity;
      if (at !== undefined && start > at) continue;
      if (!next || start > next.start || (start === next.start && tli > next.tli)) next = { tli, start };
    }
    if (!next) return current;
    current = next.tli;
  }
}

/** A timeline and every ancestor its history names (none known: the timeline alone): one lineage. */
export function lineageOf(timeline: number, history: TimelineHistory | undefined): Set<number> {
  return new Set([timeline, ...(history?.entries.map((e) => e.timeline) ?? [])]);
}

/**
 * A time before a switch is on both the old timeline and every timeline after it, but the old
 * timeline's WAL up to the switch may never have reached the archive: after a failover the old
 * primary dies before archiving its last segment, and that WAL exists only as the copy at the
 * start of the new timeline's first segment. So from `timeline` (the one the cluster ran on at
 * the target) the restore moves down the current lineage while the old timeline's segment
 * holding the switch point is not archived: the newer timeline holds the same WAL up to the
 * switch. An old timeline whose switch segment is archived is kept (its WAL after the switch
 * point, abandoned by a PITR or lost in a failover, is what a target there needs).
 */
export async function preferArchivedLineage(
  timeline: number,
  current: number,
  timelines: ReadonlyMap<number, TimelineInfo>,
  archived: (segment: string) => Promise<boolean>,
  segmentSize: number,
): Promise<number> {
  const lineage = timelines.get(current)?.history;
  let tli = timeline;
  while (lineage && tli !== current) {
    const sw = lineage.switchPointOf(tli);
    if (typeof sw !== 'bigint') break; // not on the current lineage: a branch of its own
    if (await archived(WalSegmentName.fromLsn(tli, Lsn.fromBigInt(sw), segmentSize).toString())) break;
    tli = lineage.timelineAt(sw);
  }
  return tli;
}
