/**
 * The verify job: reads the cluster's repository (never writes) and says, per backup, whether it
 * can be restored and to which range of points, and names every fault it finds:
 *
 * - Backups: every backup directory is listed, with or without a manifest. A manifest that does
 *   not parse is reported as corrupt (with its key); a directory without one is an incomplete
 *   backup (in progress or failed), reported but not a fault. Every file of a manifest (every
 *   chunk of a chunked file) must exist with its stored size and stored sha256 (fast mode: the
 *   stored bytes are hashed, nothing is decompressed) or, in full mode, also decompress to its
 *   content size and sha256. An entry whose bytes are in another backup must name a backup that
 *   exists and whose manifest holds the same entry.
 * - WAL: every archived segment is checked (fast: an empty stored object, or an uncompressed one
 *   of the wrong size; full: decompressed size = segment size, content sha256 = the one in its
 *   name, page header of this cluster at this position). Continuity per backup runs from its
 *   walStart through the newest archived segment of its timeline, following timeline history
 *   files to later timelines (wal-continuity.ts); gaps are reported as LSN ranges [from, to)
 *   with the missing segment names.
 * - Verdict: a backup is restorable when its manifest is valid, all its files check out and the
 *   WAL from walStart to walStop is there and usable; then it restores to any point from its stop
 *   LSN/time to the end of the continuous WAL after it.
 */
import { asPgfleetError, mapLimit, PgfleetError, type Logger } from '@pgfleet/core';
import {
  DEFAULT_WAL_SEGMENT_SIZE,
  Lsn,
  TimelineHistory,
  timelineHistoryName,
  timelineOfWalName,
  validateWalSegment,
  WAL_LONG_HEADER_SIZE,
  walFileKind,
  WalSegmentName,
} from '@pgfleet/pg';
import {
  type ArchivedWal,
  type BackupKind,
  type BackupManifest,
  type Codec,
  type ObjectMeasure,
  type Repository,
} from '@pgfleet/storage';
import type { ProgressSink } from '../jobs/progress.js';
import { lineageOf, timelinesWithStart } from '../wal/timelines.js';
import { walContinuity, type TimelineBranch, type WalGap } from '../wal/continuity.js';

export type VerifyProblemKind =
  | 'manifest-corrupt'
  | 'incomplete-backup'
  | 'missing-file'
  | 'size-mismatch'
  | 'checksum-mismatch'
  | 'unreadable'
  | 'bad-reference'
  | 'wal-gap'
  | 'wal-empty'
  | 'wal-truncated'
  | 'wal-corrupt'
  | 'wal-foreign'
  | 'timeline-conflict';

export interface VerifyProblem {
  kind: VerifyProblemKind;
  /** The backup it concerns ('' for WAL). */
  label: string;
  /** File path in the backup, or WAL file name. */
  path: string;
  key: string;
  message: string;
  timeline?: number;
  lsnFrom?: string;
  lsnTo?: string;
  segments?: string[];
}

export interface BackupVerdict {
  label: string;
  type: BackupKind | undefined;
  restorable: boolean;
  /** Stop LSN and time of the backup (the earliest consistent point). */
  fromLsn: string;
  fromTime: Date | undefined;
  /** End of the continuous WAL after the backup, and its timeline. */
  toLsn: string;
  toTimeline: number;
  /** Why it is not restorable; for a restorable backup, what limits its range (a later WAL gap). */
  reasons: string[];
  filesChecked: number;
  bytesChecked: number;
}

export interface VerifyOutcome {
  full: boolean;
  backups: BackupVerdict[];
  problems: VerifyProblem[];
  walSegmentsChecked: number;
  /** Newest archived segment of each timeline. */
  walNewest: string[];
  /** Every backup restorable and no fault found (incomplete backups are not faults). */
  ok: boolean;
  /** Every archived timeline with its parent, start and newest segment, and whether it is on the live lineage. */
  timelines: VerifyTimeline[];
}

export interface VerifyTimeline {
  timeline: number;
  parent: number;
  switchLsn: string;
  startedAt: Date | undefined;
  newestSegment: string;
  onLiveLineage: boolean;
  liveKnown: boolean;
}

export interface VerifyOptions {
  cluster: string;
  repo: Repository;
  full: boolean;
  /** The timeline the cluster's primary writes now (from the controller; 0/undefined: unknown). */
  currentTimeline?: number;
  /** Objects checked at once. */
  concurrency?: number;
  log: Logger;
  progress?: ProgressSink;
  signal?: AbortSignal;
}

/** Reasons listed per backup before "... and N more". */
const MAX_REASONS = 20;
/** Missing segment names listed per gap (the LSN range covers the rest). */
const MAX_GAP_NAMES = 256;

/** Discards what it is given; keeps the first `keep` bytes. */
interface ObjectExpectation {
  key: string;
  codec: Codec;
  size: number;
  sha256: string;
  storedSize: number;
  storedSha256: string;
}

interface ObjectFault {
  kind: 'missing-file' | 'size-mismatch' | 'checksum-mismatch' | 'unreadable';
  message: string;
}

const short = (sha: string) => sha.slice(0, 12);

export async function runVerify(o: VerifyOptions): Promise<VerifyOutcome> {
  const { repo, cluster, log, full } = o;
  const concurrency = Math.max(1, o.concurrency ?? 4);
  const problems: VerifyProblem[] = [];
  let filesDone = 0;
  let bytesDone = 0;
  const report = (phase: string, message?: string) =>
    o.progress?.({ phase, bytesDone, bytesTotal: 0, filesDone, filesTotal: 0, ...(message ? { message } : {}) });

  const info = await repo.readClusterInfo(cluster);
  const segmentSize = info?.walSegmentSize || DEFAULT_WAL_SEGMENT_SIZE;

  // ---- every backup directory and object ------------------------------------------------
  report('list');
  const stored = new Map<string, number>();
  const labels = new Set<string>();
  for await (const obj of repo.listBackupObjects(cluster)) {
    labels.add(obj.label);
    stored.set(obj.key, obj.size);
  }

  const manifests = new Map<string, BackupManifest>();
  const corrupt = new Map<string, string>();
  const incomplete: string[] = [];
  for (const label of [...labels].sort()) {
    const key = repo.backupManifestKey(cluster, label);
    if (!stored.has(key)) {
      incomplete.push(label);
      problems.push({
        kind: 'incomplete-backup',
        label,
        path: '',
        key: `${repo.backupPrefix(cluster, label)}/`,
        message: `backup ${label} has no backup.manifest: it is incomplete (in progress, or failed) and is never restored`,
      });
      continue;
    }
    try {
      const m = await repo.readManifest(cluster, label);
      if (m.label !== label || m.cluster !== cluster)
        throw new PgfleetError(
          'RepoManifestInvalid',
          `manifest ${key} describes backup ${m.label} of cluster ${m.cluster}`,
        );
      if (!m.files.every((f) => f && typeof f.path === 'string' && typeof f.backup === 'string'))
        throw new PgfleetError('RepoManifestInvalid', `manifest ${key} has file entries without path or backup`);
      manifests.set(label, m);
    } catch (err) {
      const message = asPgfleetError(err).message;
      corrupt.set(label, `manifest corrupt: ${message}`);
      problems.push({ kind: 'manifest-corrupt', label, path: 'backup.manifest', key, message });
    }
  }
  const ordered = [...manifests.values()].sort((a, b) => Date.parse(a.stopTime) - Date.parse(b.stopTime));

  // ---- backup files ---------------------------------------------------------------------
  const checks = new Map<string, Promise<ObjectFault | undefined>>();
  const checkObject = (e: ObjectExpectation): Promise<ObjectFault | undefined> => {
    const id = `${e.key}|${e.storedSize}|${e.storedSha256}|${e.size}|${e.sha256}`;
    let p = checks.get(id);
    if (!p) {
      p = (async (): Promise<ObjectFault | undefined> => {
        const have = stored.get(e.key);
        if (have === undefined) return { kind: 'missing-file', message: `${e.key} is missing from the repository` };
        if (have !== e.storedSize)
          return {
            kind: 'size-mismatch',
            message: `${e.key} has ${have} stored bytes, the manifest says ${e.storedSize}`,
          };
        let r: ObjectMeasure;
        try {
          r = await repo.objects.measure(e.key, e.codec, full);
        } catch (err) {
          if (PgfleetError.is(err, 'RepoFileMissing'))
            return { kind: 'missing-file', message: `${e.key} is missing from the repository` };
          return { kind: 'unreadable', message: `${e.key} cannot be read: ${(err as Error).message}` };
        } finally {
          filesDone++;
          bytesDone += e.storedSize;
        }
        if (r.storedSha256 !== e.storedSha256 || r.storedBytes !== e.storedSize) {
          return {
            kind: 'checksum-mismatch',
            message: `${e.key}: stored bytes have sha256 ${short(r.storedSha256)}.. (${r.storedBytes} bytes), the manifest says ${short(e.storedSha256)}.. (${e.storedSize} bytes)`,
          };
        }
        if (full) {
          if (r.decodeError !== undefined)
            return { kind: 'unreadable', message: `${e.key} cannot be decompressed (${e.codec}): ${r.decodeError}` };
          if (r.contentSha256 !== e.sha256 || r.contentBytes !== e.size) {
            return {
              kind: 'checksum-mismatch',
              message: `${e.key}: content has sha256 ${short(r.contentSha256 ?? '')}.. (${r.contentBytes} bytes), the manifest says ${short(e.sha256)}.. (${e.size} bytes)`,
            };
          }
        }
        return undefined;
      })();
      checks.set(id, p);
    }
    return p;
  };

  const verdicts = new Map<string, BackupVerdict>();
  for (const m of ordered) {
    o.signal?.throwIfAborted();
    report('backups', m.label);
    const reasons: string[] = [];
    const v: BackupVerdict = {
      label: m.label,
      type: m.type,
      restorable: false,
      fromLsn: m.stopLsn,
      fromTime: new Date(m.stopTime),
      toLsn: '',
      toTimeline: 0,
      reasons,
      filesChecked: 0,
      bytesChecked: 0,
    };
    verdicts.set(m.label, v);
    const faults: string[] = [];
    const fault = (p: VerifyProblem, reason: string) => {
      problems.push(p);
      faults.push(reason);
    };
    // References first: an entry reading another backup's bytes must find them described the same way there.
    for (const f of m.files) {
      if (f.backup === m.label) continue;
      const ref = manifests.get(f.backup);
      if (!ref) {
        const why = corrupt.has(f.backup)
          ? 'whose manifest is corrupt'
          : incomplete.includes(f.backup)
            ? 'which is incomplete'
            : 'which is not in the repository';
        fault(
          {
            kind: 'bad-reference',
            label: m.label,
            path: f.path,
            key: '',
            message: `${f.path} reads its bytes from backup ${f.backup}, ${why}`,
          },
          `bad reference: ${f.path} reads from backup ${f.backup}, ${why}`,
        );
        continue;
      }
      const there = ref.files.find((r) => r.path === f.path && r.backup === f.backup);
      if (
        !there ||
        there.storedSha256 !== f.storedSha256 ||
        there.sha256 !== f.sha256 ||
        there.storedSize !== f.storedSize
      ) {
        fault(
          {
            kind: 'bad-reference',
            label: m.label,
            path: f.path,
            key: '',
            message: `${f.path} reads its bytes from backup ${f.backup}, whose manifest ${there ? 'describes different bytes' : 'has no such file'}`,
          },
          `bad reference: ${f.path} in backup ${f.backup} ${there ? 'differs' : 'does not exist'}`,
        );
      }
    }
    const expectations: { path: string; e: ObjectExpectation }[] = [];
    for (const f of m.files) {
      if (f.chunks && f.chunks.length > 0) {
        for (const c of f.chunks)
          expectations.push({
            path: `${f.path} (chunk at ${c.offset})`,
            e: {
              key: c.key,
              codec: f.codec,
              size: c.size,
              sha256: c.sha256,
              storedSize: c.storedSize,
              storedSha256: c.storedSha256,
            },
          });
      } else {
        expectations.push({
          path: f.path,
          e: {
            key: repo.backupFileKey(cluster, f.backup, f.path, f.codec),
            codec: f.codec,
            size: f.size,
            sha256: f.sha256,
            storedSize: f.storedSize,
            storedSha256: f.storedSha256,
          },
        });
      }
    }
    const results = await mapLimit(expectations, concurrency, (x) => checkObject(x.e), o.signal);
    results.forEach((r, i) => {
      const { path, e } = expectations[i]!;
      v.filesChecked++;
      v.bytesChecked += full ? e.size : e.storedSize;
      if (!r) return;
      const what =
        r.kind === 'missing-file'
          ? 'missing file'
          : r.kind === 'size-mismatch'
            ? 'size mismatch in'
            : r.kind === 'checksum-mismatch'
              ? 'checksum mismatch in'
              : 'unreadable file';
      fault({ kind: r.kind, label: m.label, path, key: e.key, message: r.message }, `${what} ${path} (${e.key})`);
    });
    reasons.push(...faults);
  }

  // ---- WAL objects ----------------------------------------------------------------------
  report('wal');
  const segments = new Map<string, ArchivedWal[]>();
  const others: ArchivedWal[] = [];
  for await (const w of repo.listWal(cluster)) {
    const kind = walFileKind(w.name);
    if (kind === 'segment') {
      const list = segments.get(w.name);
      if (list) list.push(w);
      else segments.set(w.name, [w]);
    } else if (kind !== undefined) others.push(w);
  }

  // Timeline histories first: a new timeline's first segment carries its parent's id, which only
  // its history explains; each history must also extend its parent's (timelines.ts).
  const histories = new Map<number, TimelineHistory>();
  const badHistories = new Map<string, VerifyProblem>();
  for (const w of others) {
    if (walFileKind(w.name) !== 'history') continue;
    const base = { label: '', path: w.name, key: w.key };
    try {
      const text = await repo.readWalFile(cluster, w.name);
      if (text !== undefined)
        histories.set(
          timelineOfWalName(w.name),
          TimelineHistory.parse(timelineOfWalName(w.name), text.toString('utf8')),
        );
    } catch (err) {
      badHistories.set(w.name, {
        kind: 'wal-corrupt',
        ...base,
        message: `timeline history ${w.name} cannot be used: ${(err as Error).message} (${w.key})`,
      });
    }
  }
  for (const [tli, h] of histories) {
    const parent = h.parent === undefined ? undefined : histories.get(h.parent);
    if (parent && !h.extends(parent)) {
      const name = timelineHistoryName(tli);
      badHistories.set(name, {
        kind: 'timeline-conflict',
        label: '',
        path: name,
        key: '',
        message: `timeline ${tli}'s history does not extend timeline ${h.parent}'s: it comes from another lineage; restores choose their timeline from the backups' own lineage and ignore it`,
      });
      histories.delete(tli);
    }
  }
  const branches = new Map<number, TimelineBranch>(
    [...histories].map(([tli, h]) => [tli, { parent: h.parent!, switchLsn: h.startLsn }]),
  );
  // Continuity follows the cluster's live lineage when the controller knows it, like restores do.
  const liveLineage = o.currentTimeline ? lineageOf(o.currentTimeline, histories.get(o.currentTimeline)) : undefined;

  const walProblem = async (w: ArchivedWal): Promise<VerifyProblem | undefined> => {
    const isSegment = walFileKind(w.name) === 'segment';
    const base = { label: '', path: w.name, key: w.key };
    if (w.storedSize === 0)
      return { kind: 'wal-empty', ...base, message: `WAL file ${w.name} is stored as 0 bytes (${w.key})` };
    if (isSegment && w.codec === 'none' && w.storedSize !== segmentSize) {
      return {
        kind: 'wal-truncated',
        ...base,
        message: `WAL segment ${w.name} is stored as ${w.storedSize} bytes, a segment has ${segmentSize} (${w.key})`,
      };
    }
    if (!full) return undefined;
    let r: ObjectMeasure;
    try {
      r = await repo.objects.measure(w.key, w.codec, true, WAL_LONG_HEADER_SIZE);
    } catch (err) {
      return {
        kind: 'wal-corrupt',
        ...base,
        message: `WAL file ${w.name} cannot be read: ${(err as Error).message} (${w.key})`,
      };
    } finally {
      filesDone++;
      bytesDone += w.storedSize;
    }
    if (r.decodeError !== undefined)
      return {
        kind: 'wal-corrupt',
        ...base,
        message: `WAL file ${w.name} cannot be decompressed (${w.codec}): ${r.decodeError} (${w.key})`,
      };
    if (isSegment && r.contentBytes === 0)
      return { kind: 'wal-empty', ...base, message: `WAL segment ${w.name} decompresses to 0 bytes (${w.key})` };
    if (isSegment && r.contentBytes !== segmentSize) {
      return {
        kind: 'wal-truncated',
        ...base,
        message: `WAL segment ${w.name} decompresses to ${r.contentBytes} bytes, a segment has ${segmentSize} (${w.key})`,
      };
    }
    if (r.contentSha256 !== w.sha256) {
      return {
        kind: 'wal-corrupt',
        ...base,
        message: `WAL file ${w.name} has content sha256 ${short(r.contentSha256 ?? '')}.., its name says ${short(w.sha256)}.. (${w.key})`,
      };
    }
    if (isSegment) {
      try {
        validateWalSegment(
          w.name,
          r.head ?? Buffer.alloc(0),
          r.contentBytes ?? 0,
          info?.systemIdentifier,
          histories.get(timelineOfWalName(w.name)),
        );
      } catch (err) {
        const e = asPgfleetError(err);
        return {
          kind: e.errorName === 'WalFileEmpty' ? 'wal-truncated' : 'wal-foreign',
          ...base,
          message: `${e.message} (${w.key})`,
        };
      }
    }
    return undefined;
  };

  const allWal = [...[...segments.values()].flat(), ...others.filter((w) => !badHistories.has(w.name))];
  problems.push(...badHistories.values());
  const walResults = await mapLimit(allWal, concurrency, walProblem, o.signal);
  const badCopies = new Map<string, VerifyProblem>();
  const goodSegments = new Set<string>();
  walResults.forEach((p, i) => {
    const w = allWal[i]!;
    if (p) {
      problems.push(p);
      badCopies.set(w.name, p);
    } else if (walFileKind(w.name) === 'segment') goodSegments.add(w.name);
  });
  // A segment with a usable copy is usable; one with only bad copies breaks continuity.
  const badSegments = new Set([...badCopies.keys()].filter((n) => segments.has(n) && !goodSegments.has(n)));

  const newest = new Map<number, string>();
  for (const name of segments.keys()) {
    const t = Number.parseInt(name.slice(0, 8), 16);
    const cur = newest.get(t);
    if (cur === undefined || name > cur) newest.set(t, name);
  }

  // ---- continuity and verdicts ------------------------------------------------------------
  const gapSeen = new Set<string>();
  const describeGap = (g: WalGap) => {
    const names =
      g.segments.length === 1
        ? `segment ${g.segments[0]}`
        : `segments ${g.segments[0]} .. ${g.segments[g.segments.length - 1]} (${g.segments.length})`;
    return `WAL gap [${g.fromLsn}, ${g.toLsn}) on timeline ${g.timeline}: ${names} missing`;
  };
  for (const m of ordered) {
    const v = verdicts.get(m.label)!;
    let walStartOk = true;
    try {
      WalSegmentName.parse(m.walStart, segmentSize);
      WalSegmentName.parse(m.walStop, segmentSize);
      Lsn.parse(m.stopLsn);
    } catch {
      walStartOk = false;
    }
    if (!walStartOk) {
      problems.push({
        kind: 'manifest-corrupt',
        label: m.label,
        path: 'backup.manifest',
        key: repo.backupManifestKey(cluster, m.label),
        message: `manifest of ${m.label} has invalid WAL positions (${m.walStart}, ${m.walStop}, ${m.stopLsn})`,
      });
      v.reasons.push('manifest corrupt: invalid WAL positions');
      continue;
    }
    const c = walContinuity({
      segmentSize,
      start: m.walStart,
      requiredThrough: m.walStop,
      present: goodSegments,
      bad: badSegments,
      branches,
      ...(liveLineage ? { only: liveLineage } : {}),
    });
    for (const g of c.gaps) {
      const id = `${g.timeline}/${g.toLsn}`;
      if (gapSeen.has(id)) continue;
      gapSeen.add(id);
      problems.push({
        kind: 'wal-gap',
        label: '',
        path: g.segments[0]!,
        key: '',
        timeline: g.timeline,
        lsnFrom: g.fromLsn,
        lsnTo: g.toLsn,
        segments: g.segments.slice(0, MAX_GAP_NAMES),
        message: describeGap(g),
      });
    }
    v.toLsn = c.continuousTo.lsn;
    v.toTimeline = c.continuousTo.timeline;
    const stop = WalSegmentName.parse(m.walStop, segmentSize);
    const brk = c.firstBreak === undefined ? undefined : WalSegmentName.parse(c.firstBreak, segmentSize);
    const consistencyBroken =
      brk !== undefined && brk.timeline === stop.timeline && brk.segmentNumber <= stop.segmentNumber;
    const gapAt = (name: string) => c.gaps.find((g) => g.segments.includes(name));
    const describeBreak = (name: string) => {
      const g = gapAt(name);
      if (g) return describeGap(g);
      const p = badCopies.get(name);
      return `WAL segment ${name} is unusable (${p?.kind ?? 'bad'}): ${p?.message ?? ''}`;
    };
    if (consistencyBroken) {
      v.reasons.push(
        `${describeBreak(c.firstBreak!)}, inside the WAL the backup needs to become consistent (${m.walStart} .. ${m.walStop})`,
      );
    } else if (c.firstBreak !== undefined) {
      v.reasons.push(`recovery stops at ${c.continuousTo.lsn}: ${describeBreak(c.firstBreak)}`);
    }
    v.restorable = !consistencyBroken && v.reasons.every((r) => r.startsWith('recovery stops at'));
    if (!v.restorable) {
      v.toLsn = '';
      v.toTimeline = 0;
    }
    if (v.reasons.length > MAX_REASONS)
      v.reasons.splice(MAX_REASONS, v.reasons.length - MAX_REASONS, `... and ${v.reasons.length - MAX_REASONS} more`);
  }

  const backups: BackupVerdict[] = [
    ...ordered.map((m) => verdicts.get(m.label)!),
    ...[...corrupt.entries()].map(([label, reason]) => ({
      label,
      type: undefined,
      restorable: false,
      fromLsn: '',
      fromTime: undefined,
      toLsn: '',
      toTimeline: 0,
      reasons: [reason],
      filesChecked: 0,
      bytesChecked: 0,
    })),
  ];
  const ok = backups.every((b) => b.restorable) && problems.every((p) => p.kind === 'incomplete-backup');
  const timelines = await summarizeTimelines(repo, cluster, histories, newest, segmentSize, liveLineage);
  const outcome: VerifyOutcome = {
    full,
    backups,
    problems,
    walSegmentsChecked: [...segments.values()].reduce((n, l) => n + l.length, 0),
    walNewest: [...newest.entries()].sort((a, b) => a[0] - b[0]).map(([, n]) => n),
    ok,
    timelines,
  };
  log.info(
    {
      full,
      backups: backups.length,
      restorable: backups.filter((b) => b.restorable).length,
      problems: problems.length,
      ok,
    },
    'verify finished',
  );
  report('done');
  return outcome;
}

/**
 * The archived timelines as a DBA reads them after failovers and PITRs: where each branched off,
 * when it began, how far its WAL runs, and whether it is on the lineage of the cluster's current
 * timeline. A timeline off that lineage is a fork restores never follow (a restored copy that
 * archived here, or a branch a later PITR abandoned): reported, not a fault.
 */
async function summarizeTimelines(
  repo: Repository,
  cluster: string,
  histories: ReadonlyMap<number, TimelineHistory>,
  newest: ReadonlyMap<number, string>,
  segmentSize: number,
  live: ReadonlySet<number> | undefined,
): Promise<VerifyTimeline[]> {
  const started = await timelinesWithStart(repo, cluster, histories, segmentSize);
  const all = [...new Set([...histories.keys(), ...newest.keys()])].sort((a, b) => a - b);
  return all.map((tli) => {
    const h = histories.get(tli);
    return {
      timeline: tli,
      parent: h?.parent ?? 0,
      switchLsn: h ? Lsn.fromBigInt(h.startLsn).toString() : '',
      startedAt: started.get(tli)?.startedAt,
      newestSegment: newest.get(tli) ?? '',
      onLiveLineage: live === undefined || live.has(tli),
      liveKnown: live !== undefined,
    };
  });
}
