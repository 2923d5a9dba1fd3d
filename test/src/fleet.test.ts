/**
 * The controller issue's "Done when", end to end with real processes: three PostgreSQL clusters,
 * three agents and one controller.
 *   1. A fleet file with an every-minute schedule (applied with `pgfleet apply`) makes the
 *      controller back up all three clusters on its own; `pgfleet status` shows them.
 *   2. A controller restart keeps jobs and schedules consistent: every job is still there, none
 *      is stuck, and no fire time runs twice.
 *   3. Months of history: backup manifests and WAL generated into c1's repository below its real
 *      WAL (c1 starts at WAL log 0xA, see pg_resetwal below), indexed with `pgfleet-controller
 *      catalog rebuild` (idempotent). A GFS policy then makes the controller expire exactly the
 *      backups an independent reading of the rules says go, and exactly the WAL no kept backup
 *      needs.
 *   4. PITR inside the window still restores exactly the rows committed before the target.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { backupLabel, sleep } from '@pgfleet/core';
import { chownToPostgres, pgBinDir, removeDir, runAsPostgres, startPostgres, type PgInstance } from '@pgfleet/testkit';
import type { BackupManifest } from '@pgfleet/storage';
import { CONTROLLER_BIN, runNode, startFleet, waitFor, type Fleet } from './harness.js';

const CLUSTERS = ['c1', 'c2', 'c3'];
const DAY = 86_400_000;
/** Days of generated history for c1: one full backup a day. */
const HISTORY_DAYS = 100;
/** c1's WAL starts at 000000010000000A00000000; the history lives in logs 1 to 2. */
const FIRST_REAL_LOG = 0xa;
const RETENTION = { pitrWindowDays: 2, daily: 7, weekly: 4, monthly: 3, minFull: 1 };

interface ClusterJson {
  name: string;
  agentConnected?: boolean;
  lastBackup?: { label: string; type: string };
  nextJob?: { kind: string; time: string };
}
interface JobJson {
  id: string;
  kind: string;
  cluster: string;
  state: string;
  createdAt: string;
  error?: { code: string };
  backup?: { label: string };
}
interface BackupJson {
  label: string;
  type: string;
  stopTime: string;
  walStart: string;
  walStop: string;
}

const hex8 = (n: number) => n.toString(16).toUpperCase().padStart(8, '0');
/** Segment name on timeline 1 of absolute segment number `segno` (16 MiB segments: 256 per log). */
const segment = (segno: number) => `00000001${hex8(Math.floor(segno / 256))}${hex8(segno % 256)}`;
const lsnOf = (segno: number, offset: number) => {
  const byte = BigInt(segno) * 16n * 1024n * 1024n + BigInt(offset);
  return `${(byte >> 32n).toString(16).toUpperCase()}/${(byte & 0xffffffffn).toString(16).toUpperCase()}`;
};
const position = (seg: string) => seg.slice(8);

/**
 * The GFS rules read independently of retention/plan.ts, as the issue states them: the newest full at
 * or before now - window anchors PITR and it and everything after it stays; per tier, the newest
 * full of each of the N most recent calendar periods (UTC day, ISO week by its Monday, month)
 * that have one; the newest min-full fulls. Every backup here is a full.
 */
function expectedKeep(backups: readonly BackupJson[], now: number): { keep: Set<string>; anchor: BackupJson } {
  const fulls = [...backups].sort((a, b) => Date.parse(a.stopTime) - Date.parse(b.stopTime));
  const windowStart = now - RETENTION.pitrWindowDays * DAY;
  const anchor = [...fulls].reverse().find((b) => Date.parse(b.stopTime) <= windowStart)!;
  const keep = new Set(fulls.filter((b) => Date.parse(b.stopTime) >= Date.parse(anchor.stopTime)).map((b) => b.label));
  const day = (t: number) => new Date(t).toISOString().slice(0, 10);
  const periods = {
    daily: day,
    weekly: (t: number) => day(t - ((new Date(t).getUTCDay() + 6) % 7) * DAY),
    monthly: (t: number) => new Date(t).toISOString().slice(0, 7),
  };
  const newestFirst = [...fulls].reverse();
  for (const [tier, period] of Object.entries(periods) as [keyof typeof periods, (t: number) => string][]) {
    const seen = new Set<string>();
    for (const b of newestFirst) {
      const p = period(Date.parse(b.stopTime));
      if (seen.has(p)) continue;
      if (seen.size === RETENTION[tier]) break;
      seen.add(p);
      keep.add(b.label);
    }
  }
  for (const b of newestFirst.slice(0, RETENTION.minFull)) keep.add(b.label);
  return { keep, anchor };
}

describe('a fleet of three clusters under one controller', { timeout: 900_000 }, () => {
  let fleet: Fleet;
  let seedDir: string;
  let scheduleSetAt = 0;
  const started: PgInstance[] = [];
  const dbOf = (cluster: string): PgInstance =>
    cluster === 'c1' ? fleet.pg : fleet.members.find((m) => m.cluster === cluster)!.pg;

  async function cliJson<T>(...args: string[]): Promise<T> {
    const r = await fleet.cli(...args, '--output', 'json');
    assert.equal(r.code, 0, `pgfleet ${args.join(' ')}: ${r.stderr}`);
    return JSON.parse(r.stdout) as T;
  }
  const status = async () => (await cliJson<{ clusters: ClusterJson[] }>('status')).clusters;
  const jobs = () => cliJson<JobJson[]>('jobs', '--limit', '10000');
  const backups = (cluster: string) => cliJson<BackupJson[]>('backups', cluster);

  async function apply(name: string, text: string, ...flags: string[]): Promise<string> {
    const file = join(fleet.dir, name);
    await writeFile(file, text);
    const r = await fleet.cli('apply', '-f', file, ...flags);
    assert.equal(r.code, 0, `apply ${name}: ${r.stderr}`);
    return r.stdout;
  }

  async function idle(): Promise<void> {
    await waitFor(
      'every job to end',
      async () => (await jobs()).every((j) => /succeeded|failed|cancelled/.test(j.state)),
      180_000,
      500,
    );
  }

  before(async () => {
    // c1 gets a data directory whose WAL starts at log 0xA, so that the generated history (logs
    // 1-2) sits below every real segment, as older WAL does in a real repository.
    const seed = await startPostgres({ keepDataDir: true });
    await seed.stop();
    seedDir = seed.dataDir;
    await runAsPostgres(join(pgBinDir(), 'pg_resetwal'), [
      '-l',
      `00000001${hex8(FIRST_REAL_LOG)}00000000`,
      '-D',
      seedDir,
    ]);
    // Every-minute schedules and a 1 s scheduler round; three backups may run at once on this one host.
    fleet = await startFleet({
      cluster: 'c1',
      pg: { dataDir: seedDir },
      controllerArgs: ['--schedule-interval', '1', '--max-backups-per-host', '3', '--metrics-listen', '127.0.0.1:0'],
    });
    await fleet.addCluster('c2');
    await fleet.addCluster('c3');
    for (const c of CLUSTERS) {
      await dbOf(c).query('CREATE TABLE items (id int PRIMARY KEY, note text NOT NULL)');
      await dbOf(c).query(`INSERT INTO items SELECT g, '${c} ' || g FROM generate_series(1, 500) g`);
    }
  });

  after(async () => {
    for (const p of started) await p.stop();
    await fleet?.stop();
    if (seedDir) await removeDir(dirname(seedDir));
  });

  it('fast schedules fire: an every-minute fleet schedule backs up all three clusters without a backup command', async () => {
    const [real] = await fleet.pg.query<{ w: string }>('SELECT pg_walfile_name(pg_current_wal_lsn()) AS w');
    assert.equal(real!.w.slice(8, 16), hex8(FIRST_REAL_LOG), 'c1 writes WAL above the generated history');
    scheduleSetAt = Date.now();
    const out = await apply('fleet-fast.yaml', 'fleet:\n  full: "* * * * *"\n  spread-minutes: 0\n  catch-up: "on"\n');
    assert.match(out, /^fleet\s+full\s+-\s+\* \* \* \* \*$/m);
    // With catch-up on, a schedule that never ran is due at once for its latest fire time.
    const all = await waitFor(
      'a scheduled backup of every cluster',
      async () => {
        const list = await status();
        return CLUSTERS.every((c) => list.find((x) => x.name === c)?.lastBackup) ? list : undefined;
      },
      120_000,
      500,
    );
    for (const c of CLUSTERS) {
      const s = all.find((x) => x.name === c)!;
      assert.equal(s.agentConnected, true, c);
      assert.equal(s.lastBackup?.type, 'full', c);
      assert.equal(s.nextJob?.kind, 'full', c);
    }
    const table = await fleet.cli('status');
    assert.equal(table.code, 0, table.stderr);
    for (const c of CLUSTERS)
      assert.match(
        table.stdout,
        new RegExp(
          // AGE, LAST DUMP (none: '-'), RPO, ARCHIVE, NEXT JOB
          `^${c}\\s+connected\\s+\\d{8}-\\d{6}F \\(full\\)\\s+\\S+\\s+-\\s+\\S+\\s+ok\\s+full (in \\S+|due)`,
          'm',
        ),
      );
    // Started by the scheduler: nobody asked for a backup.
    const scheduled = (await jobs()).filter((j) => j.kind === 'backup');
    assert.deepEqual([...new Set(scheduled.map((j) => j.cluster))].sort(), CLUSTERS);
  });

  it('a controller restart keeps every job and runs no fire time twice', async () => {
    const before = await jobs();
    await fleet.restartController();
    // The old controller has exited: every job created from now on is the restarted one's.
    const restartedAt = Date.now();
    await waitFor(
      'all three agents to reconnect',
      async () => {
        const list = await status();
        return CLUSTERS.every((c) => list.find((x) => x.name === c)?.agentConnected);
      },
      120_000,
      500,
    );
    // Jobs running across the restart are claimed by their agents and finish; none stays active.
    const unfinished = new Set(before.filter((j) => !/succeeded|failed|cancelled/.test(j.state)).map((j) => j.id));
    await waitFor(
      'jobs running across the restart to end',
      async () => {
        const now = await jobs();
        return now.every((j) => !unfinished.has(j.id) || /succeeded|failed|cancelled/.test(j.state)) ? true : undefined;
      },
      120_000,
      500,
    );
    // The restarted controller's scheduler has run its rounds with all three agents back once it
    // has started a backup of its own for each cluster (the next minute boundary at the latest);
    // had it repeated a fire time the old controller ran, the count per fire time below shows it.
    const after = await waitFor(
      'the restarted scheduler to back up every cluster',
      async () => {
        const now = await jobs();
        const fresh = now.filter((j) => j.kind === 'backup' && Date.parse(j.createdAt) >= restartedAt);
        return CLUSTERS.every((c) => fresh.some((j) => j.cluster === c)) ? now : undefined;
      },
      180_000,
      500,
    );
    const byId = new Map(after.map((j) => [j.id, j]));
    for (const j of before) {
      const now = byId.get(j.id);
      assert.ok(now, `job ${j.id} (${j.kind} of ${j.cluster}) is still listed`);
      assert.deepEqual([now.kind, now.cluster], [j.kind, j.cluster]);
      if (/succeeded|failed|cancelled/.test(j.state)) {
        assert.equal(now.state, j.state, `finished job ${j.id} unchanged`);
      } else if (now.state === 'succeeded') {
        // Claimed by its agent after the restart: a backup that finished is in the catalog.
        if (now.kind === 'backup') assert.ok(now.backup?.label, `job ${j.id} succeeded with its backup recorded`);
      } else {
        // Otherwise it ends visibly with the reason, never stays active.
        assert.equal(now.state, 'failed', `job ${j.id} left active by the old controller`);
        assert.ok(now.error?.code, `job ${j.id} failed with a reason`);
      }
    }
    // At most one run per fire time: one for the fire time due when the schedule was set, then one
    // per minute boundary since, restart or not.
    const minutes = Math.floor(Date.now() / 60_000) - Math.floor(scheduleSetAt / 60_000);
    for (const c of CLUSTERS) {
      const n = after.filter((j) => j.kind === 'backup' && j.cluster === c).length;
      assert.ok(n >= 1 && n <= minutes + 1, `${c}: ${n} scheduled backups over ${minutes + 1} fire time(s)`);
    }
  });

  it('catalog rebuild indexes months of history from the repository, idempotently', async () => {
    // Schedules off (a yearly fire time long before the last run), and nothing running.
    await apply('fleet-quiet.yaml', 'fleet:\n  full: "0 0 1 1 *"\n  spread-minutes: 0\n');
    await idle();
    const real = await backups('c1');
    // Should a backup have finished on its agent after its job failed (its agent not back within
    // the reclaim grace), the repository holds it and the catalog does not: rebuild adds it too.
    const orphans = (await fleet.repo.listBackups('c1')).filter((m) => !real.some((b) => b.label === m.label)).length;
    const info = (await fleet.repo.readClusterInfo('c1'))!;
    const template = await fleet.repo.readManifest('c1', real[0]!.label);
    const now = Date.now();
    for (let i = 0; i < HISTORY_DAYS; i++) {
      const stop = now - (HISTORY_DAYS - i) * DAY - 3_600_000;
      const segno = 0x100 + 3 * i; // walStart, walStop, then one segment only the PITR window needs
      const manifest: BackupManifest = {
        ...template,
        label: backupLabel(new Date(stop - 600_000), 'full'),
        type: 'full',
        systemIdentifier: info.systemIdentifier,
        startLsn: lsnOf(segno, 0x28),
        stopLsn: lsnOf(segno + 1, 0x100),
        startTime: new Date(stop - 600_000).toISOString(),
        stopTime: new Date(stop).toISOString(),
        walStart: segment(segno),
        walStop: segment(segno + 1),
        directories: [],
        links: [],
        files: [],
        sizeBytes: 30 << 20,
        storedBytes: 3 << 20,
      };
      delete manifest.priorLabel;
      await fleet.repo.writeManifest(manifest);
      for (const s of [segno, segno + 1, segno + 2]) {
        const content = Buffer.from(`generated WAL ${segment(s)}`);
        const name = segment(s);
        await fleet.repo.driver.put(
          `c1/wal/${name.slice(0, 16)}/${name}-${createHash('sha256').update(content).digest('hex')}`,
          content,
        );
      }
    }
    // Written by this (root) process: hand them to the agent's OS user, who expires them.
    await chownToPostgres(join(fleet.repoDir, 'c1'), { recursive: true });
    const rebuild = (...flags: string[]) =>
      runNode(CONTROLLER_BIN, [
        'catalog',
        'rebuild',
        '--catalog',
        join(fleet.dir, 'catalog.db'),
        '--repo-path',
        fleet.repoDir,
        '--cluster',
        'c1',
        ...flags,
      ]);
    const first = await rebuild();
    assert.equal(first.code, 0, first.stderr);
    assert.match(
      first.stdout,
      new RegExp(`^  c1: ${HISTORY_DAYS + orphans} added, 0 updated, 0 removed, ${real.length} unchanged$`, 'm'),
    );
    const second = await rebuild('--dry-run');
    assert.equal(second.code, 0, second.stderr);
    assert.match(
      second.stdout,
      new RegExp(`^  c1: 0 added, 0 updated, 0 removed, ${HISTORY_DAYS + orphans + real.length} unchanged$`, 'm'),
    );
    assert.equal((await backups('c1')).length, HISTORY_DAYS + orphans + real.length);
  });

  it('a GFS policy expires exactly the expected backups and the WAL they alone needed', async () => {
    const all = await backups('c1');
    const walBefore = new Set<string>();
    for await (const w of fleet.repo.listWal('c1')) if (/^[0-9A-F]{24}$/.test(w.name)) walBefore.add(w.name);
    const { keep, anchor } = expectedKeep(all, Date.now());
    assert.ok(
      keep.size > RETENTION.daily && keep.size < all.length / 2,
      `a real mix: keep ${keep.size} of ${all.length}`,
    );

    // Retention and automatic expiry set for c1 only: the scheduler plans it on its next round,
    // announces it (retention.planned) and starts the expire job when the 1 s grace has passed.
    await apply(
      'fleet-retention.yaml',
      [
        'fleet:',
        '  full: "0 0 1 1 *"',
        '  spread-minutes: 0',
        'clusters:',
        '  c1:',
        ...Object.entries({
          'pitr-window-days': 2,
          daily: 7,
          weekly: 4,
          monthly: 3,
          'min-full': 1,
          'auto-expire': '"on"',
          'expire-grace': '1s',
        }).map(([k, v]) => `    ${k}: ${v}`),
        '',
      ].join('\n'),
    );
    const expire = await waitFor(
      'the scheduled expire job of c1',
      async () => {
        const j = (await jobs()).find((x) => x.kind === 'expire' && x.cluster === 'c1');
        if (j && /failed|cancelled/.test(j.state))
          throw new Error(`expire job ${j.id} ${j.state}: ${await fleet.logs()}`);
        return j?.state === 'succeeded' ? j : undefined;
      },
      180_000,
      500,
    );
    assert.ok(expire);

    const left = (await backups('c1')).map((b) => b.label).sort();
    assert.deepEqual(left, [...keep].sort());
    assert.deepEqual((await fleet.repo.listBackups('c1')).map((m) => m.label).sort(), [...keep].sort());

    // WAL: from the PITR anchor's first segment on everything stays; before it, exactly the
    // segments that make each kept long-term backup consistent.
    const keptRanges = all.filter((b) => keep.has(b.label) && position(b.walStart) < position(anchor.walStart));
    const needed = (seg: string) =>
      position(seg) >= position(anchor.walStart) ||
      keptRanges.some((b) => position(seg) >= position(b.walStart) && position(seg) <= position(b.walStop));
    const walAfter = new Set<string>();
    for await (const w of fleet.repo.listWal('c1')) if (/^[0-9A-F]{24}$/.test(w.name)) walAfter.add(w.name);
    // (c1 may archive new segments meanwhile: compare the generated ones exactly, the real ones as kept.)
    const generated = (names: Iterable<string>) =>
      [...names].filter((s) => parseInt(s.slice(8, 16), 16) < FIRST_REAL_LOG).sort();
    const expectedLeft = generated(walBefore).filter(needed);
    assert.deepEqual(generated(walAfter), expectedLeft);
    assert.ok(
      generated(walBefore).length - expectedLeft.length > HISTORY_DAYS,
      `${generated(walBefore).length - expectedLeft.length} WAL segments expired`,
    );
    assert.ok(
      [...walBefore].filter((s) => parseInt(s.slice(8, 16), 16) >= FIRST_REAL_LOG).every((s) => walAfter.has(s)),
      'every real segment stays',
    );

    // Nothing more to do: the plan now keeps everything.
    const plan = await cliJson<{ backups: { keep: boolean }[] }>('retention', 'plan', 'c1');
    assert.ok(plan.backups.every((b) => b.keep));
    // The expiry was announced before it ran.
    const events = await fleet.cli('events', '--cluster', 'c1', '--limit', '1000', '--output', 'json');
    assert.equal(events.code, 0, events.stderr);
    assert.match(events.stdout, /"kind":\s*"retention\.planned"/);
    // Clusters without automatic expiry keep all their backups.
    for (const c of ['c2', 'c3'])
      assert.equal((await jobs()).filter((j) => j.kind === 'expire' && j.cluster === c).length, 0);
  });

  it('PITR inside the window restores exactly the rows committed before the target', async () => {
    const db = fleet.pg;
    await db.query(`INSERT INTO items SELECT g, 'before T ' || g FROM generate_series(501, 700) g`);
    await db.query(`UPDATE items SET note = 'changed' WHERE id <= 20`);
    const expected = await db.query<{ id: number; note: string }>('SELECT id, note FROM items ORDER BY id');
    const target = (
      await db.query<{ t: string }>(
        `SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS t`,
      )
    )[0]!.t;
    await sleep(50);
    await db.query('DELETE FROM items WHERE id > 100');
    await fleet.switchAndArchive();

    const dir = join(fleet.dir, 'restore-c1');
    const r = await fleet.cli('restore', 'c1', '--to', dir, '--target-time', target, '--wait');
    assert.equal(r.code, 0, `restore failed:\n${r.stdout}\n${r.stderr}\n${await fleet.logs()}`);
    const restored = await startPostgres({ dataDir: dir, waitForRecovery: true, settings: { archive_mode: 'off' } });
    started.push(restored);
    assert.deepEqual(await restored.query('SELECT id, note FROM items ORDER BY id'), expected);
  });
});
