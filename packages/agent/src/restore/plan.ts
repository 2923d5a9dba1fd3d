/**
 * Which backup a restore starts from and which timeline it follows. PostgreSQL's default
 * (recovery_target_timeline = 'latest') follows the highest-numbered timeline whose history file
 * it can fetch, which goes wrong in the repository of a real fleet: a restored copy that was
 * promoted elsewhere and archived here, or a history file of another lineage, makes every later
 * default restore fail ("requested timeline N is not a child of this server's history"); and a
 * time on the timeline an in-place PITR abandoned is not on the newest one at all. So the
 * timeline is chosen here, from the archived histories and the time each timeline began, and
 * written explicitly:
 *   - time targets follow the timeline the cluster ran on at that time (timelines.ts);
 *   - latest, immediate, LSN targets follow the one it runs on now, unless --target-timeline;
 *   - name and xid targets follow the timeline whose WAL holds the record (preferring the one
 *     the cluster runs on now when the record precedes a switch and so is on both).
 * The backup is the newest one whose lineage contains it on that timeline and that ends before
 * the target. With a single timeline and no history files nothing changes from the catalog's pick.
 */
import { PgfleetError, type Logger } from '@pgfleet/core';
import { Lsn, WalSegmentName, type TimelineHistory } from '@pgfleet/pg';
import {
  ManifestReader,
  type BackupFacts,
  type BackupSummary,
  type ManifestHead,
  type Repository,
} from '@pgfleet/storage';
import { describeWalTarget, findTargetHits, findTargetLsn, targetNotFound, type TargetHit } from './target-resolver.js';
import {
  lineageOf,
  loadTimelineHistories,
  preferArchivedLineage,
  timelineLivingAt,
  timelinesWithStart,
  type BackupOnTimeline,
  type TimelineInfo,
} from '../wal/timelines.js';

/** A recovery target as the restore writes it. */
export type TargetSpec =
  | { kind: 'time'; time: Date; /** exact text for recovery_target_time, microsecond precision */ pgTime?: string }
  | { kind: 'lsn'; lsn: string }
  | { kind: 'name'; name: string }
  | { kind: 'xid'; xid: string }
  | { kind: 'immediate' }
  | { kind: 'latest' };

export interface RestorePlanInput {
  cluster: string;
  repo: Repository;
  target: TargetSpec;
  /** The backup named by the user (--backup) or picked by the controller from the catalog. */
  backupLabel?: string;
  /** The label is the controller's pick, not the user's: it may be replaced by a backup of the right lineage. */
  labelIsHint?: boolean;
  /** --target-timeline: follow this timeline instead of choosing. */
  targetTimeline?: number;
  /**
   * The timeline the cluster's primary writes now (its agent's heartbeat, via the controller):
   * only its lineage is followed, so a fork a copy archived elsewhere is never taken for the
   * cluster. Unknown (0/undefined): the archived timeline that began last counts as current.
   */
  currentTimeline?: number;
  pgBinDir?: string;
  log: Logger;
  now?: number;
}

export interface RestorePlan {
  /**
   * The chosen backup's manifest, open as a stream (its entries are read one at a time, so a
   * restore's memory does not grow with them); the caller closes it.
   */
  reader: ManifestReader;
  /** The timeline recovery follows. */
  timeline: number;
  /**
   * What recovery_target_timeline says: the number, or 'current' for the backup's own timeline
   * when its history is not archived (PostgreSQL refuses a numeric timeline > 1 whose history
   * restore_command cannot fetch: a cluster that was on timeline 2 before pgfleet archived it).
   */
  recoveryTargetTimeline: string;
}

/** The plan for the chosen backup: its manifest is read now, only this one (and checked against its summary). */
async function planned(
  i: RestorePlanInput,
  chosen: ManifestReader | BackupSummary,
  timeline: number,
  histories: ReadonlyMap<number, unknown>,
): Promise<RestorePlan> {
  const reader = chosen instanceof ManifestReader ? chosen : await i.repo.openManifestFor(chosen);
  const setting =
    timeline > 1 && !histories.has(timeline) && timeline === reader.head.timeline ? 'current' : String(timeline);
  return { reader, timeline, recoveryTargetTimeline: setting };
}

/** The facts of a backup chosen by its summary or opened by its label. */
const factsOf = (chosen: ManifestReader | BackupSummary): BackupFacts =>
  chosen instanceof ManifestReader ? chosen.head : chosen;

const stopOf = (b: BackupFacts): bigint => Lsn.parse(b.stopLsn).value;

/** Whether a restore of `b` can follow timeline `tli` (the backup is consistent before the lineage leaves its timeline). */
function onLineage(b: BackupFacts, tli: number, timelines: ReadonlyMap<number, TimelineInfo>): boolean {
  return b.timeline === tli || timelines.get(tli)?.history.contains(b.timeline, stopOf(b)) === true;
}

function endsBefore(b: BackupFacts, target: TargetSpec): boolean {
  if (target.kind === 'time') return Date.parse(b.stopTime) <= target.time.getTime();
  if (target.kind === 'lsn') return stopOf(b) <= Lsn.parse(target.lsn).value;
  return true;
}

export async function planRestore(i: RestorePlanInput): Promise<RestorePlan> {
  const histories = await loadTimelineHistories(i.repo, i.cluster);
  const explicit = i.backupLabel && !i.labelIsHint ? await i.repo.openManifest(i.cluster, i.backupLabel) : undefined;
  try {
    return await planWith(i, histories, explicit);
  } catch (err) {
    await explicit?.close();
    throw err;
  }
}

async function planWith(
  i: RestorePlanInput,
  histories: ReadonlyMap<number, TimelineHistory>,
  explicit: ManifestReader | undefined,
): Promise<RestorePlan> {
  // One timeline: the catalog's pick (or the WAL's, for name/xid) is right.
  if (histories.size === 0) return planSingleTimeline(i, explicit);

  const archive = await archivedTimelines(i, histories, explicit?.head);
  if (explicit) {
    const facts = explicit.head;
    const timeline = i.targetTimeline ?? (await archive.follow({ timeline: facts.timeline, stopLsn: stopOf(facts) }));
    requireOnLineage(facts, timeline, archive.timelines);
    return planned(i, explicit, timeline, histories);
  }

  const backups = await completeBackups(i);
  const root = Math.min(
    ...backups.map((b) => b.timeline),
    ...[...histories.values()].map((h) => h.entries[0]?.timeline ?? h.timeline),
  );
  const living = await archive.follow({ timeline: root, stopLsn: 0n });
  if (i.target.kind === 'name' || i.target.kind === 'xid')
    return planRecordTarget(i, i.target, backups, i.targetTimeline ?? living, archive);
  return planPositionTarget(i, backups, i.targetTimeline ?? living, archive);
}

/** Without archived history files: the backup named, found in the WAL or picked, on its own timeline. */
async function planSingleTimeline(i: RestorePlanInput, explicit: ManifestReader | undefined): Promise<RestorePlan> {
  const chosen = explicit ?? (await singleTimelineBackup(i));
  try {
    return await planOnItsTimeline(i, chosen);
  } catch (err) {
    if (chosen instanceof ManifestReader) await chosen.close();
    throw err;
  }
}

async function planOnItsTimeline(i: RestorePlanInput, chosen: ManifestReader | BackupSummary): Promise<RestorePlan> {
  const manifest = factsOf(chosen);
  if (i.targetTimeline !== undefined && i.targetTimeline !== manifest.timeline) {
    throw new PgfleetError(
      'TargetTimelineInvalid',
      `timeline ${i.targetTimeline} does not exist in the archive of cluster ${i.cluster}: it holds only timeline ${manifest.timeline}`,
    );
  }
  if (i.target.kind === 'lsn')
    await requireArchivedAt(i, Lsn.parse(i.target.lsn).value, manifest.timeline, new Map(), manifest.walSegmentSize);
  return planned(i, chosen, manifest.timeline, new Map());
}

/** The archive's timelines as a restore sees them, and how to choose the one to follow from a backup. */
interface ArchivedTimelines {
  histories: ReadonlyMap<number, TimelineHistory>;
  timelines: ReadonlyMap<number, TimelineInfo>;
  segmentSize: number;
  /** The timeline to follow from a lineage rooted at `from`: the one living at the target, moved down the current lineage where its WAL is only there. */
  follow(from: BackupOnTimeline): Promise<number>;
}

async function archivedTimelines(
  i: RestorePlanInput,
  histories: ReadonlyMap<number, TimelineHistory>,
  explicit: ManifestHead | undefined,
): Promise<ArchivedTimelines> {
  const segmentSize = explicit?.walSegmentSize ?? (await i.repo.readClusterInfo(i.cluster))?.walSegmentSize ?? 16 << 20;
  // Start times decide between timelines only for a time target, or between forks when the live
  // timeline is unknown: on the live lineage each timeline has one child, and now is after all.
  const liveLineage = i.currentTimeline ? lineageOf(i.currentTimeline, histories.get(i.currentTimeline)) : undefined;
  const needStart = (tli: number) => !liveLineage || (i.target.kind === 'time' && liveLineage.has(tli));
  const timelines = await timelinesWithStart(i.repo, i.cluster, histories, segmentSize, needStart);
  for (const [tli, info] of timelines)
    i.log.debug(
      {
        timeline: tli,
        parent: info.history.parent,
        switchLsn: Lsn.fromBigInt(info.history.startLsn).toString(),
        startedAt: info.startedAt?.toISOString(),
      },
      'archived timeline',
    );
  const known = (tli: number) =>
    timelines.has(tli) || [...timelines.values()].some((t) => t.history.entries.some((e) => e.timeline === tli));
  if (i.targetTimeline !== undefined && !known(i.targetTimeline) && i.targetTimeline !== explicit?.timeline) {
    const noWal = histories.has(i.targetTimeline) ? ' (its history is archived, but none of its WAL)' : '';
    throw new PgfleetError(
      'TargetTimelineInvalid',
      `timeline ${i.targetTimeline} is not in the archive of cluster ${i.cluster}${noWal}; archived timelines: ${[...timelines.keys()].sort((a, b) => a - b).join(', ') || 'none beyond the first'}`,
    );
  }
  const now = i.now ?? Date.now();
  const at = i.target.kind === 'time' ? i.target.time.getTime() : now;
  const archived = async (segment: string) => (await i.repo.authenticWal(i.cluster, segment)) !== undefined;
  // The live cluster's lineage when the controller knows its timeline and the archive holds it.
  const live = i.currentTimeline && known(i.currentTimeline) ? liveLineage : undefined;
  if (i.currentTimeline && !live)
    i.log.warn(
      { currentTimeline: i.currentTimeline },
      "the cluster's current timeline is not in the archive (its history is not archived yet): following the timeline that began last",
    );
  const follow = async (from: BackupOnTimeline): Promise<number> => {
    const current = timelineLivingAt(from, timelines, now, live);
    return preferArchivedLineage(
      timelineLivingAt(from, timelines, at, live),
      current,
      timelines,
      archived,
      segmentSize,
    );
  };
  return { histories, timelines, segmentSize, follow };
}

/** A backup named with --backup must be in the history of the timeline the restore follows. */
function requireOnLineage(explicit: BackupFacts, timeline: number, timelines: ReadonlyMap<number, TimelineInfo>) {
  if (onLineage(explicit, timeline, timelines)) return;
  const branch = timelines.get(timeline)?.history.switchPointOf(explicit.timeline);
  throw new PgfleetError(
    'TargetTimelineInvalid',
    `backup ${explicit.label} (timeline ${explicit.timeline}, consistent at ${explicit.stopLsn}) is not in the history of timeline ${timeline}${typeof branch === 'bigint' ? `, which left timeline ${explicit.timeline} at ${Lsn.fromBigInt(branch).toString()}` : ''}`,
  );
}

/** A name or xid target: the timeline whose archived WAL holds the record, and the newest backup before it there. */
async function planRecordTarget(
  i: RestorePlanInput,
  target: Extract<TargetSpec, { kind: 'name' | 'xid' }>,
  backups: BackupSummary[],
  wanted: number,
  { timelines, histories }: ArchivedTimelines,
): Promise<RestorePlan> {
  const scan = await findTargetHits(i.repo, i.cluster, backups[0]!, target, i.pgBinDir ? { pgBinDir: i.pgBinDir } : {});
  const { hits } = scan;
  // A record before a switch is on both timelines: follow the wanted lineage when it holds the record.
  const holds = (tli: number, hit: TargetHit) =>
    hit.timeline === tli || timelines.get(tli)?.history.contains(hit.timeline, hit.lsn.value) === true;
  const ordered = [
    ...hits.filter((h) => holds(wanted, h)),
    ...(i.targetTimeline === undefined ? hits.filter((h) => !holds(wanted, h)) : []),
  ];
  for (const hit of ordered) {
    const timeline = holds(wanted, hit) ? wanted : hit.timeline;
    const manifest = backups.filter((b) => stopOf(b) <= hit.lsn.value && onLineage(b, timeline, timelines)).at(-1);
    if (manifest) {
      i.log.info(
        { target: describeWalTarget(target), lsn: hit.lsn.toString(), timeline, backup: manifest.label },
        'recovery target found in archived WAL',
      );
      return planned(i, manifest, timeline, histories);
    }
  }
  throw targetNotFound(i.cluster, backups[0]!, target, scan);
}

/** A time, LSN, latest or immediate target: the newest backup on the timeline's lineage that ends before it. */
async function planPositionTarget(
  i: RestorePlanInput,
  backups: BackupSummary[],
  timeline: number,
  { timelines, histories, segmentSize }: ArchivedTimelines,
): Promise<RestorePlan> {
  const before = backups.filter((b) => endsBefore(b, i.target));
  const manifest = before.filter((b) => onLineage(b, timeline, timelines)).at(-1);
  if (!manifest) {
    if (before.length === 0) {
      throw new PgfleetError(
        'TargetBeforeOldestBackup',
        `the target is before the end of the oldest backup ${backups[0]!.label} (${backups[0]!.stopTime}, LSN ${backups[0]!.stopLsn})`,
      );
    }
    throw new PgfleetError(
      'TargetTimelineInvalid',
      `no backup in the history of timeline ${timeline} ends before the target: the backups before it (${before.map((b) => `${b.label} on timeline ${b.timeline}`).join(', ')}) are on a branch timeline ${timeline} does not contain`,
    );
  }
  if (i.target.kind === 'lsn')
    await requireArchivedAt(i, Lsn.parse(i.target.lsn).value, timeline, timelines, segmentSize);
  if (i.backupLabel && manifest.label !== i.backupLabel) {
    i.log.info(
      { catalogPick: i.backupLabel, backup: manifest.label, timeline },
      'the catalog picked a backup of another timeline branch: restoring the newest backup in the history of the target timeline instead',
    );
  }
  return planned(i, manifest, timeline, histories);
}

/** The cluster's complete backups, oldest first; none is an error (there is nothing to restore). */
async function completeBackups(i: RestorePlanInput): Promise<BackupSummary[]> {
  const backups = await i.repo.listBackups(i.cluster);
  if (backups.length === 0)
    throw new PgfleetError('NoBackup', `cluster ${i.cluster} has no complete backup in ${i.repo.location}`);
  return backups;
}

async function singleTimelineBackup(i: RestorePlanInput): Promise<ManifestReader | BackupSummary> {
  if (i.backupLabel) return i.repo.openManifest(i.cluster, i.backupLabel);
  const backups = await completeBackups(i);
  if (i.target.kind === 'name' || i.target.kind === 'xid') {
    return (
      await findTargetLsn(i.repo, i.cluster, backups, i.target, {
        ...(i.pgBinDir ? { pgBinDir: i.pgBinDir } : {}),
        log: i.log,
      })
    ).backup;
  }
  // Time/LSN targets are normally resolved by the controller; the agent falls back to the newest.
  return backups.filter((b) => endsBefore(b, i.target)).at(-1) ?? backups.at(-1)!;
}

/**
 * An LSN target must lie in archived WAL of the followed lineage: otherwise PostgreSQL replays to
 * the end of the archive and stops with FATAL "recovery ended before configured recovery target
 * was reached", after the whole restore. The segment holding it is named after the timeline
 * owning that position, or a later one of the lineage starting inside the same segment.
 */
async function requireArchivedAt(
  i: RestorePlanInput,
  lsn: bigint,
  timeline: number,
  timelines: ReadonlyMap<number, TimelineInfo>,
  segmentSize: number,
): Promise<void> {
  const history = timelines.get(timeline)?.history;
  const owner = history?.timelineAt(lsn) ?? timeline;
  const lineage = [
    owner,
    ...(history?.entries.map((e) => e.timeline).filter((t) => t > owner) ?? []),
    ...(timeline > owner ? [timeline] : []),
  ];
  for (const tli of new Set(lineage)) {
    const segment = WalSegmentName.fromLsn(tli, Lsn.fromBigInt(lsn), segmentSize).toString();
    if (await i.repo.authenticWal(i.cluster, segment)) return;
  }
  throw new PgfleetError(
    'TargetTimelineInvalid',
    `target LSN ${Lsn.fromBigInt(lsn).toString()} is beyond the archived WAL of timeline ${timeline} (segment ${WalSegmentName.fromLsn(owner, Lsn.fromBigInt(lsn), segmentSize).toString()} is not archived)`,
    {
      hint: 'Choose an LSN inside the archive (pgfleet verify <cluster> shows how far the WAL of each backup runs), wait until the segment is archived, or follow another --target-timeline.',
    },
  );
}
