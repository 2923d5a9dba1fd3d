/**
 * Retention: which backups of a cluster stay, which go, and which WAL the kept ones still need.
 * A pure function over catalog records so that every rule is table-tested without a server; the
 * controller turns the plan into expire jobs and `pgfleet retention plan` prints it.
 *
 * Rules (what a DBA who runs pgBackRest, WAL-G or Barman expects, minus their known pitfalls):
 * - Backups are ordered by real time (stop time, then stop LSN), never by label or timeline:
 *   WAL-G once deleted the newest backups because it sorted names (wal-g#636).
 * - A failed backup counts for nothing and is always expirable. So is a backup whose diff/incr
 *   chain does not reach a succeeded full (it cannot be restored), unless it is pinned.
 * - PITR window: to restore to any moment in [now - window, now] we need the newest full that
 *   ended at or before the window start (the anchor) and the WAL from its start on; every backup
 *   after the anchor stays too (shorter replay). With no full that old (window longer than the
 *   history) the oldest full is the anchor. A window of 0 anchors at the newest full, so nothing
 *   younger than the newest full is ever expired because of tier counts.
 * - GFS tiers pick full backups only: the newest full of each of the last N UTC calendar days
 *   (ISO weeks, calendar months, years) that have one. minFull keeps the N newest fulls whatever
 *   the tiers say. Pinned backups always stay. A kept diff/incr keeps the chain it restores from.
 * - A backup whose stop time is after `now` was taken on a host whose clock is ahead (or ours is
 *   behind): it cannot be placed in time, so it is kept ('clock-skew') and used for nothing else.
 * - WAL: from the anchor's first segment on, all WAL stays on every timeline (a simplification of
 *   following timeline history: segment numbers are positions in one LSN space, so a timeline that
 *   branched later continues at higher numbers). Before that, only the segments that make each
 *   long-term backup consistent ([walStart, walStop]) stay. With no anchor no WAL is expired: never
 *   delete WAL that the catalog cannot account for.
 */
import { PgfleetError } from '@pgfleet/core';
import type { BackupRecord } from '@pgfleet/catalog';
import { Lsn, walFileKind } from '@pgfleet/pg';

const DAY_MS = 86_400_000;

/** The catalog fields retention reads, plus the outcome and the pin. */
export interface RetentionBackup extends Pick<
  BackupRecord,
  | 'label'
  | 'type'
  | 'priorLabel'
  | 'startTime'
  | 'stopTime'
  | 'startLsn'
  | 'stopLsn'
  | 'timeline'
  | 'walStart'
  | 'walStop'
> {
  state: 'succeeded' | 'failed';
  pinned: boolean;
}

/** Counts are numbers of full backups kept per tier; 0 turns a tier off. */
export interface RetentionPolicy {
  /** Days back from now to which point-in-time recovery must stay possible (fractions allowed; 0 = from the newest full on). */
  pitrWindowDays: number;
  daily: number;
  weekly: number;
  monthly: number;
  yearly: number;
  /** At least this many of the newest full backups are always kept. */
  minFull: number;
}

export type KeepReason =
  | 'pitr-window'
  | 'daily'
  | 'weekly'
  | 'monthly'
  | 'yearly'
  | 'min-full'
  | 'pinned'
  | 'clock-skew'
  /** Another kept backup restores from this one (label = the kept backup that needs it). */
  | `chain-of:${string}`;

export type ExpireReason =
  | 'failed'
  /** The backup's chain does not reach a succeeded full (label = the missing or failed prior). */
  | `broken-chain:${string}`
  /** Older than the PITR anchor, not picked by a tier or minFull, not pinned, no kept backup needs it. */
  | 'outside-retention';

export interface ExpiredBackup {
  label: string;
  reason: ExpireReason;
}

/** WAL a long-term backup outside the PITR window needs to be consistent (segment names, inclusive). */
export interface WalKeepRange {
  label: string;
  timeline: number;
  walStart: string;
  walStop: string;
}

export interface PitrAnchor {
  label: string;
  timeline: number;
  stopTime: number;
  /** From this WAL position on (any timeline) all WAL stays: the anchor's first segment, or a later backup's lower one after a roll-back. */
  walStart: string;
}

export interface RetentionPlan {
  /** now - pitrWindowDays. */
  windowStart: number;
  /** Undefined when the cluster has no usable full backup that ended by now. */
  anchor: PitrAnchor | undefined;
  /** Kept backups in real-time order with every reason that keeps them. */
  keep: Map<string, KeepReason[]>;
  /** Expirable backups in real-time order (failed ones by start time). */
  expire: ExpiredBackup[];
  /**
   * Per timeline seen in the backups: segments named lower than this are expirable unless a
   * walKeepRanges entry holds them; undefined = keep all WAL. `walFileNeeded` applies the same rule
   * to any archive file, including timelines no backup was taken on.
   */
  walExpireBefore: Map<number, string | undefined>;
  walKeepRanges: WalKeepRange[];
}

const TIER_REASONS = ['daily', 'weekly', 'monthly', 'yearly'] as const;
export type RetentionTier = (typeof TIER_REASONS)[number];
const REASON_ORDER: readonly string[] = ['pitr-window', 'clock-skew', 'pinned', ...TIER_REASONS, 'min-full'];

/** Throws InvalidArgument naming the first bad field. */
export function validateRetentionPolicy(policy: RetentionPolicy): void {
  if (!Number.isFinite(policy.pitrWindowDays) || policy.pitrWindowDays < 0) {
    throw new PgfleetError(
      'InvalidArgument',
      `retention pitrWindowDays must be a number of days >= 0, got ${String(policy.pitrWindowDays)}`,
    );
  }
  for (const key of [...TIER_REASONS, 'minFull'] as const) {
    const v = policy[key];
    if (!Number.isInteger(v) || v < 0) {
      throw new PgfleetError(
        'InvalidArgument',
        `retention ${key} must be a whole number of full backups >= 0 (0 turns it off), got ${String(v)}`,
      );
    }
  }
}

/**
 * Computes the keep set, the expire list and the WAL still needed for one cluster's backups at
 * `now` (ms since the epoch). Pure: same input, same plan.
 */
export function planRetention(
  backups: readonly RetentionBackup[],
  policy: RetentionPolicy,
  now: number,
): RetentionPlan {
  validateRetentionPolicy(policy);
  if (!Number.isFinite(now)) throw new PgfleetError('InvalidArgument', 'retention needs a valid current time');

  const byLabel = indexByLabel(backups);
  const succeeded = backups.filter((b) => b.state === 'succeeded');
  for (const b of succeeded) checkWalNames(b);
  const brokenAt = chainBreaks(byLabel);

  const usable = succeeded.filter((b) => brokenAt(b) === undefined);
  const future = usable.filter((b) => b.stopTime > now).sort(byRealTime);
  const present = usable.filter((b) => b.stopTime <= now).sort(byRealTime);
  const presentFulls = present.filter((b) => b.type === 'full');

  const reasons = new KeepReasons();
  const windowStart = now - policy.pitrWindowDays * DAY_MS;
  const window = keepPitrWindow(present, presentFulls, windowStart, reasons);
  for (const b of future) reasons.add(b.label, 'clock-skew');
  for (const b of succeeded) if (b.pinned) reasons.add(b.label, 'pinned');
  keepTiers(presentFulls, policy, reasons);
  keepChains(byLabel, reasons);

  const { keep, expire } = assemble(backups, reasons, brokenAt);
  const anchor = pitrAnchor(window);
  return { windowStart, anchor, keep, expire, ...walToKeep(backups, byLabel, anchor, keep) };
}

/** The backups by label; a label twice is InvalidArgument. */
function indexByLabel(backups: readonly RetentionBackup[]): Map<string, RetentionBackup> {
  const byLabel = new Map<string, RetentionBackup>();
  for (const b of backups) {
    if (byLabel.has(b.label))
      throw new PgfleetError('InvalidArgument', `backup label '${b.label}' appears twice in the cluster's backups`);
    byLabel.set(b.label, b);
  }
  return byLabel;
}

/**
 * Where each backup's chain breaks: undefined when its chain of priors reaches a succeeded full
 * (it is restorable), else the label of the missing or failed prior. Memoised along each walk.
 */
function chainBreaks(byLabel: ReadonlyMap<string, RetentionBackup>): (b: RetentionBackup) => string | undefined {
  const chainBreak = new Map<string, string | undefined>();
  return (b) => {
    if (chainBreak.has(b.label)) return chainBreak.get(b.label);
    const path: RetentionBackup[] = [];
    const seen = new Set<string>();
    let cur = b;
    let verdict: string | undefined;
    for (;;) {
      if (chainBreak.has(cur.label)) {
        verdict = chainBreak.get(cur.label);
        break;
      }
      path.push(cur);
      seen.add(cur.label);
      if (cur.type === 'full') {
        verdict = undefined;
        break;
      }
      const prior = byLabel.get(cur.priorLabel);
      if (!prior || prior.state !== 'succeeded' || seen.has(prior.label)) {
        verdict = cur.priorLabel || '(none)';
        break;
      }
      cur = prior;
    }
    for (const p of path) chainBreak.set(p.label, verdict);
    return verdict;
  };
}

/** Every reason that keeps each backup, each reason once per backup, in the order added. */
class KeepReasons {
  readonly byLabel = new Map<string, KeepReason[]>();

  add(label: string, reason: KeepReason): void {
    const list = this.byLabel.get(label);
    if (!list) this.byLabel.set(label, [reason]);
    else if (!list.includes(reason)) list.push(reason);
  }

  has(label: string, reason: KeepReason): boolean {
    return this.byLabel.get(label)?.includes(reason) ?? false;
  }
}

/** The PITR window's anchor full and the usable backups from it on (all kept for the window). */
interface PitrWindow {
  anchorFull: RetentionBackup | undefined;
  /** The anchor and every usable backup that ended after it, in real-time order. */
  fromAnchor: readonly RetentionBackup[];
}

/**
 * PITR window: the anchor is the newest full that ended at or before the window start (the
 * oldest full when none is that old); it and every backup after it stay.
 */
function keepPitrWindow(
  present: readonly RetentionBackup[],
  presentFulls: readonly RetentionBackup[],
  windowStart: number,
  reasons: KeepReasons,
): PitrWindow {
  let anchorFull: RetentionBackup | undefined;
  for (const f of presentFulls) if (f.stopTime <= windowStart) anchorFull = f;
  anchorFull ??= presentFulls[0];
  const fromAnchor = present.slice(anchorFull ? present.indexOf(anchorFull) : 0);
  for (const b of fromAnchor) reasons.add(b.label, 'pitr-window');
  return { anchorFull, fromAnchor };
}

/** GFS tiers and minFull over the usable fulls (real-time order), newest first. */
function keepTiers(presentFulls: readonly RetentionBackup[], policy: RetentionPolicy, reasons: KeepReasons): void {
  keepByTiers([...presentFulls].reverse(), policy, (label, tier) => reasons.add(label, tier));
  for (const f of [...presentFulls].reverse().slice(0, policy.minFull)) reasons.add(f.label, 'min-full');
}

/**
 * The GFS rule, shared by physical fulls and logical dumps (retention/dumps.ts): per tier, the
 * newest item of each of the `counts[tier]` newest calendar periods (UTC) holding one stays.
 * `newestFirst` is in real-time order, newest first.
 */
export function keepByTiers(
  newestFirst: readonly { label: string; stopTime: number }[],
  counts: Readonly<Record<RetentionTier, number>>,
  keep: (label: string, tier: RetentionTier) => void,
): void {
  for (const tier of TIER_REASONS) {
    const periods = new Set<string>();
    for (const f of newestFirst) {
      if (periods.size >= counts[tier]) break;
      const period = periodKey(tier, f.stopTime);
      if (periods.has(period)) continue;
      periods.add(period);
      keep(f.label, tier);
    }
  }
}

/**
 * Chains: a kept diff/incr keeps every backup it restores from. A dependency names the nearest
 * kept-for-itself backup that needs it; the walk stops at a backup kept for itself (its own walk
 * covers the rest), and the window needs no naming (everything after the anchor stays anyway).
 */
function keepChains(byLabel: ReadonlyMap<string, RetentionBackup>, reasons: KeepReasons): void {
  const direct = new Set(reasons.byLabel.keys());
  const roots = [...direct].map((l) => byLabel.get(l)!).sort(byRealTime);
  for (const root of roots) {
    const seen = new Set<string>([root.label]);
    let cur = root;
    while (cur.type !== 'full') {
      const prior = byLabel.get(cur.priorLabel);
      if (!prior || prior.state !== 'succeeded' || seen.has(prior.label)) break;
      seen.add(prior.label);
      if (!reasons.has(prior.label, 'pitr-window')) reasons.add(prior.label, `chain-of:${root.label}`);
      if (direct.has(prior.label)) break;
      cur = prior;
    }
  }
}

/**
 * The keep map and the expire list in time order: stop time, or start time for failed backups
 * (whose stop may be unset). A succeeded backup with a reason is kept; every other backup expires,
 * saying why.
 */
function assemble(
  backups: readonly RetentionBackup[],
  reasons: KeepReasons,
  brokenAt: (b: RetentionBackup) => string | undefined,
): Pick<RetentionPlan, 'keep' | 'expire'> {
  const listed = (b: RetentionBackup): number => (b.state === 'succeeded' ? b.stopTime : b.startTime);
  const ordered = [...backups].sort((a, b) => listed(a) - listed(b) || cmpText(a.label, b.label));
  const keep = new Map<string, KeepReason[]>();
  const expire: ExpiredBackup[] = [];
  for (const b of ordered) {
    const list = reasons.byLabel.get(b.label);
    if (b.state === 'succeeded' && list) {
      keep.set(b.label, list.sort(byReasonOrder));
      continue;
    }
    const broken = b.state === 'succeeded' ? brokenAt(b) : undefined;
    expire.push({
      label: b.label,
      reason: b.state === 'failed' ? 'failed' : broken !== undefined ? `broken-chain:${broken}` : 'outside-retention',
    });
  }
  return { keep, expire };
}

/**
 * The anchor WAL is kept from. After a roll-back (an old backup restored into the same cluster),
 * a newer timeline continues from WAL positions below the anchor's, and the window's later
 * backups start there: WAL stays from the lowest start among the anchor and every backup after
 * it, or PITR between those backups would lose the WAL it replays.
 */
function pitrAnchor({ anchorFull, fromAnchor }: PitrWindow): PitrAnchor | undefined {
  if (!anchorFull) return undefined;
  let keepFrom = anchorFull.walStart;
  for (const b of fromAnchor) if (position(b.walStart) < position(keepFrom)) keepFrom = b.walStart;
  return { label: anchorFull.label, timeline: anchorFull.timeline, stopTime: anchorFull.stopTime, walStart: keepFrom };
}

/**
 * The WAL rule per timeline seen in the backups (expire before the anchor's position, or keep
 * all without an anchor), and the ranges the kept backups before the anchor need to be
 * consistent (chain members are restored from, never restored to: their WAL is not needed).
 */
function walToKeep(
  backups: readonly RetentionBackup[],
  byLabel: ReadonlyMap<string, RetentionBackup>,
  anchor: PitrAnchor | undefined,
  keep: ReadonlyMap<string, KeepReason[]>,
): Pick<RetentionPlan, 'walExpireBefore' | 'walKeepRanges'> {
  const timelines = new Set<number>();
  for (const b of backups) if (Number.isInteger(b.timeline) && b.timeline > 0) timelines.add(b.timeline);
  const walExpireBefore = new Map<number, string | undefined>();
  for (const tli of [...timelines].sort((a, b) => a - b))
    walExpireBefore.set(tli, anchor ? segmentOn(tli, anchor.walStart) : undefined);

  const walKeepRanges: WalKeepRange[] = [];
  if (anchor) {
    for (const [label, list] of keep) {
      const b = byLabel.get(label)!;
      if (list.every((r) => r.startsWith('chain-of:'))) continue;
      if (position(b.walStart) >= position(anchor.walStart)) continue;
      walKeepRanges.push({ label, timeline: b.timeline, walStart: b.walStart, walStop: b.walStop });
    }
  }
  return { walExpireBefore, walKeepRanges };
}

/**
 * Whether an archive file must stay under the plan. Timeline history files and names this code
 * does not know always stay; a segment (or its .partial / .backup companion) stays from the
 * anchor's position on, on any timeline, or when a long-term backup's range holds it.
 */
export function walFileNeeded(plan: Pick<RetentionPlan, 'anchor' | 'walKeepRanges'>, fileName: string): boolean {
  const kind = walFileKind(fileName);
  if (kind === undefined || kind === 'history') return true;
  if (!plan.anchor) return true;
  const segment = fileName.slice(0, 24);
  const pos = position(segment);
  if (pos >= position(plan.anchor.walStart)) return true;
  const tli = segment.slice(0, 8);
  return plan.walKeepRanges.some(
    (r) =>
      (tli === r.walStart.slice(0, 8) || tli === r.walStop.slice(0, 8)) &&
      pos >= position(r.walStart) &&
      pos <= position(r.walStop),
  );
}

/** Real time: stop time, then stop LSN (same millisecond), then label only to be deterministic. */
function byRealTime(a: RetentionBackup, b: RetentionBackup): number {
  return (
    a.stopTime - b.stopTime || cmpLsn(a.stopLsn, b.stopLsn) || a.startTime - b.startTime || cmpText(a.label, b.label)
  );
}

function cmpLsn(a: string, b: string): number {
  if (!Lsn.isValid(a) || !Lsn.isValid(b)) return 0;
  return Lsn.parse(a).compare(Lsn.parse(b));
}

function cmpText(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function byReasonOrder(a: KeepReason, b: KeepReason): number {
  const rank = (r: KeepReason): number => (r.startsWith('chain-of:') ? REASON_ORDER.length : REASON_ORDER.indexOf(r));
  return rank(a) - rank(b);
}

function checkWalNames(b: RetentionBackup): void {
  for (const name of [b.walStart, b.walStop]) {
    if (walFileKind(name) !== 'segment') {
      throw new PgfleetError(
        'InvalidArgument',
        `backup '${b.label}' has '${name}' as a WAL segment name (expected 24 hex digits)`,
      );
    }
  }
}

/**
 * Position of a segment in the LSN space: the 16 hex digits after the timeline. Fixed-width
 * upper-case hex, so text order is numeric order whatever the segment size.
 */
function position(segment: string): string {
  return segment.slice(8, 24).toUpperCase();
}

function segmentOn(timeline: number, segment: string): string {
  return timeline.toString(16).toUpperCase().padStart(8, '0') + position(segment);
}

/** The calendar period (UTC) a tier buckets a stop time into. */
export function periodKey(tier: RetentionTier, time: number): string {
  const d = new Date(time);
  const y = d.getUTCFullYear();
  switch (tier) {
    case 'daily':
      return d.toISOString().slice(0, 10);
    case 'monthly':
      return d.toISOString().slice(0, 7);
    case 'yearly':
      return String(y);
    case 'weekly': {
      // ISO 8601 week: weeks start on Monday and belong to the year that holds their Thursday.
      const mondayBased = (d.getUTCDay() + 6) % 7;
      const thursday = Date.UTC(y, d.getUTCMonth(), d.getUTCDate() - mondayBased + 3);
      const isoYear = new Date(thursday).getUTCFullYear();
      const week = 1 + Math.floor((thursday - Date.UTC(isoYear, 0, 1)) / (7 * DAY_MS));
      return `${isoYear}-W${String(week).padStart(2, '0')}`;
    }
  }
}
