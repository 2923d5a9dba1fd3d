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
 *
 * Nothing is planned before the first check (issue 16: 2,000 backups and 1M WAL segments took
 * over a minute and ~750 MB before it): backups are checked one at a time, each manifest streamed
 * (BackupBook), and the WAL as it is listed, each name authenticated as its own check starts
 * (checkWal). Every name is still judged before anything of it is used.
 */
import { createHash } from 'node:crypto';
import { asPgfleetError, forEachLimit, mapLimit, PgfleetError, type Logger } from '@pgfleet/core';
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
  type ArchivedWal,
  type BackupKind,
  type Codec,
  type ListedWal,
  type ManifestFile,
  type ManifestHead,
  type ManifestReader,
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
  const labels = (await o.repo.listBackupLabels(o.cluster)).sort();
  const book = new BackupBook(run, labels);
  const checked = await checkBackups(run, book);
  run.report('wal');
  const wal = await checkWal(run);
  for (const { head, verdict } of checked) judgeRestorable(run, head, verdict, wal);
  return finish(run, book, checked, wal);
}

/** What verify knows of one backup label (BackupBook.state). */
type BackupState =
  | { kind: 'valid'; head: ManifestHead }
  | { kind: 'corrupt'; reason: string }
  | { kind: 'incomplete' }
  | { kind: 'absent' };

/**
 * Backups whose entry indexes and object listings are kept at once (each is per file of the
 * backup, ~100 B a file): references go to the backups just before (an incremental's chain), which
 * are checked just before it and leave their index here.
 */
const CACHED_BACKUPS = 8;

/** A map that keeps its `limit` most recently used entries. */
class RecentMap<K, V> {
  private readonly map = new Map<K, V>();
  constructor(private readonly limit: number) {}

  get(key: K, make: () => V): V {
    let v = this.map.get(key);
    if (v !== undefined) this.map.delete(key);
    else v = make();
    this.map.set(key, v);
    if (this.map.size > this.limit) this.map.delete(this.map.keys().next().value!);
    return v;
  }
}

/**
 * The cluster's backups as verify learns them, one at a time: each manifest is opened as a stream
 * (ManifestReader: authenticated and checked whole before any entry is used, its entries then
 * read one at a time) when its backup is checked or another backup refers to it, so memory does
 * not hold every manifest, and the first object check starts after one manifest read. A backup
 * whose manifest is corrupt or missing is reported once, whichever asks first.
 */
class BackupBook {
  private readonly states = new Map<string, Promise<BackupState>>();
  private readonly entries = new RecentMap<string, Promise<ReadonlyMap<string, string>>>(CACHED_BACKUPS);
  private readonly sizes = new RecentMap<string, Promise<ReadonlyMap<string, number>>>(CACHED_BACKUPS);
  private readonly known: ReadonlySet<string>;
  /** Why a backup is incomplete or its manifest corrupt, reported at its turn (label order, however it was read first). */
  private readonly found = new Map<string, VerifyProblem>();

  constructor(
    private readonly run: VerifyRun,
    /** Every backup directory of the cluster, in label order. */
    readonly labels: readonly string[],
  ) {
    this.known = new Set(labels);
  }

  /** Whether a backup is complete and its manifest valid (or why not); read once. */
  state(label: string): Promise<BackupState> {
    let p = this.states.get(label);
    if (!p) {
      p = this.read(label).then(async (r) => {
        await r.reader?.close();
        return r.state;
      });
      this.states.set(label, p);
    }
    return p;
  }

  /** A backup's manifest opened for its own check (the caller closes it); undefined when it has none that is valid (reported). */
  async open(label: string): Promise<ManifestReader | undefined> {
    const known = this.states.get(label);
    if (known) {
      if ((await known).kind !== 'valid') return undefined;
      // Already read for a reference to it: read again for its entries (and judged by this read).
      const again = await this.read(label);
      if (!again.reader) this.states.set(label, Promise.resolve(again.state));
      return again.reader;
    }
    let reader: ManifestReader | undefined;
    const p = this.read(label).then((r) => {
      reader = r.reader;
      return r.state;
    });
    this.states.set(label, p);
    await p;
    return reader;
  }

  private async read(label: string, report = true): Promise<{ state: BackupState; reader?: ManifestReader }> {
    const { repo, cluster } = this.run.o;
    if (!this.known.has(label)) return { state: { kind: 'absent' } };
    try {
      const reader = await repo.openManifest(cluster, label);
      return { state: { kind: 'valid', head: reader.head }, reader };
    } catch (err) {
      // A missing or wrong key fails the verify as such, not as every manifest corrupt.
      if (isKeyError(err)) throw err;
      if (PgfleetError.is(err, 'UnknownBackup')) {
        // An empty directory left behind is no backup at all.
        if (!(await repo.labelInUse(cluster, label))) return { state: { kind: 'absent' } };
        if (report)
          this.found.set(label, {
            kind: 'incomplete-backup',
            label,
            path: '',
            key: `${repo.backupPrefix(cluster, label)}/`,
            message: `backup ${label} has no backup.manifest: it is incomplete (in progress, or failed) and is never restored`,
          });
        return { state: { kind: 'incomplete' } };
      }
      const message = asPgfleetError(err).message;
      if (report)
        this.found.set(label, {
          kind: 'manifest-corrupt',
          label,
          path: 'backup.manifest',
          key: repo.backupManifestKey(cluster, label),
          message,
        });
      return { state: { kind: 'corrupt', reason: `manifest corrupt: ${message}` } };
    }
  }

  /** The problem of a backup without a valid manifest, once it is known (then forgotten: reported once). */
  takeProblem(label: string): VerifyProblem | undefined {
    const p = this.found.get(label);
    this.found.delete(label);
    return p;
  }

  /** Starts reading a backup's object listing, for the checks about to need it. */
  prefetchSizes(label: string): void {
    void this.sizesOf(label).catch(() => {});
  }

  /** The backups whose manifest is corrupt, in label order, with the reason. */
  async corrupt(): Promise<[string, string][]> {
    const out: [string, string][] = [];
    for (const label of this.labels) {
      const s = await this.states.get(label);
      if (s?.kind === 'corrupt') out.push([label, s.reason]);
    }
    return out;
  }

  /** A backup's own-entry index (ownEntries), built while its entries were checked: kept for the backups after it. */
  remember(label: string, index: ReadonlyMap<string, string>): void {
    void this.entries.get(label, () => Promise.resolve(index));
  }

  /**
   * The entries whose bytes a valid backup holds itself, by path, as fingerprints (the reference
   * check looks each reference up here instead of searching the file list once per reference).
   */
  ownEntries(label: string): Promise<ReadonlyMap<string, string>> {
    return this.entries.get(label, async () => {
      const index = new Map<string, string>();
      if ((await this.state(label)).kind !== 'valid') return index;
      const { reader } = await this.read(label, false);
      if (!reader) return index;
      try {
        for await (const f of reader.files())
          if (f.backup === label && !index.has(f.path)) index.set(f.path, entryFingerprint(f));
      } finally {
        await reader.close();
      }
      return index;
    });
  }

  /** The stored size of an object under a backup's label, undefined when there is none (one listing per label). */
  async storedSize(key: string): Promise<number | undefined> {
    const { repo, cluster } = this.run.o;
    const root = `${repo.backupsPrefix(cluster)}/`;
    if (!key.startsWith(root)) return undefined;
    return (await this.sizesOf(key.slice(root.length, key.indexOf('/', root.length)))).get(key);
  }

  /** A backup's stored objects and their sizes (one listing per label, kept while recent). */
  private sizesOf(label: string): Promise<ReadonlyMap<string, number>> {
    const { repo, cluster } = this.run.o;
    return this.sizes.get(label, async () => {
      const out = new Map<string, number>();
      for (const o of await repo.backupObjects(cluster, label)) out.set(o.key, o.size);
      return out;
    });
  }
}

/**
 * Checks one stored object against what a manifest says of it. Backups share objects (an
 * incremental reads unchanged files from its parent): each distinct expectation is read once.
 */
function objectChecker(run: VerifyRun, book: BackupBook): (e: ObjectExpectation) => Promise<ObjectFault | undefined> {
  const { repo, full } = run.o;
  const checks = new Map<string, Promise<ObjectFault | undefined>>();
  return (e) => {
    const id = `${e.key}|${e.storedSize}|${e.storedSha256}|${e.size}|${e.sha256}`;
    let p = checks.get(id);
    if (!p) {
      p = (async (): Promise<ObjectFault | undefined> => {
        const have = await book.storedSize(e.key);
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
async function checkReferences(label: string, f: ManifestFile, book: BackupBook, fault: FaultRecorder): Promise<void> {
  // A block-incremental file's map also reads objects of these backups: they must be there.
  for (const b of f.blocks?.changed ? (f.blocks.from ?? []) : []) {
    if ((await book.state(b)).kind === 'valid') continue;
    fault(
      {
        kind: 'bad-reference',
        label,
        path: f.path,
        key: '',
        message: `${f.path} reads blocks from backup ${b}, which is not a complete backup in the repository`,
      },
      `bad reference: ${f.path} reads blocks from backup ${b}, which is missing`,
    );
  }
  if (f.backup === label) return;
  const ref = await book.state(f.backup);
  if (ref.kind !== 'valid') {
    const why =
      ref.kind === 'corrupt'
        ? 'whose manifest is corrupt'
        : ref.kind === 'incomplete'
          ? 'which is incomplete'
          : 'which is not in the repository';
    fault(
      {
        kind: 'bad-reference',
        label,
        path: f.path,
        key: '',
        message: `${f.path} reads its bytes from backup ${f.backup}, ${why}`,
      },
      `bad reference: ${f.path} reads from backup ${f.backup}, ${why}`,
    );
    return;
  }
  const there = (await book.ownEntries(f.backup)).get(f.path);
  if (there === undefined || there !== entryFingerprint(f)) {
    fault(
      {
        kind: 'bad-reference',
        label,
        path: f.path,
        key: '',
        message: `${f.path} reads its bytes from backup ${f.backup}, whose manifest ${there ? 'describes different bytes' : 'has no such file'}`,
      },
      `bad reference: ${f.path} in backup ${f.backup} ${there ? 'differs' : 'does not exist'}`,
    );
  }
}

/**
 * What a reference must find the same in the backup holding the bytes: its stored and content
 * checksums and stored size, hashed to 16 bytes (an index holds one per file of a backup).
 */
function entryFingerprint(f: ManifestFile): string {
  return createHash('sha256')
    .update(`${f.storedSha256}|${f.sha256}|${f.storedSize}`)
    .digest()
    .toString('latin1', 0, 16);
}

/** An object a backup needs and what it must hold; `notForRestore`: the catalog snapshot, which no restore reads. */
interface Needed {
  path: string;
  e: ObjectExpectation;
  notForRestore?: true;
}

/** The catalog snapshot `pgfleet wal search` starts from, when the backup has one. */
function catalogSnapshotObject(repo: Repository, cluster: string, m: ManifestHead): Needed | undefined {
  const s = m.catalogSnapshot;
  if (!s) return undefined;
  // Checked like a file, but a restore never reads it, so a damaged one is a problem named, not a
  // reason the backup cannot be restored.
  const key = repo.catalogSnapshotKey(cluster, m.label, s.codec);
  const { size, sha256, storedSize, storedSha256, codec } = s;
  return { path: 'catalog snapshot', e: { key, codec, size, sha256, storedSize, storedSha256 }, notForRestore: true };
}

/**
 * --full: the structure of the block maps a backup wrote for its changed blocks (parts, layers of
 * XOR deltas, positions; block-map.ts BlockMap.decode), and that every backup a map reads is in
 * the entry's `blocks.from` (what keeps them from being expired). A delta's own bytes can only be
 * checked by rebuilding the file, which a restore does against the file's sha256.
 */
async function checkBlockMaps(
  run: VerifyRun,
  label: string,
  entries: readonly ManifestFile[],
  fault: FaultRecorder,
): Promise<void> {
  const { repo, cluster } = run.o;
  await mapLimit(
    entries,
    run.concurrency,
    async (f) => {
      const key = repo.blockMapKey(cluster, f.backup, f.path, f.codec);
      let message: string | undefined;
      try {
        const map = await repo.readBlockMap(cluster, f);
        const from = new Set(f.blocks!.from ?? []);
        const missing = map.backupsOtherThan(label).filter((b) => !from.has(b));
        if (missing.length > 0)
          message = `the block map of ${f.path} reads backups its entry does not name: ${missing.join(', ')}`;
      } catch (err) {
        message = asPgfleetError(err).message;
      }
      if (message !== undefined)
        fault({ kind: 'unreadable', label, path: f.path, key, message }, `unreadable block map of ${f.path} (${key})`);
    },
    run.o.signal,
  );
}

/** A backup checked: its manifest's head and its verdict (the WAL range judged later). */
interface CheckedBackup {
  head: ManifestHead;
  verdict: BackupVerdict;
}

/**
 * Checks every valid backup's references and files, one backup after another in label order, the
 * next few backups' manifests and listings read meanwhile (small backups were a chain of waits on
 * reads otherwise); the verdicts oldest stop time first.
 */
async function checkBackups(run: VerifyRun, book: BackupBook): Promise<CheckedBackup[]> {
  const checkObject = objectChecker(run, book);
  const checked: CheckedBackup[] = [];
  const { labels } = book;
  const ahead = new Map<string, Promise<ManifestReader | undefined>>();
  const readAhead = (label: string | undefined) => {
    if (label === undefined || ahead.has(label)) return;
    const reader = book.open(label);
    reader.catch(() => {});
    ahead.set(label, reader);
    book.prefetchSizes(label);
  };
  try {
    for (let i = 0; i < labels.length; i++) {
      run.o.signal?.throwIfAborted();
      const label = labels[i]!;
      for (let j = i; j <= i + run.concurrency; j++) readAhead(labels[j]);
      const reader = await ahead.get(label);
      ahead.delete(label);
      const problem = book.takeProblem(label);
      if (problem) run.problems.push(problem);
      if (!reader) continue;
      try {
        checked.push({ head: reader.head, verdict: await checkBackup(run, book, reader, checkObject) });
      } finally {
        await reader.close();
      }
    }
  } finally {
    // Readers opened ahead of a failure or an abort: their local copies go too.
    for (const reader of ahead.values()) void reader.then((r) => r?.close()).catch(() => {});
  }
  return checked.sort((a, b) => Date.parse(a.head.stopTime) - Date.parse(b.head.stopTime));
}

/** One backup's references and objects, its entries streamed from its manifest a batch at a time. */
async function checkBackup(
  run: VerifyRun,
  book: BackupBook,
  reader: ManifestReader,
  checkObject: (e: ObjectExpectation) => Promise<ObjectFault | undefined>,
): Promise<BackupVerdict> {
  const { o } = run;
  const m = reader.head;
  run.report('backups', m.label);
  const v: BackupVerdict = {
    label: m.label,
    type: m.type,
    restorable: false,
    fromLsn: m.stopLsn,
    fromTime: new Date(m.stopTime),
    toLsn: '',
    toTimeline: 0,
    reasons: [],
    filesChecked: 0,
    bytesChecked: 0,
  };
  // Reference faults first, then the objects', each in the manifest's order (objects: by their place).
  const referenceFaults: [VerifyProblem, string][] = [];
  const objectFaults: [number, VerifyProblem, string | undefined][] = [];
  // Its own entries indexed as they pass, for the backups after it that read from it.
  const own = new Map<string, string>();
  // --full: the entries whose changed blocks this backup stored, their maps checked after the objects.
  const mapped: ManifestFile[] = [];
  async function* needed(): AsyncGenerator<Needed & { at: number }> {
    let at = 0;
    for await (const f of reader.files()) {
      if (f.backup === m.label && !own.has(f.path)) own.set(f.path, entryFingerprint(f));
      if (o.full && f.backup === m.label && f.blocks?.changed) mapped.push(f);
      await checkReferences(m.label, f, book, (p, reason) => referenceFaults.push([p, reason]));
      for (const { what, ...e } of o.repo.entryObjects(o.cluster, f)) yield { path: what, e, at: at++ };
    }
    const snapshot = catalogSnapshotObject(o.repo, o.cluster, m);
    if (snapshot) yield { ...snapshot, at };
  }
  // A window of checks in flight over the entries as they are read: memory flat in the files.
  await forEachLimit(needed(), run.concurrency, async ({ path, e, notForRestore, at }) => {
    o.signal?.throwIfAborted();
    const r = await checkObject(e);
    v.filesChecked++;
    v.bytesChecked += o.full ? e.size : e.storedSize;
    if (!r) return;
    const p: VerifyProblem = { kind: r.kind, label: m.label, path, key: e.key, message: r.message };
    if (notForRestore) {
      objectFaults.push([at, p, undefined]);
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
    objectFaults.push([at, p, `${what} ${path} (${e.key})`]);
  });
  book.remember(m.label, own);
  objectFaults.sort((a, b) => a[0] - b[0]);
  for (const [p, reason] of [...referenceFaults, ...objectFaults.map(([, p, reason]) => [p, reason] as const)]) {
    run.problems.push(p);
    if (reason !== undefined) v.reasons.push(reason);
  }
  if (o.full && v.reasons.length === 0 && mapped.length > 0)
    await checkBlockMaps(run, m.label, mapped, (p, reason) => {
      run.problems.push(p);
      v.reasons.push(reason);
    });
  return v;
}

/** The archived WAL as continuity and the verdicts need it: per segment name whether it is usable, not every listed copy. */
interface WalState {
  /** Segment copies checked. */
  segmentCopies: number;
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

/**
 * Timeline histories first: a new timeline's first segment carries its parent's id, which only
 * its history explains; each history must also extend its parent's (timelines.ts).
 */
async function readHistories(
  repo: Repository,
  cluster: string,
  files: readonly ArchivedWal[],
): Promise<{ histories: Map<number, TimelineHistory>; badHistories: Map<string, VerifyProblem> }> {
  const histories = new Map<number, TimelineHistory>();
  const badHistories = new Map<string, VerifyProblem>();
  for (const w of files) {
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

/**
 * Checks every archived WAL file and sorts segments into usable and unusable. The timeline
 * histories first (the segments' page checks need them), then the rest of the archive as it is
 * listed, a directory at a time, the next directory listed while this one's files are checked:
 * each key is parsed and its MAC judged only as its own check starts (walKeyParser), so checking
 * starts after one directory read, and nothing is held per file but its name's verdict.
 */
async function checkWal(run: VerifyRun): Promise<WalState> {
  const { repo, cluster, signal } = run.o;
  const historyFiles = await repo.listWalHistories(cluster);
  const { histories, badHistories } = await readHistories(repo, cluster, historyFiles);
  const branches = new Map<number, TimelineBranch>(
    [...histories].map(([tli, h]) => [tli, { parent: h.parent!, switchLsn: h.startLsn }]),
  );
  // Continuity follows the cluster's live lineage when the controller knows it, like restores do.
  const current = run.o.currentTimeline;
  const liveLineage = current ? lineageOf(current, histories.get(current)) : undefined;
  run.problems.push(...badHistories.values());

  const state: WalState = {
    segmentCopies: 0,
    histories,
    branches,
    liveLineage,
    goodSegments: new Set(),
    badSegments: new Set(),
    badCopies: new Map(),
    newest: new Map(),
    gapSeen: new Set(),
  };
  const parse = repo.walKeyParser(cluster);
  const checkBatch = async (keys: readonly string[], sizes: readonly number[] | undefined) => {
    const results = await mapLimit(
      keys,
      run.concurrency,
      async (key, i) => {
        const w = parse(key, sizes?.[i]);
        const kind = w && walFileKind(w.name);
        if (!w || kind === undefined) return undefined;
        if (kind === 'segment') {
          state.segmentCopies++;
          const t = timelineOfWalName(w.name);
          const cur = state.newest.get(t);
          if (cur === undefined || w.name > cur) state.newest.set(t, w.name);
        }
        return { name: w.name, segment: kind === 'segment', problem: await walFileProblem(run, histories, w) };
      },
      signal,
    );
    // In key order, whatever order the checks ended in.
    for (const r of results) {
      if (!r) continue;
      if (r.problem) {
        run.problems.push(r.problem);
        state.badCopies.set(r.name, r.problem);
      } else if (r.segment) state.goodSegments.add(r.name);
    }
  };
  const usableHistories = historyFiles.filter((w) => !badHistories.has(w.name));
  await checkBatch(
    usableHistories.map((w) => w.key),
    usableHistories.map((w) => w.storedSize),
  );
  const listing = repo.listWalKeys(cluster)[Symbol.asyncIterator]();
  try {
    let next = listing.next();
    for (;;) {
      const r = await next;
      if (r.done) break;
      next = listing.next();
      // Observed on every path: a failed check below must not leave the listing's failure unhandled.
      next.catch(() => {});
      await checkBatch(r.value.keys, r.value.sizes);
    }
  } finally {
    await listing.return?.();
  }
  // A segment with a usable copy is usable; one with only bad copies breaks continuity.
  for (const name of state.badCopies.keys())
    if (walFileKind(name) === 'segment' && !state.goodSegments.has(name)) state.badSegments.add(name);
  return state;
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
function judgeRestorable(run: VerifyRun, m: ManifestHead, v: BackupVerdict, wal: WalState): void {
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
  book: BackupBook,
  checked: readonly CheckedBackup[],
  wal: WalState,
): Promise<VerifyOutcome> {
  const { o, problems } = run;
  const backups: BackupVerdict[] = [
    ...checked.map((c) => c.verdict),
    ...(await book.corrupt()).map(([label, reason]) => ({
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
    walSegmentsChecked: wal.segmentCopies,
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
