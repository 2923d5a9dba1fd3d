/**
 * Test-only: a real PostgreSQL 15 whose WAL is archived to a temp dir (archive_command cp), and
 * pg_waldump's view of the same segments, so the WAL decoder is compared with PostgreSQL's own.
 */
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { sleep } from '@pgfleet/core/async';
import { chownToPostgres, makeTempDir, removeDir, runAsPostgres } from './os-user.js';
import { startPostgres, type PgInstance } from './postgres.js';

/** An archived segment: its name, bytes, and the LSN of its first byte. */
export interface ArchivedSegment {
  name: string;
  bytes: Buffer;
  startLsn: number;
}

export interface WalCluster {
  pg: PgInstance;
  archiveDir: string;
  segmentSize: number;
  /** pg_switch_wal() and wait until the segment holding everything written so far is archived; returns its name */
  switchAndArchive(): Promise<string>;
  /** the archived segments from `first` to `last` (names) */
  segments(first: string, last: string): Promise<ArchivedSegment[]>;
  stop(): Promise<void>;
}

export async function startWalCluster(settings: Record<string, string> = {}): Promise<WalCluster> {
  const archiveDir = await makeTempDir('wal-archive');
  await chownToPostgres(archiveDir);
  const pg = await startPostgres({
    archiveCommand: `cp %p ${archiveDir}/%f`,
    settings: { wal_level: 'replica', max_prepared_transactions: '5', ...settings },
  });
  const rows = await pg.query<{ setting: string }>("select setting from pg_settings where name = 'wal_segment_size'");
  const segmentSize = Number(rows[0]!.setting);
  return {
    pg,
    archiveDir,
    segmentSize,
    async switchAndArchive() {
      const rows = await pg.query<{ name: string }>('select pg_walfile_name(pg_current_wal_insert_lsn()) as name');
      const name = rows[0]!.name;
      await pg.query('select pg_switch_wal()');
      // Archiving is asynchronous, and a file appears before cp has finished writing it: wait
      // until the archiver reports the segment done, however long the loaded machine takes.
      for (;;) {
        const done = await pg.query<{ last: string | null }>('select last_archived_wal as last from pg_stat_archiver');
        const lastDone = done[0]?.last;
        if (lastDone && lastDone.length === 24 && lastDone >= name) return name;
        await sleep(100);
      }
    },
    async segments(first, last) {
      const names = (await readdir(archiveDir)).filter((n) => /^[0-9A-F]{24}$/.test(n) && n >= first && n <= last);
      names.sort();
      const out: ArchivedSegment[] = [];
      for (const name of names) {
        const bytes = await readFile(path.join(archiveDir, name));
        // TTTTTTTTXXXXXXXXYYYYYYYY: segment number = X * (4 GiB / size) + Y.
        const segno = parseInt(name.slice(8, 16), 16) * (0x1_0000_0000 / segmentSize) + parseInt(name.slice(16), 16);
        out.push({ name, bytes, startLsn: segno * segmentSize });
      }
      return out;
    },
    async stop() {
      await pg.stop();
      await removeDir(archiveDir);
    },
  };
}

/** One record as pg_waldump prints it (PostgreSQL 15, without -b). */
export interface WaldumpRecord {
  rmgr: string;
  recLen: number;
  totLen: number;
  xid: number;
  lsn: string;
  prev: string;
  desc: string;
  blocks: { id: number; rel: string; fork: string; blk: number; fpw: boolean }[];
}

const LINE =
  /^rmgr: (\S+)\s+len \(rec\/tot\):\s*(\d+)\/\s*(\d+), tx:\s*(\d+), lsn: ([0-9A-F]+\/[0-9A-F]+), prev ([0-9A-F]+\/[0-9A-F]+), desc: (.*)$/;
const BLOCK = /blkref #(\d+): rel (\d+\/\d+\/\d+)(?: fork (\w+))? blk (\d+)( FPW)?/g;

/** pg_waldump over archived segments first..last (it stops, with an error, at the end of valid WAL). */
export async function waldump(cluster: WalCluster, first: string, last: string): Promise<WaldumpRecord[]> {
  const bin = path.join(cluster.pg.binDir, 'pg_waldump');
  let stdout: string;
  try {
    ({ stdout } = await runAsPostgres(bin, ['-p', cluster.archiveDir, first, last], {
      timeoutMs: 600_000,
      // Times in UTC, whatever the machine's zone.
      env: { ...process.env, TZ: 'UTC' },
    }));
  } catch (err) {
    // Reaching the end of the WAL given is an error to pg_waldump; what it printed is still right.
    stdout = (err as { stdout?: string }).stdout ?? '';
  }
  const out: WaldumpRecord[] = [];
  for (const line of stdout.split('\n')) {
    const m = LINE.exec(line);
    if (!m) continue;
    const blocks = [...m[7]!.matchAll(BLOCK)].map((b) => ({
      id: Number(b[1]),
      rel: b[2]!,
      fork: b[3] ?? 'main',
      blk: Number(b[4]),
      fpw: b[5] !== undefined,
    }));
    out.push({
      rmgr: m[1]!,
      recLen: Number(m[2]),
      totLen: Number(m[3]),
      xid: Number(m[4]),
      lsn: m[5]!,
      prev: m[6]!,
      desc: m[7]!,
      blocks,
    });
  }
  return out;
}
