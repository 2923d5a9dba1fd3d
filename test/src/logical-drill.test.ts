/**
 * Dump drills and the dump spool end to end (issue 17, docs/drills.md "Dump drills",
 * docs/logical.md), on one cluster whose agent's --scratch-dir is the test's own:
 * - a dump records each table's exact rows (count(*) in pg_dump's own snapshot, dump-snapshot.ts),
 *   equal to count(*) on the source, also for a table whose text values hold newlines, carriage
 *   returns, backslashes, a literal "\." line, empty strings and NULLs; a partitioned parent is not
 *   counted (its rows are its partitions');
 * - `pgfleet drill --dump latest` restores it into a throwaway PostgreSQL, finds every count equal,
 *   records the restore time in the job, `pgfleet drills`, status' last drill and drill.completed,
 *   and leaves the scratch area empty;
 * - an agent killed -9 in the middle of a dump (one database stored, pg_dump of the next waiting
 *   for a lock): the job fails, `pgfleet dumps` lists nothing new, the spool stays until the
 *   restarted agent sweeps it, the stored files (no dump.json) stay unlisted until the restarted
 *   agent's own sweep of the repository removes them (their lease names a dead process; no dump or
 *   expire of the cluster needed), and the next dump succeeds and drills;
 * - a dump waiting for a lock with a database stored keeps every file through another dump's
 *   sweep (its lease is live: this agent runs it), then completes with every file as recorded;
 * - a spool bound smaller than the dump (--dump-spool-max) fails the dump with DumpSpoolFull,
 *   nothing listed, nothing left in the repository or the spool;
 * - a full disk under the spool (--scratch-dir on a 512 KiB tmpfs mounted by the test, which runs as root)
 *   fails the dump with DiskFull quoting pg_dump, nothing listed, nothing left;
 * - with --jobs 2, a dump whose table files were stored while pg_dump ran (the default) holds the
 *   same files byte for byte (toc.dat aside) and the same row counts as one stored after pg_dump
 *   (--dump-store-early off);
 * - `--dump-drill CRON` with catch-up: the scheduler drills the newest dump exactly once for the
 *   fire time, listed by `pgfleet drills` as scheduled, status' next run moving on;
 * - tampering (docs/drills.md "Dump drills"): the table data file of sales.orders rewritten in the
 *   repository with a row fewer (what write access to the repository without the catalog allows)
 *   fails the drill before any row is loaded, naming the file (its sha256 is the catalog's, not
 *   the repository's); the catalog's record forged to count a row more than the data holds (what a
 *   forged agent result would record) fails it with PGF-6230 naming shop.sales.orders and both
 *   counts, in `pgfleet drill`'s own output;
 * - rows committed after the agent exported the dump's snapshot (while it waits for a lock) and
 *   rows written all along pg_dump's run are not in the counts: sales.orders is recorded with the
 *   rows it had before, and the drill of that dump finds every count equal;
 * - the counts' backend runs at niceness 19 (the lowest CPU priority) while pg_dump runs (seen in
 *   /proc with pg_dump held back by a wrapper in --pg-bin-dir), and its counts are still exact.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdir, readdir, readFile, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { gunzipSync, gzipSync } from 'node:zlib';
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
    dir: string;
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
interface DrillRecordJson {
  jobId: string;
  state: string;
  scheduled?: boolean;
  result?: DrillJson;
}
interface JobJson {
  id: string;
  state: string;
  error?: { code: string; message: string };
  dump?: DumpJson;
  drill?: DrillJson;
}

// 45 min: eight cases with six dump drills; at load 30-56 on 2 cores the first six took about 18 min.
describe('dump drills and the dump spool', { timeout: 2_700_000 }, () => {
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
  const ledgerClient = async (): Promise<pg.Client> => {
    const c = new pg.Client({ host: fleet.pg.host, port: fleet.pg.port, user: fleet.pg.user, database: 'ledger' });
    await c.connect();
    return c;
  };
  const withLedger = async <T>(fn: (c: pg.Client) => Promise<T>): Promise<T> => {
    const c = await ledgerClient();
    try {
      return await fn(c);
    } finally {
      await c.end();
    }
  };
  /** shop first, then ledger (whose table the caller has locked): the dump waits with shop stored. */
  const dumpShopThenLedger = (): Promise<RunResult> =>
    fleet.cli(
      'dump',
      CLUSTER,
      '--database',
      'shop',
      '--database',
      'ledger',
      '--wait',
      '--output',
      'json',
      '--lock-wait-timeout',
      '10m',
    );
  /** Waits for that dump's pg_dump of ledger to wait for its lock; the dump's label (the one new directory). */
  const ledgerWaiting = async (before: readonly string[]): Promise<string> => {
    await waitFor('pg_dump of ledger to wait for its lock', async () => {
      const rows = await fleet.pg.query(
        "SELECT 1 FROM pg_stat_activity WHERE application_name = 'pgfleet-dump' AND datname = 'ledger' AND wait_event_type = 'Lock'",
      );
      return rows.length > 0;
    });
    const added = (await dumpDirs()).filter((l) => !before.includes(l));
    assert.equal(added.length, 1, `one new dump directory: ${added.join(', ')}`);
    return added[0]!;
  };
  /** The files under a dump's label (`<db oid>/<name>`, dump.lease, dump.json), sorted; with `stat`, each with size and mtime. */
  const dumpFiles = async (label: string, withStat = false): Promise<string[]> => {
    const root = join(fleet.repoDir, CLUSTER, 'dump', label);
    const out: string[] = [];
    for (const e of await readdir(root, { recursive: true, withFileTypes: true })) {
      if (!e.isFile()) continue;
      const rel = relative(root, join(e.parentPath, e.name));
      if (!withStat) out.push(rel);
      else if (rel !== 'dump.lease') {
        const st = await stat(join(root, rel));
        out.push(`${rel} ${st.size} ${st.mtimeMs}`);
      }
    }
    return out.sort();
  };
  const drillDump = async (label: string): Promise<{ r: RunResult; job: JobJson }> => {
    const r = await fleet.cli('drill', CLUSTER, '--dump', label, '--wait', '--output', 'json');
    return { r, job: json<JobJson>(r, 'drill --dump') };
  };

  before(async () => {
    // --schedule-interval 1: the dump drill schedule's test waits seconds, not the default minute.
    fleet = await startFleet({
      cluster: CLUSTER,
      archive: false,
      startAgent: false,
      controllerArgs: ['--schedule-interval', '1'],
    });
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

  it('--dump-drill with catch-up drills the newest dump once, recorded as a scheduled drill', async () => {
    const history = async () =>
      json<DrillRecordJson[]>(await fleet.cli('drills', CLUSTER, '--output', 'json'), 'drills');
    const earlier = new Set((await history()).map((d) => d.jobId));
    // Yearly: its latest fire time (January 1st) is due now with catch-up, and no other comes during the test.
    const set = await fleet.cli(
      'policy',
      'set',
      CLUSTER,
      '--dump-drill',
      '0 0 1 1 *',
      '--catch-up',
      'on',
      '--spread-minutes',
      '0',
    );
    assert.equal(set.code, 0, set.stderr);
    try {
      const got = await fleet.cli('policy', 'get', CLUSTER);
      assert.match(got.stdout, /^dump-drill\s+0 0 1 1 \*\s+cluster\s*$/m);
      const ran = await waitFor(
        'the scheduled dump drill to end',
        async () => {
          const mine = (await history()).filter((d) => !earlier.has(d.jobId));
          return mine.length > 0 && mine.every((d) => !/queued|dispatched|running/.test(d.state)) ? mine : undefined;
        },
        600_000,
        1000,
      );
      assert.equal(ran.length, 1, JSON.stringify(ran));
      const d = ran[0]!;
      assert.equal(d.state, 'succeeded', JSON.stringify(d));
      assert.equal(d.scheduled, true);
      assert.equal(d.result?.dumpLabel, first.label);
      assert.equal(d.result?.countsEqual, true);
      // The fire time is recorded: status' next run of the schedule is next January, and no other drill came.
      const status = json<{ clusters: { name: string; nextJob?: { kind: string; time: string } }[] }>(
        await fleet.cli('status', '--output', 'json'),
        'status',
      );
      const next = status.clusters.find((c) => c.name === CLUSTER)?.nextJob;
      assert.equal(next?.kind, 'dump-drill');
      assert.ok(next && Date.parse(next.time) > Date.now(), `next run ${next?.time} is in the future`);
      assert.deepEqual(
        (await history()).filter((x) => !earlier.has(x.jobId)).map((x) => x.jobId),
        [d.jobId],
      );
      const table = await fleet.cli('drills', CLUSTER);
      assert.match(table.stdout, new RegExp(`${d.jobId}.*dump ${first.label}`));
    } finally {
      assert.equal((await fleet.cli('policy', 'set', CLUSTER, '--dump-drill', '')).code, 0);
    }
  });

  it('a tampered dump fails its drill: a rewritten data file by its checksum, a forged row count with PGF-6230 naming the table', async () => {
    const shop = first.databases.find((d) => d.name === 'shop')!;
    const dir = join(fleet.repoDir, CLUSTER, 'dump', first.label, shop.dir);
    // sales.orders' data is the largest table file (20,000 rows against 3,000 at most).
    const files = (await readdir(dir)).filter((n) => n.endsWith('.dat.gz'));
    const sizes = await Promise.all(files.map(async (n) => (await stat(join(dir, n))).size));
    const ordersFile = files[sizes.indexOf(Math.max(...sizes))]!;
    const original = await readFile(join(dir, ordersFile));
    const lines = gunzipSync(original).toString('utf8').split('\n');
    assert.match(lines[0]!, /^1\t/, `${ordersFile} holds sales.orders from id 1`);
    // Repository write access, no catalog: the file with one row fewer, a valid gzip of valid COPY data.
    await writeFile(join(dir, ordersFile), gzipSync(lines.slice(1).join('\n')));
    try {
      const r = await fleet.cli('drill', CLUSTER, '--dump', first.label, '--wait');
      assert.notEqual(r.code, 0, r.stdout);
      const seen = `${r.stdout}\n${r.stderr}`;
      assert.match(seen, new RegExp(ErrorCodes.RestoreDumpFailed.code));
      assert.match(seen, new RegExp(`dump ${first.label} file ${shop.dir}/${ordersFile.replace('.', '\\.')}`));
      assert.match(seen, /dump drill FAILED in stage restore/);
      assert.doesNotMatch(seen, /row counts:/, 'nothing was restored to count');
    } finally {
      await writeFile(join(dir, ordersFile), original);
    }

    // A forged agent result: the files as stored, the catalog's count of sales.orders one row more.
    const catalog = new DatabaseSync(join(fleet.dir, 'catalog.db'), { timeout: 30_000 });
    const row = catalog
      .prepare('SELECT result FROM dumps WHERE cluster = ? AND label = ?')
      .get(CLUSTER, first.label) as unknown as { result: string };
    const forged = JSON.parse(row.result) as DumpJson;
    const orders = forged.databases.find((d) => d.name === 'shop')!.tables.find((t) => t.name === 'orders')!;
    assert.equal(String(orders.rows), '20000');
    orders.rows = '20001';
    const setResult = (text: string) =>
      catalog.prepare('UPDATE dumps SET result = ? WHERE cluster = ? AND label = ?').run(text, CLUSTER, first.label);
    setResult(JSON.stringify(forged));
    try {
      const r = await fleet.cli('drill', CLUSTER, '--dump', first.label, '--wait');
      assert.notEqual(r.code, 0, r.stdout);
      const seen = `${r.stdout}\n${r.stderr}`;
      assert.match(seen, new RegExp(ErrorCodes.DumpDrillCountsDiffer.code));
      assert.match(seen, /dump drill FAILED in stage counts/);
      assert.match(
        seen,
        /row counts differ from the dump's in 1 table\(s\): shop\.sales\.orders \(dump 20001, restored 20000\)/,
      );
      // The table of differences names it too.
      assert.match(seen, /^shop\s+sales\.orders\s+20001\s+20000\s*$/m);
      assert.deepEqual(await readdir(scratch), [], 'the scratch area is empty after the failed drill');
    } finally {
      setResult(row.result);
      catalog.close();
    }
    // Untampered again: the drill passes.
    const { r, job } = await drillDump(first.label);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(job.drill?.countsEqual, true);
  });

  it('an agent killed -9 mid-dump: the job fails, nothing is listed, the restarted agent sweeps the spool and removes what the killed one stored, the next dump succeeds', async () => {
    await fleet.pg.query('CREATE DATABASE ledger');
    await withLedger((c) => c.query('CREATE TABLE entries AS SELECT g AS id FROM generate_series(1, 1000) g'));
    const before = await dumpDirs();
    const holder = await ledgerClient();
    let running: Promise<RunResult> | undefined;
    let killed: string;
    try {
      // shop is dumped and stored, then pg_dump of ledger waits for this lock: the agent dies with
      // a database's files in the repository and no dump.json.
      await holder.query('BEGIN');
      await holder.query('LOCK TABLE entries IN ACCESS EXCLUSIVE MODE');
      running = dumpShopThenLedger();
      killed = await ledgerWaiting(before);
      assert.equal((await spools()).length, 1, 'the dump spools under --scratch-dir');
      const agent = fleet.agent!;
      agent.child.kill('SIGKILL');
      await exited(agent);
    } finally {
      // The killed agent's pg_dump (an orphan now) gets its lock and ends.
      await holder.query('ROLLBACK').catch(() => {});
      await holder.end();
    }
    const stored = await dumpFiles(killed);
    assert.ok(
      stored.some((f) => /^\d+\/\d+\.dat\.gz$/.test(f)) &&
        stored.includes('dump.lease') &&
        !stored.includes('dump.json'),
      `the killed dump left shop's files and its lease, no dump.json: ${stored.join(', ')}`,
    );
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
    // The restarted agent sweeps the repository too (in the background from its start, and hourly):
    // the killed dump's lease names a process of this host that is gone. No dump or expire needed.
    const removedLine = new RegExp(`"label":"${killed}".*removed the files of a dump whose agent died`);
    await waitFor('the restarted agent to remove what the killed dump stored', async () =>
      removedLine.test(await fleet.agent!.log()),
    );
    assert.deepEqual(await dumpDirs(), before, 'nothing of the killed dump is left in the repository');
    const again = await dumpShop();
    assert.equal(again.code, 0, `${again.stderr}\n${await fleet.logs()}`);
    const second = json<JobJson>(again, 'dump').dump!;
    assert.deepEqual(await dumpDirs(), [...before, second.label].sort());
    const { r: drilled, job } = await drillDump(second.label);
    assert.equal(drilled.code, 0, `drill of the new dump failed:\n${drilled.stdout}\n${drilled.stderr}`);
    assert.equal(job.drill?.countsEqual, true);
    assert.deepEqual(await listed(), [first.label, second.label].sort());
  });

  it("a running dump's files are never touched: a dump waiting for a lock keeps what it stored through another dump's sweep, then completes", async () => {
    const before = await dumpDirs();
    const holder = await ledgerClient();
    let running: Promise<RunResult> | undefined;
    let waiting: string;
    let kept: string[];
    try {
      await holder.query('BEGIN');
      await holder.query('LOCK TABLE entries IN ACCESS EXCLUSIVE MODE');
      running = dumpShopThenLedger();
      waiting = await ledgerWaiting(before);
      kept = await dumpFiles(waiting, true);
      // Another dump of the cluster meanwhile: its sweep runs while this one waits.
      const other = await dumpShop();
      assert.equal(other.code, 0, `${other.stderr}\n${await fleet.logs()}`);
      assert.deepEqual(await dumpFiles(waiting, true), kept, 'the waiting dump keeps every file it stored');
      assert.ok(!(await listed()).includes(waiting), 'a running dump is not listed');
    } finally {
      await holder.query('ROLLBACK').catch(() => {});
      await holder.end();
    }
    const r = await running!;
    assert.equal(r.code, 0, `the waiting dump completes:\n${r.stderr}\n${await fleet.logs()}`);
    const done = json<JobJson>(r, 'dump').dump!;
    assert.equal(done.label, waiting);
    assert.ok((await listed()).includes(waiting));
    assert.doesNotMatch(await fleet.agent!.log(), new RegExp(`"label":"${waiting}".*removed the files of a dump`));
    // Every file its dump.json names is in the repository with the recorded checksum (codec none, no encryption).
    for (const d of done.databases)
      for (const f of d.files) {
        const bytes = await readFile(join(fleet.repoDir, CLUSTER, 'dump', waiting, d.dir, f.name));
        assert.equal(createHash('sha256').update(bytes).digest('hex'), f.sha256, `${d.name}/${f.name}`);
      }
    assert.deepEqual(
      (await dumpFiles(waiting)).filter((f) => f === 'dump.lease'),
      [],
      'its lease went with its end',
    );
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
  it("rows written while a dump runs: its counts are the rows of pg_dump's snapshot, which the drill restores", async () => {
    const before = await withShop(async (c) =>
      Number((await c.query<{ n: string }>('SELECT count(*)::text AS n FROM sales.orders')).rows[0]!.n),
    );
    const holder = new pg.Client({ host: fleet.pg.host, port: fleet.pg.port, user: fleet.pg.user, database: 'shop' });
    await holder.connect();
    let running: Promise<RunResult> | undefined;
    let writing: Promise<void> | undefined;
    let stop = false;
    try {
      // The agent exports the snapshot, then waits for its locks: rows committed now are after it.
      await holder.query('BEGIN');
      await holder.query('LOCK TABLE sales.empty IN ACCESS EXCLUSIVE MODE');
      running = dumpShop('--lock-wait-timeout', '10m');
      await waitFor('the dump to wait for its lock in shop', async () => {
        const rows = await fleet.pg.query(
          "SELECT 1 FROM pg_stat_activity WHERE application_name = 'pgfleet-dump' AND datname = 'shop' AND wait_event_type = 'Lock'",
        );
        return rows.length > 0;
      });
      await withShop((c) =>
        c.query("INSERT INTO sales.orders SELECT g, 'after the snapshot' FROM generate_series(1000001, 1000500) g"),
      );
      // And writes all along pg_dump's run and the counts.
      writing = withShop(async (c) => {
        for (let id = 2_000_000; !stop; id += 50)
          await c.query(
            "INSERT INTO sales.orders SELECT g, 'during' FROM generate_series($1::bigint, $1::bigint + 49) g",
            [id],
          );
      });
      await holder.query('ROLLBACK');
      const r = await running;
      assert.equal(r.code, 0, `${r.stderr}\n${await fleet.logs()}`);
      const shop = json<JobJson>(r, 'dump').dump!.databases.find((d) => d.name === 'shop')!;
      const orders = shop.tables.find((t) => t.schema === 'sales' && t.name === 'orders')!;
      assert.equal(orders.rowsCounted, true);
      assert.equal(Number(orders.rows), before, 'the rows of the snapshot, none written after it');
      stop = true;
      await writing;
      const { r: drilled, job } = await drillDump(json<JobJson>(r, 'dump').dump!.label);
      assert.equal(drilled.code, 0, `drill failed:\n${drilled.stdout}\n${drilled.stderr}`);
      assert.equal(job.drill?.countsEqual, true);
      assert.equal(job.drill?.tablesCompared, 5);
    } finally {
      stop = true;
      await writing?.catch(() => {});
      await holder.query('ROLLBACK').catch(() => {});
      await holder.end();
      await running?.catch(() => {});
      await withShop((c) => c.query('DELETE FROM sales.orders WHERE id > 1000000'));
    }
  });
  it("counts rows at the lowest CPU priority: the counting backend's niceness is 19 while pg_dump runs, the counts exact", async () => {
    // pg_dump behind a gate (--pg-bin-dir of wrappers): it waits for the test's go, so the
    // snapshot's backend, its counts done, stays while the test looks at it.
    const bin = join(fleet.dir, 'pg-bin-gate');
    const go = join(bin, 'go');
    await mkdir(bin, { recursive: true });
    for (const p of ['pg_dumpall', 'pg_restore']) await symlink(join(fleet.pg.binDir, p), join(bin, p));
    await writeFile(
      join(bin, 'pg_dump'),
      `#!/bin/sh\n[ "$1" = --version ] || while [ ! -e '${go}' ]; do sleep 0.05; done\nexec '${join(fleet.pg.binDir, 'pg_dump')}' "$@"\n`,
      { mode: 0o755 },
    );
    const source = await withShop(async (c) =>
      Number((await c.query<{ n: string }>('SELECT count(*)::text AS n FROM sales.orders')).rows[0]!.n),
    );
    await fleet.agent!.stop();
    await fleet.startAgent(['--scratch-dir', scratch, '--pg-bin-dir', bin]);
    let running: Promise<RunResult> | undefined;
    try {
      running = dumpShop();
      // The counts run in the snapshot's transaction (the largest table first), each after the
      // backend was reniced; the transaction stays while pg_dump waits at the gate.
      const pid = await waitFor('a count in the dump snapshot', async () => {
        const rows = await fleet.pg.query<{ pid: number }>(
          `SELECT pid FROM pg_stat_activity WHERE application_name = 'pgfleet-dump' AND datname = 'shop'
              AND query LIKE 'SELECT count(*)%'`,
        );
        return rows[0]?.pid;
      });
      const procStat = await readFile(`/proc/${pid}/stat`, 'utf8');
      // Field 19 of /proc/<pid>/stat: the niceness; the fields after the name start at field 3.
      assert.equal(Number(procStat.slice(procStat.lastIndexOf(')') + 2).split(' ')[16]), 19, procStat);
      await writeFile(go, '');
      const r = await running;
      assert.equal(r.code, 0, `${r.stderr}\n${await fleet.logs()}`);
      const orders = json<JobJson>(r, 'dump')
        .dump!.databases.find((d) => d.name === 'shop')!
        .tables.find((t) => t.schema === 'sales' && t.name === 'orders')!;
      assert.equal(orders.rowsCounted, true);
      assert.equal(Number(orders.rows), source);
      // Nothing said about a renice refused (the agent runs as the server's OS user here).
      assert.doesNotMatch(await fleet.agent!.log(), /could not lower the priority/);
    } finally {
      await writeFile(go, '').catch(() => {});
      await running?.catch(() => {});
      await fleet.agent!.stop();
      await fleet.startAgent(['--scratch-dir', scratch]);
    }
  });
});
