// Integration: policies, the scheduler loop and retention through the real controller (port 0,
// temp SQLite catalog) with fake agents. The loop's timer is off; each test drives
// `scheduler.tick(now)` with its own clock, so cron times are exact and nothing sleeps.
import { strict as assert } from 'node:assert';
import { describe, test } from 'node:test';
import { timestampFromMs } from '@bufbuild/protobuf/wkt';
import { ErrorCodes } from '@pgfleet/core';
import { BackupType, JobState, type Job } from '@pgfleet/proto';
import { RUN_DEFAULTS } from '../options.js';
import { decodeOutboxEvent } from '../jobs/events.js';
import { FakeAgent, SYSID, reportedBackup, waitFor } from '../testing/fake-agent.js';
import { useTestController } from '../testing/test-controller.js';
import { rejectsWith } from '../testing/assertions.js';

const MIN = 60_000;
const HOUR = 60 * MIN;
const DAY = 24 * HOUR;
const T0 = Date.UTC(2026, 2, 2, 10, 0, 0); // Monday 2026-03-02 10:00Z

let clock = T0;
// The daemon's default reclaim grace, as this file always ran (the helper's 1 s is for tests racing it).
const t = useTestController(
  'sched',
  { maxBackupsPerHost: 2, jobReclaimGraceSeconds: RUN_DEFAULTS.jobReclaimGrace },
  { now: () => clock, schedulerTimer: false },
);

async function connectAgent(cluster: string, agentId = `agent-${cluster}`): Promise<FakeAgent> {
  const agent = new FakeAgent(t.controller.address);
  agent.hello({ cluster, agentId, systemIdentifier: `${SYSID}-${cluster}` });
  assert.equal((await agent.receive()).msg.case, 'welcome');
  await waitFor(`${cluster} registered`, async () =>
    (await t.admin.listClusters({})).clusters.some((c) => c.name === cluster && c.agentConnected) ? true : undefined,
  );
  return agent;
}

/** A complete dump of database shop in the catalog, stopped at `stop` (what a dump job's success records). */
function insertDump(cluster: string, label: string, stop: number): Promise<void> {
  return t.controller.context.store.insertDump({
    cluster,
    label,
    jobId: `dump-${label}`,
    startTime: stop - MIN,
    stopTime: stop,
    sizeBytes: 10,
    storedBytes: 10,
    result: {
      label,
      codec: 'none',
      serverMajor: 15,
      databases: [
        { name: 'shop', dir: '16384', tables: [{ schema: 'public', name: 't', rows: '3', rowsCounted: true }] },
      ],
    },
  });
}

/** Reports the backup job as succeeded with a full backup that ran [stop - 1 min, stop]. */
function finishBackup(agent: FakeAgent, job: Job, label: string, stop: number, seg: number, cluster: string): void {
  const name = `00000001000000000000${seg.toString(16).toUpperCase().padStart(4, '0')}`;
  agent.succeed(job.jobId, {
    case: 'backup',
    value: reportedBackup({
      label,
      type: job.kind.case === 'backup' ? job.kind.value.type : BackupType.FULL,
      startLsn: `0/${(seg * 0x1000000 + 0x28).toString(16).toUpperCase()}`,
      stopLsn: `0/${(seg * 0x1000000 + 0x100).toString(16).toUpperCase()}`,
      startTime: timestampFromMs(stop - MIN),
      stopTime: timestampFromMs(stop),
      systemIdentifier: `${SYSID}-${cluster}`,
      storedBytes: 100n,
      fileCount: 3,
      walStart: name,
      walStop: name,
    }),
  });
}

async function jobState(id: string): Promise<JobState | undefined> {
  return (await t.admin.getJob({ id })).job?.state;
}

describe('policies', () => {
  test('get shows every key with its source; set merges; a cluster overrides the fleet', async () => {
    let p = await t.admin.getPolicy({ cluster: 'alpha' });
    assert.deepEqual(
      p.values.map((v) => [v.key, v.value, v.source]),
      [
        ['full', '-', 'default'],
        ['diff', '-', 'default'],
        ['incr', '-', 'default'],
        ['drill', '-', 'default'],
        ['logical', '-', 'default'],
        ['dumpDrill', '-', 'default'],
        ['spreadMinutes', '30', 'default'],
        ['backupFrom', 'primary', 'default'],
        ['catchUp', 'off', 'default'],
        ['pitrWindowDays', '7', 'default'],
        ['daily', '7', 'default'],
        ['weekly', '4', 'default'],
        ['monthly', '12', 'default'],
        ['yearly', '0', 'default'],
        ['minFull', '1', 'default'],
        ['autoExpire', 'off', 'default'],
        ['expireGraceSeconds', '3600', 'default'],
        // No logical tier set anywhere: dump retention is off (every dump is kept).
        ['logicalDaily', 'off', 'default'],
        ['logicalWeekly', 'off', 'default'],
        ['logicalMonthly', 'off', 'default'],
        ['logicalYearly', 'off', 'default'],
        ['logicalMin', 'off', 'default'],
        // Health thresholds nobody set show the controller's flags (defaults here).
        ['rpoThresholdSeconds', '300', 'default'],
        ['staleBackupThresholdSeconds', '93600', 'default'],
        ['agentSilenceThresholdSeconds', '60', 'default'],
        ['staleDumpThresholdSeconds', '-', 'default'],
      ],
    );
    assert.equal(p.retentionConfigured, false);
    await t.admin.setPolicy({ fleet: true, settings: { full: '0 1 * * 0', incr: '0 1 * * 1-6', daily: 5 } });
    // Retention counts alone do not make expiry automatic: only --auto-expire on does.
    assert.equal((await t.admin.getPolicy({ cluster: 'alpha' })).retentionConfigured, false);
    await t.admin.setPolicy({ fleet: true, settings: { autoExpire: true, expireGraceSeconds: 1800 } });
    await t.admin.setPolicy({
      cluster: 'alpha',
      settings: {
        incr: '',
        minFull: 3,
        drill: '0 4 * * 0',
        rpoThresholdSeconds: 90,
        backupFrom: 'prefer-standby',
        logical: '30 2 * * *',
        logicalWeekly: 3,
      },
    });
    p = (await t.admin.setPolicy({ cluster: 'alpha', settings: { weekly: 2 } })).policy!;
    const v = Object.fromEntries(p.values.map((x) => [x.key, `${x.value}/${x.source}`]));
    assert.deepEqual(v, {
      full: '0 1 * * 0/fleet',
      diff: '-/default',
      incr: '-/cluster',
      drill: '0 4 * * 0/cluster',
      logical: '30 2 * * */cluster',
      dumpDrill: '-/default',
      spreadMinutes: '30/default',
      backupFrom: 'prefer-standby/cluster',
      catchUp: 'off/default',
      pitrWindowDays: '7/default',
      daily: '5/fleet',
      weekly: '2/cluster',
      monthly: '12/default',
      yearly: '0/default',
      minFull: '3/cluster',
      autoExpire: 'on/fleet',
      expireGraceSeconds: '1800/fleet',
      // One logical key set turns dump retention on; the others take the built-in tiers.
      logicalDaily: '7/default',
      logicalWeekly: '3/cluster',
      logicalMonthly: '12/default',
      logicalYearly: '0/default',
      logicalMin: '1/default',
      rpoThresholdSeconds: '90/cluster',
      staleBackupThresholdSeconds: '93600/default',
      agentSilenceThresholdSeconds: '60/default',
      staleDumpThresholdSeconds: '-/default',
    });
    assert.deepEqual(
      [p.clusterOverride?.incr, p.clusterOverride?.minFull, p.clusterOverride?.weekly, p.fleet?.daily],
      ['', 3, 2, 5],
    );
    assert.equal(p.retentionConfigured, true);
    const fleet = await t.admin.getPolicy({ cluster: '' });
    assert.deepEqual(
      fleet.values.find((x) => x.key === 'incr'),
      { $typeName: 'pgfleet.v1.PolicyValue', key: 'incr', value: '0 1 * * 1-6', source: 'fleet' },
    );
    // reset drops the override: everything is inherited again.
    p = (await t.admin.setPolicy({ cluster: 'alpha', reset: true, settings: {} })).policy!;
    assert.ok(p.values.every((x) => x.source !== 'cluster'));
    await t.admin.setPolicy({ fleet: true, reset: true, settings: {} });
  });

  test('bad values are refused naming the flag; nothing is stored', async () => {
    await rejectsWith(
      t.admin.setPolicy({ cluster: 'alpha', settings: { full: '0 1 * *' } }),
      'InvalidArgument',
      /--full.*5 fields/,
    );
    await rejectsWith(
      t.admin.setPolicy({ cluster: 'alpha', settings: { diff: '61 * * * *' } }),
      'InvalidArgument',
      /--diff/,
    );
    await rejectsWith(
      t.admin.setPolicy({ cluster: 'alpha', settings: { pitrWindowDays: -1 } }),
      'InvalidArgument',
      /--pitr-window-days/,
    );
    await rejectsWith(
      t.admin.setPolicy({ cluster: 'alpha', settings: { spreadMinutes: -5 } }),
      'InvalidArgument',
      /--spread-minutes/,
    );
    await rejectsWith(
      t.admin.setPolicy({ cluster: 'alpha', settings: { drill: 'every sunday' } }),
      'InvalidArgument',
      /--drill/,
    );
    await rejectsWith(
      t.admin.setPolicy({ cluster: 'alpha', settings: { rpoThresholdSeconds: 0 } }),
      'InvalidArgument',
      /--rpo-threshold/,
    );
    await rejectsWith(
      t.admin.setPolicy({ cluster: 'alpha', settings: { backupFrom: 'replica' } }),
      'InvalidArgument',
      /--backup-from.*primary, standby, prefer-standby.*'replica'/,
    );
    // '*' is the fleet default's scope in the catalog, never a cluster name (the one rule refuses it first).
    await rejectsWith(
      t.admin.setPolicy({ cluster: '*', settings: { daily: 1 } }),
      'InvalidClusterName',
      /is not a cluster name/,
    );
    await rejectsWith(t.admin.setPolicy({ cluster: 'alpha', fleet: true, settings: { daily: 1 } }), 'InvalidArgument');
    await rejectsWith(
      t.admin.setPolicy({ cluster: 'alpha', settings: { expireGraceSeconds: 8 * 24 * 3600 } }),
      'InvalidArgument',
      /--expire-grace/,
    );
    assert.ok((await t.admin.getPolicy({ cluster: 'alpha' })).values.every((x) => x.source === 'default'));
  });
});

describe('scheduler loop', () => {
  let main: FakeAgent;

  test('a due full starts once, is recorded, and fires again at the next cron time', async () => {
    main = await connectAgent('main');
    // catchUp: the schedule's 10:00 fire time, just passed, runs at once.
    await t.admin.setPolicy({ cluster: 'main', settings: { full: '0 * * * *', spreadMinutes: 0, catchUp: true } });
    clock = T0 + 30_000;
    let r = await t.controller.scheduler.tick(clock);
    assert.deepEqual(
      r.started.map((s) => [s.cluster, s.type, s.scheduledAt.toISOString()]),
      [['main', 'full', '2026-03-02T10:00:00.000Z']],
    );
    const job = await main.receiveJob();
    assert.equal(job.jobId, r.started[0]!.jobId);
    assert.equal(job.kind.case === 'backup' && job.kind.value.type, BackupType.FULL);
    assert.deepEqual((await t.controller.context.store.getJob(job.jobId))?.params, {
      type: 'full',
      scheduledAt: '2026-03-02T10:00:00.000Z',
    });
    assert.deepEqual(await t.controller.context.store.listScheduleRuns('main'), [
      { cluster: 'main', type: 'full', lastRun: T0 },
    ]);

    clock = T0 + 40_000;
    r = await t.controller.scheduler.tick(clock);
    assert.deepEqual([r.started, r.waiting], [[], []]);
    finishBackup(main, job, '20260302-095930F', T0 + 50_000, 2, 'main');
    await waitFor('backup succeeded', async () =>
      (await jobState(job.jobId)) === JobState.SUCCEEDED ? true : undefined,
    );

    clock = T0 + 30 * MIN;
    assert.deepEqual((await t.controller.scheduler.tick(clock)).started, []);
    clock = T0 + HOUR + 5000;
    r = await t.controller.scheduler.tick(clock);
    assert.deepEqual(
      r.started.map((s) => s.scheduledAt.toISOString()),
      ['2026-03-02T11:00:00.000Z'],
    );
    const second = await main.receiveJob();
    finishBackup(main, second, '20260302-110000F', T0 + HOUR + 60_000, 4, 'main');
    await waitFor('second backup succeeded', async () =>
      (await jobState(second.jobId)) === JobState.SUCCEEDED ? true : undefined,
    );
  });

  test('a controller restart neither repeats nor loses a run; missed fire times run once', async () => {
    await t.restart();
    main = await connectAgent('main');
    clock = T0 + HOUR + 30_000;
    assert.deepEqual((await t.controller.scheduler.tick(clock)).started, [], 'the 11:00 run is recorded: not repeated');
    // Down from 11:01 to 14:10: the 12:00, 13:00 and 14:00 runs fold into one.
    clock = T0 + 4 * HOUR + 10 * MIN;
    const r = await t.controller.scheduler.tick(clock);
    assert.deepEqual(
      r.started.map((s) => s.scheduledAt.toISOString()),
      ['2026-03-02T14:00:00.000Z'],
    );
    const job = await main.receiveJob();
    finishBackup(main, job, '20260302-141000F', clock + 30_000, 6, 'main');
    await waitFor('backup succeeded', async () =>
      (await jobState(job.jobId)) === JobState.SUCCEEDED ? true : undefined,
    );
    assert.deepEqual((await t.controller.scheduler.tick(clock + MIN)).started, []);
  });

  test('a due full covers a due incr; the per-host limit holds the second cluster back', async () => {
    await t.restart({ maxBackupsPerHost: 1 });
    // Both fake agents report the same hostname.
    const a = await connectAgent('host-a');
    const b = await connectAgent('host-b');
    await t.admin.setPolicy({
      cluster: 'host-a',
      settings: { full: '0 18 * * *', incr: '*/15 * * * *', spreadMinutes: 0 },
    });
    await t.admin.setPolicy({ cluster: 'host-b', settings: { full: '0 18 * * *', spreadMinutes: 0 } });
    // New schedules: this tick records 17:00 as their start, so 18:00 is their first run.
    clock = T0 + 7 * HOUR;
    assert.deepEqual((await t.controller.scheduler.tick(clock)).started, []);
    clock = T0 + 8 * HOUR + MIN; // 18:01
    let r = await t.controller.scheduler.tick(clock);
    assert.equal(r.started.length, 1);
    assert.deepEqual(
      r.waiting.map((w) => [w.type, w.reason]),
      [['full', 'host-limit']],
    );
    const first = r.started[0]!;
    assert.equal(first.type, 'full');
    const runs = await t.controller.context.store.listScheduleRuns(first.cluster);
    if (first.cluster === 'host-a')
      assert.deepEqual(
        runs.map((x) => [x.type, x.lastRun]),
        [
          ['full', T0 + 8 * HOUR],
          ['incr', T0 + 8 * HOUR],
        ],
      );
    const [agentFirst, agentSecond] = first.cluster === 'host-a' ? [a, b] : [b, a];
    const job = await agentFirst.receiveJob();
    finishBackup(agentFirst, job, '20260302-180100F', clock + 30_000, 8, first.cluster);
    await waitFor('backup succeeded', async () =>
      (await jobState(job.jobId)) === JobState.SUCCEEDED ? true : undefined,
    );
    clock += MIN;
    r = await t.controller.scheduler.tick(clock);
    assert.deepEqual(
      r.started.map((s) => [s.cluster, s.type, s.scheduledAt.toISOString()]),
      [[first.cluster === 'host-a' ? 'host-b' : 'host-a', 'full', '2026-03-02T18:00:00.000Z']],
    );
    // Finished, so the host's one backup slot is free for the next test.
    const second = await agentSecond.receiveJob();
    finishBackup(
      agentSecond,
      second,
      '20260302-180200F',
      clock + 30_000,
      10,
      first.cluster === 'host-a' ? 'host-b' : 'host-a',
    );
    await waitFor('second backup succeeded', async () =>
      (await jobState(second.jobId)) === JobState.SUCCEEDED ? true : undefined,
    );
  });

  test('a new schedule does not catch up: its first run is the next cron time (drills too)', async () => {
    // Only this cluster is scheduled (the host allows one backup at a time).
    for (const c of ['host-a', 'host-b']) await t.admin.setPolicy({ cluster: c, reset: true, settings: {} });
    const agent = await connectAgent('fresh');
    // 18:02: the 18:00 full and drill fire times have passed; without catchUp neither runs now.
    clock = T0 + 8 * HOUR + 2 * MIN;
    await t.admin.setPolicy({
      cluster: 'fresh',
      settings: { full: '0 18 * * *', drill: '0 18 * * *', spreadMinutes: 0 },
    });
    let r = await t.controller.scheduler.tick(clock);
    assert.deepEqual([r.started, r.drills], [[], []]);
    assert.deepEqual(
      (await t.controller.context.store.listScheduleRuns('fresh')).map((x) => [x.type, x.lastRun]),
      [
        ['drill', clock],
        ['full', clock],
      ],
    );
    assert.deepEqual((await t.controller.scheduler.tick(clock + HOUR)).started, []);
    // The next day's 18:00 is the first run.
    clock = T0 + DAY + 8 * HOUR + 10_000;
    r = await t.controller.scheduler.tick(clock);
    assert.deepEqual(
      r.started.map((s) => [s.cluster, s.type, s.scheduledAt.toISOString()]),
      [['fresh', 'full', '2026-03-03T18:00:00.000Z']],
    );
    await agent.receiveJob();
  });
});

describe('retention', () => {
  let agent: FakeAgent;
  const cluster = 'ret';

  test('plan lists what goes and why; pin keeps a backup; apply sends an expire job; the result removes the rows', async () => {
    agent = await connectAgent(cluster);
    const store = t.controller.context.store;
    clock = T0 + 10 * DAY;
    // Four fulls a day apart, the newest an hour ago.
    const labels = ['20260308-090000F', '20260309-090000F', '20260310-090000F', '20260311-090000F'] as const;
    for (const [i, label] of labels.entries()) {
      const seg = 0x10 + i * 4;
      const name = `00000001000000000000${seg.toString(16).toUpperCase().padStart(4, '0')}`;
      await store.insertBackup({
        cluster,
        label,
        type: 'full',
        startLsn: `0/${(seg * 0x1000000).toString(16).toUpperCase()}`,
        stopLsn: `0/${(seg * 0x1000000 + 0x100).toString(16).toUpperCase()}`,
        startTime: clock - (4 - i) * DAY + 23 * HOUR - MIN,
        stopTime: clock - (4 - i) * DAY + 23 * HOUR,
        timeline: 1,
        systemIdentifier: `${SYSID}-${cluster}`,
        pgVersion: 170002,
        sizeBytes: 1,
        storedBytes: 1,
        fileCount: 1,
        walStart: name,
        walStop: name,
        jobId: `j${i}`,
        priorLabel: '',
      });
    }
    await t.admin.setPolicy({ cluster, settings: { minFull: 2, pitrWindowDays: 0, daily: 0, weekly: 0, monthly: 0 } });
    let plan = await t.admin.planRetention({ cluster });
    assert.deepEqual(
      plan.backups.map((b) => [b.label, b.keep, b.reasons.join(',')]),
      [
        [labels[0], false, 'outside-retention'],
        [labels[1], false, 'outside-retention'],
        [labels[2], true, 'min-full'],
        [labels[3], true, 'pitr-window,min-full'],
      ],
    );
    assert.deepEqual([plan.anchorLabel, plan.walKeepFrom], [labels[3], '00000001000000000000001C']);
    // The older full kept by min-full is a long-term backup: it keeps only the WAL that makes it consistent.
    assert.deepEqual(
      plan.walKeepRanges.map((r) => [r.label, r.walStart, r.walStop]),
      [[labels[2], '000000010000000000000018', '000000010000000000000018']],
    );

    const pinned = await t.admin.pinBackup({ cluster, label: labels[0], pinned: true });
    assert.equal(pinned.backup?.pinned, true);
    plan = await t.admin.planRetention({ cluster });
    assert.deepEqual(
      plan.backups.filter((b) => !b.keep).map((b) => b.label),
      [labels[1]],
    );
    // A pinned long-term backup keeps the WAL that makes it consistent.
    assert.deepEqual(
      plan.walKeepRanges.map((r) => r.label),
      [labels[0], labels[2]],
    );
    await t.admin.pinBackup({ cluster, label: labels[0], pinned: false });
    await rejectsWith(t.admin.pinBackup({ cluster, label: 'nope', pinned: true }), 'UnknownBackup');

    const applied = await t.admin.applyRetention({ cluster });
    assert.ok(applied.job);
    const job = await agent.receiveJob();
    assert.equal(job.jobId, applied.job.id);
    assert.equal(job.kind.case, 'expire');
    if (job.kind.case !== 'expire') return;
    assert.deepEqual(
      [job.kind.value.cluster, job.kind.value.labels, job.kind.value.walKeepFrom],
      [cluster, [labels[0], labels[1]], '00000001000000000000001C'],
    );
    // A second apply while the expire job runs is refused.
    await rejectsWith(t.admin.applyRetention({ cluster }), 'BackupInProgress');
    // The agent deleted only the first (say, the second is still read by a kept backup).
    agent.succeed(job.jobId, {
      case: 'expire',
      value: {
        deletedLabels: [labels[0], labels[3]],
        skippedLabels: [labels[1]],
        walFilesDeleted: 12,
        walBytesDeleted: 1000n,
        backupFilesDeleted: 9,
      },
    });
    await waitFor('expire succeeded', async () =>
      (await jobState(job.jobId)) === JobState.SUCCEEDED ? true : undefined,
    );
    // Only labels the job was asked to delete leave the catalog: labels[3] was not, so it stays.
    assert.deepEqual(
      (await t.admin.listBackups({ cluster })).backups.map((b) => b.label),
      [labels[1], labels[2], labels[3]],
    );
    const shown = (await t.admin.getJob({ id: job.jobId })).job;
    assert.deepEqual(
      [shown?.kind, shown?.expire?.walFilesDeleted, shown?.expire?.skippedLabels],
      ['expire', 12, [labels[1]]],
    );
  });

  test('the scheduler expires only with auto-expire on, announces first, and a pin inside the grace wins', async () => {
    clock = T0 + 10 * DAY + 10 * MIN;
    const { job } = await t.admin.startBackup({ cluster });
    const sent = await agent.receiveJob();
    assert.equal(sent.jobId, job!.id);
    // Busy: no expire job while the backup runs.
    assert.deepEqual((await t.controller.scheduler.tick(clock)).expireJobs, []);
    finishBackup(agent, sent, '20260312-101000F', clock, 0x30, cluster);
    await waitFor('backup succeeded', async () =>
      (await jobState(sent.jobId)) === JobState.SUCCEEDED ? true : undefined,
    );
    // Retention counts are set but auto-expire is off (the default): the scheduler expires nothing.
    let r = await t.controller.scheduler.tick(clock + 1000);
    assert.deepEqual([r.expireJobs, r.plannedExpiries], [[], undefined]);
    await t.admin.setPolicy({ cluster, settings: { autoExpire: true, expireGraceSeconds: 600 } });
    // On: min-full 2 now keeps the two newest, so labels 2 and 3 of the first test are to go (1 was
    // skipped before). First they are announced; nothing is deleted yet.
    const planned = clock + 2000;
    r = await t.controller.scheduler.tick(planned);
    assert.deepEqual(r.expireJobs, []);
    assert.deepEqual(
      r.plannedExpiries?.map((e) => [e.cluster, e.labels.join(' '), e.expireAfter]),
      [[cluster, '20260309-090000F 20260310-090000F', planned + 600_000]],
    );
    const events = (await t.controller.context.store.listEvents({ cluster, limit: 1000 })).filter(
      (e) => e.kind === 'retention.planned',
    );
    const event = decodeOutboxEvent(events.at(-1)!);
    assert.equal(event.payload.case, 'retentionPlanned');
    assert.deepEqual(
      event.payload.case === 'retentionPlanned' && [
        event.cluster,
        event.payload.value.backupLabels,
        event.payload.value.dumpLabels,
      ],
      [cluster, ['20260309-090000F', '20260310-090000F'], []],
    );
    // Inside the grace an operator pins one of them; the grace still runs.
    await t.admin.pinBackup({ cluster, label: '20260309-090000F', pinned: true });
    assert.deepEqual((await t.controller.scheduler.tick(planned + 5 * MIN)).expireJobs, []);
    // Grace over: the plan is made again and the pinned backup is not in the job.
    r = await t.controller.scheduler.tick(planned + 600_000);
    assert.deepEqual(
      r.expireJobs.map((e) => [e.cluster, e.labels.join(' ')]),
      [[cluster, '20260310-090000F']],
    );
    clock = planned + 600_000;
    const expire = await agent.receiveJob();
    assert.deepEqual(expire.kind.case === 'expire' && [expire.kind.value.labels, expire.kind.value.walKeepFrom], [
      ['20260310-090000F'],
      '000000010000000000000030',
    ]);
    // Within the hour, with nothing new, it is not looked at again.
    agent.stream.send({
      msg: {
        case: 'result',
        value: {
          jobId: expire.jobId,
          state: JobState.FAILED,
          error: { code: ErrorCodes.RepoIoFailed.code, message: 'disk' },
        },
      },
    });
    await waitFor('expire failed', async () => ((await jobState(expire.jobId)) === JobState.FAILED ? true : undefined));
    assert.deepEqual((await t.controller.scheduler.tick(clock + 30 * MIN)).expireJobs, []);
    // An hour later the still-expirable backup is announced again, and goes after the grace.
    r = await t.controller.scheduler.tick(clock + 61 * MIN);
    assert.deepEqual([r.expireJobs, r.plannedExpiries?.map((e) => e.labels)], [[], [['20260310-090000F']]]);
    assert.deepEqual(
      (await t.controller.scheduler.tick(clock + 71 * MIN)).expireJobs.map((e) => e.labels),
      [['20260310-090000F']],
    );
  });

  test('a backup that became expirable during the grace waits for its own announcement; auto-expire off stops it', async () => {
    const c = 'grace';
    const ga = await connectAgent(c);
    const store = t.controller.context.store;
    clock = T0 + 20 * DAY;
    const insert = (label: string, stop: number, seg: number) => {
      const name = `00000001000000000000${seg.toString(16).toUpperCase().padStart(4, '0')}`;
      return store.insertBackup({
        cluster: c,
        label,
        type: 'full',
        startLsn: `0/${(seg * 0x1000000).toString(16).toUpperCase()}`,
        stopLsn: `0/${(seg * 0x1000000 + 0x100).toString(16).toUpperCase()}`,
        startTime: stop - MIN,
        stopTime: stop,
        timeline: 1,
        systemIdentifier: `${SYSID}-${c}`,
        pgVersion: 170002,
        sizeBytes: 1,
        storedBytes: 1,
        fileCount: 1,
        walStart: name,
        walStop: name,
        jobId: `g${seg}`,
        priorLabel: '',
      });
    };
    await insert('20260319-100000F', clock - 3 * DAY, 0x10);
    await insert('20260320-100000F', clock - 2 * DAY, 0x14);
    await insert('20260321-100000F', clock - DAY, 0x18);
    await t.admin.setPolicy({
      cluster: c,
      settings: {
        minFull: 2,
        pitrWindowDays: 0,
        daily: 0,
        weekly: 0,
        monthly: 0,
        autoExpire: true,
        expireGraceSeconds: 600,
      },
    });
    const mine = (r: { cluster: string; labels: string[] }[] | undefined) =>
      (r ?? []).filter((e) => e.cluster === c).map((e) => e.labels);
    let r = await t.controller.scheduler.tick(clock);
    assert.deepEqual(mine(r.plannedExpiries), [['20260319-100000F']]);
    // A newer full lands inside the grace: the plan would now expire 20260320 too, unannounced.
    clock += MIN;
    await insert('20260322-100000F', clock, 0x1c);
    clock += 600_000;
    r = await t.controller.scheduler.tick(clock);
    assert.deepEqual(mine(r.expireJobs), [['20260319-100000F']]);
    const job = await ga.receiveJob();
    assert.deepEqual(job.kind.case === 'expire' && job.kind.value.labels, ['20260319-100000F']);
    ga.succeed(job.jobId, {
      case: 'expire',
      value: {
        deletedLabels: ['20260319-100000F'],
        skippedLabels: [],
        walFilesDeleted: 0,
        walBytesDeleted: 0n,
        backupFilesDeleted: 3,
      },
    });
    await waitFor('expire succeeded', async () =>
      (await jobState(job.jobId)) === JobState.SUCCEEDED ? true : undefined,
    );
    // Switched off: nothing is announced or expired any more, however long it waits.
    await t.admin.setPolicy({ cluster: c, settings: { autoExpire: false } });
    clock += 3 * HOUR;
    r = await t.controller.scheduler.tick(clock);
    assert.deepEqual([mine(r.plannedExpiries), mine(r.expireJobs)], [[], []]);
    // On again: 20260320 is announced on its own.
    await t.admin.setPolicy({ cluster: c, settings: { autoExpire: true } });
    clock += 1000;
    r = await t.controller.scheduler.tick(clock);
    assert.deepEqual(mine(r.plannedExpiries), [['20260320-100000F']]);
  });

  test('retention.planned names the dumps it will expire apart from the backups', async () => {
    const c = 'dumpret';
    await connectAgent(c);
    clock = T0 + 50 * DAY;
    await insertDump(c, '20260419-100000-000L', clock - 2 * DAY);
    await insertDump(c, '20260420-100000-000L', clock - DAY);
    await t.admin.setPolicy({
      cluster: c,
      settings: { logicalMin: 1, logicalDaily: 0, logicalWeekly: 0, logicalMonthly: 0, autoExpire: true },
    });
    const r = await t.controller.scheduler.tick(clock);
    assert.deepEqual(
      r.plannedExpiries?.filter((e) => e.cluster === c).map((e) => e.labels),
      [['20260419-100000-000L']],
    );
    const events = (await t.controller.context.store.listEvents({ cluster: c, limit: 1000 })).filter(
      (e) => e.kind === 'retention.planned',
    );
    const event = decodeOutboxEvent(events.at(-1)!);
    const planned = event.payload.case === 'retentionPlanned' ? event.payload.value : undefined;
    assert.deepEqual([planned?.backupLabels, planned?.dumpLabels], [[], ['20260419-100000-000L']]);
  });
});

// Last: its clock is the latest of the file (the scheduler's runs never move back).
describe('scheduled dump drills', () => {
  test('--dump-drill fires once per fire time through due-runs: skipped (and recorded) without a dump, then drills the newest', async () => {
    const c = 'ddrill';
    const agent = await connectAgent(c);
    const store = t.controller.context.store;
    clock = T0 + 60 * DAY + 2 * MIN; // 10:02, two minutes after the 10:00 fire time
    await t.admin.setPolicy({ cluster: c, settings: { dumpDrill: '0 10 * * *', catchUp: true, spreadMinutes: 0 } });
    // Catch-up on, but no dump yet: nothing starts, and the fire time counts as run (not retried every tick).
    let r = await t.controller.scheduler.tick(clock);
    assert.deepEqual(r.dumpDrills, []);
    const fired = T0 + 60 * DAY;
    assert.deepEqual(
      (await store.listScheduleRuns(c)).map((x) => [x.type, x.lastRun]),
      [['dump-drill', fired]],
    );
    await insertDump(c, '20260410-090000-000L', fired - HOUR);
    await insertDump(c, '20260411-080000-000L', fired + DAY - 2 * HOUR);
    assert.deepEqual((await t.controller.scheduler.tick(clock + HOUR)).dumpDrills, []);
    // The next day's 10:00: one dump drill of the newest dump, every database of it.
    clock = fired + DAY + 30_000;
    r = await t.controller.scheduler.tick(clock);
    assert.deepEqual(
      r.dumpDrills?.map((d) => [d.cluster, d.scheduledAt.getTime()]),
      [[c, fired + DAY]],
    );
    const job = await agent.receiveJob();
    assert.equal(job.jobId, r.dumpDrills![0]!.jobId);
    assert.equal(job.kind.case, 'drill');
    if (job.kind.case !== 'drill') return;
    assert.deepEqual(
      [job.kind.value.dump?.label, job.kind.value.dump?.databases.map((d) => d.name), job.kind.value.keep],
      ['20260411-080000-000L', ['shop'], false],
    );
    // Its fire time was recorded with the job: the same fire time never starts a second drill.
    assert.deepEqual((await t.controller.scheduler.tick(clock + MIN)).dumpDrills, []);
    const listed = await t.admin.listDrills({ cluster: c });
    assert.deepEqual(
      listed.drills.map((d) => [d.jobId, d.scheduled]),
      [[job.jobId, true]],
    );
    // Status names the next run of the schedule.
    const info = (await t.admin.listClusters({})).clusters.find((x) => x.name === c);
    assert.equal(info?.nextJob?.kind, 'dump-drill');
  });
});

describe('lost dispatches', () => {
  test("a queued job whose controller died before sending it fails after the lease and grace; the cluster's gate opens", async () => {
    const c = 'lostc';
    const agent = await connectAgent(c);
    const store = t.controller.context.store;
    // What a controller killed -9 between creating the job and sending it leaves: a queued job naming it.
    const created = clock;
    await store.createJob(
      { id: 'lost-1', cluster: c, kind: 'backup', agentId: `agent-${c}`, params: { type: 'full' }, dispatcher: 'dead' },
      created,
    );
    await rejectsWith(t.admin.startBackup({ cluster: c }), 'BackupInProgress', /lost-1/);
    const waitMs = 10_000 + RUN_DEFAULTS.jobReclaimGrace * 1000;
    clock = created + waitMs - 1000;
    let r = await t.controller.scheduler.tick(clock);
    assert.ok(!(r.lostDispatches ?? []).includes('lost-1'), 'its agent still has time to claim it');
    assert.equal((await store.getJob('lost-1'))?.state, 'queued');
    clock = created + waitMs + 1000;
    r = await t.controller.scheduler.tick(clock);
    assert.ok(r.lostDispatches?.includes('lost-1'), String(r.lostDispatches));
    const failed = await store.getJob('lost-1');
    assert.deepEqual([failed?.state, failed?.error?.code], ['failed', ErrorCodes.DispatcherLost.code]);
    const kinds = (await store.listEvents({ cluster: c, limit: 1000 })).map((e) => e.kind);
    assert.ok(kinds.includes('backup.failed'), kinds.join(' '));
    // The gate is open: the next backup starts, created and sent by this controller.
    const { job } = await t.admin.startBackup({ cluster: c });
    assert.equal((await agent.receiveJob()).jobId, job!.id);
    assert.equal((await store.getJob(job!.id))?.dispatcher, t.controller.context.controllerId);
    const later = await t.controller.scheduler.tick(clock + 1000);
    assert.ok(!(later.lostDispatches ?? []).includes(job!.id), 'a job its live controller sent is not lost');
  });
});
