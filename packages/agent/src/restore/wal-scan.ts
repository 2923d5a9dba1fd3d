/**
 * Reads archived WAL record by record with PostgreSQL's own pg_waldump (the binary of the
 * cluster's major version: WAL formats change between majors, and pg_waldump is the decoder
 * PostgreSQL maintains). Restore points and transaction ends exist only inside the WAL, so
 * `--target-name`, `--target-xid` and `pgfleet restore-points` all come through here.
 *
 * Only authenticated copies are read (storage wal-auth.ts): what a planted object holds is never
 * reported. Bounded in memory and scratch space whatever the archive holds: the archive is listed
 * once, streaming, from `fromSegment` on (storage listWal's range: earlier WAL is never walked); per timeline they are fetched a
 * batch at a time into a private temporary directory and decoded by one pg_waldump run per batch,
 * whose output is read line by line (never buffered whole). Consecutive batches share a segment,
 * so a record that crosses a batch boundary is decoded by the second run; records the first run
 * already reported are skipped by LSN. A gap in the archive ends a batch (pg_waldump stops at a
 * missing segment): the scan goes on after it.
 */
import { spawn } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { PgfleetError } from '@pgfleet/core';
import { Lsn, WalSegmentName, walFileKind } from '@pgfleet/pg';
import type { ArchivedWal, Repository } from '@pgfleet/storage';

/** Segments fetched and decoded per pg_waldump run (256 MiB of scratch with 16 MiB segments). */
const BATCH_SEGMENTS = 16;

export interface WalScanOptions {
  repo: Repository;
  cluster: string;
  /** Segments at or after this one's position (the 16 hex digits after the timeline), on every timeline. */
  fromSegment: string;
  pgVersionNum: number;
  walSegmentSize: number;
  pgBinDir?: string;
  /** pg_waldump --rmgr: only this resource manager's records (XLOG for restore points). */
  rmgr?: string;
  signal?: AbortSignal;
  batchSegments?: number;
}

/** One record as pg_waldump describes it. */
export interface WalRecordLine {
  line: string;
  lsn: Lsn;
  timeline: number;
  /** The local copy of the segment holding the record's start, while the callback runs. */
  segmentPath: string;
}

type RecordCallback = (r: WalRecordLine) => void | Promise<unknown>;

export interface WalScanOutcome {
  /** Segments decoded (a batch's shared segment counts once). */
  segmentsRead: number;
  /** Lowest and highest segment name read ('' when none). */
  first: string;
  last: string;
}

/**
 * Decodes every archived segment from `o.fromSegment` on, calling `onRecord` for each record line
 * in WAL order per timeline. A promise it returns is awaited before the segment can go.
 */
export async function scanArchivedWal(o: WalScanOptions, onRecord: RecordCallback): Promise<WalScanOutcome> {
  const major = Math.floor(o.pgVersionNum / 10000);
  const waldump = join(o.pgBinDir ?? `/usr/lib/postgresql/${major}/bin`, 'pg_waldump');
  const from = o.fromSegment.slice(8, 24);
  const byTimeline = new Map<number, ArchivedWal[]>();
  // Listed by the key layout from `from` on: WAL before the oldest backup is never walked.
  for await (const w of o.repo.listWal(o.cluster, { fromPosition: from })) {
    // Only authenticated copies (storage wal-auth.ts): a planted segment must neither place a
    // target nor name a restore point.
    if (!w.authentic || walFileKind(w.name) !== 'segment') continue;
    const timeline = Number.parseInt(w.name.slice(0, 8), 16);
    const list = byTimeline.get(timeline) ?? [];
    list.push(w);
    byTimeline.set(timeline, list);
  }
  const out: WalScanOutcome = { segmentsRead: 0, first: '', last: '' };
  if (byTimeline.size === 0) return out;
  const dir = await mkdtemp(join(tmpdir(), 'pgfleet-waldump-'));
  try {
    for (const [timeline, all] of [...byTimeline].sort((a, b) => a[0] - b[0])) {
      const segments = all.sort((a, b) => (a.name < b.name ? -1 : 1));
      if (out.first === '' || segments[0]!.name < out.first) out.first = segments[0]!.name;
      if (segments.at(-1)!.name > out.last) out.last = segments.at(-1)!.name;
      await scanTimeline(o, waldump, dir, timeline, segments, onRecord, out);
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
  return out;
}

async function scanTimeline(
  o: WalScanOptions,
  waldump: string,
  dir: string,
  timeline: number,
  segments: readonly ArchivedWal[],
  onRecord: RecordCallback,
  out: WalScanOutcome,
): Promise<void> {
  const batch = Math.max(2, o.batchSegments ?? BATCH_SEGMENTS);
  const number = (w: ArchivedWal) => WalSegmentName.parse(w.name, o.walSegmentSize).segmentNumber;
  const follows = (a: ArchivedWal, b: ArchivedWal) => number(b) === number(a) + 1n;
  let last: Lsn | undefined;
  let fetched: string | undefined;
  let i = 0;
  while (i < segments.length) {
    o.signal?.throwIfAborted();
    let j = i + 1;
    while (j < segments.length && j - i < batch && follows(segments[j - 1]!, segments[j]!)) j++;
    for (let k = i; k < j; k++) {
      const s = segments[k]!;
      if (s.name === fetched) continue; // the segment shared with the previous batch
      await o.repo.readObject(s.key, s.codec, { sha256: s.sha256 }, createWriteStream(join(dir, s.name)));
      out.segmentsRead++;
    }
    const segmentPath = (lsn: Lsn) => join(dir, WalSegmentName.fromLsn(timeline, lsn, o.walSegmentSize).toString());
    await runWaldump(waldump, dir, segments[i]!.name, segments[j - 1]!.name, o.rmgr, (line, lsn) => {
      if (last !== undefined && lsn.compare(last) <= 0) return;
      last = lsn;
      return onRecord({ line, lsn, timeline, segmentPath: segmentPath(lsn) });
    });
    // Keep the batch's last segment when the next one follows it: a record may continue into it.
    const overlap = j < segments.length && j - 1 > i && follows(segments[j - 1]!, segments[j]!);
    const done = segments.slice(i, overlap ? j - 1 : j);
    await Promise.all(done.map((s) => rm(join(dir, s.name), { force: true })));
    fetched = overlap ? segments[j - 1]!.name : undefined;
    i = overlap ? j - 1 : j;
  }
}

/**
 * Runs pg_waldump over [first, last] in `dir`, calling `onLine` for every record line. It exits
 * non-zero at the end of valid WAL (the unfilled tail of the newest segment, or a record cut by
 * the batch's end): what it printed before stands; a run that printed nothing and failed is an
 * error.
 */
function runWaldump(
  waldump: string,
  dir: string,
  first: string,
  last: string,
  rmgr: string | undefined,
  onLine: (line: string, lsn: Lsn) => void | Promise<unknown>,
): Promise<void> {
  return new Promise((resolve, reject) => {
    const args = ['-p', dir, ...(rmgr ? ['--rmgr', rmgr] : []), first, last];
    const child = spawn(waldump, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let printed = false;
    let stderr = '';
    let failed: Error | undefined;
    const waits: Promise<unknown>[] = [];
    child.stderr.on('data', (d: Buffer) => {
      if (stderr.length < 4096) stderr += d.toString();
    });
    const lines = createInterface({ input: child.stdout, crlfDelay: Infinity });
    lines.on('line', (line) => {
      const lsn = /lsn: ([0-9A-F]+\/[0-9A-F]+)/.exec(line)?.[1];
      if (!lsn || failed) return;
      printed = true;
      try {
        const wait = onLine(line, Lsn.parse(lsn));
        if (wait) waits.push(wait);
      } catch (err) {
        failed = err as Error;
        child.kill();
      }
    });
    child.on('error', (err) =>
      reject(new PgfleetError('Internal', `cannot run ${waldump}: ${err.message}`, { cause: err })),
    );
    child.on('close', (code) => {
      if (failed) return reject(failed);
      if (code !== 0 && !printed && !/end of WAL|invalid record length|could not find a valid record/.test(stderr))
        return reject(new PgfleetError('Internal', `pg_waldump ${first}..${last} failed: ${stderr.trim()}`));
      Promise.all(waits).then(() => resolve(), reject);
    });
  });
}
