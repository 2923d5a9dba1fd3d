/**
 * Restore drills end to end (docs/drills.md), on a pgbench database (`pgbench -i -s 1`) with a
 * real backup and archived WAL:
 * - `pgfleet drill --wait` passes: restored, recovered to a fresh restore point, promoted, amcheck
 *   clean, row counts equal to the source's (a quiet source: change bound 0), RTO recorded in the
 *   job, in the drill history and in the drill.completed event; the scratch directory is gone, the
 *   source's rows and statistics are untouched, and the repository gets nothing but the WAL the
 *   source archives itself (no new timeline, no backup object changed);
 * - `--on AGENT`: a second agent drills while the cluster's agent captures the source counts;
 * - on a busy source (pgbench running) the counts compare within the change bound;
 * - the capture locks each table only while it counts it (DDL on a counted table does not wait for
 *   the rest), a TRUNCATE between the count and the restore point widens the bound instead of
 *   failing the drill, and a table held by DDL fails the capture fast, naming it;
 * - verify emits verify.completed with its verdict counts;
 * - a drill schedule (policy --drill) starts a drill without a human;
 * - a drill over a broken repository fails loudly: a WAL segment missing on the way to the target
 *   (stage recovery, the segment named, PostgreSQL's FATAL line quoted from the copy's log before
 *   it was removed, in the job, `pgfleet drills` and drill.failed), a flipped byte in a backup file
 *   (stage restore, the file named);
 * - `--keep`: a passing drill's copy stopped cleanly, a failing one's (a WAL segment the backup
 *   needs is missing) with its server log, both reported and left alone by the agent's next start
 *   until their marker is removed;
 * - teardown: SIGTERM mid-drill stops the copy's server and removes the copy before the agent
 *   exits; an agent killed mid-drill has its leftover server stopped and copy removed by its next
 *   start;
 * - the throwaway server itself (ScratchPostgres on a data directory with an enabled
 *   subscription): no apply worker reaches the real publisher, memory settings are the drill's,
 *   settings recovery checks keep the source's values.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { dirname, join, relative } from 'node:path';
import { pathToFileURL } from 'node:url';
import pg from 'pg';
import { ErrorCodes, sleep } from '@pgfleet/core';
import { JobState } from '@pgfleet/proto';
import {
  chownToPostgres,
  makeTempDir,
  pgBinDir,
  pgEnvForChild,
  removeDir,
  runAsPostgres,
  startPostgres,
  type PgInstance,
} from '@pgfleet/testkit';
import {
  AGENT_BIN,
  INSECURE_ARGS,
  REPO_ROOT,
  agentRunArgs,
  startDaemon,
  startFleet,
  waitFor,
  type Daemon,
  type Fleet,
  type RunResult,
} from './harness.js';

const CLUSTER = 'drl';

interface TableCountJson {
  database: string;
  schema: string;
  table: string;
  rows: number;
}
interface CountDiffJson {
  database: string;
  schema: string;
  table: string;
  sourceRows?: number;
  restoredRows?: number;
}

/** PostgreSQL 15's FATAL when the WAL ends before the recovery target (a segment after the backup's is missing). */
const TARGET_NOT_REACHED = 'FATAL: recovery ended before configured recovery target was reached';
/** ... and when the backup's first segment, holding its checkpoint, is missing. */
const NO_CHECKPOINT = 'FATAL: could not locate required checkpoint record';
/** ... and when the repository holds a timeline that forked off before the backup. */
const STRAY_TIMELINE = "FATAL: requested timeline 2 is not a child of this server's history";

/** True while the process runs (a zombie waiting for its parent to reap it does not). */
function running(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return !/^[ZX]/.test(stat.slice(stat.lastIndexOf(')') + 2));
  } catch {
    return false;
  }
}

/** A session of its own on the source, e.g. to hold a lock while a drill captures. */
async function session(db: PgInstance): Promise<pg.Client> {
  const c = new pg.Client({ connectionString: db.connectionString });
  c.on('error', () => {});
  await c.connect();
  return c;
}
interface DrillJson {
  backupLabel: string;
  ok: boolean;
  stage: string;
  reasons: string[];
  restoreSeconds: number;
  recoverySeconds: number;
  rtoSeconds: number;
  recoveredLsn: string;
  databasesChecked: number;
  relationsChecked: number;
  amcheckFindings: unknown[];
  countsCompared: boolean;
  tablesCompared: number;
  countsEqual: boolean;
  countDiffs: CountDiffJson[];
  countChangeBound: number;
  source?: { restorePoint: string; lsn: string; tables: TableCountJson[]; changeBound: number };
  postgresLogProblems?: string[];
  postgresLogTail?: string[];
  keptDir?: string;
}
interface JobJson {
  id: string;
  kind: string;
  state: string;
  agentId: string;
  drill?: DrillJson;
  capture?: { restorePoint: string; tables: TableCountJson[] };
  error?: { code: string; message: string };
}
interface DrillRecordJson {
  jobId: string;
  state: string;
  scheduled: boolean;
  agentId: string;
  result?: DrillJson;
}
interface EventJson {
  kind: string;
  drillCompleted?: Record<string, unknown>;
  drillFailed?: Record<string, unknown>;
  verifyCompleted?: Record<string, unknown>;
}

describe('restore drills: a pgbench cluster restored, checked, counted and timed', { timeout: 1_800_000 }, () => {
  let fleet: Fleet;
  let scratch: string;
  let backupLabel: string;
  let walStart: string;
  let walStop: string;

  /** The cluster's drills as the admin API lists them (what `pgfleet drills` prints), for polls. */
  const drillRecords = async () => (await fleet.admin!.listDrills({ cluster: CLUSTER })).drills;
  const json = <T>(r: RunResult, what: string): T => {
    try {
      return JSON.parse(r.stdout) as T;
    } catch {
      return assert.fail(`${what} printed no JSON (exit ${r.code}):\n${r.stdout}\n${r.stderr}`);
    }
  };

  async function drill(...args: string[]): Promise<{ r: RunResult; job: JobJson }> {
    const r = await fleet.cli('drill', CLUSTER, '--wait', '--output', 'json', ...args);
    return { r, job: json<JobJson>(r, `drill ${args.join(' ')}`) };
  }

  async function events(): Promise<EventJson[]> {
    const r = await fleet.cli('events', '--cluster', CLUSTER, '--output', 'json', '--limit', '500');
    assert.equal(r.code, 0, r.stderr);
    return r.stdout
      .trim()
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as EventJson);
  }

  /** Every file of the repository: relative path -> size and mtime. */
  async function repoListing(): Promise<Map<string, string>> {
    const out = new Map<string, string>();
    const walk = async (dir: string): Promise<void> => {
      for (const e of await readdir(dir, { withFileTypes: true })) {
        const p = join(dir, e.name);
        if (e.isDirectory()) await walk(p);
        else {
          const s = await stat(p);
          out.set(relative(fleet.repoDir, p), `${s.size}/${s.mtimeMs}`);
        }
      }
    };
    await walk(fleet.repoDir);
    return out;
  }

  /** Per-table write counters of the source, read fresh. */
  async function sourceWrites(): Promise<string> {
    const rows = await fleet.pg.query<{ t: string; n: string }>(
      'SELECT relname AS t, (n_tup_ins + n_tup_upd + n_tup_del)::text AS n FROM pg_stat_user_tables ORDER BY relname',
    );
    return JSON.stringify(rows);
  }

  async function walObject(name: string): Promise<string> {
    const dir = join(fleet.repoDir, CLUSTER, 'wal', name.slice(0, 16));
    const f = (await readdir(dir)).find((x) => x.startsWith(`${name}-`));
    assert.ok(f, `WAL ${name} archived`);
    return join(dir, f);
  }

  const scratchEmpty = async () =>
    assert.deepEqual(await readdir(scratch), [], 'the scratch directory is removed after the drill');

  /** A drill's PostgreSQL running from the scratch area, if any: its pid and drill directory. */
  async function drillPostmaster(): Promise<{ pid: number; dir: string } | undefined> {
    for (const d of await readdir(scratch).catch(() => [] as string[])) {
      const pid = Number(
        (await readFile(join(scratch, d, 'data', 'postmaster.pid'), 'utf8').catch(() => '')).split('\n')[0],
      );
      if (pid > 0 && running(pid)) return { pid, dir: join(scratch, d) };
    }
    return undefined;
  }

  async function exited(agent: Daemon): Promise<void> {
    if (agent.child.exitCode !== null || agent.child.signalCode !== null) return;
    await new Promise((r) => agent.child.once('exit', r));
  }

  before(async () => {
    fleet = await startFleet({ cluster: CLUSTER, controllerArgs: ['--schedule-interval', '1'], startAgent: false });
    scratch = join(fleet.dir, 'scratch');
    await fleet.startAgent(['--scratch-dir', scratch]);
    await runAsPostgres(
      join(fleet.pg.binDir, 'pgbench'),
      ['-i', '-s', '1', '-q', '-h', '127.0.0.1', '-p', String(fleet.pg.port), '-U', 'postgres', 'postgres'],
      { timeoutMs: 120_000 },
    );
    const b = await fleet.cli('backup', CLUSTER, '--wait', '--output', 'json');
    assert.equal(b.code, 0, `backup failed:\n${b.stdout}\n${b.stderr}\n${await fleet.logs()}`);
    const backup = json<{ backup: { label: string; walStart: string; walStop: string } }>(b, 'backup').backup;
    backupLabel = backup.label;
    walStart = backup.walStart;
    walStop = backup.walStop;
  });

  after(async () => {
    await fleet?.stop();
  });

  it('passes on a quiet pgbench source: amcheck clean, counts equal, RTO in the job, the history and drill.completed; nothing else touched', async (t) => {
    const repoBefore = await repoListing();
    const writesBefore = await sourceWrites();
    const { r, job } = await drill();
    assert.equal(r.code, 0, `drill failed:\n${r.stdout}\n${r.stderr}\n${await fleet.logs()}`);
    const d = job.drill!;
    assert.equal(job.state, 'succeeded');
    assert.equal(d.ok, true);
    assert.equal(d.stage, 'done');
    assert.equal(d.backupLabel, backupLabel);
    assert.deepEqual(d.reasons, []);
    assert.deepEqual(d.amcheckFindings, []);
    assert.ok(
      d.databasesChecked >= 1 && d.relationsChecked >= 8,
      `amcheck covered ${d.relationsChecked} relations in ${d.databasesChecked} database(s)`,
    );
    assert.ok(d.restoreSeconds > 0 && d.recoverySeconds > 0);
    assert.ok(Math.abs(d.rtoSeconds - (d.restoreSeconds + d.recoverySeconds)) < 1e-6, 'RTO = restore + recovery');
    assert.ok(d.recoveredLsn, 'recovered LSN recorded');
    // The counts: taken on the source at the drill's restore point, equal in the copy.
    assert.equal(d.source?.restorePoint, `pgfleet-drill-${job.id}`);
    assert.equal(d.countsCompared, true);
    assert.equal(d.countsEqual, true);
    assert.equal(d.countChangeBound, 0, 'a quiet source: exact comparison');
    const counts = new Map(d.source!.tables.map((t) => [`${t.database}.${t.schema}.${t.table}`, t.rows]));
    assert.equal(counts.get('postgres.public.pgbench_accounts'), 100000);
    assert.equal(counts.get('postgres.public.pgbench_branches'), 1);
    assert.equal(counts.get('postgres.public.pgbench_tellers'), 10);
    assert.equal(d.tablesCompared, d.source!.tables.length);
    await scratchEmpty();
    t.diagnostic(
      `quiet drill: RTO ${d.rtoSeconds.toFixed(2)} s (restore ${d.restoreSeconds.toFixed(2)} s, recovery ${d.recoverySeconds.toFixed(2)} s), ${d.relationsChecked} relations checked, ${d.tablesCompared} tables compared`,
    );

    const history = json<DrillRecordJson[]>(await fleet.cli('drills', CLUSTER, '--output', 'json'), 'drills');
    const rec = history.find((h) => h.jobId === job.id);
    assert.ok(rec, 'the drill is in the history');
    assert.equal(rec.state, 'succeeded');
    assert.equal(rec.scheduled, false);
    assert.equal(rec.result?.rtoSeconds, d.rtoSeconds);
    const table = await fleet.cli('drills', CLUSTER);
    assert.match(table.stdout, new RegExp(`${job.id}.*succeeded.*manual.*${backupLabel}.*clean.*equal`));

    const completed = (await events()).find((e) => e.kind === 'drill.completed' && e.drillCompleted?.jobId === job.id);
    assert.ok(completed, 'drill.completed in the catalog');
    assert.equal(completed.drillCompleted!.rtoSeconds, d.rtoSeconds);
    assert.equal(completed.drillCompleted!.countsEqual, true);
    assert.equal(completed.drillCompleted!.backupLabel, backupLabel);

    // The source: the same rows and no write of ours (the restore point is WAL only); amcheck only in the copy.
    assert.equal(await sourceWrites(), writesBefore);
    assert.deepEqual(await fleet.pg.query("SELECT extname FROM pg_extension WHERE extname = 'amcheck'"), []);
    // Its repository: every object as it was; new ones only the WAL the source archived (no timeline 2 of the promoted copy).
    const repoAfter = await repoListing();
    for (const [path, sig] of repoBefore) assert.equal(repoAfter.get(path), sig, `${path} unchanged`);
    const added = [...repoAfter.keys()].filter((p) => !repoBefore.has(p));
    assert.ok(added.length > 0, 'the WAL of the restore point was archived');
    for (const p of added)
      assert.match(
        p,
        new RegExp(`^${CLUSTER}/wal/00000001[0-9A-F]{8}/00000001[0-9A-F]{16}-`),
        `only the source's own WAL is new: ${p}`,
      );
  });

  it("--on another agent: the cluster's agent captures the counts, the other one drills", async () => {
    const spare: Daemon = startDaemon(
      AGENT_BIN,
      agentRunArgs(fleet.controllerAddress, CLUSTER, fleet.pg, [
        '--agent-id',
        'spare',
        '--repo-path',
        fleet.repoDir,
        '--socket',
        join(fleet.dir, 'spare.sock'),
        '--archive-ahead',
        '0',
        '--scratch-dir',
        scratch,
        ...INSECURE_ARGS,
      ]),
      join(fleet.dir, 'agent-spare.log'),
      { asPg: true },
    );
    try {
      await waitFor('the spare agent to connect', async () => /connected to controller/.test(await spare.log()));
      const { r, job } = await drill('--on', 'spare');
      assert.equal(
        r.code,
        0,
        `drill --on failed:\n${r.stdout}\n${r.stderr}\n${await spare.log()}\n${await fleet.logs()}`,
      );
      assert.equal(job.agentId, 'spare');
      assert.equal(job.drill?.ok, true);
      assert.equal(job.drill?.countsEqual, true);
      assert.equal(job.drill?.source?.restorePoint, `pgfleet-drill-${job.id}`);
      const jobs = json<JobJson[]>(await fleet.cli('jobs', '--cluster', CLUSTER, '--output', 'json'), 'jobs');
      const capture = jobs.find((j) => j.kind === 'capture' && j.capture?.restorePoint === `pgfleet-drill-${job.id}`);
      assert.ok(capture, "a capture job on the cluster's agent");
      assert.equal(capture.state, 'succeeded');
      assert.notEqual(capture.agentId, 'spare');
      await scratchEmpty();
    } finally {
      await spare.stop();
    }
  });

  it('on a busy source (pgbench running) the counts are compared within the change bound', async (t) => {
    // pgbench runs for longer than any drill takes and is stopped once the drill is done, so the
    // capture sees it committing however long the CLI and the dispatch take to start.
    const history = async () =>
      BigInt((await fleet.pg.query<{ n: string }>('SELECT count(*) AS n FROM pgbench_history'))[0]!.n);
    const idle = await history();
    const bench = spawn(
      join(fleet.pg.binDir, 'pgbench'),
      ['-T', '600', '-c', '2', '-h', '127.0.0.1', '-p', String(fleet.pg.port), '-U', 'postgres', 'postgres'],
      { stdio: ['ignore', 'ignore', 'pipe'], ...pgEnvForChild() },
    );
    let benchErr = '';
    bench.stderr.on('data', (b: Buffer) => (benchErr += b.toString()));
    bench.once('error', (e) => (benchErr += e.message));
    const benchExit = new Promise<void>((r) => bench.once('close', () => r()));
    try {
      await waitFor(
        'pgbench to commit',
        async () => bench.exitCode === null && (await history()) > idle,
        120_000,
        100,
      ).catch((e: Error) => assert.fail(`${e.message}\n${benchErr}`));
      const { r, job } = await drill();
      assert.equal(bench.exitCode, null, `pgbench ran throughout the drill:\n${benchErr}`);
      assert.equal(r.code, 0, `drill on a busy source failed:\n${r.stdout}\n${r.stderr}`);
      const d = job.drill!;
      assert.equal(d.countsCompared, true);
      assert.ok(
        d.countChangeBound > 0,
        `pgbench inserted rows while the source was counted (bound ${d.countChangeBound})`,
      );
      assert.deepEqual(d.amcheckFindings, []);
      t.diagnostic(
        `busy drill: change bound ${d.countChangeBound}, ${d.countDiffs.length} table(s) differ, RTO ${d.rtoSeconds.toFixed(2)} s`,
      );
    } finally {
      bench.kill('SIGKILL');
      await benchExit;
    }
  });

  it('tables are locked only while counted, and a TRUNCATE between the count and the restore point widens the bound', async (t) => {
    // Counted in name order: drill_victim first, zz_drill_blocker last (held by a session meanwhile).
    await fleet.pg.query(
      'CREATE TABLE drill_victim AS SELECT g AS id FROM generate_series(1, 1000) g; CREATE TABLE zz_drill_blocker (id int); INSERT INTO zz_drill_blocker VALUES (1)',
    );
    const blocker = await session(fleet.pg);
    let outcome: Promise<{ r: RunResult; job: JobJson }> | undefined;
    try {
      await blocker.query('BEGIN');
      await blocker.query('LOCK TABLE zz_drill_blocker IN ACCESS EXCLUSIVE MODE');
      outcome = drill();
      await waitFor(
        'the capture to wait for zz_drill_blocker',
        async () =>
          (await fleet.pg.query("SELECT 1 FROM pg_locks WHERE relation = 'zz_drill_blocker'::regclass AND NOT granted"))
            .length > 0,
        120_000,
        50,
      );
      // drill_victim was counted already: its lock is released, DDL on it does not queue behind the rest of the capture.
      const t0 = Date.now();
      await fleet.pg.query("SET lock_timeout = '1s'; TRUNCATE drill_victim");
      t.diagnostic(`TRUNCATE of a counted table during the capture took ${Date.now() - t0} ms`);
    } finally {
      await blocker.query('COMMIT').catch(() => {});
      await blocker.end();
    }
    const { r, job } = await outcome;
    assert.equal(r.code, 0, `drill with a TRUNCATE during the capture failed:\n${r.stdout}\n${r.stderr}`);
    const d = job.drill!;
    assert.equal(d.ok, true);
    assert.equal(d.countsCompared, true);
    // The restore point follows the TRUNCATE: the copy has none of the 1000 counted rows, and the bound allows for them.
    const victim = d.countDiffs.find((x) => x.table === 'drill_victim');
    assert.deepEqual(victim && [victim.sourceRows, victim.restoredRows ?? 0], [1000, 0]);
    assert.ok(d.countChangeBound >= 1000, `bound ${d.countChangeBound} covers the truncated rows`);
    await scratchEmpty();
    await fleet.pg.query('DROP TABLE drill_victim, zz_drill_blocker');
  });

  it('a table held by DDL: the capture fails fast, naming it, instead of queueing behind it', async (t) => {
    await fleet.pg.query('CREATE TABLE zz_drill_locked (id int)');
    const blocker = await session(fleet.pg);
    const t0 = Date.now();
    let result: { r: RunResult; job: JobJson };
    let stillLocked: boolean;
    try {
      await blocker.query('BEGIN');
      await blocker.query('LOCK TABLE zz_drill_locked IN ACCESS EXCLUSIVE MODE');
      result = await drill();
      // The lock is let go only after the drill ended: a capture queueing behind it would never have returned.
      stillLocked =
        (
          await fleet.pg.query(
            "SELECT 1 FROM pg_locks WHERE relation = 'zz_drill_locked'::regclass AND mode = 'AccessExclusiveLock' AND granted",
          )
        ).length === 1;
    } finally {
      await blocker.query('COMMIT').catch(() => {});
      await blocker.end();
    }
    const seconds = (Date.now() - t0) / 1000;
    const { r, job } = result;
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /PGF-3004/);
    assert.equal(job.state, 'failed');
    assert.equal(job.drill?.stage, 'capture');
    assert.match(
      job.drill!.reasons.join('\n'),
      /table postgres\.public\.zz_drill_locked stayed locked by another session/,
    );
    // It gave up (a bounded number of short lock waits) while the table was still held, instead of
    // queueing until the DDL ends: shown by the outcome, not by how long a loaded machine took.
    assert.match(job.drill!.reasons.join('\n'), /\d+ waits of \S+ for its ACCESS SHARE lock timed out/);
    assert.equal(stillLocked, true, 'the drill ended while the table was still locked: it did not wait for the lock');
    t.diagnostic(`capture gave up on the locked table after ${seconds.toFixed(1)} s`);
    await scratchEmpty();
    await fleet.pg.query('DROP TABLE zz_drill_locked');
  });

  it('verify.completed carries the verdict counts of a verify job', async () => {
    const r = await fleet.cli('verify', CLUSTER, '--wait', '--output', 'json');
    assert.equal(r.code, 0, r.stderr);
    const job = json<JobJson>(r, 'verify');
    const ev = (await events()).find((e) => e.kind === 'verify.completed' && e.verifyCompleted?.jobId === job.id);
    assert.ok(ev, 'verify.completed in the catalog');
    assert.equal(ev.verifyCompleted!.ok, true);
    assert.equal(ev.verifyCompleted!.backupsTotal, 1);
    assert.equal(ev.verifyCompleted!.backupsRestorable, 1);
    assert.ok(Number(ev.verifyCompleted!.walSegmentsChecked) > 0);
  });

  it('a drill schedule starts a drill without a human', async () => {
    // --catch-up on: the minute just passed runs at once (a new schedule otherwise waits for the next).
    const set = await fleet.cli('policy', 'set', CLUSTER, '--drill', '* * * * *', '--catch-up', 'on');
    assert.equal(set.code, 0, set.stderr);
    let rec: DrillRecordJson | undefined;
    try {
      // Polled through the admin API (a `pgfleet` process a second through a whole drill was
      // most of this test's CPU); the drill it waited for is then read with `pgfleet drills`.
      await waitFor(
        'a scheduled drill to end',
        async () =>
          (await drillRecords()).some(
            (d) => d.scheduled && (d.state === JobState.SUCCEEDED || d.state === JobState.FAILED),
          ),
        120_000,
        1000,
      );
      const history = json<DrillRecordJson[]>(await fleet.cli('drills', CLUSTER, '--output', 'json'), 'drills');
      const failed = history.find((h) => h.scheduled && h.state === 'failed');
      assert.equal(failed, undefined, `scheduled drill failed: ${JSON.stringify(failed)}`);
      rec = history.find((h) => h.scheduled && h.state === 'succeeded');
      assert.ok(rec, `a scheduled drill succeeded: ${JSON.stringify(history)}`);
    } finally {
      assert.equal((await fleet.cli('policy', 'set', CLUSTER, '--drill', '')).code, 0);
    }
    assert.equal(rec.result?.ok, true);
    assert.ok(rec.result!.rtoSeconds > 0);
    const ev = (await events()).find((e) => e.kind === 'drill.completed' && e.drillCompleted?.jobId === rec!.jobId);
    assert.equal(ev?.drillCompleted?.scheduled, true);
    // A drill that fired just before the schedule was removed runs to its end before the next test.
    await waitFor(
      'no drill running',
      async () =>
        !(await drillRecords()).some((d) => [JobState.QUEUED, JobState.DISPATCHED, JobState.RUNNING].includes(d.state)),
      120_000,
      1000,
    );
  });

  it('a WAL segment missing on the way to the target: fails in recovery naming the segment (drill.failed)', async () => {
    await fleet.pg.query('INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (1, 1, 1, 42, now())');
    await fleet.switchAndArchive();
    await fleet.pg.query('INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (1, 1, 2, 43, now())');
    const [{ lsn }] = (await fleet.pg.query<{ lsn: string }>('SELECT pg_current_wal_lsn()::text AS lsn')) as [
      { lsn: string },
    ];
    await fleet.switchAndArchive();
    // The first segment after the backup's WAL: recovery cannot get past it.
    const victim = `${walStop.slice(0, 16)}${(parseInt(walStop.slice(16), 16) + 1).toString(16).toUpperCase().padStart(8, '0')}`;
    const path = await walObject(victim);
    const bytes = await readFile(path);
    await rm(path);
    try {
      const { r, job } = await drill('--target-lsn', lsn);
      assert.notEqual(r.code, 0, 'a failed drill exits non-zero');
      assert.match(r.stderr, /PGF-4005/);
      assert.equal(job.state, 'failed');
      const d = job.drill!;
      assert.equal(d.ok, false);
      assert.equal(d.stage, 'recovery');
      assert.match(
        d.reasons.join('\n'),
        new RegExp(`WAL segment ${victim} needed by recovery is not in the repository`),
      );
      assert.equal(d.countsCompared, false);
      // PostgreSQL's own words, read from the copy's log before the teardown removed it.
      assert.equal(d.reasons[0], `recovery failed: ${TARGET_NOT_REACHED}`);
      assert.match(r.stderr, new RegExp(`PostgreSQL: ${TARGET_NOT_REACHED}`));
      assert.ok(
        d.postgresLogProblems?.some((l) => l.endsWith(`FATAL:  ${TARGET_NOT_REACHED.slice('FATAL: '.length)}`)),
        `the FATAL line is kept: ${JSON.stringify(d.postgresLogProblems)}`,
      );
      assert.ok(d.postgresLogTail!.length > 0 && d.postgresLogTail!.length <= 30);
      assert.ok(
        d.postgresLogTail!.some((l) => /LOG: {2}restored log file "[0-9A-F]{24}" from archive/.test(l)),
        'the tail shows what recovery restored',
      );
      assert.ok(
        [...d.postgresLogProblems!, ...d.postgresLogTail!].every(
          (l) => !/not yet accepting connections|is starting up/.test(l),
        ),
        "the drill's own refused connections are left out",
      );
      assert.equal(d.keptDir ?? '', '');
      const failed = (await events()).find((e) => e.kind === 'drill.failed' && e.drillFailed?.jobId === job.id);
      assert.ok(failed, 'drill.failed in the catalog');
      assert.equal(failed.drillFailed!.stage, 'recovery');
      assert.equal((failed.drillFailed!.error as { code: string }).code, ErrorCodes.WalNotInRepository.code);
      assert.match(JSON.stringify(failed.drillFailed!.reasons), new RegExp(victim));
      assert.equal((failed.drillFailed!.reasons as string[])[0], `recovery failed: ${TARGET_NOT_REACHED}`);
      assert.ok((failed.drillFailed!.postgresLogProblems as string[]).some((l) => l.includes('FATAL:')));
      await scratchEmpty();
      const table = await fleet.cli('drills', CLUSTER);
      assert.match(
        table.stdout,
        new RegExp(`${job.id}.*failed.*recovery failed: ${TARGET_NOT_REACHED}.*WAL segment ${victim}`),
      );
      // Under the table: the log's FATAL line of that drill.
      assert.match(
        table.stdout,
        new RegExp(
          `^${job.id} \\(failed in stage recovery\\):\\n {2}PostgreSQL log:\\n(?: {4}.*\\n)*? {4}.*FATAL: {2}recovery ended before configured recovery target was reached$`,
          'm',
        ),
      );
    } finally {
      await writeFile(path, bytes);
    }
  });

  it('a flipped byte in a backup file: fails in restore naming the file', async () => {
    const backupDir = join(fleet.repoDir, CLUSTER, 'backup', backupLabel);
    const manifest = JSON.parse(await readFile(join(backupDir, 'backup.manifest'), 'utf8')) as {
      files: { path: string; storedSize: number; codec: string; chunks?: unknown[] }[];
    };
    const file = manifest.files
      .filter((f) => !f.chunks && f.storedSize > 64)
      .sort((a, b) => b.storedSize - a.storedSize)[0]!;
    const path = join(
      backupDir,
      'pg_data',
      `${file.path}${file.codec === 'zstd' ? '.zst' : file.codec === 'gzip' ? '.gz' : ''}`,
    );
    const bytes = await readFile(path);
    const flipped = Buffer.from(bytes);
    flipped[Math.floor(bytes.length / 2)]! ^= 0x40;
    await writeFile(path, flipped);
    try {
      const { r, job } = await drill();
      assert.notEqual(r.code, 0);
      assert.equal(job.drill?.stage, 'restore');
      assert.match(job.drill!.reasons.join('\n'), new RegExp(file.path.replace(/[.]/g, '\\.')));
      assert.ok(
        (await events()).some(
          (e) => e.kind === 'drill.failed' && e.drillFailed?.jobId === job.id && e.drillFailed.stage === 'restore',
        ),
      );
      await scratchEmpty();
    } finally {
      await writeFile(path, bytes);
    }
  });

  it("a stray timeline 2 in the repository (issue 11's report) no longer breaks a drill: recovery follows the backup's own lineage", async () => {
    // A history file forking timeline 1 before this backup's checkpoint, as a copy promoted
    // earlier and archiving into the same repository leaves. With recovery_target_timeline =
    // 'latest' PostgreSQL followed it and failed ("requested timeline 2 is not a child of this
    // server's history"); the restore now chooses the timeline from the archived histories and
    // a timeline without archived WAL, or one that left timeline 1 before the backup, is never followed.
    const dir = await makeTempDir('stray-timeline');
    const history = join(dir, '00000002.history');
    await writeFile(history, '1\t0/1000000\tno recovery target specified\n');
    await chownToPostgres(history);
    await runAsPostgres(
      process.execPath,
      [
        AGENT_BIN,
        'wal-push',
        history,
        '--cluster',
        CLUSTER,
        '--repo-path',
        fleet.repoDir,
        '--cluster-key-file',
        fleet.clusterKeyFile,
      ],
      { timeoutMs: 120_000 },
    );
    const timelines = join(fleet.repoDir, CLUSTER, 'wal', 'timelines');
    const planted = (await readdir(timelines)).filter((f) => f.startsWith('00000002.history'));
    assert.equal(planted.length, 1, 'the stray history file is archived');
    try {
      const r = await fleet.cli('drill', CLUSTER, '--target', 'immediate', '--wait');
      assert.equal(r.code, 0, `drill failed with a stray timeline in the repository:\n${r.stdout}\n${r.stderr}`);
      assert.match(r.stdout, /^drill PASSED: /m);
      assert.doesNotMatch(r.stdout, new RegExp(STRAY_TIMELINE));
      await scratchEmpty();
    } finally {
      for (const f of planted) await rm(join(timelines, f));
      await removeDir(dir);
    }
  });

  it('--keep: the copy stays for inspection, stopped cleanly or with the log of its failed recovery; the agent leaves it until its marker is removed', async () => {
    // A passing drill: the promoted copy is stopped with a clean shutdown, its directory kept and reported.
    const passed = await fleet.cli('drill', CLUSTER, '--target', 'immediate', '--keep', '--wait');
    assert.equal(passed.code, 0, `kept drill failed:\n${passed.stdout}\n${passed.stderr}`);
    const passedId = /drill job (\S+)/.exec(passed.stderr)?.[1];
    const keptOk = join(scratch, `pgfleet-drill-${passedId}`);
    assert.match(passed.stdout, /^drill PASSED: /m);
    assert.ok(
      passed.stdout.includes(
        `scratch directory kept: ${keptOk} (restored data directory ${keptOk}/data, server log ${keptOk}/postgres.log)`,
      ),
      passed.stdout,
    );
    const okJob = json<JobJson>(await fleet.cli('job', passedId!, '--output', 'json'), 'job');
    assert.equal(okJob.drill?.keptDir, keptOk);
    const control = await runAsPostgres(join(fleet.pg.binDir, 'pg_controldata'), [join(keptOk, 'data')], {
      timeoutMs: 120_000,
    });
    assert.match(
      control.stdout,
      /^Database cluster state: +shut down$/m,
      'stopped with a clean shutdown: it starts again without crash recovery',
    );
    assert.match(await readFile(join(keptOk, 'postgres.log'), 'utf8'), /database system is shut down/);

    // A failing one: the first WAL segment of the backup is gone, so recovery never reaches consistency.
    const victim = await walObject(walStart);
    const bytes = await readFile(victim);
    await rm(victim);
    let failedId: string | undefined;
    try {
      const failed = await fleet.cli('drill', CLUSTER, '--target', 'immediate', '--keep', '--wait');
      failedId = /drill job (\S+)/.exec(failed.stderr)?.[1];
      assert.equal(
        failed.code,
        ErrorCodes.WalNotInRepository.exit,
        `the missing segment's exit code:\n${failed.stdout}\n${failed.stderr}`,
      );
      assert.match(failed.stderr, new RegExp(ErrorCodes.WalNotInRepository.code));
      assert.match(failed.stdout, /^drill FAILED in stage recovery: /m);
      assert.match(failed.stdout, new RegExp(`^ {2}reason: recovery failed: ${NO_CHECKPOINT}$`, 'm'));
      assert.match(
        failed.stdout,
        new RegExp(`^ {2}reason: recovery: WAL segment ${walStart} needed by recovery is not in the repository`, 'm'),
      );
      assert.match(
        failed.stdout,
        new RegExp(
          `^PostgreSQL log, FATAL/PANIC/ERROR/WARNING lines:\\n(?: {2}.*\\n)*? {2}.*FATAL: {2}${NO_CHECKPOINT.slice('FATAL: '.length)}$`,
          'm',
        ),
      );
      assert.match(failed.stdout, /^PostgreSQL log, last \d+ line\(s\):$/m);
    } finally {
      await writeFile(victim, bytes);
    }
    const keptFailed = join(scratch, `pgfleet-drill-${failedId}`);
    const failedJob = json<JobJson>(await fleet.cli('job', failedId!, '--output', 'json'), 'job');
    assert.equal(failedJob.drill?.keptDir, keptFailed);
    assert.equal(failedJob.drill?.reasons[0], `recovery failed: ${NO_CHECKPOINT}`);
    assert.match(
      await readFile(join(keptFailed, 'postgres.log'), 'utf8'),
      new RegExp(NO_CHECKPOINT.slice('FATAL: '.length)),
    );
    const table = await fleet.cli('drills', CLUSTER);
    assert.match(table.stdout, new RegExp(`${failedId}.*failed.*recovery failed: ${NO_CHECKPOINT}`));
    assert.ok(table.stdout.includes(`scratch directory kept: ${keptFailed}`), table.stdout);
    assert.equal(await drillPostmaster(), undefined, 'no server runs from a kept copy');

    // The agent's next start leaves both alone (and says so); without their marker they are leftovers again.
    await fleet.agent!.stop();
    const restarted = await fleet.startAgent(['--scratch-dir', scratch]);
    assert.deepEqual(
      (await readdir(scratch)).sort(),
      [`pgfleet-drill-${failedId}`, `pgfleet-drill-${passedId}`].sort(),
    );
    for (const dir of [keptOk, keptFailed]) {
      assert.ok((await readdir(dir)).includes('kept.json'));
      assert.ok((await restarted.log()).includes(dir), `the agent names the kept directory ${dir}`);
      await rm(join(dir, 'kept.json'));
    }
    await fleet.agent!.stop();
    const again = await fleet.startAgent(['--scratch-dir', scratch]);
    await scratchEmpty();
    assert.match(await again.log(), /removed a drill directory left behind by an earlier drill/);
  });

  it("SIGTERM mid-drill: the agent stops the copy's server and removes the copy before it exits", async (t) => {
    const agent = fleet.agent!;
    const started = fleet.cli('drill', CLUSTER, '--output', 'json');
    const { pid, dir } = await waitFor("the drill's PostgreSQL to run", drillPostmaster, 120_000, 20);
    // A process naming the copy on its command line, like a wal-prefetch child still writing into
    // its pg_wal: the teardown waits for it (4 s), longer than the agent used to give it. It leaves
    // a mark outside the copy when it ends on its own, so the order shows without timing anything.
    const finished = join(fleet.dir, 'straggler-finished');
    await rm(finished, { force: true });
    const straggler = spawn('sh', ['-c', 'sleep 4 && : > "$1"', dir, finished], { stdio: 'ignore' });
    const t0 = Date.now();
    agent.child.kill('SIGTERM');
    // The agent's stop grace is 30 s (STOP_GRACE_MS): past it the agent exits whatever still runs.
    // The bound adds a minute for a loaded machine, so an agent that ignores its grace (waiting for
    // the drill to end) still fails here.
    await Promise.race([
      exited(agent),
      sleep(90_000, { unref: true }).then(() =>
        assert.fail('the agent did not exit within its 30 s stop grace (plus a minute) of SIGTERM'),
      ),
    ]);
    const seconds = (Date.now() - t0) / 1000;
    straggler.kill('SIGKILL');
    t.diagnostic(`agent exited ${seconds.toFixed(1)} s after SIGTERM`);
    assert.equal(running(pid), false, "the drill's PostgreSQL is stopped");
    await scratchEmpty();
    assert.equal(
      await stat(finished).then(
        () => true,
        () => false,
      ),
      true,
      'the agent exited only after the process using the copy had ended on its own (the teardown waited for it)',
    );
    await started;
    await fleet.startAgent(['--scratch-dir', scratch]);
  });

  it('an agent killed mid-drill: its next start stops the leftover server and removes the copy', async () => {
    const started = fleet.cli('drill', CLUSTER, '--output', 'json');
    const { pid } = await waitFor("the drill's PostgreSQL to run", drillPostmaster, 120_000, 20);
    fleet.agent!.child.kill('SIGKILL');
    await exited(fleet.agent!);
    await started;
    // What the next start must clean up: the agent gone (the controller has seen it go), the copy's server still running.
    await waitFor('the controller to see the killed agent gone', async () => !(await fleet.agentConnected()), 120_000);
    assert.equal(running(pid), true, "the copy's server outlives a killed agent");
    assert.ok((await readdir(scratch)).some((n) => n.startsWith('pgfleet-drill-')));
    const agent = await fleet.startAgent(['--scratch-dir', scratch]);
    assert.equal(running(pid), false, 'the next start stopped it');
    await scratchEmpty();
    assert.match(await agent.log(), /removed a drill directory left behind by an earlier drill/);
  });
});

describe('the throwaway server: nothing of the source reaches outside the copy', { timeout: 600_000 }, () => {
  let publisher: PgInstance | undefined;
  let source: PgInstance | undefined;
  let runDir: string | undefined;

  after(async () => {
    await source?.stop();
    if (source) await removeDir(dirname(source.dataDir));
    await publisher?.stop();
    if (runDir) await removeDir(runDir);
  });

  it("an enabled subscription does not run in the copy, memory settings are the drill's, recovery-checked settings the source's", async (t) => {
    const slot = async () =>
      (
        await publisher!.query<{ active: boolean; lsn: string }>(
          "SELECT active, confirmed_flush_lsn::text AS lsn FROM pg_replication_slots WHERE slot_name = 'drill_sub'",
        )
      )[0]!;
    publisher = await startPostgres({ settings: { wal_level: 'logical' } });
    await publisher.query('CREATE TABLE pub_t (id int PRIMARY KEY); CREATE PUBLICATION drill_pub FOR TABLE pub_t');
    await publisher.query("SELECT pg_create_logical_replication_slot('drill_sub', 'pgoutput')");
    source = await startPostgres({
      keepDataDir: true,
      settings: {
        max_connections: '123',
        shared_buffers: '32MB',
        max_logical_replication_workers: '6',
        huge_pages: 'try',
      },
    });
    await source.query('CREATE TABLE pub_t (id int PRIMARY KEY)');
    await source.query(
      `CREATE SUBSCRIPTION drill_sub CONNECTION 'host=127.0.0.1 port=${publisher.port} user=postgres dbname=postgres' PUBLICATION drill_pub WITH (create_slot = false, slot_name = 'drill_sub', copy_data = false)`,
    );
    // The subscription works on the source: its apply worker holds the publisher's slot and applies a row.
    await publisher.query('INSERT INTO pub_t VALUES (1)');
    await waitFor(
      "the source to apply the publisher's row",
      async () => (await source!.query('SELECT 1 FROM pub_t')).length === 1,
      120_000,
    );
    assert.equal((await slot()).active, true);
    await source.stop();
    await waitFor('the slot to be released', async () => !(await slot()).active, 120_000);
    // A change the copy would consume, and advance the slot past, if its apply worker ran.
    await publisher.query('INSERT INTO pub_t VALUES (2)');
    const before = await slot();

    runDir = await makeTempDir('drill-run');
    const script = `
      const cfg = JSON.parse(process.env.PGFLEET_SCRATCH_TEST);
      // This script runs in a child node: the test's imports (core's sleep) are not in scope here.
      const pause = (ms) => new Promise((r) => setTimeout(r, ms));
      const { ScratchPostgres } = await import(cfg.module);
      const server = new ScratchPostgres({ pgdata: cfg.pgdata, runDir: cfg.runDir, binDir: cfg.binDir, major: cfg.major, user: 'postgres', jobId: 'settings-test' });
      await server.configure();
      await server.start();
      try {
        await server.waitPromoted(undefined, () => {});
        const c = await server.connect('postgres');
        const settings = Object.fromEntries((await c.query('SELECT n, current_setting(n) AS v FROM unnest($1::text[]) n', [cfg.names])).rows.map((r) => [r.n, r.v]));
        // Normal running: the postmaster starts the walwriter together with the background workers
        // that wait for the end of recovery, a logical replication launcher among them.
        for (let i = 0; (await c.query("SELECT 1 FROM pg_stat_activity WHERE backend_type = 'walwriter'")).rows.length === 0; i++) {
          if (i === 2400) throw new Error('the copy never reached normal running (no walwriter after 120 s)');
          await pause(50);
        }
        // A launcher would start an apply worker at once; the window lets one show, should the
        // copy start it (waiting can only miss such a fault, never fail a copy without it).
        await pause(3000);
        const workers = (await c.query("SELECT backend_type AS b FROM pg_stat_activity WHERE backend_type LIKE 'logical replication%'")).rows.map((r) => r.b);
        const subs = (await c.query('SELECT subname AS n, subenabled AS e FROM pg_subscription')).rows;
        const rows = (await c.query('SELECT count(*)::int AS n FROM pub_t')).rows[0].n;
        await c.end();
        process.stdout.write(JSON.stringify({ settings, workers, subs, rows }));
      } finally {
        await server.stop();
      }`;
    const names = [
      'shared_buffers',
      'huge_pages',
      'max_logical_replication_workers',
      'max_sync_workers_per_subscription',
      'cron.launch_active_jobs',
      'archive_mode',
      'listen_addresses',
      'max_connections',
      'max_worker_processes',
      'max_wal_senders',
    ];
    let activeSeen = false;
    let watching = true;
    const watch = (async () => {
      while (watching) {
        if ((await slot()).active) activeSeen = true;
        await sleep(100);
      }
    })();
    let out: { settings: Record<string, string>; workers: string[]; subs: { n: string; e: boolean }[]; rows: number };
    try {
      const env = {
        ...process.env,
        PGFLEET_SCRATCH_TEST: JSON.stringify({
          module: pathToFileURL(join(REPO_ROOT, 'packages/agent/dist/drill/scratch-postgres.js')).href,
          pgdata: source.dataDir,
          runDir,
          binDir: pgBinDir(),
          major: 15,
          names,
        }),
      };
      const r = await runAsPostgres(process.execPath, ['--input-type=module', '-e', script], {
        env,
        timeoutMs: 300_000,
      });
      out = JSON.parse(r.stdout) as typeof out;
    } finally {
      watching = false;
      await watch;
    }
    t.diagnostic(JSON.stringify(out));
    assert.deepEqual(out.subs, [{ n: 'drill_sub', e: true }], 'the subscription is restored enabled');
    assert.deepEqual(out.workers, [], 'no logical replication launcher or apply worker in the copy');
    assert.equal(activeSeen, false, "the publisher's slot was never taken by the copy");
    assert.equal((await slot()).lsn, before.lsn, "the publisher's slot did not advance");
    assert.equal(out.rows, 1, 'the copy applied nothing');
    assert.deepEqual(out.settings, {
      shared_buffers: '128MB',
      huge_pages: 'off',
      max_logical_replication_workers: '0',
      max_sync_workers_per_subscription: '0',
      'cron.launch_active_jobs': 'off',
      archive_mode: 'off',
      listen_addresses: '',
      // Recovery checks these against the source: they keep the source's values.
      max_connections: '123',
      max_worker_processes: '8',
      max_wal_senders: '4',
    });
  });
});
