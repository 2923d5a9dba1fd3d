/**
 * Dump drills and the dump spool end to end (issue 17, docs/drills.md "Dump drills",
 * docs/logical.md), on one cluster whose agent's --scratch-dir is the test's own:
 * - a dump records each table's exact rows (counted from its COPY data as it was stored), equal
 *   to count(*) on the source, also for a table whose text values hold newlines, carriage returns,
 *   backslashes, a literal "\." line, empty strings and NULLs; a partitioned parent is not counted
 *   (its rows are its partitions');
 * - `pgfleet drill --dump latest` restores it into a throwaway PostgreSQL, finds every count equal,
 *   records the restore time in the job, `pgfleet drills`, status' last drill and drill.completed,
 *   and leaves the scratch area empty;
 * - an agent killed -9 in the middle of a dump: the job fails, `pgfleet dumps` lists nothing new,
 *   the spool stays until the restarted agent sweeps it, and a new dump then succeeds and drills;
 * - a spool bound smaller than the dump (--dump-spool-max) fails the dump with DumpSpoolFull,
 *   nothing listed, nothing left in the repository or the spool;
 * - a full disk under the spool (--scratch-dir on a 512 KiB tmpfs mounted by the test, which runs as root)
 *   fails the dump with DiskFull quoting pg_dump, nothing listed, nothing left;
 * - with --jobs 2, a dump whose table files were stored while pg_dump ran (the default) holds the
 *   same files byte for byte (toc.dat aside) and the same row counts as one stored after pg_dump
 *   (--dump-store-early off).
 * The comparison's failure (counts differ, naming the tables) is proven by the unit test
 * packages/agent/src/drill/dump-drill.test.ts: a restored dump whose counts differ cannot be
 * crafted here without forging the catalog's record.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdir, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import pg from 'pg';
import { ErrorCodes } from '@pgfleet/core';
import { pgOsUser } from '@pgfleet/testkit';
import { startFleet, waitFor, type Daemon, type Fleet, type RunResult } from './harness.js';

const CLUSTER = 'dd';

interface DumpTableJson {
  schema: string;
  name: string;
  rows?: number | string;
  rowsCounted?: boolean;
}
interface DumpJson {
  label: string;
  databases: {
    name: string;
    tables: DumpTableJson[];
    files: { name: string; sha256: string; size: number | string }[];
  }[];
}
interface DrillJson {
  ok?: boolean;
  stage?: string;
  dumpLabel?: string;
  dumpDatabases?: string[];
  reasons?: string[];
  rtoSeconds?: number;
  restoreSeconds?: number;
  countsCompared?: boolean;
  countsEqual?: boolean;
  tablesCompared?: number;
}
interface JobJson {
  id: string;
  state: string;
  error?: { code: string; message: string };
  dump?: DumpJson;
  drill?: DrillJson;
}

describe('dump drills and the dump spool', { timeout: 1_800_000 }, () => {
  let fleet: Fleet;
  let scratch: string;
  let first: DumpJson;

  const json = <T>(r: RunResult, what: string): T => {
    try {
      return JSON.parse(r.stdout) as T;
    } catch {
      return assert.fail(`${what} printed no JSON (exit ${r.code}):\n${r.stdout}\n${r.stderr}`);
    }
  };
  const listed = async (): Promise<string[]> => {
    const r = await fleet.cli('dumps', CLUSTER, '--output', 'json');
    assert.equal(r.code, 0, r.stderr);
    return (JSON.parse(r.stdout) as { dump: DumpJson }[]).map((d) => d.dump.label).sort();
  };
  const dumpDirs = async (): Promise<string[]> =>
    (await readdir(join(fleet.repoDir, CLUSTER, 'dump')).catch(() => [] as string[])).sort();
  const spools = async (): Promise<string[]> =>
    (await readdir(scratch).catch(() => [] as string[])).filter((n) => n.startsWith('pgfleet-dump-'));
  const withShop = async <T>(fn: (c: pg.Client) => Promise<T>): Promise<T> => {
    const c = new pg.Client({ host: fleet.pg.host, port: fleet.pg.port, user: fleet.pg.user, database: 'shop' });
    await c.connect();
    try {
      return await fn(c);
    } finally {
      await c.end();
    }
  };
  const exited = async (agent: Daemon): Promise<void> => {
    if (agent.child.exitCode !== null || agent.child.signalCode !== null) return;
    await new Promise((r) => agent.child.once('exit', r));
  };
  const dumpShop = async (...more: string[]): Promise<RunResult> =>
    fleet.cli('dump', CLUSTER, '--database', 'shop', '--wait', '--output', 'json', ...more);
  const drillDump = async (label: string): Promise<{ r: RunResult; job: JobJson }> => {
    const r = await fleet.cli('drill', CLUSTER, '--dump', label, '--wait', '--output', 'json');
    return { r, job: json<JobJson>(r, 'drill --dump') };
  };

  before(async () => {
    fleet = await startFleet({ cluster: CLUSTER, archive: false, startAgent: false });
    scratch = join(fleet.dir, 'scratch');
    await fleet.startAgent(['--scratch-dir', scratch]);
    await fleet.pg.query('CREATE DATABASE shop');
    await withShop((c) =>
      c.query(`
        CREATE SCHEMA sales;
        CREATE TABLE sales.orders (id bigint PRIMARY KEY, note text);
        INSERT INTO sales.orders SELECT g, repeat('n', g % 40) FROM generate_series(1, 20000) g;
        -- Values that would break a naive line count: escaped newlines and CRs, backslashes, a
        -- value that is the terminator's text, empty strings (an empty line), NULLs.
        CREATE TABLE public."odd text" (id int, t text);
        INSERT INTO public."odd text" VALUES
          (1, E'line one\\nline two\\nline three'), (2, E'carriage\\r\\nreturn'), (3, E'back\\\\slash\\\\'),
          (4, E'\\\\.'), (5, E'\\n\\\\.\\n'), (6, ''), (7, NULL), (8, E'tab\\there');
        INSERT INTO public."odd text" SELECT g, E'multi\\nline ' || g FROM generate_series(9, 1000) g;
        CREATE TABLE sales.empty (id int);
        CREATE TABLE sales.events (id int, at date) PARTITION BY RANGE (at);
        CREATE TABLE sales.events_2025 PARTITION OF sales.events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
        CREATE TABLE sales.events_2026 PARTITION OF sales.events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
        INSERT INTO sales.events SELECT g, '2025-06-01'::date + (g % 400) FROM generate_series(1, 3000) g;
        CREATE MATERIALIZED VIEW sales.big AS SELECT id FROM sales.orders WHERE id > 19000;
      `),
    );
  });

  after(async () => {
    if (process.exitCode && fleet) console.error(await fleet.logs());
    await fleet?.stop();
  });

  it("records each table's exact rows, equal to count(*) on the source, escaped newlines and backslashes included", async () => {
    const r = await dumpShop();
    assert.equal(r.code, 0, `${r.stderr}\n${await fleet.logs()}`);
    first = json<JobJson>(r, 'dump').dump!;
    const shop = first.databases.find((d) => d.name === 'shop')!;
    const source = await withShop(async (c) => {
      const out: Record<string, number> = {};
      for (const t of ['sales.orders', 'public."odd text"', 'sales.empty', 'sales.events_2025', 'sales.events_2026'])
        out[t] = Number((await c.query<{ n: string }>(`SELECT count(*)::text AS n FROM ONLY ${t}`)).rows[0]!.n);
      return out;
    });
    const counted = Object.fromEntries(
      shop.tables
        .filter((t) => t.rowsCounted)
        .map((t) => [`${t.schema}.${t.name === 'odd text' ? '"odd text"' : t.name}`, Number(t.rows ?? 0)]),
    );
    assert.deepEqual(counted, source);
    assert.equal(counted['public."odd text"'], 1000);
    // A partitioned parent has no data of its own, a materialized view is refreshed, not copied: not counted.
    for (const name of ['events', 'big'])
      assert.notEqual(shop.tables.find((t) => t.name === name)?.rowsCounted, true, `${name} is not counted`);
    assert.deepEqual(await spools(), [], 'the spool is removed after the dump');
  });

  it('a dump drill restores the dump, finds every count equal, records the restore time and cleans up', async () => {
    const { r, job } = await drillDump('latest');
    assert.equal(r.code, 0, `drill failed:\n${r.stdout}\n${r.stderr}\n${await fleet.logs()}`);
    const d = job.drill!;
    assert.equal(job.state, 'succeeded');
    assert.equal(d.ok, true);
    assert.equal(d.stage, 'done');
    assert.equal(d.dumpLabel, first.label);
    assert.deepEqual(d.dumpDatabases, ['shop']);
    assert.equal(d.countsCompared, true);
    assert.equal(d.countsEqual, true);
    assert.equal(d.tablesCompared, 5);
    assert.ok((d.rtoSeconds ?? 0) > 0, 'the restore time is recorded');
    assert.deepEqual(await readdir(scratch), [], 'the scratch area is empty after the drill');
    // The human verdict.
    const human = await fleet.cli('job', job.id);
    assert.equal(human.code, 0, human.stderr);
    // Recorded like physical drills: the history, status' last drill, the drill.completed event.
    const drills = json<{ jobId: string; result?: DrillJson }[]>(
      await fleet.cli('drills', CLUSTER, '--output', 'json'),
      'drills',
    );
    assert.equal(drills[0]!.jobId, job.id);
    assert.equal(drills[0]!.result?.dumpLabel, first.label);
    const table = await fleet.cli('drills', CLUSTER);
    assert.match(table.stdout, new RegExp(`${job.id}.*dump ${first.label}.*equal \\(5\\)`));
    const status = json<{
      clusters: { name: string; lastDrill?: { jobId: string; ok?: boolean; dumpLabel?: string } }[];
    }>(await fleet.cli('status', '--output', 'json'), 'status');
    const last = status.clusters.find((c) => c.name === CLUSTER)!.lastDrill!;
    assert.equal(last.jobId, job.id);
    assert.equal(last.ok, true);
    assert.equal(last.dumpLabel, first.label);
    const events = (await fleet.cli('events', '--cluster', CLUSTER, '--output', 'json')).stdout
      .trim()
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as { kind: string; drillCompleted?: { jobId: string; dumpLabel?: string } });
    const completed = events.find((e) => e.kind === 'drill.completed' && e.drillCompleted?.jobId === job.id);
    assert.equal(completed?.drillCompleted?.dumpLabel, first.label);
  });

  it('an agent killed -9 mid-dump: the job fails, nothing is listed, the restarted agent sweeps the spool, a new dump succeeds and restores', async () => {
    const holder = new pg.Client({ host: fleet.pg.host, port: fleet.pg.port, user: fleet.pg.user, database: 'shop' });
    await holder.connect();
    let running: Promise<RunResult> | undefined;
    try {
      // pg_dump waits for this lock with its spool made: the agent dies in the middle of the dump.
      await holder.query('BEGIN');
      await holder.query('LOCK TABLE sales.orders IN ACCESS EXCLUSIVE MODE');
      running = dumpShop('--lock-wait-timeout', '10m');
      await waitFor('pg_dump of shop to wait for its lock', async () => {
        const rows = await fleet.pg.query(
          "SELECT 1 FROM pg_stat_activity WHERE application_name = 'pgfleet-dump' AND datname = 'shop' AND wait_event_type = 'Lock'",
        );
        return rows.length > 0;
      });
      assert.equal((await spools()).length, 1, 'the dump spools under --scratch-dir');
      const agent = fleet.agent!;
      agent.child.kill('SIGKILL');
      await exited(agent);
    } finally {
      // The killed agent's pg_dump (an orphan now) gets its lock and ends.
      await holder.query('ROLLBACK').catch(() => {});
      await holder.end();
    }
    await waitFor('the orphaned pg_dump to end', async () => {
      const rows = await fleet.pg.query("SELECT 1 FROM pg_stat_activity WHERE application_name = 'pgfleet-dump'");
      return rows.length === 0;
    });
    assert.deepEqual(await listed(), [first.label]);
    assert.equal((await spools()).length, 1, 'the spool of the killed agent is left until the next start');
    await fleet.startAgent(['--scratch-dir', scratch]);
    assert.deepEqual(await spools(), [], 'the restarted agent swept the dead spool');
    // The restarted agent no longer runs the job: it fails (AgentDisconnected), nothing listed.
    const r = await running!;
    assert.notEqual(r.code, 0, 'the dump job fails');
    assert.match(r.stderr, new RegExp(ErrorCodes.AgentDisconnected.code));
    assert.deepEqual(await listed(), [first.label]);
    assert.deepEqual(await dumpDirs(), [first.label], 'nothing of the killed dump is in the repository');
    const again = await dumpShop();
    assert.equal(again.code, 0, `${again.stderr}\n${await fleet.logs()}`);
    const second = json<JobJson>(again, 'dump').dump!;
    const { r: drilled, job } = await drillDump(second.label);
    assert.equal(drilled.code, 0, `drill of the new dump failed:\n${drilled.stdout}\n${drilled.stderr}`);
    assert.equal(job.drill?.countsEqual, true);
    assert.deepEqual(await listed(), [first.label, second.label].sort());
  });

  it('a spool bound smaller than the dump fails it with DumpSpoolFull and keeps nothing', async () => {
    const before = await dumpDirs();
    const agent = fleet.agent!;
    await agent.stop();
    await fleet.startAgent(['--scratch-dir', scratch, '--dump-spool-max', '4kB']);
    try {
      const r = await dumpShop();
      assert.notEqual(r.code, 0);
      assert.match(r.stderr, new RegExp(ErrorCodes.DumpSpoolFull.code));
      assert.match(r.stderr, /--dump-spool-max/);
      assert.deepEqual(await dumpDirs(), before, 'nothing of the dump left in the repository');
      assert.equal((await listed()).length, before.length, 'nothing listed');
      assert.deepEqual(await spools(), [], 'the spool is removed');
    } finally {
      await fleet.agent!.stop();
      await fleet.startAgent(['--scratch-dir', scratch]);
    }
  });

  it('a full disk under the spool fails the dump with DiskFull and keeps nothing', async () => {
    const owner = pgOsUser();
    const small = join(fleet.dir, 'small-scratch');
    await mkdir(small);
    // The suite runs as root (it starts PostgreSQL as postgres), so it may mount a small tmpfs.
    execFileSync('mount', [
      '-t',
      'tmpfs',
      '-o',
      `size=512k,mode=0700${owner ? `,uid=${owner.uid},gid=${owner.gid}` : ''}`,
      'tmpfs',
      small,
    ]);
    const before = await dumpDirs();
    try {
      // 2-3 MB of gzip'd random text: more than the file system holds.
      await fleet.pg.query('CREATE DATABASE big');
      const c = new pg.Client({ host: fleet.pg.host, port: fleet.pg.port, user: fleet.pg.user, database: 'big' });
      await c.connect();
      await c.query(
        'CREATE TABLE noise AS SELECT g AS id, md5(random()::text) || md5(random()::text) AS t FROM generate_series(1, 60000) g',
      );
      await c.end();
      await fleet.agent!.stop();
      await fleet.startAgent(['--scratch-dir', small]);
      const r = await fleet.cli('dump', CLUSTER, '--database', 'big', '--wait');
      assert.notEqual(r.code, 0);
      assert.match(r.stderr, new RegExp(ErrorCodes.DiskFull.code));
      assert.match(r.stderr, /No space left on device/);
      assert.deepEqual(await dumpDirs(), before, 'nothing of the dump left in the repository');
      assert.equal((await listed()).length, before.length, 'nothing listed');
      assert.deepEqual(await readdir(small), [], 'the spool is removed');
    } finally {
      await fleet.agent!.stop();
      execFileSync('umount', [small]);
      await rm(small, { recursive: true, force: true });
      await fleet.startAgent(['--scratch-dir', scratch]);
    }
  });

  it('--jobs 2: files stored while pg_dump runs are byte for byte those of a dump stored after pg_dump ends, with the same rows', async () => {
    const dumpedLine = (log: string) =>
      log
        .split('\n')
        .filter((l) => l.includes('"database dumped"') && l.includes('"database":"shop"'))
        .map((l) => JSON.parse(l) as { storedWhilePgDumpRan: number })
        .at(-1);
    const early = await dumpShop('--jobs', '2');
    assert.equal(early.code, 0, `${early.stderr}\n${await fleet.logs()}`);
    const a = json<JobJson>(early, 'dump').dump!.databases.find((d) => d.name === 'shop')!;
    const earlyLine = dumpedLine(await fleet.agent!.log());
    assert.ok(earlyLine, 'the agent logs the dumped database');
    await fleet.agent!.stop();
    await fleet.startAgent(['--scratch-dir', scratch, '--dump-store-early', 'off']);
    try {
      const late = await dumpShop('--jobs', '2');
      assert.equal(late.code, 0, `${late.stderr}\n${await fleet.logs()}`);
      const b = json<JobJson>(late, 'dump').dump!.databases.find((d) => d.name === 'shop')!;
      assert.equal(dumpedLine(await fleet.agent!.log())?.storedWhilePgDumpRan, 0, 'off: everything after pg_dump');
      // pg_dump's gzip output of unchanged tables is the same bytes each time (zlib writes no
      // time into its header); toc.dat holds the dump's start time.
      const files = (d: typeof a) =>
        Object.fromEntries(d.files.filter((f) => f.name !== 'toc.dat').map((f) => [f.name, `${f.size} ${f.sha256}`]));
      assert.ok(Object.keys(files(a)).length >= 5, 'table files and large objects');
      assert.deepEqual(files(a), files(b));
      assert.deepEqual(
        a.files.map((f) => f.name),
        b.files.map((f) => f.name),
      );
      const rows = (d: typeof a) =>
        d.tables.map((t) => `${t.schema}.${t.name} ${t.rowsCounted ? String(t.rows) : '-'}`);
      assert.deepEqual(rows(a), rows(b));
      assert.deepEqual(await spools(), [], 'both spools removed');
      // How many were stored early depends on timing (a small database's files close within
      // moments of pg_dump's end); spool-drain.test.ts and open-files.test.ts prove the path itself.
      console.log(`stored while pg_dump ran: ${earlyLine!.storedWhilePgDumpRan} of ${a.files.length} files`);
    } finally {
      await fleet.agent!.stop();
      await fleet.startAgent(['--scratch-dir', scratch]);
    }
  });
});
