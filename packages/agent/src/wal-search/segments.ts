/**
 * Which archived segments `pgfleet wal search` reads, and reading them a few ahead.
 *
 * The search follows the timeline the cluster is on now (the controller says which; else the
 * newest archived one) through its archived history: each segment position is taken from the
 * timeline that owns its last byte in that history, as recovery would read it, so WAL abandoned by
 * an old timeline after a switch is never reported. Only authenticated copies count (storage
 * wal-auth.ts). A position with no copy is a gap: the segments before it are read, and the caller
 * decides whether the gap matters (not when it lies after --until).
 *
 * Segments are fetched `ahead` at a time in parallel (decompression runs on libuv's threads) and
 * handed out in order, one 16 MiB buffer each: memory is bounded by `ahead` segments whatever the
 * archive holds.
 */
import { TimelineHistory, WalSegmentName, walFileKind } from '@pgfleet/pg';
import type { ArchivedWal, Repository } from '@pgfleet/storage';
import { loadTimelineHistories } from '../wal/timelines.js';

export interface PlannedSegment {
  name: string;
  timeline: number;
  wal: ArchivedWal;
}

export interface SegmentPlan {
  /** The timeline followed. */
  timeline: number;
  /** Consecutive segments from the start to the last archived one, or to the first gap. */
  segments: PlannedSegment[];
  /** The first segment position with no authenticated copy before the newest archived one. */
  gap?: string;
}

export async function planSegments(o: {
  repo: Repository;
  cluster: string;
  fromSegment: string;
  walSegmentSize: number;
  currentTimeline: number;
}): Promise<SegmentPlan> {
  const size = o.walSegmentSize;
  const start = WalSegmentName.parse(o.fromSegment, size).segmentNumber;
  const byPosition = new Map<string, ArchivedWal>();
  let newestTimeline = 0;
  for await (const w of o.repo.listWal(o.cluster)) {
    if (!w.authentic || walFileKind(w.name) !== 'segment') continue;
    const s = WalSegmentName.parse(w.name, size);
    if (s.segmentNumber < start) continue;
    byPosition.set(`${s.timeline}:${s.segmentNumber}`, w);
    newestTimeline = Math.max(newestTimeline, s.timeline);
  }
  const timeline = o.currentTimeline || newestTimeline || WalSegmentName.parse(o.fromSegment, size).timeline;
  const histories = await loadTimelineHistories(o.repo, o.cluster);
  const history = histories.get(timeline) ?? TimelineHistory.root(timeline);
  const lineage = new Set([timeline, ...history.entries.map((e) => e.timeline)]);
  let last = -1n;
  for (const key of byPosition.keys()) {
    const [tli, n] = key.split(':') as [string, string];
    if (lineage.has(Number(tli)) && BigInt(n) > last) last = BigInt(n);
  }
  const plan: SegmentPlan = { timeline, segments: [] };
  for (let n = start; n <= last; n++) {
    const owner = history.timelineAt((n + 1n) * BigInt(size) - 1n);
    const wal = byPosition.get(`${owner}:${n}`);
    const name = new WalSegmentName(owner, n, size).toString();
    if (!wal) {
      plan.gap = name;
      break;
    }
    plan.segments.push({ name, timeline: owner, wal });
  }
  return plan;
}

/**
 * The segments' contents in order, `ahead` fetches in flight. Stops fetching when the consumer
 * stops iterating (a return() ends the generator; reads already started finish and are dropped).
 */
export async function* fetchAhead(
  read: (w: ArchivedWal) => Promise<Buffer>,
  segments: readonly PlannedSegment[],
  ahead: number,
  signal?: AbortSignal,
): AsyncGenerator<{ segment: PlannedSegment; data: Buffer }> {
  const inFlight: Promise<Buffer>[] = [];
  let next = 0;
  const fill = () => {
    while (next < segments.length && inFlight.length < ahead) {
      const p = read(segments[next++]!.wal);
      // Handled when awaited; a rejection before that must not be reported as unhandled.
      p.catch(() => {});
      inFlight.push(p);
    }
  };
  for (let i = 0; i < segments.length; i++) {
    signal?.throwIfAborted();
    fill();
    const data = await inFlight.shift()!;
    fill();
    yield { segment: segments[i]!, data };
  }
}

/** The LSN a segment starts at (as a number: WAL positions below 2^53 bytes are exact). */
export function segmentStartLsn(name: string, size: number): number {
  return Number(WalSegmentName.parse(name, size).startLsn.value);
}
