/**
 * `pgfleet wal search` on the agent (issue 15, docs/undo.md "Find the mistake"): the committed
 * transactions of the archived WAL that deleted, updated, truncated or dropped, with the tables
 * they touched named as they were at that moment, decoded from the repository alone (the cluster
 * may be gone).
 *
 * 1. The starting backup: the newest started at or before --since (else the oldest). Its catalog
 *    snapshot (backup/catalog-snapshot.ts) names the relation files; WAL before its start cannot
 *    be named, so a --since before the oldest backup is refused.
 * 2. The segments from its first one on, along the cluster's current timeline (segments.ts),
 *    fetched a few ahead in parallel and decoded in order by pgfleet's own decoder (packages/pg
 *    WalDecoder; pg_waldump prints neither tuple contents nor enough to follow pg_class).
 * 3. Per record: packages/pg's TransactionTracker gathers heap rows per transaction and relation
 *    file, follows pg_class (RelationNames, from the snapshot) and sums each transaction up at its
 *    commit; transactions.ts turns committed ones into lines named as the tables were then,
 *    filters and ranks them.
 * The read stops at the end of the archive, or at the end of the segment in which a commit after
 * --until was seen. A missing segment before that is an error naming it (WalSearchGap).
 */
import { PgfleetError, type Logger } from '@pgfleet/core';
import { Lsn, RelationNames, TransactionTracker, WalDecoder, type CatalogSnapshot, type WalRecord } from '@pgfleet/pg';
import type { ArchivedWal, BackupManifest, Repository } from '@pgfleet/storage';
import { CopyPool } from '../copy/pool.js';
import type { ProgressSink } from '../progress.js';
import { ProgressTracker } from '../progress.js';
import { fetchAhead, planSegments, segmentStartLsn } from './segments.js';
import { foundTransaction, SearchResults, type FoundTransaction, type SearchFilter } from './transactions.js';

/**
 * Segments fetched ahead of the decoder (each a 16 MiB buffer). They are read, decompressed and
 * checked on a worker thread (copy/pool.ts, one thread: the decoder on the main thread is the
 * slower stage), which on WAL of small transactions is a quarter of the CPU the search needs.
 */
const FETCH_AHEAD = 4;
/** What the segments in flight may hold together: with 1 GiB segments (initdb --wal-segsize) one at a time. */
const FETCH_AHEAD_BYTES = 64 << 20;

export interface WalSearchOptions {
  repo: Repository;
  cluster: string;
  filter: SearchFilter;
  /** The timeline the cluster's primary writes now (0: the newest archived one). */
  currentTimeline: number;
  log: Logger;
  progress: ProgressSink;
  signal?: AbortSignal;
  fetchAhead?: number;
}

export interface WalSearchOutcome {
  transactions: FoundTransaction[];
  matched: number;
  transactionsSeen: number;
  backupLabel: string;
  snapshot: boolean;
  fromSegment: string;
  toSegment: string;
  segmentsRead: number;
  bytesRead: number;
  elapsedSeconds: number;
  timeline: number;
  /** Why decoding ended before the last planned segment was read ('' when it was). */
  stoppedEarly: string;
}

type StartBackup = Pick<
  BackupManifest,
  'label' | 'cluster' | 'walStart' | 'startTime' | 'startLsn' | 'walSegmentSize' | 'catalogSnapshot'
>;

/** The backup the search starts from (see the module header). */
async function startingBackup(o: WalSearchOptions): Promise<StartBackup> {
  let oldest: StartBackup | undefined;
  let chosen: StartBackup | undefined;
  const since = o.filter.since?.getTime();
  // Chosen by the backups' summaries (storage backup-summary.ts): no whole manifest is read here.
  for (const m of await o.repo.listBackups(o.cluster)) {
    const b: StartBackup = {
      label: m.label,
      cluster: m.cluster,
      walStart: m.walStart,
      startTime: m.startTime,
      startLsn: m.startLsn,
      walSegmentSize: m.walSegmentSize,
      ...(m.catalogSnapshot ? { catalogSnapshot: m.catalogSnapshot } : {}),
    };
    const at = Date.parse(m.startTime);
    if (!oldest || at < Date.parse(oldest.startTime)) oldest = b;
    if (since !== undefined && at <= since && (!chosen || at > Date.parse(chosen.startTime))) chosen = b;
  }
  if (!oldest)
    throw new PgfleetError('WalSearchNoBackup', `cluster ${o.cluster} has no complete backup in the repository`);
  if (since !== undefined && !chosen)
    throw new PgfleetError(
      'WalSearchBeforeOldestBackup',
      `--since ${o.filter.since!.toISOString()} is before the oldest backup of cluster ${o.cluster} (${oldest.label}, started ${oldest.startTime}): WAL before it cannot be read`,
    );
  return chosen ?? oldest;
}

export async function searchWal(o: WalSearchOptions): Promise<WalSearchOutcome> {
  const began = Date.now();
  const backup = await startingBackup(o);
  const size = backup.walSegmentSize;
  const text = await o.repo.readCatalogSnapshot(backup);
  const snapshot = text === undefined ? undefined : (JSON.parse(text) as CatalogSnapshot);
  // Without a snapshot (backups from before it existed) only tables created in the WAL read get names.
  const transactions = new TransactionTracker(new RelationNames(snapshot ?? { lsn: '0/0', databases: [] }));
  const databases = new Map((snapshot?.databases ?? []).map((d) => [d.oid, d.name]));
  const databaseName = (oid: number) => databases.get(oid) ?? `database ${oid}`;
  const plan = await planSegments({
    repo: o.repo,
    cluster: o.cluster,
    fromSegment: backup.walStart,
    walSegmentSize: size,
    currentTimeline: o.currentTimeline,
  });
  o.log.info(
    {
      backup: backup.label,
      snapshot: snapshot !== undefined,
      segments: plan.segments.length,
      timeline: plan.timeline,
      ...(plan.gap ? { gap: plan.gap } : {}),
    },
    'wal search: reading the archive',
  );
  const results = new SearchResults(o.filter);
  results.learnSnapshot(snapshot);
  const progress = new ProgressTracker(o.progress, 'wal-search');
  progress.state.filesTotal = plan.segments.length;
  progress.state.bytesTotal = plan.segments.length * size;
  progress.phase('wal-search', `from backup ${backup.label}`);
  const decoder = new WalDecoder({ segmentSize: size });
  const until = o.filter.until?.getTime();
  let segmentsRead = 0;
  let bytesRead = 0;
  let last = '';
  let pastUntil = false;
  const ahead = o.fetchAhead ?? Math.max(1, Math.min(FETCH_AHEAD, Math.floor(FETCH_AHEAD_BYTES / size)));
  // A repository without thread specs (S3, mirrors) reads on the main thread through the same pool.
  const pool = new CopyPool(o.repo, { threads: 1, perThread: ahead, workersOnly: true });
  const read = async (w: ArchivedWal): Promise<Buffer> => {
    const { bytes } = await pool.run({
      kind: 'read-object',
      key: w.key,
      codec: w.codec,
      sha256: w.sha256,
      maxSize: size,
    });
    return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  };
  try {
    for await (const { segment, data } of fetchAhead(read, plan.segments, ahead, o.signal)) {
      for (const r of decoder.feed(data, segmentStartLsn(segment.name, size))) onRecord(r, segment.timeline);
      segmentsRead++;
      bytesRead += data.length;
      last = segment.name;
      progress.add(data.length, 1);
      if (until !== undefined && results.newestCommit && results.newestCommit.getTime() > until) {
        pastUntil = true;
        break;
      }
      if (decoder.stopped) break;
    }
  } finally {
    await pool.close();
  }
  progress.flush();
  if (plan.gap && !pastUntil)
    throw new PgfleetError(
      'WalSearchGap',
      `archived WAL segment ${plan.gap} of cluster ${o.cluster} is missing (no authenticated copy): the transactions after ${last || backup.walStart} cannot be read`,
    );
  if (
    o.filter.table &&
    results.matched === 0 &&
    !results.namesSeen.has(`${o.filter.table.schema}.${o.filter.table.name}`)
  )
    throw new PgfleetError(
      'WalSearchTableUnknown',
      `table ${o.filter.table.schema}.${o.filter.table.name} is neither in the catalog snapshot of backup ${backup.label} nor created in the WAL after it`,
    );
  const elapsedSeconds = (Date.now() - began) / 1000;
  const end = decoder.end();
  // The end of valid WAL belongs in the last segment (its unfilled tail); anywhere before that it
  // hides what follows, which the user must know.
  const stoppedEarly =
    decoder.stopped && !pastUntil && last !== plan.segments.at(-1)?.name
      ? `decoding stopped in ${last} at ${lsnString(end.lsn)}: ${end.detail}`
      : '';
  if (stoppedEarly) o.log.warn({ stoppedEarly }, 'wal search: the archive holds WAL the decoder could not read on');
  o.log.info(
    {
      segments: segmentsRead,
      bytes: bytesRead,
      seconds: elapsedSeconds,
      matched: results.matched,
      committed: results.committed,
      end: end.reason,
      endLsn: end.lsn,
    },
    'wal search done',
  );
  return {
    transactions: results.result(),
    matched: results.matched,
    transactionsSeen: results.committed,
    backupLabel: backup.label,
    snapshot: snapshot !== undefined,
    fromSegment: plan.segments[0]?.name ?? '',
    toSegment: last,
    segmentsRead,
    bytesRead,
    elapsedSeconds,
    timeline: plan.timeline,
    stoppedEarly,
  };

  function onRecord(r: WalRecord, timeline: number): void {
    const summary = transactions.observe(r);
    if (summary?.outcome === 'committed') results.add(foundTransaction(summary, timeline, databaseName));
  }
}

/** An LSN number as PostgreSQL prints it. */
export function lsnString(lsn: number): string {
  return Lsn.fromBigInt(BigInt(lsn)).toString();
}
