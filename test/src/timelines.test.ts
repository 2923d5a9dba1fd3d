/**
 * Timelines, end to end with real processes: the events every fleet has.
 *  - Failover: a streaming standby is promoted while the old primary is gone; archiving goes on
 *    from the new primary without a gap (its first segment carries the old timeline's id in its
 *    first page), a backup of the new primary works, verify passes across the switch, and PITR to
 *    a time before and after the promotion is exact.
 *  - In-place PITR of the cluster itself, then more writes: archiving continues on the new
 *    timeline; a later PITR to a point on the new timeline, and one on the abandoned part of the
 *    old one, are both exact.
 *  - A restored copy started and promoted elsewhere stays out of the archive, and a crafted
 *    history file cannot break a default restore; a history of another lineage is refused.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import {
  chownToPostgres,
  runAsPostgres,
  startPostgres,
  startStandby,
  type PgInstance,
  type StandbyInstance,
} from '@pgfleet/testkit';
import {
  AGENT_BIN,
  agentCommand,
  assertRefused,
  restoreUnder,
  runNode,
  startFleet,
  waitFor,
  type Fleet,
} from './harness.js';
import { sleep } from '@pgfleet/core';

type Row = { id: number; note: string };
const rowsOf = (pg: PgInstance) => pg.query<Row>('SELECT id, note FROM items ORDER BY id');
/** The server's clock after everything committed so far: every earlier commit is before it. */
const serverNow = async (pg: PgInstance) =>
  (
    await pg.query<{ t: string }>(
      `SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS t`,
    )
  )[0]!.t;

/** pg_switch_wal() on `pg` and wait until that segment is in the repository (pg_stat_archiver says so). */
async function switchAndArchive(pg: PgInstance): Promise<string> {
  const [row] = await pg.query<{ f: string }>(`SELECT pg_walfile_name(pg_switch_wal()) AS f`);
  await waitFor(
    `WAL ${row!.f} to be archived`,
    async () => {
      const [a] = await pg.query<{ w: string | null; failed: string | null }>(
        'SELECT last_archived_wal AS w, last_failed_wal AS failed FROM pg_stat_archiver',
      );
      return a!.w !== null && a!.w.slice(0, 24) >= row!.f;
    },
    120_000,
  );
  return row!.f;
}

async function restoreAndStart(
  fleet: Fleet,
  started: PgInstance[],
  name: string,
  ...args: string[]
): Promise<{ pg: PgInstance; out: string }> {
  const dir = join(fleet.dir, `restore-${name}`);
  const r = await fleet.cli('restore', fleet.cluster, '--to', dir, ...args, '--wait');
  assert.equal(r.code, 0, `restore ${name} failed:\n${r.stdout}\n${r.stderr}\n${await fleet.logs()}`);
  const pg = await startPostgres({ dataDir: dir, waitForRecovery: true, startTimeoutMs: 180_000 });
  started.push(pg);
  return { pg, out: r.stdout };
}

describe('failover to a streaming standby', { timeout: 900_000 }, () => {
  let fleet: Fleet;
  let standby: StandbyInstance;
  const started: PgInstance[] = [];
  const rows: Record<string, Row[]> = {};
  const times: Record<string, string> = {};
  let firstSegmentOfTimeline2 = '';

  before(async () => {
    fleet = await startFleet({ cluster: 'ha' });
    const primary = fleet.pg;
    await primary.query('CREATE TABLE items (id int PRIMARY KEY, note text NOT NULL)');
    await primary.query(`INSERT INTO items SELECT g, 'first ' || g FROM generate_series(1, 500) g`);
    const b = await fleet.cli('backup', 'ha', '--wait');
    assert.equal(b.code, 0, `backup failed:\n${b.stdout}\n${b.stderr}\n${await fleet.logs()}`);

    // Same archive_command on both hosts: whichever is primary archives into the cluster's repository.
    standby = await startStandby(primary, { archiveCommand: agentCommand(`wal-push "%p" ${fleet.walArgs}`) });
    await primary.query(`INSERT INTO items SELECT g, 'before failover ' || g FROM generate_series(501, 800) g`);
    rows.beforeFailover = await rowsOf(primary);
    times.beforeFailover = await serverNow(primary);
    await sleep(50);
    await primary.query(`INSERT INTO items VALUES (801, 'archived on timeline 1')`);
    await switchAndArchive(primary);
    // The tail the old primary never archives: it reaches the archive only inside the new timeline's first segment.
    await primary.query(`INSERT INTO items SELECT g, 'unarchived tail ' || g FROM generate_series(802, 850) g`);
    rows.atFailover = await rowsOf(primary);
    times.atFailover = await serverNow(primary);
    await sleep(50);
    const lsn = (await primary.query<{ l: string }>('SELECT pg_current_wal_lsn()::text AS l'))[0]!.l;
    await waitFor(
      'the standby to replay everything',
      async () =>
        (await standby.query<{ ok: boolean }>(`SELECT pg_last_wal_replay_lsn() >= '${lsn}'::pg_lsn AS ok`))[0]!.ok,
      120_000,
    );

    // The primary's host dies with its agent; the standby is promoted (what Patroni or a DBA does).
    await fleet.agent!.stop();
    await runAsPostgres(join(primary.binDir, 'pg_ctl'), ['-D', primary.dataDir, '-m', 'immediate', '-w', 'stop'], {
      cwd: '/tmp',
    });
    await standby.promote();
    await standby.query(`INSERT INTO items SELECT g, 'after failover ' || g FROM generate_series(851, 900) g`);
    rows.afterFailover = await rowsOf(standby);
    times.afterFailover = await serverNow(standby);
    await sleep(50);
    const history = (await standby.query<{ h: string }>(`SELECT pg_walfile_name(pg_current_wal_lsn()) AS h`))[0]!.h;
    assert.equal(history.slice(0, 8), '00000002', 'the promoted standby writes timeline 2');
    firstSegmentOfTimeline2 = await switchAndArchive(standby);
    // The agent of the cluster now runs on the new primary's host.
    await fleet.startAgent([], standby);
  });

  after(async () => {
    for (const p of started) await p.stop();
    await standby?.stop();
    await fleet?.stop();
  });

  it('archives the new timeline from its first segment on, whose first page holds timeline 1', async () => {
    const [a] = await standby.query<{ failed: string; last: string }>(
      'SELECT failed_count::text AS failed, last_archived_wal AS last FROM pg_stat_archiver',
    );
    assert.equal(a!.failed, '0', `archive failures on the new primary:\n${await standby.log()}`);
    const names = new Set<string>();
    for await (const w of fleet.repo.listWal('ha')) names.add(w.name);
    assert.ok(names.has('00000002.history'), 'the history of timeline 2 is archived');
    // Timeline 2 begins inside the segment the standby was writing: it is archived under timeline 2.
    const first = [...names].filter((n) => /^00000002[0-9A-F]{16}$/.test(n)).sort()[0]!;
    assert.ok(first <= firstSegmentOfTimeline2, `first segment of timeline 2: ${first}`);
    const segment = await fleet.repo.readWalFile('ha', first, 16 << 20);
    assert.equal(segment!.readUInt32LE(4), 1, 'its first page carries timeline 1, as PostgreSQL copies it');
  });

  it('backs up the new primary and keeps archiving after it', async () => {
    const b = await fleet.cli('backup', 'ha', '--wait');
    assert.equal(b.code, 0, `backup of the new primary failed:\n${b.stdout}\n${b.stderr}\n${await fleet.logs()}`);
    await standby.query(`INSERT INTO items SELECT g, 'latest ' || g FROM generate_series(901, 950) g`);
    rows.latest = await rowsOf(standby);
    await switchAndArchive(standby);
    const doc = JSON.parse((await fleet.cli('backups', 'ha', '--output', 'json')).stdout) as
      { timeline: number }[] | { backups: { timeline: number }[] };
    const list = Array.isArray(doc) ? doc : doc.backups;
    assert.deepEqual(
      list.map((x) => x.timeline),
      [1, 2],
    );
  });

  it('verify passes across the switch', async () => {
    const v = await fleet.cli('verify', 'ha', '--wait', '--output', 'json');
    assert.equal(v.code, 0, `verify failed:\n${v.stdout}\n${v.stderr}`);
    const doc = JSON.parse(v.stdout) as {
      verify?: { backups: { label: string; restorable: boolean; toTimeline: number }[] };
    };
    const backups = doc.verify?.backups ?? [];
    assert.equal(backups.length, 2);
    assert.ok(
      backups.every((x) => x.restorable && x.toTimeline === 2),
      JSON.stringify(backups),
    );
  });

  it('PITR to a time before the promotion: exactly the rows then', async () => {
    const { pg } = await restoreAndStart(fleet, started, 'before', '--target-time', times.beforeFailover!);
    assert.deepEqual(await rowsOf(pg), rows.beforeFailover);
  });

  it('PITR into the tail the old primary never archived follows timeline 2, whose first segment holds it', async () => {
    const { pg, out } = await restoreAndStart(fleet, started, 'tail', '--target-time', times.atFailover!);
    assert.match(out, /recovery follows timeline 2/);
    assert.deepEqual(await rowsOf(pg), rows.atFailover);
  });

  it('PITR to a time after the promotion replays through the switch: exactly the rows then', async () => {
    const { pg, out } = await restoreAndStart(fleet, started, 'after', '--target-time', times.afterFailover!);
    assert.match(out, /recovery follows timeline 2/);
    assert.deepEqual(await rowsOf(pg), rows.afterFailover);
  });

  it("restore to latest takes the new primary's backup: exactly the current rows", async () => {
    const { pg } = await restoreAndStart(fleet, started, 'latest', '--target', 'latest');
    assert.deepEqual(await rowsOf(pg), rows.latest);
  });
});

describe('in-place PITR of the cluster, then more writes', { timeout: 900_000 }, () => {
  let fleet: Fleet;
  const started: PgInstance[] = [];
  const rows: Record<string, Row[]> = {};
  const times: Record<string, string> = {};

  before(async () => {
    // Heartbeats only at connect and after each job: the controller still names timeline 1 when
    // the restores below start, as it would for a heartbeat interval after any promotion. The
    // agent on the cluster's primary reads the live timeline itself (JobContext.liveTimeline).
    fleet = await startFleet({ cluster: 'inplace', controllerArgs: ['--heartbeat-interval', '3600'] });
    const pg = fleet.pg;
    await pg.query('CREATE TABLE items (id int PRIMARY KEY, note text NOT NULL)');
    await pg.query(`INSERT INTO items SELECT g, 'base ' || g FROM generate_series(1, 300) g`);
    const b = await fleet.cli('backup', 'inplace', '--wait');
    assert.equal(b.code, 0, `backup failed:\n${b.stdout}\n${b.stderr}\n${await fleet.logs()}`);
    await pg.query(`INSERT INTO items SELECT g, 'good ' || g FROM generate_series(301, 400) g`);
    rows.good = await rowsOf(pg);
    times.good = await serverNow(pg);
    await sleep(50);
    // The mistake, and what happened after it on timeline 1 before anyone noticed.
    await pg.query('DELETE FROM items WHERE id > 100');
    await pg.query(`INSERT INTO items VALUES (9001, 'written after the mistake')`);
    rows.mistake = await rowsOf(pg);
    times.mistake = await serverNow(pg);
    await sleep(50);
    // The cluster runs on a little before anyone notices (recovery to a time needs a commit after it).
    await pg.query(`INSERT INTO items VALUES (9002, 'still timeline 1')`);
    await fleet.switchAndArchive();
    // Wait until the promoted timeline cannot start within the same second as the mistake's time.
    await sleep(1100);

    // In-place PITR: stop the server, delta restore over its own data directory (the agent's
    // PGDATA: archiving is preserved), start it: it recovers to T and promotes to timeline 2.
    await runAsPostgres(join(pg.binDir, 'pg_ctl'), ['-D', pg.dataDir, '-m', 'fast', '-w', 'stop'], { cwd: '/tmp' });
    const r = await fleet.cli(
      'restore',
      'inplace',
      '--to',
      pg.dataDir,
      '--delta',
      '--target-time',
      times.good!,
      '--wait',
    );
    assert.equal(r.code, 0, `in-place restore failed:\n${r.stdout}\n${r.stderr}\n${await fleet.logs()}`);
    assert.match(r.stdout, /archiving kept/);
    await pg.restart();
    await waitFor(
      'the cluster to finish recovery and promote',
      async () => !(await pg.query<{ r: boolean }>('SELECT pg_is_in_recovery() AS r'))[0]!.r,
      180_000,
    );
    assert.deepEqual(await rowsOf(pg), rows.good, 'the in-place PITR gave the rows at T');
    await pg.query(`INSERT INTO items SELECT g, 'timeline 2 ' || g FROM generate_series(401, 450) g`);
    rows.timeline2 = await rowsOf(pg);
    times.timeline2 = await serverNow(pg);
    await sleep(50);
    await pg.query(`INSERT INTO items VALUES (9500, 'newest')`);
    rows.latest = await rowsOf(pg);
  });

  after(async () => {
    for (const p of started) await p.stop();
    await fleet?.stop();
  });

  it('keeps archiving on the new timeline', async () => {
    const name = await switchAndArchive(fleet.pg);
    assert.equal(name.slice(0, 8), '00000002');
    assert.equal(await fleet.repo.isWalArchived('inplace', name), true);
    const [a] = await fleet.pg.query<{ failed: string }>('SELECT failed_count::text AS failed FROM pg_stat_archiver');
    assert.equal(a!.failed, '0', `archive failures after the in-place PITR:\n${await fleet.pg.log()}`);
  });

  it('PITR to a point on the new timeline: exactly the rows then', async () => {
    const { pg, out } = await restoreAndStart(fleet, started, 'tl2', '--target-time', times.timeline2!);
    assert.match(out, /recovery follows timeline 2/);
    assert.deepEqual(await rowsOf(pg), rows.timeline2);
  });

  it('PITR to a point on the part of timeline 1 the first PITR abandoned: exactly the rows then', async () => {
    const { pg, out } = await restoreAndStart(fleet, started, 'tl1', '--target-time', times.mistake!);
    assert.match(out, /recovery follows timeline 1/);
    assert.deepEqual(await rowsOf(pg), rows.mistake);
  });

  it('--target-timeline 7 (no such timeline) and an LSN past the archive are refused with PGF-6006', async () => {
    const r = await restoreUnder(fleet, 'never', '--target', 'latest', '--target-timeline', '7', '--wait');
    assertRefused(r, /PGF-6006/);
    assert.match(r.stderr, /timeline 7 is not in the archive/);
    // An LSN past the archived WAL would replay everything and then fail in PostgreSQL; it is refused up front.
    assertRefused(
      await restoreUnder(fleet, 'never', '--target-lsn', 'FF/0', '--wait'),
      /PGF-6006.*target LSN FF\/0 is beyond the archived WAL of timeline 2/,
    );
  });

  it('a restored copy promoted elsewhere archives nothing, and the source still restores exactly', async () => {
    const before = new Set<string>();
    for await (const w of fleet.repo.listWal('inplace')) before.add(w.key);
    const { pg: copy, out } = await restoreAndStart(fleet, started, 'copy', '--target', 'latest');
    assert.match(out, /archive_mode off in the copy/);
    const [mode] = await copy.query<{ m: string }>("SELECT current_setting('archive_mode') AS m");
    assert.equal(mode!.m, 'off');
    await copy.query(`INSERT INTO items VALUES (777777, 'only in the copy')`);
    await copy.query('SELECT pg_switch_wal()');
    await copy.query('CHECKPOINT');
    const afterKeys: string[] = [];
    for await (const w of fleet.repo.listWal('inplace')) if (!before.has(w.key)) afterKeys.push(w.key);
    // Only the source may have added segments meanwhile (none of the copy's timeline 3).
    assert.deepEqual(
      afterKeys.filter((k) => /\/00000003/.test(k)),
      [],
    );
    const { pg } = await restoreAndStart(fleet, started, 'after-copy', '--target', 'latest');
    assert.deepEqual(await rowsOf(pg), await rowsOf(fleet.pg));
  });

  it('a copy that did archive its fork into the repository (--archive preserve) is never taken for the cluster', async () => {
    const { pg: fork, out } = await restoreAndStart(
      fleet,
      started,
      'fork',
      '--target',
      'latest',
      '--archive',
      'preserve',
    );
    assert.match(out, /archiving kept/);
    await fork.query(`INSERT INTO items VALUES (888888, 'only in the fork')`);
    const forkSegment = await switchAndArchive(fork);
    assert.equal(forkSegment.slice(0, 8), '00000003', 'the fork writes timeline 3');
    assert.equal(
      (await fleet.repo.findWal('inplace', '00000003.history')).length,
      1,
      'and its history reached the repository',
    );
    // The cluster itself goes on on timeline 2, later than the fork began.
    await fleet.pg.query(`INSERT INTO items VALUES (9550, 'the cluster after the fork')`);
    rows.latest = await rowsOf(fleet.pg);
    await switchAndArchive(fleet.pg);
    const { pg, out: restored } = await restoreAndStart(fleet, started, 'not-the-fork', '--target', 'latest');
    assert.match(restored, /recovery follows timeline 2/);
    assert.deepEqual(await rowsOf(pg), rows.latest);
    // verify says so: timeline 3 is a fork, and continuity follows the live timeline 2.
    const v = await fleet.cli('verify', 'inplace', '--wait');
    assert.equal(v.code, 0, `verify failed:\n${v.stdout}\n${v.stderr}`);
    assert.match(v.stdout, /^3 +2 +\S+ +\S+ \S+ +00000003[0-9A-F]{16} +FORK \(restores never follow it\)$/m);
    assert.match(v.stdout, /^2 +1 +\S+ +\S+ \S+ +00000002[0-9A-F]{16} +live$/m);
    assert.match(v.stdout, /restorable to \[\S+ \([^)]*\), \S+ on timeline 2\]/);
  });

  it('a crafted history of a timeline that never ran here cannot break a default restore', async () => {
    // A timeline 9 "branched" off timeline 1 before every backup: PostgreSQL's own 'latest' would follow it and fail.
    // Named with the cluster's key (a copy archiving with it), so the timeline rules, not the MAC, are what stop it.
    const text = Buffer.from('1\t0/1000000\tno recovery target specified\n');
    const sha = createHash('sha256').update(text).digest('hex');
    await fleet.repo.pushWal('inplace', '00000009.history', sha, () => Readable.from([text]), 'none');
    await chownToPostgres(join(fleet.repoDir, 'inplace', 'wal', 'timelines'), { recursive: true });
    await fleet.pg.query(`INSERT INTO items VALUES (9600, 'after the crafted history')`);
    rows.latest = await rowsOf(fleet.pg);
    await switchAndArchive(fleet.pg);
    const { pg, out } = await restoreAndStart(fleet, started, 'crafted', '--target', 'latest');
    assert.match(out, /recovery follows timeline 2/);
    assert.deepEqual(await rowsOf(pg), rows.latest);
  });

  it("wal-push refuses a history that contradicts its parent's archived history (PGF-4010)", async () => {
    // Timeline 7 claiming timeline 2 branched off timeline 1 somewhere else than the archive says.
    const dir = join(fleet.dir, 'forged-wal');
    await runAsPostgres('/bin/mkdir', ['-p', dir]);
    const file = join(dir, '00000007.history');
    await writeFile(file, '1\t0/2000000\tforged\n2\t0/9000000\tforged\n');
    await chownToPostgres(file);
    const r = await runNode(
      AGENT_BIN,
      [
        'wal-push',
        file,
        '--cluster',
        'inplace',
        '--repo-path',
        fleet.repoDir,
        '--cluster-key-file',
        fleet.clusterKeyFile,
      ],
      { asPg: true },
    );
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /PGF-4010/);
    assert.equal((await fleet.repo.findWal('inplace', '00000007.history')).length, 0, 'nothing was archived');
  });
});
