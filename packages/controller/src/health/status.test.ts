// The pure parts of the fleet status: the next scheduled job, verify/drill summaries from job
// records (including drills whose result is absent or unreadable), and the archive state.
import { strict as assert } from 'node:assert';
import { describe, test } from 'node:test';
import { toJson } from '@bufbuild/protobuf';
import { timestampMs as tsMs, type Timestamp } from '@bufbuild/protobuf/wkt';
import { create } from '@bufbuild/protobuf';
import type { AgentRecord, JobRecord } from '@pgfleet/catalog';
import { ErrorCodes } from '@pgfleet/core';
import { DrillResultSchema, VerifyResultSchema } from '@pgfleet/proto';
import { archiveState, drillSummaryFromJob, nextScheduledJob, verifySummaryFromJob } from './status.js';
import { spreadOffsetMs } from '../schedule/schedule.js';

const at = (iso: string) => Date.parse(iso);
// The summaries are init shapes; their times are whole Timestamps.
const timestampMs = (t: unknown) => tsMs(t as Timestamp);

function job(fields: Partial<JobRecord>): JobRecord {
  return {
    id: 'j1',
    cluster: 'main',
    kind: 'drill',
    state: 'succeeded',
    agentId: 'a',
    params: {},
    createdAt: at('2026-03-01T00:00:00Z'),
    startedAt: null,
    finishedAt: at('2026-03-01T00:05:00Z'),
    error: null,
    progress: null,
    result: null,
    ...fields,
  };
}

describe('next scheduled job', () => {
  const now = at('2026-03-04T10:17:30Z'); // a Wednesday
  const policy = (p: { full?: string; incr?: string; drill?: string; dumpDrill?: string; spread?: number }) => ({
    schedules: { ...(p.full ? { full: p.full } : {}), ...(p.incr ? { incr: p.incr } : {}) },
    ...(p.drill ? { drill: p.drill } : {}),
    ...(p.dumpDrill ? { dumpDrill: p.dumpDrill } : {}),
    spreadMinutes: p.spread ?? 0,
  });
  const ranJustNow = () => now - 1000;

  test('the earliest fire time over the kinds, drills included', () => {
    const next = nextScheduledJob(
      'main',
      policy({ full: '0 1 * * 0', incr: '0 */4 * * *', drill: '30 13 * * *' }),
      ranJustNow,
      now,
    );
    assert.equal(next?.kind, 'incr');
    assert.equal(timestampMs(next!.time!), at('2026-03-04T12:00:00Z'));
    assert.equal(next?.schedule, '0 */4 * * *');
    const drill = nextScheduledJob('main', policy({ full: '0 1 * * 0', drill: '30 11 * * *' }), ranJustNow, now);
    assert.deepEqual([drill?.kind, timestampMs(drill!.time!)], ['drill', at('2026-03-04T11:30:00Z')]);
    const dumpDrill = nextScheduledJob(
      'main',
      policy({ drill: '30 11 * * *', dumpDrill: '0 11 * * *' }),
      ranJustNow,
      now,
    );
    assert.deepEqual([dumpDrill?.kind, timestampMs(dumpDrill!.time!)], ['dump-drill', at('2026-03-04T11:00:00Z')]);
  });

  test('full wins a tie; the cluster spread offset is added', () => {
    const tie = nextScheduledJob('main', policy({ full: '0 12 * * *', incr: '0 */4 * * *' }), ranJustNow, now);
    assert.equal(tie?.kind, 'full');
    const spread = nextScheduledJob('main', policy({ full: '0 12 * * *', spread: 60 }), ranJustNow, now);
    assert.equal(timestampMs(spread!.time!), at('2026-03-04T12:00:00Z') + spreadOffsetMs('main', 60));
  });

  test('a run that is due (never ran, or missed) is reported at the fire time it stands for, in the past', () => {
    const never = nextScheduledJob('main', policy({ full: '0 1 * * *' }), () => undefined, now);
    assert.deepEqual([never?.kind, timestampMs(never!.time!)], ['full', at('2026-03-04T01:00:00Z')]);
    const missed = nextScheduledJob('main', policy({ full: '0 1 * * *' }), () => at('2026-03-02T01:00:00Z'), now);
    assert.equal(timestampMs(missed!.time!), at('2026-03-04T01:00:00Z'));
  });

  test('nothing scheduled, or only a bad cron: no next job', () => {
    assert.equal(nextScheduledJob('main', policy({}), ranJustNow, now), undefined);
    assert.equal(nextScheduledJob('main', policy({ full: '0 25 * * *' }), ranJustNow, now), undefined);
  });
});

describe('verify and drill summaries', () => {
  test('a verify verdict with its counts; none while running', () => {
    const v = create(VerifyResultSchema, {
      ok: false,
      full: true,
      backups: [
        { label: 'a', restorable: true },
        { label: 'b', restorable: false },
      ],
      problems: [{ kind: 'missing-file', message: 'x' }],
    });
    const s = verifySummaryFromJob(job({ kind: 'verify', result: { verify: toJson(VerifyResultSchema, v) } }));
    assert.deepEqual(
      { ...s, time: timestampMs(s!.time!) },
      {
        jobId: 'j1',
        time: at('2026-03-01T00:05:00Z'),
        ok: false,
        full: true,
        backupsTotal: 2,
        backupsRestorable: 1,
        problems: 1,
      },
    );
    assert.equal(verifySummaryFromJob(job({ kind: 'verify', state: 'running', finishedAt: null })), undefined);
  });

  test('a good drill carries its RTO and backup; a failed one its first reason', () => {
    const good = create(DrillResultSchema, {
      ok: true,
      backupLabel: '20260301-010000F',
      rtoSeconds: 12.5,
      stage: 'done',
    });
    const g = drillSummaryFromJob(job({ result: { drill: toJson(DrillResultSchema, good) } }));
    assert.deepEqual([g?.ok, g?.rtoSeconds, g?.backupLabel, g?.reason], [true, 12.5, '20260301-010000F', '']);
    const bad = create(DrillResultSchema, {
      ok: false,
      stage: 'amcheck',
      reasons: ['amcheck: 2 findings', 'counts differ'],
      rtoSeconds: 9,
    });
    const b = drillSummaryFromJob(job({ result: { drill: toJson(DrillResultSchema, bad) } }));
    assert.deepEqual([b?.ok, b?.reason, b?.rtoSeconds], [false, 'amcheck: 2 findings', 9]);
  });

  test('absent or unreadable results and failed jobs are failed drills; unfinished ones are none', () => {
    const noResult = drillSummaryFromJob(job({ result: null }));
    assert.deepEqual([noResult?.ok, noResult?.reason], [false, 'the drill reported no result']);
    const garbage = drillSummaryFromJob(job({ result: { drill: { ok: 'very' } } }));
    assert.equal(garbage?.ok, false);
    const failed = drillSummaryFromJob(
      job({ state: 'failed', error: { code: ErrorCodes.AgentDisconnected.code, message: 'agent went away' } }),
    );
    assert.deepEqual([failed?.ok, failed?.reason], [false, `${ErrorCodes.AgentDisconnected.code} agent went away`]);
    assert.equal(drillSummaryFromJob(job({ state: 'running', finishedAt: null })), undefined);
  });
});

describe('archive state', () => {
  const agent = (fields: Partial<AgentRecord>): AgentRecord => ({
    id: 'a',
    cluster: 'main',
    hostname: 'db1',
    version: '0.1.0',
    connected: true,
    lastSeen: 0,
    currentLsn: null,
    walHealth: null,
    archiver: { archivedCount: '5', lastArchivedWal: '000000010000000000000005', failedCount: '0' },
    archiveSetup: null,
    role: null,
    replay: null,
    timeline: null,
    ...fields,
  });
  const via = {
    archiveMode: 'on',
    archiveCommand: 'pgfleet-agent wal-push %p --cluster main',
    viaPgfleet: true,
    problem: '',
  };
  const bypass = {
    archiveMode: 'on',
    archiveCommand: '/bin/true',
    viaPgfleet: false,
    problem: "archive_command '/bin/true' does not run pgfleet-agent wal-push",
  };

  test("an archive_command that bypasses pgfleet is 'not via pgfleet', though pg_stat_archiver looks fine", () => {
    assert.equal(archiveState(agent({ archiveSetup: via }), []), 'ok');
    assert.equal(archiveState(agent({ archiveSetup: bypass }), []), 'not via pgfleet');
    // Older agents report no setup: judged by pg_stat_archiver alone, as before.
    assert.equal(archiveState(agent({}), []), 'ok');
    assert.equal(archiveState(undefined, []), 'unknown');
  });

  test('failing archiving still says failing first', () => {
    const breached = [{ cluster: 'main', condition: 'archive', state: 'breached' as const, since: 0, data: null }];
    assert.equal(archiveState(agent({ archiveSetup: bypass }), breached), 'failing');
  });
});
