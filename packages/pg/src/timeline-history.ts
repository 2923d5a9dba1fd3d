/**
 * Timeline histories. When recovery ends (promotion of a standby, the end of a PITR, a failover),
 * PostgreSQL starts a new timeline N and writes NNNNNNNN.history (timeline.c, writeTimeLineHistory):
 * the parent's history lines followed by one line for the parent itself,
 *
 *   <parent tli> \t <switch LSN> \t <reason>
 *
 * so one file lists every ancestor of N, oldest first, each with the LSN where its WAL stops being
 * part of N's history. Timeline N owns the WAL from its last switch point on. What this module
 * answers from that: which timeline owns a position in N's history (tliOfPointInHistory in
 * PostgreSQL), whether a timeline descends from another one at or after a position, and whether a
 * history is a consistent extension of its parent's.
 */
import { PgfleetError } from '@pgfleet/core';
import { Lsn } from './lsn.js';

export interface TimelineHistoryEntry {
  /** An ancestor timeline. */
  timeline: number;
  /** Where that ancestor's WAL ends in this history (the next timeline starts here). */
  switchLsn: bigint;
  /** PostgreSQL's reason text ("before 2026-11-24 ...", "no recovery target specified"). */
  reason: string;
}

export class TimelineHistory {
  /** `entries` are the ancestors oldest first (timeline 1 has none). */
  constructor(
    readonly timeline: number,
    readonly entries: readonly TimelineHistoryEntry[],
  ) {}

  /** The root timeline's history: no file exists for it. */
  static root(timeline: number): TimelineHistory {
    return new TimelineHistory(timeline, []);
  }

  /**
   * Parses the text of `<timeline>.history` as PostgreSQL's readTimeLineHistory does: ancestors
   * with increasing ids below `timeline`. Switch points need not increase: a recovery that follows
   * timeline N but stops before N began (a target on an ancestor) writes N's history followed by
   * "N <a smaller LSN>", and such a history is valid. Throws WalFileInvalid for anything else, so
   * wal-push refuses it (PostgreSQL keeps the file and retries).
   */
  static parse(timeline: number, text: string): TimelineHistory {
    const entries: TimelineHistoryEntry[] = [];
    for (const raw of text.split('\n')) {
      const line = raw.trim();
      if (line === '' || line.startsWith('#')) continue;
      const [tli, lsn, ...rest] = line.split(/\s+/);
      if (tli === undefined || lsn === undefined || !/^\d+$/.test(tli) || !Lsn.isValid(lsn)) {
        throw new PgfleetError(
          'WalFileInvalid',
          `timeline history of timeline ${timeline} has a malformed line: '${line.slice(0, 80)}'`,
        );
      }
      const entry = { timeline: Number(tli), switchLsn: Lsn.parse(lsn).value, reason: rest.join(' ') };
      const prev = entries.at(-1);
      if (entry.timeline >= timeline || (prev && entry.timeline <= prev.timeline)) {
        throw new PgfleetError(
          'WalFileInvalid',
          `timeline history of timeline ${timeline} is not a history PostgreSQL writes: ancestor ${entry.timeline} out of order`,
        );
      }
      entries.push(entry);
    }
    if (entries.length === 0 && timeline > 1)
      throw new PgfleetError('WalFileInvalid', `timeline history of timeline ${timeline} lists no ancestor`);
    return new TimelineHistory(timeline, entries);
  }

  /** The timeline this one branched off (undefined for a root). */
  get parent(): number | undefined {
    return this.entries.at(-1)?.timeline;
  }

  /** Where this timeline begins: its parent's switch point (0 for a root). */
  get startLsn(): bigint {
    return this.entries.at(-1)?.switchLsn ?? 0n;
  }

  /** Whether `timeline` is this one or one of its ancestors. */
  includes(timeline: number): boolean {
    return timeline === this.timeline || this.entries.some((e) => e.timeline === timeline);
  }

  /**
   * The timeline that owns `lsn` in this history, exactly as PostgreSQL's tliOfPointInHistory:
   * this timeline from its start on; otherwise the newest ancestor whose range [previous switch
   * point, its switch point) holds it (a range may be empty when switch points go back).
   */
  timelineAt(lsn: bigint): number {
    if (lsn >= this.startLsn) return this.timeline;
    for (let k = this.entries.length - 1; k >= 0; k--) {
      const begin = k === 0 ? 0n : this.entries[k - 1]!.switchLsn;
      if (begin <= lsn && lsn < this.entries[k]!.switchLsn) return this.entries[k]!.timeline;
    }
    return this.entries[0]?.timeline ?? this.timeline;
  }

  /**
   * Where WAL of `ancestor` stops being part of this history: its switch point, or earlier when a
   * later switch went back below it (undefined: runs on, it is this timeline; null: not an ancestor).
   */
  switchPointOf(ancestor: number): bigint | undefined | null {
    if (ancestor === this.timeline) return undefined;
    const k = this.entries.findIndex((x) => x.timeline === ancestor);
    if (k < 0) return null;
    let end = this.entries[k]!.switchLsn;
    for (const later of this.entries.slice(k + 1)) if (later.switchLsn < end) end = later.switchLsn;
    return end;
  }

  /**
   * Whether WAL of `timeline` up to `lsn` is part of this history: PostgreSQL can replay from a
   * backup of that timeline that is consistent at `lsn` and then follow this timeline.
   */
  contains(timeline: number, lsn: bigint): boolean {
    if (timeline === this.timeline) return true;
    const end = this.switchPointOf(timeline);
    if (typeof end !== 'bigint') return false;
    // Consistent exactly at the switch point is fine; before it the position must be that timeline's own.
    return lsn === end ? lsn === 0n || this.timelineAt(lsn - 1n) === timeline : this.timelineAt(lsn) === timeline;
  }

  /**
   * Whether this history extends `parent`'s: a child's history starts with its parent's lines. A
   * history that contradicts what the repository holds for its parent comes from another system's
   * lineage (or was crafted) and is refused.
   */
  extends(parent: TimelineHistory): boolean {
    if (this.entries.length !== parent.entries.length + 1 || this.parent !== parent.timeline) return false;
    return parent.entries.every(
      (e, i) => this.entries[i]!.timeline === e.timeline && this.entries[i]!.switchLsn === e.switchLsn,
    );
  }
}

/** Timeline id of an archive file name (a segment, .partial, .backup or .history). */
export function timelineOfWalName(name: string): number {
  return Number.parseInt(name.slice(0, 8), 16);
}
