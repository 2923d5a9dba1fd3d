/**
 * Crash safety with real processes (docs/security.md):
 *
 * - kill -9 at seeded random moments of WAL push: archive_command's wal-push is killed mid-push
 *   by a wrapper on a seeded schedule, and the agent daemon it hands segments to is killed and
 *   restarted between rounds (so pushes run both in the daemon and standalone). Afterwards every
 *   segment PostgreSQL saw acknowledged (pg_stat_archiver.last_archived_wal and before) is in the
 *   repository once, whole and matching the checksum in its key, and a restore to latest gives
 *   exactly the rows.
 * - an incremental backup still running when the catalog no longer knows it (its controller went
 *   away and the reclaim grace failed its job) while a newer full makes its chain expirable:
 *   expire, run through another agent, keeps the chain the backup's lease names; the late
 *   backup then completes (or is killed -9), and every backup the repository lists verifies.
 *
 * Events and polling drive every step; deadlines only bound a hang.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { chmod, mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { chownToPostgres, freePort, startPostgres, type PgInstance } from '@pgfleet/testkit';
import { JobState } from '@pgfleet/proto';
import {
  adminAt,
  agentCommand,
  agentPgArgs,
  AGENT_BIN,
  CLI_BIN,
  CONTROLLER_BIN,
  INSECURE_ARGS,
  INSECURE_ENV,
  runNode,
  startDaemon,
  startFleet,
  waitFor,
  type AdminClient,
  type Daemon,
  type Fleet,
} from './harness.js';
import { assertRepoSegmentsSound, repoWal, segmentsBetween } from './repo-inspect.js';

/** mulberry32: the same schedule on every run of a seed (PGFLEET_CRASH_SEED picks another). */
function seeded(seed: number): () => number {
  let s = seed | 0;
  return () => {
    s = (s + 0x6d2b79f5) | 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
const SEED = Number(process.env.PGFLEET_CRASH_SEED ?? 0x13c4a5);

const lastArchived = async (pg: PgInstance): Promise<string | null> =>
  (await pg.query<{ w: string | null }>('SELECT last_archived_wal AS w FROM pg_stat_archiver'))[0]!.w;

const killed = (d: Daemon) => new Promise((r) => (d.child.exitCode !== null ? r(undefined) : d.child.once('exit', r)));

describe('kill -9 at random moments of WAL push: no acknowledged WAL is lost', { timeout: 900_000 }, () => {
  let fleet: Fleet;
  const started: PgInstance[] = [];
  const random = seeded(SEED);

  before(async () => {
    fleet = await startFleet({ cluster: 'walcrash', controllerArgs: ['--schedule-interval', '3600'] });
    await fleet.pg.query('CREATE TABLE t (id serial PRIMARY KEY, round int NOT NULL, filler text)');
  });
  after(async () => {
    for (const p of started) await p.stop();
    await fleet?.stop();
  });

  it(`seed ${SEED}: every acknowledged segment is in the repository, whole, and a restore to latest has every row`, async () => {
    const r = await fleet.cli('backup', 'walcrash', '--wait', '--output', 'json');
    assert.equal(r.code, 0, `${r.stderr}\n${await fleet.logs()}`);
    const backup = (JSON.parse(r.stdout) as { backup: { walStart: string } }).backup;

    // archive_command: wal-push killed -9 after the nth call's scheduled delay (a line of
    // `delays`, in seconds; an empty line: left alone). A killed push fails the command, so
    // PostgreSQL keeps the segment and retries; only a push that answered counts as archived.
    const dir = join(fleet.dir, 'crash');
    await mkdir(dir, { recursive: true });
    const delays = Array.from({ length: 2000 }, () => (random() < 0.5 ? (random() * 0.3).toFixed(3) : ''));
    await writeFile(join(dir, 'delays'), `${delays.join('\n')}\n`);
    const wrapper = join(dir, 'archive.sh');
    await writeFile(
      wrapper,
      `#!/bin/sh
n=$(cat "${dir}/n" 2>/dev/null || echo 0); n=$((n + 1)); echo $n > "${dir}/n"
d=$(sed -n "\${n}p" "${dir}/delays")
${agentCommand(`wal-push "$1" ${fleet.walArgs}`)} &
pid=$!
if [ -n "$d" ]; then (sleep "$d"; kill -9 $pid 2>/dev/null) & fi
wait $pid || exit 1
`,
    );
    await chmod(wrapper, 0o755);
    await chownToPostgres(dir, { recursive: true });
    await fleet.pg.query(`ALTER SYSTEM SET archive_command = '${wrapper} %p'`);
    await fleet.pg.query('SELECT pg_reload_conf()');

    // Rounds of WAL with the daemon killed -9 at a seeded moment of every other round, and
    // started again on the next: pushes die in the daemon and in standalone wal-push alike.
    let agentUp = true;
    for (let round = 0; round < 8; round++) {
      await fleet.pg.query(
        `INSERT INTO t (round, filler) SELECT ${round}, repeat('r', 300) FROM generate_series(1, 30000)`,
      );
      await fleet.pg.query('SELECT pg_switch_wal()');
      if (agentUp) {
        // A moment of the pushes of this round's segments (they are under way or about to be).
        await new Promise((res) => setTimeout(res, Math.floor(random() * 600)));
        fleet.agent!.child.kill('SIGKILL');
        await killed(fleet.agent!);
        agentUp = false;
      } else {
        await fleet.startAgent();
        agentUp = true;
      }
    }
    if (!agentUp) await fleet.startAgent();
    // No more kills: the rest of the schedule is empty.
    await writeFile(join(dir, 'delays'), '');
    await fleet.pg.query(`INSERT INTO t (round, filler) VALUES (-1, 'the last row')`);
    const [end] = await fleet.pg.query<{ f: string }>('SELECT pg_walfile_name(pg_switch_wal()) AS f');
    await waitFor(
      `WAL up to ${end!.f} to be archived`,
      async () => {
        const w = await lastArchived(fleet.pg);
        if (w !== null && w >= end!.f) return true;
        // A failing archive_command makes the archiver wait up to a minute; a new segment wakes it.
        await fleet.pg.query('SELECT pg_switch_wal()');
        return false;
      },
      300_000,
      2000,
    );
    const acknowledged = (await lastArchived(fleet.pg))!;
    const [stats] = await fleet.pg.query<{ failed: string }>('SELECT failed_count AS failed FROM pg_stat_archiver');
    assert.ok(Number(stats!.failed) > 0, 'some pushes were killed (the schedule ran)');

    const stored = await repoWal(fleet.repo, 'walcrash');
    const missing = segmentsBetween(backup.walStart, acknowledged).filter((s) => !stored.has(s));
    assert.deepEqual(missing, [], `every acknowledged segment since the backup is archived (seed ${SEED})`);
    // Once, whole, and matching the checksum its key names (read raw here).
    assert.ok((await assertRepoSegmentsSound(fleet.repo, 'walcrash')) >= 8);

    const expected = await fleet.pg.query<{ n: string; s: string; last: string }>(
      `SELECT count(*)::text AS n, sum(id)::text AS s, max(filler) FILTER (WHERE round = -1) AS last FROM t`,
    );
    const to = join(fleet.dir, 'restored');
    const restored = await fleet.cli('restore', 'walcrash', '--to', to, '--target', 'latest', '--wait');
    assert.equal(restored.code, 0, `${restored.stdout}\n${restored.stderr}\n${await fleet.logs()}`);
    const pg = await startPostgres({ dataDir: to, waitForRecovery: true, settings: { archive_mode: 'off' } });
    started.push(pg);
    assert.deepEqual(
      await pg.query(
        `SELECT count(*)::text AS n, sum(id)::text AS s, max(filler) FILTER (WHERE round = -1) AS last FROM t`,
      ),
      expected,
    );
  });
});

interface JobJson {
  id: string;
  state: string;
  progress?: { phase: string };
  backup?: { label: string };
  expire?: { deletedLabels: string[]; skippedLabels: string[] };
}

for (const ending of ['completes', 'is killed -9'] as const)
  describe(
    `an incr the catalog lost, running while expire runs, ${ending}: its chain survives`,
    { timeout: 900_000 },
    () => {
      let fleet: Fleet;
      let controller: Daemon | undefined;
      let agentB: Daemon | undefined;
      /** The second controller's admin API (polls). */
      let adminB: AdminClient | undefined;
      const cli = (address: string, ...args: string[]) =>
        runNode(CLI_BIN, args, { env: { PGFLEET_CONTROLLER: address, ...INSECURE_ENV } });

      before(async () => {
        fleet = await startFleet({ cluster: 'lease', controllerArgs: ['--schedule-interval', '3600'] });
        await fleet.pg.query('CREATE TABLE t (id int PRIMARY KEY, note text)');
      });
      after(async () => {
        // The agent stopped for the test must be able to take its SIGTERM.
        fleet?.agent?.child.kill('SIGCONT');
        await agentB?.stop();
        adminB?.close();
        await controller?.stop();
        await fleet?.stop();
      });

      it('expire keeps what its lease names; every listed backup verifies afterwards', async () => {
        const backup = async (address: string, type: string): Promise<string> => {
          const r = await cli(address, 'backup', 'lease', '--type', type, '--wait', '--output', 'json');
          assert.equal(r.code, 0, `${type}: ${r.stdout}\n${r.stderr}\n${await fleet.logs()}`);
          return (JSON.parse(r.stdout) as JobJson).backup!.label;
        };
        await fleet.pg.query(`INSERT INTO t SELECT g, 'f1' FROM generate_series(1, 1000) g`);
        const f1 = await backup(fleet.controllerAddress, 'full');
        await fleet.pg.query(`INSERT INTO t SELECT g, 'i1' FROM generate_series(1001, 2000) g`);
        const i1 = await backup(fleet.controllerAddress, 'incr');

        // The incr copies its files (some referenced from i1 and f1), then waits for WAL that does
        // not come yet: archiving is held. wal-push runs standalone (no daemon at its socket), so
        // archiving does not depend on the agents this test stops.
        const pushCommand = agentCommand(`wal-push "%p" ${fleet.walArgs} --socket "${join(fleet.dir, 'none.sock')}"`);
        await fleet.pg.query(`ALTER SYSTEM SET archive_command = '/bin/false'`);
        await fleet.pg.query('SELECT pg_reload_conf()');
        await fleet.pg.query(`INSERT INTO t SELECT g, 'i2' FROM generate_series(2001, 3000) g`);
        const startedI2 = await fleet.cli('backup', 'lease', '--type', 'incr', '--output', 'json');
        assert.equal(startedI2.code, 0, startedI2.stderr);
        const i2Job = (JSON.parse(startedI2.stdout) as JobJson).id;
        // Polled through the admin API: a `pgfleet` process every 250 ms through the copy and the
        // reclaim grace below was most of this test's CPU.
        await waitFor(
          'the incr to wait for its WAL',
          async () => (await fleet.admin!.getJob({ id: i2Job })).job?.progress?.phase === 'wait-wal',
        );
        const [lease] = await fleet.repo.listBackupLeases('lease', Date.now());
        assert.deepEqual(lease?.lease?.chain.sort(), [f1, i1].sort(), 'the lease names the chain');
        const i2 = lease!.label;

        // Its agent stops (SIGSTOP: the process, the backup and its held connection stay) and its
        // controller is replaced by one on another address, which the agent never finds: after the
        // reclaim grace the catalog fails the job while the backup still runs.
        fleet.agent!.child.kill('SIGSTOP');
        await fleet.controller.stop();
        const address = `127.0.0.1:${await freePort()}`;
        controller = startDaemon(
          CONTROLLER_BIN,
          [
            'run',
            ...INSECURE_ARGS,
            '--listen',
            address,
            '--catalog',
            join(fleet.dir, 'catalog.db'),
            '--repo-path',
            fleet.repoDir,
            '--heartbeat-interval',
            '1',
            '--job-reclaim-grace',
            '5',
            '--schedule-interval',
            '3600',
            // Its own free port: the default metrics address is taken by any other controller.
            '--metrics-listen',
            '127.0.0.1:0',
          ],
          join(fleet.dir, 'controller-2.log'),
        );
        adminB = adminAt(address);
        await waitFor(
          'the incr job to be failed by the reclaim grace',
          async () => (await adminB!.getJob({ id: i2Job })).job?.state === JobState.FAILED,
        );
        const failedI2 = await cli(address, 'job', i2Job, '--output', 'json');
        assert.equal(failedI2.code, 0, failedI2.stderr);
        assert.equal((JSON.parse(failedI2.stdout) as JobJson).state, 'failed', 'pgfleet job shows the incr failed');
        // Another agent of the cluster (same server, its own id and socket) serves the new controller.
        agentB = startDaemon(
          AGENT_BIN,
          [
            'run',
            ...INSECURE_ARGS,
            '--controller',
            address,
            '--cluster',
            'lease',
            '--agent-id',
            'lease-b',
            '--socket',
            join(fleet.dir, 'agent-b.sock'),
            ...agentPgArgs(fleet.pg),
            '--repo-path',
            fleet.repoDir,
            '--archive-timeout',
            '120',
          ],
          join(fleet.dir, 'agent-b.log'),
          { asPg: true },
        );
        await waitFor('agent lease-b to connect', async () =>
          (await adminB!.listClusters({})).clusters.some((c) => c.name === 'lease' && c.agentConnected),
        );
        await fleet.pg.query(`ALTER SYSTEM SET archive_command = '${pushCommand}'`);
        await fleet.pg.query('SELECT pg_reload_conf()');

        // A newer full makes f1 and i1 expirable by the policy: the catalog does not know i2.
        await fleet.pg.query(`INSERT INTO t SELECT g, 'f2' FROM generate_series(3001, 4000) g`);
        const f2 = await backup(address, 'full');
        let r = await cli(
          address,
          'policy',
          'set',
          'lease',
          '--min-full',
          '1',
          '--pitr-window-days',
          '0',
          '--daily',
          '1',
          // No weekly or monthly tier (the built-in keeps 4 and 12): run across a Sunday or the end
          // of a month, f1 would be the newest full of the week or month before and kept by it.
          '--weekly',
          '0',
          '--monthly',
          '0',
        );
        assert.equal(r.code, 0, r.stderr);
        r = await cli(address, 'retention', 'plan', 'lease', '--output', 'json');
        assert.equal(r.code, 0, r.stderr);
        const plan = JSON.parse(r.stdout) as { backups: { label: string; keep: boolean }[] };
        assert.deepEqual(
          plan.backups.filter((b) => !b.keep).map((b) => b.label),
          [f1, i1],
          'the catalog plans the chain of the running incr away',
        );
        r = await cli(address, 'retention', 'apply', 'lease', '--wait', '--output', 'json');
        assert.equal(r.code, 0, `${r.stdout}\n${r.stderr}\n${await agentB.log()}`);
        const expired = (JSON.parse(r.stdout) as JobJson).expire!;
        assert.deepEqual([expired.deletedLabels, expired.skippedLabels.sort()], [[], [f1, i1].sort()]);
        assert.match(await agentB.log(), new RegExp(`backup ${i2}, in progress, references it`));

        if (ending === 'completes') {
          // The incr goes on: its WAL arrives, its chain is still whole, it writes its manifest.
          fleet.agent!.child.kill('SIGCONT');
          await waitFor('the late incr to complete', async () => fleet.repo.hasManifest('lease', i2), 180_000, 500);
          assert.deepEqual(await fleet.repo.listBackupLeases('lease', Date.now()), [], 'its lease is gone');
        } else {
          fleet.agent!.child.kill('SIGKILL');
          await killed(fleet.agent!);
          assert.equal(await fleet.repo.hasManifest('lease', i2), false);
        }

        // What a user checks: every backup the repository lists has every file it names.
        const listed = (await fleet.repo.listBackups('lease')).map((m) => m.label);
        assert.deepEqual(listed.sort(), (ending === 'completes' ? [f1, i1, i2, f2] : [f1, i1, f2]).sort());
        // Verify reads every listed backup's files. The policy keeps no PITR window, so the WAL
        // between the kept backups went: gaps between them are expected, a missing file never is.
        const v = await cli(address, 'verify', 'lease', '--wait', '--output', 'json');
        const doc = JSON.parse(v.stdout) as {
          verify?: { backups: { label: string; restorable: boolean }[]; problems?: { kind: string }[] };
        };
        assert.deepEqual(
          (doc.verify?.backups ?? []).map((b) => [b.label, b.restorable]).sort(),
          listed.map((l) => [l, true]),
          `verify: ${v.stdout}\n${v.stderr}`,
        );
        const faults = (doc.verify?.problems ?? []).filter((p) => !['wal-gap', 'incomplete-backup'].includes(p.kind));
        assert.deepEqual(faults, [], `verify: ${v.stdout}`);
      });
    },
  );
