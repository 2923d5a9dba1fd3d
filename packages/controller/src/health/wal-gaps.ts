/**
 * wal.gap_detected: a verify job found archived WAL with segments missing in between
 * (VerifyProblem kind 'wal-gap'), so point-in-time recovery cannot cross that range. Verify runs
 * again and again and reports a gap for as long as it exists; the consumer wants to hear of each
 * gap once. The gaps already reported are kept per cluster in the catalog's health states
 * (condition 'wal_gap', data.gaps = their keys), written together with the events of new ones;
 * a gap that a later verify no longer finds (its WAL was restored, or retention removed the
 * range) is forgotten, silently, and would be reported again if it came back.
 *
 * Heartbeats are not used to spot gaps: pg_stat_archiver's counts can show that the archiver
 * skipped segments, but not which ones, and the controller does not read the repository.
 */
import type { BackupRecord, CatalogStore, HealthStateRecord, OutboxEventInput } from '@pgfleet/catalog';
import { Lsn, WalSegmentName } from '@pgfleet/pg';
import type { VerifyProblem, VerifyResult } from '@pgfleet/proto';
import { outboxEvent } from '../jobs/events.js';

export const WAL_GAP_CONDITION = 'wal_gap';

/** One gap as the event reports it. */
export interface WalGap {
  /** `<timeline>:<first missing>:<last missing>`: what "the same gap" means across verify runs. */
  key: string;
  timeline: number;
  firstMissingWal: string;
  lastMissingWal: string;
  missingSegments: bigint;
}

/** wal_segment_size is a power of two from 1 MiB to 1 GiB; the default first. */
const SEGMENT_SIZES = [16, 1, 2, 4, 8, 32, 64, 128, 256, 512, 1024].map((mib) => mib * 1024 * 1024);
const SEGMENT_RE = /^[0-9A-F]{24}$/;

/**
 * The gap of a 'wal-gap' problem: [lsnFrom, lsnTo) on its timeline. Verify lists at most a few
 * hundred of the missing names, so the last one and the count come from the LSN range, in the
 * segment size that makes the first name start at lsnFrom.
 */
export function walGapOf(p: VerifyProblem): WalGap | undefined {
  const first = p.segments[0] ?? p.path;
  if (p.kind !== 'wal-gap' || !SEGMENT_RE.test(first)) return undefined;
  const timeline = p.timeline || Number.parseInt(first.slice(0, 8), 16);
  let last = p.segments.at(-1) ?? first;
  let count = BigInt(Math.max(1, p.segments.length));
  if (Lsn.isValid(p.lsnFrom) && Lsn.isValid(p.lsnTo)) {
    const from = Lsn.parse(p.lsnFrom).value;
    const to = Lsn.parse(p.lsnTo).value;
    const size = SEGMENT_SIZES.find((s) => WalSegmentName.parse(first, s).startLsn.value === from);
    if (size !== undefined && to > from) {
      last = WalSegmentName.fromLsn(timeline, Lsn.fromBigInt(to - 1n), size).toString();
      count = (to - from + BigInt(size) - 1n) / BigInt(size);
    }
  }
  return {
    key: `${timeline}:${first}:${last}`,
    timeline,
    firstMissingWal: first,
    lastMissingWal: last,
    missingSegments: count,
  };
}

/** Backups whose own WAL range (walStart..walStop, needed to become consistent) overlaps the gap. */
export function backupsAffected(gap: WalGap, backups: readonly BackupRecord[]): string[] {
  // Fixed-width upper-case hex on one timeline: name order is WAL order.
  const tli = gap.firstMissingWal.slice(0, 8);
  return backups
    .filter(
      (b) =>
        b.walStart.slice(0, 8) === tli &&
        b.walStop.slice(0, 8) === tli &&
        b.walStart <= gap.lastMissingWal &&
        b.walStop >= gap.firstMissingWal,
    )
    .map((b) => b.label);
}

/** What a verify result changes: the new health state and the events of gaps not reported before (undefined: nothing changes). */
export function walGapTransition(
  cluster: string,
  prev: HealthStateRecord | undefined,
  verify: VerifyResult,
  backups: readonly BackupRecord[],
  now: number,
): { state: HealthStateRecord; events: OutboxEventInput[] } | undefined {
  const gaps = new Map<string, WalGap>();
  for (const p of verify.problems) {
    const g = walGapOf(p);
    if (g) gaps.set(g.key, g);
  }
  const known = new Set(((prev?.data ?? {}) as { gaps?: string[] }).gaps ?? []);
  const fresh = [...gaps.values()].filter((g) => !known.has(g.key));
  const same = fresh.length === 0 && known.size === gaps.size;
  if (same) return undefined;
  const events = fresh.map((g) =>
    outboxEvent(
      cluster,
      {
        case: 'walGapDetected',
        value: {
          timeline: g.timeline,
          firstMissingWal: g.firstMissingWal,
          lastMissingWal: g.lastMissingWal,
          missingSegments: g.missingSegments,
          affectedBackupLabels: backupsAffected(g, backups),
        },
      },
      now,
    ),
  );
  const breached = gaps.size > 0;
  const wasBreached = prev?.state === 'breached';
  return {
    state: {
      cluster,
      condition: WAL_GAP_CONDITION,
      state: breached ? 'breached' : 'ok',
      since: breached === wasBreached && prev ? prev.since : now,
      data: breached ? { gaps: [...gaps.keys()].sort() } : null,
    },
    events,
  };
}

/** Records a verify job's WAL gaps; true when events were written. */
export async function recordWalGaps(
  store: CatalogStore,
  cluster: string,
  verify: VerifyResult,
  now: number,
): Promise<boolean> {
  const [states, backups] = await Promise.all([store.listHealthStates(cluster), store.listBackups(cluster)]);
  const next = walGapTransition(
    cluster,
    states.find((s) => s.condition === WAL_GAP_CONDITION),
    verify,
    backups,
    now,
  );
  if (!next) return false;
  await store.putHealthState(next.state, next.events);
  return next.events.length > 0;
}
