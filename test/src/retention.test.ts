/**
 * Schedules and retention end to end with real processes: a policy set with the CLI makes the
 * controller take backups on its own and expire what the policy no longer keeps; `retention plan`
 * shows the decision before anything is deleted, `retention apply` carries it out on the agent,
 * and what is left still restores exactly the rows the database holds.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { toJson } from '@bufbuild/protobuf';
import { EventSchema, JobState } from '@pgfleet/proto';
import { startPostgres, type PgInstance } from '@pgfleet/testkit';
import { startFleet, waitFor, type Fleet } from './harness.js';

interface BackupJson {
  label: string;
  walStart: string;
  walStop: string;
  type: string;
}
interface DecisionJson {
  label: string;
  keep: boolean;
  reasons: string[];
}

type Item = { id: number; note: string };
const items = (pg: PgInstance) => pg.query<Item>('SELECT id, note FROM items ORDER BY id');

async function backupsOf(fleet: Fleet): Promise<BackupJson[]> {
  const r = await fleet.cli('backups', fleet.cluster, '--output', 'json');
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout) as BackupJson[];
}

/**
 * The backup labels the catalog lists, through the admin API: what the waits below poll (a
 * `pgfleet` process each poll, twice a second through minutes of schedule and grace, was most
 * of this file's CPU). What they wait for is then checked as a user does, with the CLI.
 */
async function labelsOf(fleet: Fleet): Promise<string[]> {
  const labels: string[] = [];
  let pageToken = '';
  do {
    const r = await fleet.admin!.listBackups({ cluster: fleet.cluster, pageToken });
    labels.push(...r.backups.map((b) => b.label));
    pageToken = r.nextPageToken;
  } while (pageToken);
  return labels;
}

/** The cluster's jobs, kind and state as `pgfleet jobs --output json` names them, through the admin API. */
async function jobsOf(fleet: Fleet): Promise<{ kind: string; state: string }[]> {
  const { jobs } = await fleet.admin!.listJobs({ cluster: fleet.cluster, limit: 1000 });
  return jobs.map((j) => ({ kind: j.kind, state: (JobState[j.state] ?? String(j.state)).toLowerCase() }));
}

/** Archived WAL segment names (24 hex digits, no .partial/.backup/.history) in the posix repository. */
async function archivedSegments(fleet: Fleet): Promise<string[]> {
  const base = join(fleet.repoDir, fleet.cluster, 'wal');
  const out: string[] = [];
  for (const dir of await readdir(base)) {
    if (dir === 'timelines') continue;
    for (const f of await readdir(join(base, dir))) {
      const m = /^([0-9A-F]{24})-[0-9a-f]{64}/.exec(f);
      if (m) out.push(m[1]!);
    }
  }
  return out.sort();
}

const pos = (segment: string): string => segment.slice(8);

describe('retention: plan, apply, and PITR from what is left', { timeout: 300_000 }, () => {
  let fleet: Fleet;
  let backups: BackupJson[];
  const started: PgInstance[] = [];

  before(async () => {
    // The scheduler never ticks during this test: retention runs only when the CLI asks.
    fleet = await startFleet({ cluster: 'ret', controllerArgs: ['--schedule-interval', '3600'] });
    await fleet.pg.query('CREATE TABLE items (id int PRIMARY KEY, note text NOT NULL)');
    for (let i = 1; i <= 4; i++) {
      await fleet.pg.query(
        `INSERT INTO items SELECT g, 'batch ${i}' FROM generate_series(${i * 100}, ${i * 100 + 49}) g`,
      );
      const r = await fleet.cli('backup', 'ret', '--wait');
      assert.equal(r.code, 0, `backup ${i} failed:\n${r.stdout}\n${r.stderr}\n${await fleet.logs()}`);
      // Some WAL between backups, so that each backup has segments of its own.
      await fleet.switchAndArchive();
    }
    backups = await backupsOf(fleet);
    assert.equal(backups.length, 4);
  });

  after(async () => {
    for (const p of started) await p.stop();
    await fleet?.stop();
  });

  it('refuses bad policy values naming the flag', async () => {
    let r = await fleet.cli('policy', 'set', 'ret', '--full', '0 1 * *');
    assert.equal(r.code, 2);
    assert.match(r.stderr, /PGF-1001.*--full/);
    r = await fleet.cli('policy', 'set', 'ret', '--full', '0 25 * * *');
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /PGF-1001.*--full/);
    r = await fleet.cli('policy', 'set', 'ret', '--daily=-1');
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /--daily/);
    r = await fleet.cli('policy', 'frobnicate');
    assert.equal(r.code, 2);
    assert.match(r.stderr, /'get' or 'set'/);
  });

  it('policy set/get: cluster values over the fleet default, each with its source', async () => {
    // One daily full and no weekly or monthly tier: the four backups then keep the same two
    // whatever the calendar (run across midnight, a Sunday or a month's end, the tiers would keep
    // the newest full of the period before too).
    let r = await fleet.cli('policy', 'set', '--fleet', '--daily', '1');
    assert.equal(r.code, 0, r.stderr);
    r = await fleet.cli(
      'policy',
      'set',
      'ret',
      ...['--min-full', '2', '--pitr-window-days', '0', '--weekly', '0', '--monthly', '0'],
    );
    assert.equal(r.code, 0, r.stderr);
    r = await fleet.cli('policy', 'get', 'ret');
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^min-full\s+2\s+cluster$/m);
    assert.match(r.stdout, /^pitr-window-days\s+0\s+cluster$/m);
    assert.match(r.stdout, /^daily\s+1\s+fleet$/m);
    assert.match(r.stdout, /^weekly\s+0\s+cluster$/m);
    assert.match(r.stdout, /^yearly\s+0\s+default$/m);
    // Retention values alone do not make expiry automatic, and built-ins say so.
    assert.match(r.stdout, /^auto-expire\s+off\s+default$/m);
    assert.match(r.stdout, /automatic expiry is off/);
  });

  it('retention plan names the two oldest as expiring, with reasons, and deletes nothing', async () => {
    const r = await fleet.cli('retention', 'plan', 'ret', '--output', 'json');
    assert.equal(r.code, 0, r.stderr);
    const plan = JSON.parse(r.stdout) as { backups: DecisionJson[]; walKeepFrom: string; anchorLabel: string };
    assert.deepEqual(
      plan.backups.map((b) => [b.label, b.keep]),
      backups.map((b, i) => [b.label, i >= 2]),
    );
    assert.deepEqual(plan.backups[0]!.reasons, ['outside-retention']);
    assert.ok(plan.backups[2]!.reasons.includes('min-full'), plan.backups[2]!.reasons.join());
    assert.ok(plan.backups[3]!.reasons.includes('pitr-window'), plan.backups[3]!.reasons.join());
    assert.equal(plan.anchorLabel, backups[3]!.label);
    assert.equal(plan.walKeepFrom, backups[3]!.walStart);
    const table = await fleet.cli('retention', 'plan', 'ret');
    assert.equal(table.code, 0, table.stderr);
    assert.match(table.stdout, new RegExp(`^${backups[0]!.label}\\s+full\\s+.*\\bexpire\\s+outside-retention`, 'm'));
    assert.match(table.stdout, /2 of 4 backups would be removed/);
    assert.equal((await backupsOf(fleet)).length, 4);
  });

  it('retention apply removes exactly them from the catalog, the repository, and the WAL they alone needed', async () => {
    const before = await archivedSegments(fleet);
    const r = await fleet.cli('retention', 'apply', 'ret', '--wait');
    assert.equal(r.code, 0, `apply failed:\n${r.stdout}\n${r.stderr}\n${await fleet.logs()}`);
    assert.match(r.stdout, /expired 2 backup\(s\)/);
    const left = await backupsOf(fleet);
    assert.deepEqual(
      left.map((b) => b.label),
      [backups[2]!.label, backups[3]!.label],
    );
    const dirs = (await readdir(join(fleet.repoDir, 'ret', 'backup'))).sort();
    assert.deepEqual(dirs, [backups[2]!.label, backups[3]!.label].sort());

    const after = await archivedSegments(fleet);
    const [, , longTerm, anchor] = backups as [BackupJson, BackupJson, BackupJson, BackupJson];
    // Before the oldest kept backup: gone.
    assert.deepEqual(
      after.filter((s) => pos(s) < pos(longTerm.walStart)),
      [],
    );
    assert.ok(
      before.some((s) => pos(s) < pos(longTerm.walStart)),
      'there was older WAL to expire',
    );
    // The long-term backup (kept by min-full, outside the 0-day PITR window) keeps the WAL that makes it consistent.
    for (const s of before.filter((x) => pos(x) >= pos(longTerm.walStart) && pos(x) <= pos(longTerm.walStop)))
      assert.ok(after.includes(s), s);
    // Between it and the PITR anchor nothing is needed.
    assert.deepEqual(
      after.filter((s) => pos(s) > pos(longTerm.walStop) && pos(s) < pos(anchor.walStart)),
      [],
    );
    // From the anchor on, all WAL stays.
    const fromAnchor = before.filter((s) => pos(s) >= pos(anchor.walStart));
    assert.ok(fromAnchor.length > 0);
    assert.deepEqual(
      after.filter((s) => pos(s) >= pos(anchor.walStart)),
      fromAnchor,
    );
  });

  it('PITR to latest from what is left yields exactly the current rows', async () => {
    await fleet.pg.query(`INSERT INTO items SELECT g, 'after expiry' FROM generate_series(900, 949) g`);
    await fleet.pg.query(`DELETE FROM items WHERE id < 150`);
    const expected = await items(fleet.pg);
    await fleet.switchAndArchive();
    const dir = join(fleet.dir, 'restore-latest');
    const r = await fleet.cli('restore', 'ret', '--to', dir, '--target', 'latest', '--wait');
    assert.equal(r.code, 0, `restore failed:\n${r.stdout}\n${r.stderr}\n${await fleet.logs()}`);
    const pg = await startPostgres({ dataDir: dir, waitForRecovery: true, settings: { archive_mode: 'off' } });
    started.push(pg);
    assert.deepEqual(await items(pg), expected);
  });
});

interface PlannedJson {
  kind: string;
  time: string;
  retentionPlanned?: { backupLabels?: string[]; expireAfter: string };
}

/**
 * The retention.planned events of the cluster, oldest first, as `pgfleet events --output json`
 * prints them (the same call and JSON form, from the test process: this is polled).
 */
async function plannedEvents(fleet: Fleet): Promise<PlannedJson[]> {
  const { events } = await fleet.admin!.listEvents({ cluster: fleet.cluster, latest: true, limit: 1000 });
  return events
    .map((e) => toJson(EventSchema, e.event!) as unknown as PlannedJson)
    .filter((e) => e.kind === 'retention.planned');
}

describe('schedules: the controller takes backups and expires on its own', { timeout: 600_000 }, () => {
  let fleet: Fleet;

  before(async () => {
    fleet = await startFleet({ cluster: 'sched', controllerArgs: ['--schedule-interval', '1'] });
  });

  after(async () => {
    await fleet?.stop();
  });

  it('an every-minute full schedule starts a backup without any backup command; retention announces the older one, a pin inside the grace keeps it, unpinned it expires', async () => {
    const manual = await fleet.cli('backup', 'sched', '--wait');
    assert.equal(manual.code, 0, manual.stderr);
    const [first] = await backupsOf(fleet);
    const setAt = Date.now();
    const r = await fleet.cli(
      'policy',
      'set',
      'sched',
      '--full',
      '* * * * *',
      '--spread-minutes',
      '0',
      '--min-full',
      '1',
      '--pitr-window-days',
      '0',
      // Without it the first run would be the next minute; asked, the latest fire time runs at once.
      '--catch-up',
      'on',
      // Automatic expiry is off unless turned on; each expiry is announced this long ahead.
      '--auto-expire',
      'on',
      '--expire-grace',
      '15s',
    );
    assert.equal(r.code, 0, r.stderr);
    const shown = await fleet.cli('policy', 'get', 'sched');
    assert.match(shown.stdout, /^auto-expire\s+on\s+cluster$/m);
    assert.match(shown.stdout, /^expire-grace\s+15\s+cluster$/m);
    assert.match(shown.stdout, /^weekly\s+4\s+default$/m);

    // With catch-up on, a schedule that never ran is due at once for its latest fire time (a minute
    // either way), and a loaded machine takes its time over the backup.
    await waitFor(
      'a scheduled backup',
      async () => (await labelsOf(fleet)).some((l) => l !== first!.label),
      180_000,
      500,
    );
    const scheduled = (await backupsOf(fleet)).find((b) => b.label !== first!.label)!;
    assert.equal(scheduled.type, 'full');
    const jobs = JSON.parse((await fleet.cli('jobs', '--cluster', 'sched', '--output', 'json')).stdout) as {
      kind: string;
      id: string;
    }[];
    // A fire time runs once, not once per tick (a tick every second): at most one scheduled
    // backup per minute boundary passed since the policy was set, plus the one due at once.
    const minutes = Math.floor(Date.now() / 60_000) - Math.floor(setAt / 60_000);
    const scheduledJobs = jobs.filter((j) => j.kind === 'backup').length - 1;
    assert.ok(
      scheduledJobs >= 1 && scheduledJobs <= minutes + 1,
      `${scheduledJobs} scheduled backups in ${minutes + 1} minute(s): ${JSON.stringify(jobs)}`,
    );

    // min-full 1 and no PITR window: once the scheduled one succeeded, the manual backup is to go.
    // First it is announced; pinned inside the grace, it stays when the grace ends.
    const planned = await waitFor(
      'retention.planned naming the manual backup',
      async () => (await plannedEvents(fleet)).find((e) => e.retentionPlanned?.backupLabels?.includes(first!.label)),
      120_000,
      500,
    );
    const pin = await fleet.cli('pin', 'sched', first!.label);
    assert.equal(pin.code, 0, pin.stderr);
    const graceEnd = Date.parse(planned.retentionPlanned!.expireAfter);
    assert.ok(Date.now() < graceEnd, 'pinned inside the grace (a loaded machine took longer than 15 s)');
    // The grace's end is seen when the controller moves past it: it runs an expire job or announces
    // a later plan (every minute a new full makes the previous scheduled one expirable).
    await waitFor(
      'the controller to act after the grace',
      async () => {
        const acted = await jobsOf(fleet);
        const later = (await plannedEvents(fleet)).some((e) => Date.parse(e.time) >= graceEnd);
        return later || acted.some((j) => j.kind === 'expire') ? true : undefined;
      },
      120_000,
      500,
    );
    assert.ok(
      (await backupsOf(fleet)).some((b) => b.label === first!.label),
      'the pinned backup survived the end of its grace',
    );

    // Unpinned, it is planned again and goes after a fresh grace.
    const unpin = await fleet.cli('pin', 'sched', first!.label, '--unpin');
    assert.equal(unpin.code, 0, unpin.stderr);
    await waitFor(
      'the older backup to expire',
      async () => !(await labelsOf(fleet)).includes(first!.label),
      120_000,
      500,
    );
    assert.ok(
      !(await backupsOf(fleet)).some((b) => b.label === first!.label),
      'pgfleet backups no longer lists the expired backup',
    );
    const after = JSON.parse((await fleet.cli('jobs', '--cluster', 'sched', '--output', 'json')).stdout) as {
      kind: string;
      state: string;
    }[];
    assert.ok(
      after.some((j) => j.kind === 'expire' && j.state === 'succeeded'),
      JSON.stringify(after),
    );
    const dirs = await readdir(join(fleet.repoDir, 'sched', 'backup'));
    assert.ok(!dirs.includes(first!.label), dirs.join());
  });
});
