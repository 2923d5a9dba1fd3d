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
 * - WAL: every archived segment is checked. Fast: its stored object is walked frame by frame to
 *   its end without decompressing (it must end exactly at the end of its last frame, and its
 *   frames must declare one segment of content) and only its first frame is decoded, for the
 *   page header of this cluster at this position; full: decompressed size = segment size,
 *   content sha256 = the one in its name, page header. Other WAL files (histories, .backup,
 *   .partial) are decoded whole in both modes. Continuity per backup runs from its
 *   walStart through the newest archived segment of its timeline, following timeline history
 *   files to later timelines (wal/continuity.ts); gaps are reported as LSN ranges [from, to)
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
  isKeyError,
  type ListedWal,
  type BackupKind,
  type BackupManifest,
  type Codec,
  type ObjectMeasure,
  type Repository,
} from '@pgfleet/storage';
import type { ProgressSink } from '../progress.js';
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
  | 'wal-unauthenticated'
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

/** What every step of one verify run shares: the options, the problems found so far and the progress counters. */
interface VerifyRun {
  readonly o: VerifyOptions;
  readonly concurrency: number;
  readonly segmentSize: number;
  /** The system identifier the repository records for the cluster, when it does. */
  readonly systemIdentifier: string | undefined;
  readonly problems: VerifyProblem[];
  filesDone: number;
  bytesDone: number;
  report(phase: string, message?: string): void;
}

/** Backups first (manifests, references, files), then the archived WAL, then each backup's restorable range (module header). */
export async function runVerify(o: VerifyOptions): Promise<VerifyOutcome> {
  const info = await o.repo.readClusterInfo(o.cluster);
  const run: VerifyRun = {
    o,
    concurrency: Math.max(1, o.concurrency ?? 4),
    segmentSize: info?.walSegmentSize || DEFAULT_WAL_SEGMENT_SIZE,
    systemIdentifier: info?.systemIdentifier,
    problems: [],
    filesDone: 0,
    bytesDone: 0,
    report(phase, message) {
      o.progress?.({
        phase,
        bytesDone: this.bytesDone,
        bytesTotal: 0,
        filesDone: this.filesDone,
        filesTotal: 0,
        ...(message ? { message } : {}),
      });
    },
  };

  run.report('list');
  const listing = await listBackups(run);
  const verdicts = await checkBackups(run, listing);
  run.report('wal');
  const wal = await checkWal(run);
  for (const m of listing.ordered) judgeRestorable(run, m, verdicts.get(m.label)!, wal);
  return finish(run, listing, verdicts, wal);
}

/** Every backup directory of the cluster: stored objects with their sizes, and each backup's manifest or why it has none. */
interface BackupListing {
  /** Every object under the cluster's backup prefix, with its stored size. */
  stored: Map<string, number>;
  manifests: Map<string, BackupManifest>;
  /** Backups whose manifest does not parse, with the reason. */
  corrupt: Map<string, string>;
  /** Backups without a manifest (in progress or failed). */
  incomplete: string[];
  /** The valid manifests, oldest stop time first. */
  ordered: BackupManifest[];
}

/** Lists every backup directory and object, and reads each manifest (corrupt and incomplete backups become problems). */
async function listBackups(run: VerifyRun): Promise<BackupListing> {
  const { repo, cluster } = run.o;
  const stored = new Map<string, number>();
  const labels = new Set<string>();
  for await (const obj of repo.listBackupObjects(cluster)) {
    labels.add(obj.label);
    stored.set(obj.key, obj.size);
  }

  const manifests = new Map<string, BackupManifest>();
  const corrupt = new Map<string, string>();
  const incomplete: string[] = [];
  const sorted = [...labels].sort();
  // A few manifests read at once: one after another, 2,000 of them were seconds of waiting on reads.
  const read = await mapLimit(
    sorted,
    run.concurrency,
    async (label): Promise<BackupManifest | Error | undefined> => {
      if (!stored.has(repo.backupManifestKey(cluster, label))) return undefined;
      try {
        return await repo.readManifest(cluster, label);
      } catch (err) {
        // A missing or wrong key fails the verify as such, not as every manifest corrupt.
        if (isKeyError(err)) throw err;
        return err as Error;
      }
    },
    run.o.signal,
  );
  sorted.forEach((label, i) => {
    const key = repo.backupManifestKey(cluster, label);
    const got = read[i];
    if (got === undefined) {
      incomplete.push(label);
      run.problems.push({
        kind: 'incomplete-backup',
        label,
        path: '',
        key: `${repo.backupPrefix(cluster, label)}/`,
        message: `backup ${label} has no backup.manifest: it is incomplete (in progress, or failed) and is never restored`,
      });
      return;
    }
    try {
      if (got instanceof Error) throw got;
      const m = got;
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
      run.problems.push({ kind: 'manifest-corrupt', label, path: 'backup.manifest', key, message });
    }
  });
  const ordered = [...manifests.values()].sort((a, b) => Date.parse(a.stopTime) - Date.parse(b.stopTime));
  return { stored, manifests, corrupt, incomplete, ordered };
}

/**
 * Checks one stored object against what a manifest says of it. Backups share objects (an
 * incremental reads unchanged files from its parent): each distinct expectation is read once.
 */
function objectChecker(
  run: VerifyRun,
  stored: ReadonlyMap<string, number>,
): (e: ObjectExpectation) => Promise<ObjectFault | undefined> {
  const { repo, full } = run.o;
  const checks = new Map<string, Promise<ObjectFault | undefined>>();
  return (e) => {
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
          run.filesDone++;
          run.bytesDone += e.storedSize;
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
}

/** Records a problem of a backup and the reason it gives against its restorability. */
type FaultRecorder = (p: VerifyProblem, reason: string) => void;

/** An entry reading another backup's bytes must find them described the same way there. */
function checkReferences(
  m: BackupManifest,
  listing: BackupListing,
  ownEntries: (label: string) => ReadonlyMap<string, string>,
  fault: FaultRecorder,
): void {
  for (const f of m.files) {
    // A block-incremental file's map also reads objects of these backups: they must be there.
    for (const b of f.blocks?.changed ? (f.blocks.from ?? []) : []) {
      if (listing.manifests.has(b)) continue;
      fault(
        {
          kind: 'bad-reference',
          label: m.label,
          path: f.path,
          key: '',
          message: `${f.path} reads blocks from backup ${b}, which is not a complete backup in the repository`,
        },
        `bad reference: ${f.path} reads blocks from backup ${b}, which is missing`,
      );
    }
    if (f.backup === m.label) continue;
    const ref = listing.manifests.get(f.backup);
    if (!ref) {
      const why = listing.corrupt.has(f.backup)
        ? 'whose manifest is corrupt'
        : listing.incomplete.includes(f.backup)
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
    const there = ownEntries(f.backup).get(f.path);
    if (there === undefined || there !== entryFingerprint(f)) {
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
}

/** What a reference must find the same in the backup holding the bytes. */
function entryFingerprint(f: BackupManifest['files'][number]): string {
  return `${f.storedSha256}|${f.sha256}|${f.storedSize}`;
}

/**
 * The entries whose bytes a backup holds itself, by path, as fingerprints: built once per
 * referenced backup (a search of its file list per reference was quadratic in the files of an
 * incremental), only for backups referenced.
 */
function ownEntryIndex(listing: BackupListing): (label: string) => ReadonlyMap<string, string> {
  const built = new Map<string, Map<string, string>>();
  return (label) => {
    let index = built.get(label);
    if (!index) {
      index = new Map();
      for (const f of listing.manifests.get(label)?.files ?? [])
        if (f.backup === label && !index.has(f.path)) index.set(f.path, entryFingerprint(f));
      built.set(label, index);
    }
    return index;
  };
}

/** The stored objects a manifest's files need (each chunk of a chunked file is one), with what each must hold. */
function objectExpectations(
  repo: Repository,
  cluster: string,
  m: BackupManifest,
): { path: string; e: ObjectExpectation; notForRestore?: true }[] {
  const files = m.files.flatMap((f) => repo.entryObjects(cluster, f).map(({ what, ...e }) => ({ path: what, e })));
  const s = m.catalogSnapshot;
  if (!s) return files;
  // The snapshot `pgfleet wal search` starts from: checked like a file, but a restore never reads
  // it, so a damaged one is a problem named, not a reason the backup cannot be restored.
  const key = repo.catalogSnapshotKey(cluster, m.label, s.codec);
  const { size, sha256, storedSize, storedSha256, codec } = s;
  return [
    ...files,
    { path: 'catalog snapshot', e: { key, codec, size, sha256, storedSize, storedSha256 }, notForRestore: true },
  ];
}

/**
 * --full: the structure of the block maps a backup wrote for its changed blocks (parts, layers of
 * XOR deltas, positions; block-map.ts BlockMap.decode), and that every backup a map reads is in
 * the entry's `blocks.from` (what keeps them from being expired). A delta's own bytes can only be
 * checked by rebuilding the file, which a restore does against the file's sha256.
 */
async function checkBlockMaps(run: VerifyRun, m: BackupManifest, fault: FaultRecorder): Promise<void> {
  const { repo, cluster } = run.o;
  const entries = m.files.filter((f) => f.backup === m.label && f.blocks?.changed);
  await mapLimit(
    entries,
    run.concurrency,
    async (f) => {
      const key = repo.blockMapKey(cluster, f.backup, f.path, f.codec);
      let message: string | undefined;
      try {
        const map = await repo.readBlockMap(cluster, f);
        const from = new Set(f.blocks!.from ?? []);
        const missing = map.backupsOtherThan(m.label).filter((b) => !from.has(b));
        if (missing.length > 0)
          message = `the block map of ${f.path} reads backups its entry does not name: ${missing.join(', ')}`;
      } catch (err) {
        message = asPgfleetError(err).message;
      }
      if (message !== undefined)
        fault(
          { kind: 'unreadable', label: m.label, path: f.path, key, message },
          `unreadable block map of ${f.path} (${key})`,
        );
    },
    run.o.signal,
  );
}

/** Checks every valid backup's references and files, oldest first; the verdicts' WAL range is judged later. */
async function checkBackups(run: VerifyRun, listing: BackupListing): Promise<Map<string, BackupVerdict>> {
  const { o } = run;
  const checkObject = objectChecker(run, listing.stored);
  const ownEntries = ownEntryIndex(listing);
  const verdicts = new Map<string, BackupVerdict>();
  for (const m of listing.ordered) {
    o.signal?.throwIfAborted();
    run.report('backups', m.label);
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
    const fault: FaultRecorder = (p, reason) => {
      run.problems.push(p);
      faults.push(reason);
    };
    checkReferences(m, listing, ownEntries, fault);
    const expectations = objectExpectations(o.repo, o.cluster, m);
    const results = await mapLimit(expectations, run.concurrency, (x) => checkObject(x.e), o.signal);
    results.forEach((r, i) => {
      const { path, e, notForRestore } = expectations[i]!;
      v.filesChecked++;
      v.bytesChecked += o.full ? e.size : e.storedSize;
      if (!r) return;
      if (notForRestore) {
        run.problems.push({ kind: r.kind, label: m.label, path, key: e.key, message: r.message });
        return;
      }
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
    if (o.full && faults.length === 0) await checkBlockMaps(run, m, fault);
    reasons.push(...faults);
  }
  return verdicts;
}

/** The archived WAL as continuity and the verdicts need it. */
interface WalState {
  /** Every stored copy of each segment name. */
  segments: Map<string, ListedWal[]>;
  /** Usable timeline histories (corrupt ones and ones from another lineage left out). */
  histories: Map<number, TimelineHistory>;
  branches: Map<number, TimelineBranch>;
  /** The cluster's live lineage, when the controller knows its current timeline. */
  liveLineage: ReadonlySet<number> | undefined;
  /** Segments with at least one usable copy. */
  goodSegments: Set<string>;
  /** Segments whose every copy is bad: they break continuity. */
  badSegments: Set<string>;
  /** The problem found in a bad copy, by name. */
  badCopies: Map<string, VerifyProblem>;
  /** Newest archived segment of each timeline. */
  newest: Map<number, string>;
  /** Gaps already reported (timeline/end LSN): several backups can meet the same one. */
  gapSeen: Set<string>;
}

/** Lists the archive: segment copies by name, and the other WAL files (histories, .backup, .partial). */
async function listListedWal(
  repo: Repository,
  cluster: string,
): Promise<{ segments: Map<string, ListedWal[]>; others: ListedWal[] }> {
  const segments = new Map<string, ListedWal[]>();
  const others: ListedWal[] = [];
  // Without sizes: a stat per object was most of the planning on a million segments; each file is read anyway.
  for await (const batch of repo.listWalUnsized(cluster))
    for (const w of batch) {
      const kind = walFileKind(w.name);
      if (kind === 'segment') {
        const list = segments.get(w.name);
        if (list) list.push(w);
        else segments.set(w.name, [w]);
      } else if (kind !== undefined) others.push(w);
    }
  return { segments, others };
}

/**
 * Timeline histories first: a new timeline's first segment carries its parent's id, which only
 * its history explains; each history must also extend its parent's (timelines.ts).
 */
async function readHistories(
  repo: Repository,
  cluster: string,
  others: readonly ListedWal[],
): Promise<{ histories: Map<number, TimelineHistory>; badHistories: Map<string, VerifyProblem> }> {
  const histories = new Map<number, TimelineHistory>();
  const badHistories = new Map<string, VerifyProblem>();
  for (const w of others) {
    // An unauthenticated copy is reported by walFileProblem; readWalFile takes the authenticated one.
    if (walFileKind(w.name) !== 'history' || !w.authentic) continue;
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
  return { histories, badHistories };
}

/**
 * What is wrong with one archived WAL file, if anything. Fast mode walks a segment's stored
 * structure (walkedSegmentProblem); full mode, and every other WAL file, decompress it and check
 * its size, content checksum and (segments) page header.
 */
async function walFileProblem(
  run: VerifyRun,
  histories: ReadonlyMap<number, TimelineHistory>,
  w: ListedWal,
): Promise<VerifyProblem | undefined> {
  const { segmentSize } = run;
  const isSegment = walFileKind(w.name) === 'segment';
  const base = { label: '', path: w.name, key: w.key };
  // Planted, renamed, copied from another cluster, or archived before names carried a MAC: never used.
  if (!w.authentic)
    return {
      kind: 'wal-unauthenticated',
      ...base,
      message: `WAL file ${w.name} is not authenticated (${w.mac === undefined ? 'no MAC in its name' : 'its MAC does not match'}): restores never use it (${w.key})`,
    };
  const empty = (): VerifyProblem => ({
    kind: 'wal-empty',
    ...base,
    message: `WAL file ${w.name} is stored as 0 bytes (${w.key})`,
  });
  if (w.storedSize === 0) return empty();
  if (isSegment && !run.o.full) {
    const p = await walkedSegmentProblem(run, histories, w);
    if (p !== 'decode') return p;
  }
  const read = await readWalObject(run, w, async () => {
    const m = await run.o.repo.objects.measure(w.key, w.codec, true, WAL_LONG_HEADER_SIZE);
    // Listed without its size: the read tells it.
    w.storedSize ??= m.storedBytes;
    return m;
  });
  if ('problem' in read) return read.problem;
  const r = read.value;
  if (w.storedSize === 0) return empty();
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
  return isSegment ? pageHeaderProblem(run, histories, w, r.head, r.contentBytes ?? 0) : undefined;
}

/**
 * Fast mode's check of one archived segment: its stored object walked to its end without
 * decompressing (ObjectIo.walk, storage frame-walk.ts), its first frame alone decoded. Usable
 * when the object ends exactly at the end of its last frame, its frames declare one segment of
 * content, and its first page header is this cluster's at this position: a cut, emptied or
 * extended object is found, and so are another segment's or another cluster's bytes under this
 * name, for the cost of reading its headers (a plaintext object on posix; the whole object
 * elsewhere, every frame authenticated when encrypted) and decoding one frame in sixteen. It
 * does not prove every content byte (the checksum in the name): --full does, and so does every
 * read of the segment by a restore. 'decode': a frame does not declare its content size (not
 * the block form), so only decoding the object tells its size.
 */
async function walkedSegmentProblem(
  run: VerifyRun,
  histories: ReadonlyMap<number, TimelineHistory>,
  w: ListedWal,
): Promise<VerifyProblem | undefined | 'decode'> {
  const base = { label: '', path: w.name, key: w.key };
  const read = await readWalObject(run, w, async () => {
    const walked = await run.o.repo.objects.walk(w.key, w.codec, WAL_LONG_HEADER_SIZE, w.storedSize);
    // Listed without its size: the walk tells it.
    w.storedSize ??= walked.storedBytes;
    return walked;
  });
  if ('problem' in read) return read.problem;
  const s = read.value;
  if (w.storedSize === 0)
    return { kind: 'wal-empty', ...base, message: `WAL file ${w.name} is stored as 0 bytes (${w.key})` };
  if (s.fault) {
    return {
      kind: s.fault.kind === 'cut' ? 'wal-truncated' : 'wal-corrupt',
      ...base,
      message: `WAL segment ${w.name} (${w.codec}${w.storedSize === undefined ? '' : `, ${w.storedSize} stored bytes`}): ${s.fault.message} (${w.key})`,
    };
  }
  if (s.contentBytes === undefined) return 'decode';
  if (s.contentBytes === 0)
    return { kind: 'wal-empty', ...base, message: `WAL segment ${w.name} holds 0 bytes of WAL (${w.key})` };
  if (s.contentBytes !== run.segmentSize) {
    return {
      kind: s.contentBytes < run.segmentSize ? 'wal-truncated' : 'wal-corrupt',
      ...base,
      message: `WAL segment ${w.name}'s stored object declares ${s.contentBytes} bytes of WAL, a segment has ${run.segmentSize} (${w.key})`,
    };
  }
  return pageHeaderProblem(run, histories, w, s.head, s.contentBytes);
}

/**
 * Reads one archived WAL object for a check, counted in the progress: an object that cannot be
 * read is its problem; a missing or wrong key fails the verify as such, not as every WAL file corrupt.
 */
async function readWalObject<T>(
  run: VerifyRun,
  w: ListedWal,
  read: () => Promise<T>,
): Promise<{ value: T } | { problem: VerifyProblem }> {
  try {
    return { value: await read() };
  } catch (err) {
    if (isKeyError(err)) throw err;
    return {
      problem: {
        kind: 'wal-corrupt',
        label: '',
        path: w.name,
        key: w.key,
        message: `WAL file ${w.name} cannot be read: ${(err as Error).message} (${w.key})`,
      },
    };
  } finally {
    run.filesDone++;
    run.bytesDone += w.storedSize ?? 0;
  }
}

/** The segment's first page header must be this cluster's, at this position (validateWalSegment). */
function pageHeaderProblem(
  run: VerifyRun,
  histories: ReadonlyMap<number, TimelineHistory>,
  w: ListedWal,
  head: Buffer | undefined,
  contentBytes: number,
): VerifyProblem | undefined {
  try {
    validateWalSegment(
      w.name,
      head ?? Buffer.alloc(0),
      contentBytes,
      run.systemIdentifier,
      histories.get(timelineOfWalName(w.name)),
    );
    return undefined;
  } catch (err) {
    const e = asPgfleetError(err);
    return {
      kind: e.errorName === 'WalFileEmpty' ? 'wal-truncated' : 'wal-foreign',
      label: '',
      path: w.name,
      key: w.key,
      message: `${e.message} (${w.key})`,
    };
  }
}

/** Checks every archived WAL file and sorts segments into usable and unusable. */
async function checkWal(run: VerifyRun): Promise<WalState> {
  const { repo, cluster } = run.o;
  const { segments, others } = await listListedWal(repo, cluster);
  const { histories, badHistories } = await readHistories(repo, cluster, others);
  const branches = new Map<number, TimelineBranch>(
    [...histories].map(([tli, h]) => [tli, { parent: h.parent!, switchLsn: h.startLsn }]),
  );
  // Continuity follows the cluster's live lineage when the controller knows it, like restores do.
  const current = run.o.currentTimeline;
  const liveLineage = current ? lineageOf(current, histories.get(current)) : undefined;

  const allWal = [...[...segments.values()].flat(), ...others.filter((w) => !badHistories.has(w.name))];
  run.problems.push(...badHistories.values());
  const walResults = await mapLimit(allWal, run.concurrency, (w) => walFileProblem(run, histories, w), run.o.signal);
  const badCopies = new Map<string, VerifyProblem>();
  const goodSegments = new Set<string>();
  walResults.forEach((p, i) => {
    const w = allWal[i]!;
    if (p) {
      run.problems.push(p);
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
  return {
    segments,
    histories,
    branches,
    liveLineage,
    goodSegments,
    badSegments,
    badCopies,
    newest,
    gapSeen: new Set(),
  };
}

function describeGap(g: WalGap): string {
  const names =
    g.segments.length === 1
      ? `segment ${g.segments[0]}`
      : `segments ${g.segments[0]} .. ${g.segments[g.segments.length - 1]} (${g.segments.length})`;
  return `WAL gap [${g.fromLsn}, ${g.toLsn}) on timeline ${g.timeline}: ${names} missing`;
}

/**
 * Completes a backup's verdict with its WAL: restorable when the WAL from walStart to walStop is
 * there and usable (and its files checked out), to the end of the continuous WAL after it. Each
 * gap is reported once, however many backups it concerns.
 */
function judgeRestorable(run: VerifyRun, m: BackupManifest, v: BackupVerdict, wal: WalState): void {
  const { segmentSize } = run;
  let walStartOk = true;
  try {
    WalSegmentName.parse(m.walStart, segmentSize);
    WalSegmentName.parse(m.walStop, segmentSize);
    Lsn.parse(m.stopLsn);
  } catch {
    walStartOk = false;
  }
  if (!walStartOk) {
    run.problems.push({
      kind: 'manifest-corrupt',
      label: m.label,
      path: 'backup.manifest',
      key: run.o.repo.backupManifestKey(run.o.cluster, m.label),
      message: `manifest of ${m.label} has invalid WAL positions (${m.walStart}, ${m.walStop}, ${m.stopLsn})`,
    });
    v.reasons.push('manifest corrupt: invalid WAL positions');
    return;
  }
  const c = walContinuity({
    segmentSize,
    start: m.walStart,
    requiredThrough: m.walStop,
    present: wal.goodSegments,
    bad: wal.badSegments,
    branches: wal.branches,
    ...(wal.liveLineage ? { only: wal.liveLineage } : {}),
  });
  for (const g of c.gaps) {
    const id = `${g.timeline}/${g.toLsn}`;
    if (wal.gapSeen.has(id)) continue;
    wal.gapSeen.add(id);
    run.problems.push({
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
    const p = wal.badCopies.get(name);
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

/** The outcome: the verdicts (corrupt backups last), whether all is well, the timelines; logged and reported done. */
async function finish(
  run: VerifyRun,
  listing: BackupListing,
  verdicts: ReadonlyMap<string, BackupVerdict>,
  wal: WalState,
): Promise<VerifyOutcome> {
  const { o, problems } = run;
  const backups: BackupVerdict[] = [
    ...listing.ordered.map((m) => verdicts.get(m.label)!),
    ...[...listing.corrupt.entries()].map(([label, reason]) => ({
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
  const timelines = await summarizeTimelines(
    o.repo,
    o.cluster,
    wal.histories,
    wal.newest,
    run.segmentSize,
    wal.liveLineage,
  );
  const outcome: VerifyOutcome = {
    full: o.full,
    backups,
    problems,
    walSegmentsChecked: [...wal.segments.values()].reduce((n, l) => n + l.length, 0),
    walNewest: [...wal.newest.entries()].sort((a, b) => a[0] - b[0]).map(([, n]) => n),
    ok,
    timelines,
  };
  o.log.info(
    {
      full: o.full,
      backups: backups.length,
      restorable: backups.filter((b) => b.restorable).length,
      problems: problems.length,
      ok,
    },
    'verify finished',
  );
  run.report('done');
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
