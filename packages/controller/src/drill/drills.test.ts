// Integration: restore drills through the real controller (port 0, temp SQLite catalog) with fake
// agents: the drill schedule (once per fire time, never beside a running drill, no catch-up
// storm), the source capture hand-over of a drill on another agent, and what a drill's end leaves
// in the catalog (job result, ListDrills, drill.completed / drill.failed).
import { strict as assert } from 'node:assert';
import { describe, test } from 'node:test';
import { ErrorCodes } from '@pgfleet/core';
import { JobState, type Event, type Job } from '@pgfleet/proto';
import { decodeOutboxEvent } from '../jobs/events.js';
import { FakeAgent, SYSID, waitFor } from '../testing/fake-agent.js';
import { useTestController } from '../testing/test-controller.js';
import { rejectsWith } from '../testing/assertions.js';

const MIN = 60_000;
const HOUR = 60 * MIN;
const T0 = Date.UTC(2026, 2, 2, 10, 0, 0);

let clock = T0;
const t = useTestController('drills', {}, { now: () => clock, schedulerTimer: false });

async function connectAgent(cluster: string, agentId: string): Promise<FakeAgent> {
  const agent = new FakeAgent(t.controller.address);
  agent.hello({ cluster, agentId, systemIdentifier: SYSID });
  assert.equal((await agent.receive()).msg.case, 'welcome');
  await waitFor(`${agentId} registered`, async () =>
    (await t.controller.context.store.getAgent({ cluster, agentId }))?.connected ? true : undefined,
  );
  return agent;
}

async function addBackup(cluster: string): Promise<void> {
  await t.controller.context.store.insertBackup({
    cluster,
    label: '20260302-090000F',
    type: 'full',
    startLsn: '0/2000028',
    stopLsn: '0/2000100',
    startTime: T0 - HOUR - MIN,
    stopTime: T0 - HOUR,
    timeline: 1,
    systemIdentifier: SYSID,
    pgVersion: 170002,
    sizeBytes: 1000,
    storedBytes: 100,
    fileCount: 3,
    walStart: '000000010000000000000002',
    walStop: '000000010000000000000002',
    jobId: 'j0',
    priorLabel: '',
  });
}

function finishDrill(agent: FakeAgent, job: Job, ok: boolean): void {
  const result = {
    case: 'drill' as const,
    value: ok
      ? {
          backupLabel: '20260302-090000F',
          ok: true,
          stage: 'done',
          restoreSeconds: 2,
          recoverySeconds: 10.5,
          rtoSeconds: 12.5,
          relationsChecked: 40,
          countsCompared: true,
          tablesCompared: 4,
          countsEqual: true,
        }
      : {
          backupLabel: '20260302-090000F',
          ok: false,
          stage: 'amcheck',
          reasons: ['amcheck found 1 problem(s) in 1 relation(s)'],
          restoreSeconds: 2,
          recoverySeconds: 1,
          rtoSeconds: 3,
        },
  };
  agent.stream.send({
    msg: {
      case: 'result',
      value: {
        jobId: job.jobId,
        state: ok ? JobState.SUCCEEDED : JobState.FAILED,
        ...(ok ? {} : { error: { code: ErrorCodes.DrillFailed.code, message: 'drill failed in stage amcheck' } }),
        result,
      },
    },
  });
}

async function ended(id: string): Promise<JobState> {
  return waitFor(`job ${id} to end`, async () => {
    const s = (await t.admin.getJob({ id })).job!.state;
    return s === JobState.SUCCEEDED || s === JobState.FAILED || s === JobState.CANCELLED ? s : undefined;
  });
}

async function events(cluster: string): Promise<Event[]> {
  return (await t.controller.context.store.listEvents({ cluster, limit: 1000 })).map(decodeOutboxEvent);
}

describe('drills', () => {
  test('the drill schedule: once per fire time, never beside a running drill, missed times run once', async () => {
    const agent = await connectAgent('sched', 'agent-sched');
    await t.admin.setPolicy({ cluster: 'sched', settings: { drill: '0 * * * *', spreadMinutes: 0 } });
    clock = T0 + 30_000;
    // No backup yet: nothing to drill; the fire time is passed over rather than retried every tick.
    assert.deepEqual((await t.controller.scheduler.tick(clock)).drills, []);
    await addBackup('sched');
    clock = T0 + HOUR + 30_000;
    let r = await t.controller.scheduler.tick(clock);
    assert.deepEqual(
      r.drills?.map((d) => d.scheduledAt.toISOString()),
      ['2026-03-02T11:00:00.000Z'],
    );
    const first = await agent.receiveJob();
    assert.equal(first.kind.case, 'drill');
    assert.ok(
      first.kind.case === 'drill' && !first.kind.value.target && !first.kind.value.source,
      'the agent captures the counts itself',
    );
    assert.deepEqual(
      (await t.controller.context.store.listScheduleRuns('sched')).map((x) => [x.type, x.lastRun]),
      [['drill', T0 + HOUR]],
    );
    assert.deepEqual((await t.controller.scheduler.tick(clock + 10_000)).drills, [], 'once per fire time');

    clock = T0 + 2 * HOUR + 10_000;
    assert.deepEqual((await t.controller.scheduler.tick(clock)).drills, [], 'not while the previous drill runs');
    finishDrill(agent, first, true);
    assert.equal(await ended(first.jobId), JobState.SUCCEEDED);
    r = await t.controller.scheduler.tick(clock);
    assert.deepEqual(
      r.drills?.map((d) => d.scheduledAt.toISOString()),
      ['2026-03-02T12:00:00.000Z'],
      'the owed run starts once the drill ended',
    );
    const second = await agent.receiveJob();
    finishDrill(agent, second, false);
    assert.equal(await ended(second.jobId), JobState.FAILED);

    clock = T0 + 6 * HOUR + 10_000;
    r = await t.controller.scheduler.tick(clock);
    assert.deepEqual(
      r.drills?.map((d) => d.scheduledAt.toISOString()),
      ['2026-03-02T16:00:00.000Z'],
      'four missed fire times: one drill',
    );
    const third = await agent.receiveJob();
    finishDrill(agent, third, true);
    await ended(third.jobId);
    await t.admin.setPolicy({ cluster: 'sched', settings: { drill: '' } });

    const { drills } = await t.admin.listDrills({ cluster: 'sched' });
    assert.deepEqual(
      drills.map((d) => [d.jobId, d.state, d.scheduled]),
      [
        [third.jobId, JobState.SUCCEEDED, true],
        [second.jobId, JobState.FAILED, true],
        [first.jobId, JobState.SUCCEEDED, true],
      ],
    );
    assert.equal(drills[2]!.result?.rtoSeconds, 12.5);
    assert.equal(drills[1]!.result?.stage, 'amcheck', 'a failed drill keeps its result');
    assert.equal(drills[1]!.error?.code, ErrorCodes.DrillFailed.code);
    const job = (await t.admin.getJob({ id: second.jobId })).job!;
    assert.deepEqual(job.drill?.reasons, ['amcheck found 1 problem(s) in 1 relation(s)']);

    const evs = await events('sched');
    const completed = evs
      .filter((e) => e.payload.case === 'drillCompleted')
      .map((e) => e.payload.value as { jobId: string; rtoSeconds: number; scheduled: boolean; agentId: string });
    assert.deepEqual(
      completed.map((c) => [c.jobId, c.rtoSeconds, c.scheduled, c.agentId]),
      [
        [first.jobId, 12.5, true, 'agent-sched'],
        [third.jobId, 12.5, true, 'agent-sched'],
      ],
    );
    const failed = evs.find((e) => e.payload.case === 'drillFailed')?.payload.value as {
      jobId: string;
      stage: string;
      reasons: string[];
      error?: { code: string };
    };
    assert.deepEqual(
      [failed.jobId, failed.stage, failed.reasons, failed.error?.code],
      [second.jobId, 'amcheck', ['amcheck found 1 problem(s) in 1 relation(s)'], ErrorCodes.DrillFailed.code],
    );
  });

  test("a drill on another agent waits for the source capture of the cluster's own agent", async () => {
    const own = await connectAgent('remote', 'own');
    const spare = await connectAgent('remote', 'spare');
    await rejectsWith(t.admin.startDrill({ cluster: 'remote' }), 'NoBackup');
    await addBackup('remote');
    await rejectsWith(t.admin.startDrill({ cluster: 'remote', backupLabel: 'nope' }), 'UnknownBackup');
    await rejectsWith(t.admin.startDrill({ cluster: 'remote', agentId: 'ghost' }), 'AgentNotConnected');

    const { job } = await t.admin.startDrill({ cluster: 'remote', agentId: 'spare' });
    assert.deepEqual([job!.kind, job!.state, job!.agentId], ['drill', JobState.QUEUED, 'spare']);
    const capture = await own.receiveJob();
    assert.ok(capture.kind.case === 'capture');
    assert.equal(capture.kind.value.restorePoint, `pgfleet-drill-${job!.id}`);
    const source = {
      restorePoint: capture.kind.value.restorePoint,
      lsn: '0/5000100',
      tables: [{ database: 'postgres', schema: 'public', table: 't', rows: 5n }],
      changeBound: 0n,
    };
    own.stream.send({
      msg: {
        case: 'result',
        value: { jobId: capture.jobId, state: JobState.SUCCEEDED, result: { case: 'capture', value: source } },
      },
    });
    const drill = await spare.receiveJob();
    assert.equal(drill.jobId, job!.id);
    assert.ok(drill.kind.case === 'drill');
    assert.deepEqual(
      [drill.kind.value.source?.restorePoint, drill.kind.value.source?.tables[0]?.rows],
      [source.restorePoint, 5n],
    );
    finishDrill(spare, drill, true);
    assert.equal(await ended(job!.id), JobState.SUCCEEDED);

    // The capture fails: so does the drill, at stage capture, with the capture's reason.
    const second = (await t.admin.startDrill({ cluster: 'remote', agentId: 'spare' })).job!;
    const cap2 = await own.receiveJob();
    own.stream.send({
      msg: {
        case: 'result',
        value: {
          jobId: cap2.jobId,
          state: JobState.FAILED,
          error: { code: ErrorCodes.PgConnectFailed.code, message: 'cannot connect to PostgreSQL' },
        },
      },
    });
    assert.equal(await ended(second.id), JobState.FAILED);
    const failed = (await t.admin.getJob({ id: second.id })).job!;
    assert.equal(failed.error?.code, ErrorCodes.PgConnectFailed.code);
    assert.equal(failed.drill?.stage, 'capture');
    assert.match(failed.drill!.reasons[0]!, /source capture .* failed: cannot connect/);

    // The cluster's agent goes away during the capture: the waiting drill fails too.
    const third = (await t.admin.startDrill({ cluster: 'remote', agentId: 'spare' })).job!;
    await own.receiveJob();
    own.stream.end();
    assert.equal(await ended(third.id), JobState.FAILED);
    assert.equal((await t.admin.getJob({ id: third.id })).job!.error?.code, ErrorCodes.AgentDisconnected.code);
    const stages = (await events('remote'))
      .filter((e) => e.payload.case === 'drillFailed')
      .map((e) => (e.payload.value as { stage: string }).stage);
    assert.deepEqual(stages, ['capture', 'capture']);
  });

  test("--keep reaches the agent (own or after a capture); a failed drill's PostgreSQL log and kept directory are stored and in drill.failed", async () => {
    const own = await connectAgent('keep', 'keep-own');
    const spare = await connectAgent('keep', 'keep-spare');
    await addBackup('keep');
    const { job } = await t.admin.startDrill({ cluster: 'keep', keep: true });
    const sent = await own.receiveJob();
    assert.ok(sent.kind.case === 'drill');
    assert.equal(sent.kind.value.keep, true);
    const fatal =
      "2026-03-02 10:00:00.100 UTC [7] FATAL:  requested timeline 2 is not a child of this server's history";
    own.stream.send({
      msg: {
        case: 'result',
        value: {
          jobId: sent.jobId,
          state: JobState.FAILED,
          error: { code: ErrorCodes.DrillFailed.code, message: 'drill of cluster keep failed in stage recovery' },
          result: {
            case: 'drill',
            value: {
              backupLabel: '20260302-090000F',
              ok: false,
              stage: 'recovery',
              reasons: [
                "recovery failed: FATAL: requested timeline 2 is not a child of this server's history",
                "recovery: the drill's PostgreSQL exited during recovery",
              ],
              postgresLogProblems: [fatal],
              postgresLogTail: ['2026-03-02 10:00:00.000 UTC [6] LOG:  starting PostgreSQL 15.8', fatal],
              keptDir: '/scratch/pgfleet-drill-x',
            },
          },
        },
      },
    });
    assert.equal(await ended(job!.id), JobState.FAILED);
    const [rec] = (await t.admin.listDrills({ cluster: 'keep' })).drills;
    assert.deepEqual(
      [rec!.result?.postgresLogProblems, rec!.result?.postgresLogTail.length, rec!.result?.keptDir],
      [[fatal], 2, '/scratch/pgfleet-drill-x'],
    );
    const failed = (await events('keep')).find((e) => e.payload.case === 'drillFailed')?.payload.value as {
      reasons: string[];
      postgresLogProblems: string[];
      keptDir: string;
    };
    assert.match(failed.reasons[0]!, /^recovery failed: FATAL: requested timeline 2 is not a child/);
    assert.deepEqual([failed.postgresLogProblems, failed.keptDir], [[fatal], '/scratch/pgfleet-drill-x']);

    // On another agent: the capture first, then the drill with keep.
    const second = (await t.admin.startDrill({ cluster: 'keep', agentId: 'keep-spare', keep: true })).job!;
    const capture = await own.receiveJob();
    assert.ok(capture.kind.case === 'capture');
    own.succeed(capture.jobId, {
      case: 'capture',
      value: { restorePoint: capture.kind.value.restorePoint, lsn: '0/5000100', tables: [], changeBound: 0n },
    });
    const drill = await spare.receiveJob();
    assert.equal(drill.jobId, second.id);
    assert.ok(drill.kind.case === 'drill' && drill.kind.value.keep === true);
    // An agent that fails a drill without any reason (an older agent): drill.failed still says why.
    spare.stream.send({
      msg: {
        case: 'result',
        value: {
          jobId: drill.jobId,
          state: JobState.FAILED,
          error: { code: ErrorCodes.DrillFailed.code, message: 'drill failed in stage recovery' },
          result: {
            case: 'drill',
            value: { backupLabel: '20260302-090000F', ok: false, stage: 'recovery', reasons: [''] },
          },
        },
      },
    });
    assert.equal(await ended(second.id), JobState.FAILED);
    const noReason = (await events('keep'))
      .filter((e) => e.payload.case === 'drillFailed')
      .map((e) => e.payload.value as { jobId: string; reasons: string[] })
      .find((e) => e.jobId === second.id);
    assert.deepEqual(noReason?.reasons, ['drill failed in stage recovery']);
    // A scheduled or plain drill does not keep.
    await t.admin.startDrill({ cluster: 'keep' });
    const plain = await own.receiveJob();
    assert.ok(plain.kind.case === 'drill' && plain.kind.value.keep === false);
  });
});
