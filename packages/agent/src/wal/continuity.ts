/**
 * WAL continuity, computed from names only (pure, no I/O): given the archived segment names, the
 * timeline history files and the first segment a backup needs, which segments are missing up to
 * the newest archived one, and how far the WAL from the backup runs without a hole.
 *
 * Timelines: starting on the backup's timeline, the walk follows a later timeline whose history
 * says it branched off the current one at or after the current position (the newest such one,
 * as recovery_target_timeline = 'latest' does) and that has archived segments. On the old
 * timeline it needs the segments before the one holding the switch point; from that segment on
 * it reads the new timeline (PostgreSQL copies the old timeline's part of that segment into the
 * new timeline's first segment).
 */
import { Lsn, WalSegmentName } from '@pgfleet/pg';

export interface TimelineBranch {
  /** The timeline this one branched off. */
  parent: number;
  /** LSN where it branched off (the old timeline's WAL is valid up to here). */
  switchLsn: bigint;
}

/** A run of missing segments: the WAL range [fromLsn, toLsn) on `timeline`. */
export interface WalGap {
  timeline: number;
  fromLsn: string;
  toLsn: string;
  /** The missing segment names, in order. */
  segments: string[];
}

export interface ContinuityInput {
  segmentSize: number;
  /** First segment needed (the backup's walStart); its timeline is where the walk starts. */
  start: string;
  /** Segments that must be there even if nothing newer is archived (the backup's walStop). */
  requiredThrough?: string;
  /** Names of archived, usable segments (every timeline). */
  present: ReadonlySet<string>;
  /** Archived segments that cannot be used (empty, truncated, corrupt): they end continuity, but are not gaps. */
  bad?: ReadonlySet<string>;
  /** Each timeline's branch point (from its history file). */
  branches: ReadonlyMap<number, TimelineBranch>;
  /** Follow only these timelines (the cluster's live lineage, when known): a fork is never walked into. */
  only?: ReadonlySet<number>;
}

export interface ContinuityResult {
  /** The timelines walked with their first and last segment (none when a stretch needs no segment). */
  stretches: { timeline: number; first: string; last: string }[];
  gaps: WalGap[];
  /** Unusable segments on the walked path, in order. */
  badSegments: string[];
  /**
   * End of the continuous WAL from `start`: the position of the first byte that is missing (or
   * unusable), or the end of the last segment walked. Equals the start segment's start LSN when
   * the first segment itself is missing.
   */
  continuousTo: { timeline: number; lsn: string };
  /** First segment that is missing or unusable, if any. */
  firstBreak: string | undefined;
  /** Timeline and name of the last segment walked. */
  end: { timeline: number; segment: string };
}

/** The highest segment number archived (usable or not) per timeline. */
function newestPerTimeline(names: Iterable<string>, segmentSize: number): Map<number, bigint> {
  const out = new Map<number, bigint>();
  for (const name of names) {
    const s = WalSegmentName.parse(name, segmentSize);
    const cur = out.get(s.timeline);
    if (cur === undefined || s.segmentNumber > cur) out.set(s.timeline, s.segmentNumber);
  }
  return out;
}

export function walContinuity(input: ContinuityInput): ContinuityResult {
  const size = input.segmentSize;
  const bad = input.bad ?? new Set<string>();
  const newest = newestPerTimeline([...input.present, ...bad], size);
  const startSeg = WalSegmentName.parse(input.start, size);
  const required = input.requiredThrough
    ? WalSegmentName.parse(input.requiredThrough, size).segmentNumber
    : startSeg.segmentNumber;
  const lsnOf = (n: bigint) => Lsn.fromBigInt(n * BigInt(size)).toString();

  let tli = startSeg.timeline;
  let pos = startSeg.segmentNumber;
  const stretches: ContinuityResult['stretches'] = [];
  const gaps: WalGap[] = [];
  const badSegments: string[] = [];
  let continuousTo: ContinuityResult['continuousTo'] = { timeline: tli, lsn: lsnOf(pos) };
  let firstBreak: string | undefined;
  let end = { timeline: tli, segment: startSeg.toString() };
  const visited = new Set<number>();

  for (;;) {
    visited.add(tli);
    // The newest later timeline branching off this one at or after the current position, with WAL archived.
    let child: { timeline: number; switchSeg: bigint } | undefined;
    for (const [t, b] of input.branches) {
      if (b.parent !== tli || visited.has(t) || !newest.has(t) || (input.only && !input.only.has(t))) continue;
      const switchSeg = b.switchLsn / BigInt(size);
      if (b.switchLsn < pos * BigInt(size)) continue;
      if (!child || t > child.timeline) child = { timeline: t, switchSeg };
    }
    let last: bigint;
    if (child) last = child.switchSeg - 1n;
    else {
      last = newest.get(tli) ?? pos;
      if (tli === startSeg.timeline && last < required) last = required;
      if (last < pos) last = pos;
    }
    if (last >= pos)
      stretches.push({
        timeline: tli,
        first: new WalSegmentName(tli, pos, size).toString(),
        last: new WalSegmentName(tli, last, size).toString(),
      });
    let run: WalGap | undefined;
    for (let n = pos; n <= last; n++) {
      const name = new WalSegmentName(tli, n, size).toString();
      end = { timeline: tli, segment: name };
      if (input.present.has(name)) {
        run = undefined;
        if (firstBreak === undefined) continuousTo = { timeline: tli, lsn: lsnOf(n + 1n) };
        continue;
      }
      firstBreak ??= name;
      if (bad.has(name)) {
        run = undefined;
        badSegments.push(name);
        continue;
      }
      if (run) {
        run.segments.push(name);
        run.toLsn = lsnOf(n + 1n);
      } else {
        run = { timeline: tli, fromLsn: lsnOf(n), toLsn: lsnOf(n + 1n), segments: [name] };
        gaps.push(run);
      }
    }
    if (!child) break;
    // The new timeline starts with the segment holding the switch point.
    if (firstBreak === undefined)
      continuousTo = { timeline: child.timeline, lsn: lsnOf(child.switchSeg > pos ? child.switchSeg : pos) };
    pos = child.switchSeg > pos ? child.switchSeg : pos;
    tli = child.timeline;
  }
  return { stretches, gaps, badSegments, continuousTo, firstBreak, end };
}
