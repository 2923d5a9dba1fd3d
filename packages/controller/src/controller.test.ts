// Integration: the real controller server on port 0 with a temp SQLite catalog, a fake agent on
// AgentService.Connect and an admin client, all through @pgfleet/rpc as in production.
import { strict as assert } from 'node:assert';
import { describe, test } from 'node:test';
import { timestampFromMs, timestampMs } from '@bufbuild/protobuf/wkt';
import { ErrorCodes, PgfleetError, sleep } from '@pgfleet/core';
import { BackupType, JobState, type JobInfo } from '@pgfleet/proto';
import { outboxEvent } from './jobs/events.js';
import { FakeAgent, SYSID, reportedBackup, waitFor, withTimeout } from './testing/fake-agent.js';
import { useTestController } from './testing/test-controller.js';
import { rejectsWith } from './testing/assertions.js';

const REPO = '/srv/pgfleet-repo';

/**
 * The restart tests must reach the controller (getJob, an agent's Hello) within the reclaim grace
 * after a restart: a few seconds, so a loaded machine does not lose the race.
 */
const RESTART_GRACE_SECONDS = 3;

const t = useTestController('controller', { repoPath: REPO, heartbeatIntervalSeconds: 2 });

/** Collects WatchJob's stream until it ends. */
async function watch(id: string): Promise<JobInfo[]> {
  const seen: JobInfo[] = [];
  for await (const r of t.admin.watchJob({ id })) seen.push(r.job!);
  return seen;
}

describe('controller over gRPC', () => {
  let agent: FakeAgent;
  let backupLabel = '';
  /** The key the Welcome carried (the cluster's, for its WAL names). */
  let clusterKey: Uint8Array = new Uint8Array();
  const LATE_LABEL = '20260301-121000D';
  const backupStop = Date.now() - 2000;

  test('an agent says Hello and gets Welcome; its cluster appears', async () => {
    agent = new FakeAgent(t.controller.address);
    agent.hello();
    const welcome = await agent.receive();
    assert.equal(welcome.msg.case, 'welcome');
    if (welcome.msg.case === 'welcome') {
      assert.equal(welcome.msg.value.heartbeatIntervalSeconds, 2);
      assert.match(welcome.msg.value.controllerVersion, /^\d+\.\d+\.\d+/);
      clusterKey = welcome.msg.value.clusterKey;
      assert.equal(clusterKey.length, 32, "the agent gets its cluster's key with the Welcome");
    }
    agent.stream.send({
      msg: {
        case: 'heartbeat',
        value: {
          pgUp: true,
          currentLsn: '0/5000000',
          archiver: { archivedCount: 4n, lastArchivedWal: '000000010000000000000004' },
        },
      },
    });
    const cluster = await waitFor('heartbeat recorded', async () => {
      const c = (await t.admin.listClusters({})).clusters.find((x) => x.name === 'main');
      return c?.archiver?.archivedCount === 4n ? c : undefined;
    });
    assert.deepEqual(
      [cluster.agentConnected, cluster.agentId, cluster.systemIdentifier, cluster.pgVersion],
      [true, 'agent-1', SYSID, 170002],
    );
    assert.equal(cluster.lastBackup, undefined);
    // The repositories the agent's own configuration names, as its Hello said.
    assert.deepEqual(
      cluster.repositories.map((r) => r.kind.case === 'posix' && r.kind.value.path),
      ['/srv/agent-repo'],
    );
  });

  test('admin errors for unknown things and bad requests carry their PGF codes', async () => {
    await rejectsWith(t.admin.listBackups({ cluster: 'nope' }), 'UnknownCluster');
    await rejectsWith(t.admin.startBackup({ cluster: 'nope' }), 'UnknownCluster');
    await rejectsWith(t.admin.getJob({ id: 'no-such-job' }), 'UnknownJob');
    await rejectsWith(
      (async () => {
        for await (const _ of t.admin.watchJob({ id: 'no-such-job' })) {
          /* none */
        }
      })(),
      'UnknownJob',
    );
    await rejectsWith(
      t.admin.startRestore({
        cluster: 'main',
        targetDir: '/restore',
        target: { target: { case: 'latest', value: true } },
      }),
      'NoBackup',
    );
    await rejectsWith(t.admin.startRestore({ cluster: 'main', targetDir: '/restore', target: {} }), 'TargetInvalid');
    await rejectsWith(
      t.admin.startRestore({
        cluster: 'main',
        targetDir: 'relative/dir',
        target: { target: { case: 'latest', value: true } },
      }),
      'InvalidArgument',
    );
    await rejectsWith(
      t.admin.startRestore({ cluster: 'main', targetDir: '', target: { target: { case: 'latest', value: true } } }),
      'InvalidArgument',
    );
  });

  test('a backup: dispatched to the agent, progress and result watched to success, then listed', async () => {
    const { job } = await t.admin.startBackup({ cluster: 'main' });
    assert.equal(job!.state, JobState.DISPATCHED);
    assert.equal(job!.kind, 'backup');
    assert.equal(job!.agentId, 'agent-1');

    const sent = await agent.receiveJob();
    assert.equal(sent.jobId, job!.id);
    assert.deepEqual(
      sent.repositories.map((r) => r.kind.case === 'posix' && r.kind.value.path),
      [REPO],
    );
    assert.equal(sent.kind.case, 'backup');
    assert.equal(sent.kind.case === 'backup' && sent.kind.value.type, BackupType.FULL);
    assert.deepEqual([sent.manifestCluster, sent.manifestKey], ['main', clusterKey], 'the same key as the Welcome');

    const watched = watch(job!.id);
    agent.stream.send({
      msg: {
        case: 'progress',
        value: { jobId: job!.id, phase: 'copy', bytesDone: 500n, bytesTotal: 1000n, filesDone: 5, filesTotal: 10 },
      },
    });
    await waitFor('running', async () =>
      (await t.admin.getJob({ id: job!.id })).job?.state === JobState.RUNNING ? true : undefined,
    );
    backupLabel = '20260301-120000F';
    agent.succeed(job!.id, {
      case: 'backup',
      value: reportedBackup({
        label: backupLabel,
        type: BackupType.FULL,
        startLsn: '0/2000028',
        stopLsn: '0/2000100',
        startTime: timestampFromMs(backupStop - 5000),
        stopTime: timestampFromMs(backupStop),
        storedBytes: 300n,
        walStart: '000000010000000000000002',
        walStop: '000000010000000000000002',
      }),
    });
    const states = (await withTimeout(watched, 120_000, 'watch to end')).map((j) => j.state);
    assert.ok(states.includes(JobState.RUNNING), `states ${states.join(',')}`);
    assert.equal(states.at(-1), JobState.SUCCEEDED);

    const done = (await t.admin.getJob({ id: job!.id })).job!;
    assert.equal(done.backup?.label, backupLabel);
    assert.deepEqual([done.backup?.cluster, done.backup?.jobId], ['main', job!.id]);
    assert.equal(done.progress?.bytesDone, 500n);
    assert.ok(done.finishedAt && done.startedAt);

    const { backups } = await t.admin.listBackups({ cluster: 'main' });
    assert.deepEqual(
      backups.map((b) => [b.label, b.cluster, b.jobId, b.stopLsn, b.sizeBytes]),
      [[backupLabel, 'main', job!.id, '0/2000100', 1000n]],
    );
    const cluster = (await t.admin.listClusters({})).clusters.find((c) => c.name === 'main');
    assert.equal(cluster?.lastBackup?.label, backupLabel);

    // The outbox holds the job's events, committed with its transitions (no NATS configured: unsent).
    const { events } = await t.admin.listEvents({ cluster: 'main', limit: 1000 });
    const mine = events.filter((e) =>
      JSON.stringify(e.event?.payload.value ?? {}, (_k, v: unknown) =>
        typeof v === 'bigint' ? String(v) : v,
      ).includes(job!.id),
    );
    assert.deepEqual(
      mine.map((e) => e.event?.kind),
      ['backup.started', 'backup.completed'],
    );
    const completed = mine[1]!.event!.payload;
    assert.equal(completed.case === 'backupCompleted' && completed.value.backup?.label, backupLabel);
    assert.equal(mine[1]!.sentAt, undefined);
    assert.ok(events.some((e) => e.event?.kind === 'agent.connected'));
    const latest = await t.admin.listEvents({ latest: true, limit: 1 });
    assert.equal(latest.events[0]?.seq, events.at(-1)?.seq);

    // WatchEvents streams what is committed after the given seq (what `pgfleet events --follow` shows).
    const stop = new AbortController();
    const seen: string[] = [];
    const following = (async () => {
      for await (const { entry } of t.admin.watchEvents(
        { cluster: 'main', afterSeq: latest.events[0]!.seq },
        { signal: stop.signal },
      )) {
        seen.push(entry!.event!.kind);
        if (seen.length === 1) stop.abort();
      }
    })().catch(() => undefined);
    await t.controller.context.store.appendEvents([
      outboxEvent('other', { case: 'rpoBreached', value: { rpoSeconds: 9, thresholdSeconds: 3 } }, Date.now()),
    ]);
    await t.controller.context.store.appendEvents([
      outboxEvent('main', { case: 'rpoBreached', value: { rpoSeconds: 9, thresholdSeconds: 3 } }, Date.now()),
    ]);
    await withTimeout(following, 120_000, 'watch events');
    assert.deepEqual(seen, ['rpo.breached']);
  });

  test('restore targets: before the oldest backup and in the future are refused', async () => {
    await rejectsWith(
      t.admin.startRestore({
        cluster: 'main',
        targetDir: '/restore',
        target: { target: { case: 'time', value: timestampFromMs(backupStop - 60_000) } },
      }),
      'TargetBeforeOldestBackup',
    );
    await rejectsWith(
      t.admin.startRestore({
        cluster: 'main',
        targetDir: '/restore',
        target: { target: { case: 'time', value: timestampFromMs(Date.now() + 3_600_000) } },
      }),
      'TargetInFuture',
    );
    await rejectsWith(
      t.admin.startRestore({
        cluster: 'main',
        targetDir: '/restore',
        backupLabel: 'nope',
        target: { target: { case: 'latest', value: true } },
      }),
      'UnknownBackup',
    );
    await rejectsWith(
      t.admin.startRestore({
        cluster: 'main',
        targetDir: '/restore',
        agentId: 'ghost',
        target: { target: { case: 'latest', value: true } },
      }),
      'AgentNotConnected',
    );
  });

  test('a PITR restore picks the backup; closing the agent stream fails the running job with PGF-2006', async () => {
    const targetTime = Date.now() - 500;
    const { job } = await t.admin.startRestore({
      cluster: 'main',
      targetDir: '/var/lib/pg/restore',
      target: { target: { case: 'time', value: timestampFromMs(targetTime) } },
    });
    assert.equal(job!.kind, 'restore');
    const sent = await agent.receiveJob();
    assert.equal(sent.jobId, job!.id);
    assert.equal(sent.kind.case, 'restore');
    if (sent.kind.case === 'restore') {
      assert.equal(sent.kind.value.backupLabel, backupLabel);
      assert.equal(sent.kind.value.targetDir, '/var/lib/pg/restore');
      assert.equal(sent.kind.value.cluster, 'main');
      assert.equal(
        sent.kind.value.target?.target.case === 'time' && timestampMs(sent.kind.value.target.target.value),
        targetTime,
      );
    }
    agent.stream.send({
      msg: { case: 'progress', value: { jobId: job!.id, phase: 'restore', bytesDone: 1n, bytesTotal: 10n } },
    });
    await waitFor('running', async () =>
      (await t.admin.getJob({ id: job!.id })).job?.state === JobState.RUNNING ? true : undefined,
    );
    const watched = watch(job!.id);

    agent.stream.cancel();
    const states = await withTimeout(watched, 120_000, 'watch to end');
    const last = states.at(-1)!;
    assert.equal(last.state, JobState.FAILED);
    assert.equal(last.error?.code, ErrorCodes.AgentDisconnected.code);
    const cluster = await waitFor('agent disconnected', async () => {
      const c = (await t.admin.listClusters({})).clusters.find((x) => x.name === 'main');
      return c && !c.agentConnected ? c : undefined;
    });
    assert.equal(cluster.agentId, 'agent-1');
    await rejectsWith(t.admin.startBackup({ cluster: 'main' }), 'AgentNotConnected');
  });

  test('a name target dispatches an empty label; a restarted agent fails the jobs it no longer runs', async () => {
    agent = new FakeAgent(t.controller.address);
    agent.hello();
    assert.equal((await agent.receive()).msg.case, 'welcome');
    const { job: named } = await t.admin.startRestore({
      cluster: 'main',
      targetDir: '/r1',
      target: { target: { case: 'name', value: 'before_upgrade' } },
    });
    const sent = await agent.receiveJob();
    assert.equal(sent.kind.case === 'restore' && sent.kind.value.backupLabel, '');
    const { job: backup } = await t.admin.startBackup({ cluster: 'main', type: BackupType.DIFF });
    const sentBackup = await agent.receiveJob();
    assert.equal(sentBackup.kind.case === 'backup' && sentBackup.kind.value.type, BackupType.DIFF);

    // The agent process restarts before the controller noticed the old stream die: the new Hello
    // lists the backup as still running (e.g. a surviving worker) but not the restore.
    const again = new FakeAgent(t.controller.address);
    again.hello({ runningJobIds: [backup!.id] });
    assert.equal((await again.receive()).msg.case, 'welcome');
    const lost = (await t.admin.getJob({ id: named!.id })).job!;
    assert.deepEqual([lost.state, lost.error?.code], [JobState.FAILED, ErrorCodes.AgentDisconnected.code]);
    assert.match(lost.error!.message, /restarted/);
    // The controller ends the replaced stream, and its end must not fail the surviving job.
    assert.equal(await agent.ended(), undefined);
    assert.equal((await t.admin.getJob({ id: backup!.id })).job?.state, JobState.DISPATCHED);

    // The agent's failure reaches the job with its own code.
    again.stream.send({
      msg: {
        case: 'result',
        value: {
          jobId: backup!.id,
          state: JobState.FAILED,
          error: { code: ErrorCodes.WalArchiveTimeout.code, message: 'WAL 000000010000000000000009 did not arrive' },
        },
      },
    });
    const failed = await waitFor('failed', async () => {
      const j = (await t.admin.getJob({ id: backup!.id })).job!;
      return j.state === JobState.FAILED ? j : undefined;
    });
    assert.deepEqual(
      [failed.error?.code, failed.error?.message],
      [ErrorCodes.WalArchiveTimeout.code, 'WAL 000000010000000000000009 did not arrive'],
    );
    assert.match(failed.error!.hint, /archive_command/);
    // A repeated result for a finished job is ignored without cutting the stream.
    again.stream.send({ msg: { case: 'result', value: { jobId: backup!.id, state: JobState.SUCCEEDED } } });
    const { job: next } = await t.admin.startBackup({ cluster: 'main' });
    assert.equal((await again.receiveJob()).jobId, next!.id);
    assert.equal((await t.admin.getJob({ id: backup!.id })).job?.state, JobState.FAILED);
    // A backup that finished after its job was failed still lands in the catalog (the repository
    // holds it); the job stays failed.
    const late = reportedBackup({
      label: LATE_LABEL,
      type: BackupType.DIFF,
      startLsn: '0/3000028',
      stopLsn: '0/3000100',
      startTime: timestampFromMs(backupStop + 5000),
      stopTime: timestampFromMs(backupStop + 9000),
      storedBytes: 30n,
      walStart: '000000010000000000000003',
      walStop: '000000010000000000000003',
      priorLabel: backupLabel,
    });
    again.stream.send({
      msg: {
        case: 'result',
        value: { jobId: backup!.id, state: JobState.SUCCEEDED, result: { case: 'backup', value: late } },
      },
    });
    const recorded = await waitFor('late backup recorded', async () =>
      (await t.admin.listBackups({ cluster: 'main' })).backups.find((b) => b.label === LATE_LABEL),
    );
    assert.equal(recorded.jobId, backup!.id);
    assert.equal((await t.admin.getJob({ id: backup!.id })).job?.state, JobState.FAILED);
    agent = again;
  });

  test("Hello from another database system under a known name, while the cluster's agent is connected, is refused with PGF-3012 naming that agent", async () => {
    // (With no agent connected the catalog's record refuses it: PGF-3005, catalog-suite.ts.)
    const impostor = new FakeAgent(t.controller.address);
    impostor.hello({ agentId: 'agent-x', systemIdentifier: '999' });
    const err = await impostor.ended();
    assert.ok(PgfleetError.is(err, 'HostSystemIdMismatch'), String(err));
    assert.match((err as Error).message, /agent-1/);
    assert.equal((await t.admin.listClusters({})).clusters.find((c) => c.name === 'main')?.systemIdentifier, SYSID);
  });

  test('a first message other than Hello is INVALID_ARGUMENT (PGF-1001)', async () => {
    const rude = new FakeAgent(t.controller.address);
    rude.stream.send({ msg: { case: 'heartbeat', value: { pgUp: true } } });
    const err = await rude.ended();
    assert.ok(PgfleetError.is(err, 'InvalidArgument'), String(err));
  });

  test('a controller restart fails unfinished jobs no agent reclaims with PGF-7003 and keeps the catalog', async () => {
    const { jobs } = await t.admin.listJobs({ cluster: 'main' });
    const active = jobs.find((j) => j.state === JobState.DISPATCHED);
    assert.ok(active, 'the backup dispatched in the reconnect test is still active');
    agent.stream.cancel();
    await waitFor('agent gone', async () =>
      (await t.admin.getJob({ id: active.id })).job?.state === JobState.FAILED ? true : undefined,
    );

    // A job left active by a crash (the catalog says dispatched, no stream to finish it).
    const orphan = await t.controller.context.store.createJob(
      { id: 'orphan', cluster: 'main', kind: 'backup', agentId: 'agent-1', params: {} },
      Date.now(),
    );
    await t.controller.context.store.transitionJob(orphan.id, 'dispatched', {}, Date.now());
    await t.restart({ jobReclaimGraceSeconds: RESTART_GRACE_SECONDS });
    // Its agent may still be running it: it has the reclaim grace to reconnect and claim it.
    assert.equal((await t.admin.getJob({ id: 'orphan' })).job!.state, JobState.DISPATCHED);
    const j = await waitFor(
      'unclaimed job to fail',
      async () => {
        const job = (await t.admin.getJob({ id: 'orphan' })).job!;
        return job.state === JobState.FAILED ? job : undefined;
      },
      RESTART_GRACE_SECONDS * 1000 + 10_000,
    );
    assert.deepEqual([j.state, j.error?.code], [JobState.FAILED, ErrorCodes.ControllerRestarted.code]);
    assert.match(j.error?.message ?? '', new RegExp(`did not reconnect to claim it within ${RESTART_GRACE_SECONDS} s`));
    const failedEvent = (await t.admin.listEvents({ cluster: 'main', limit: 1000 })).events.find(
      (e) => e.event?.payload.case === 'backupFailed' && e.event.payload.value.jobId === 'orphan',
    );
    assert.equal(
      failedEvent?.event?.payload.case === 'backupFailed' && failedEvent.event.payload.value.error?.code,
      ErrorCodes.ControllerRestarted.code,
    );
    assert.deepEqual(
      (await t.admin.listBackups({ cluster: 'main' })).backups.map((b) => b.label),
      [backupLabel, LATE_LABEL],
    );
    assert.equal((await t.admin.listClusters({})).clusters.find((c) => c.name === 'main')?.agentConnected, false);
  });

  test('an agent that reconnects after a controller restart claims its running job and delivers the result', async () => {
    const claimed = await t.controller.context.store.createJob(
      { id: 'claimed', cluster: 'main', kind: 'backup', agentId: 'agent-9', params: { type: 'incr' } },
      Date.now(),
    );
    await t.controller.context.store.transitionJob(claimed.id, 'dispatched', {}, Date.now());
    await t.controller.context.store.transitionJob(claimed.id, 'running', {}, Date.now());
    await t.restart({ jobReclaimGraceSeconds: RESTART_GRACE_SECONDS });
    const restarted = Date.now();
    const back = new FakeAgent(t.controller.address);
    back.hello({ agentId: 'agent-9', runningJobIds: ['claimed'] });
    assert.equal((await back.receive()).msg.case, 'welcome');
    // Past the reclaim grace (which runs from the restart, and its check has run) the claimed job is still running, not failed.
    await sleep(Math.max(0, restarted + RESTART_GRACE_SECONDS * 1000 + 1000 - Date.now()));
    await waitFor(
      'the start-up reclaim check',
      async () => (t.controller.context.reclaimTimers.has('*') ? undefined : true),
      120_000,
    );
    assert.equal((await t.admin.getJob({ id: 'claimed' })).job?.state, JobState.RUNNING);
    const label = '20260301-130000I';
    back.succeed('claimed', {
      case: 'backup',
      value: reportedBackup({
        label,
        type: BackupType.INCR,
        startLsn: '0/4000028',
        stopLsn: '0/4000100',
        startTime: timestampFromMs(backupStop + 20_000),
        stopTime: timestampFromMs(backupStop + 30_000),
        storedBytes: 10n,
        walStart: '000000010000000000000004',
        walStop: '000000010000000000000004',
        priorLabel: LATE_LABEL,
      }),
    });
    const done = await waitFor('claimed job to succeed', async () => {
      const job = (await t.admin.getJob({ id: 'claimed' })).job!;
      return job.state === JobState.SUCCEEDED ? job : undefined;
    });
    assert.equal(done.backup?.label, label);
    // The same result sent again (an agent resends recent results after every Welcome) changes nothing.
    const before = (await t.admin.listEvents({ cluster: 'main', limit: 1000 })).events.length;
    back.succeed('claimed', {
      case: 'backup',
      value: { label, type: BackupType.INCR, stopTime: timestampFromMs(backupStop + 30_000) },
    });
    // The controller applies an agent's messages one after the other: once a heartbeat sent after
    // the duplicate is recorded, the duplicate has been handled.
    back.stream.send({ msg: { case: 'heartbeat', value: { pgUp: true, currentLsn: '0/7A000000' } } });
    await waitFor('the heartbeat sent after the duplicate to be recorded', async () =>
      (await t.admin.listClusters({})).clusters
        .find((c) => c.name === 'main')
        ?.hosts.some((h) => h.agentId === 'agent-9' && h.currentLsn === '0/7A000000')
        ? true
        : undefined,
    );
    assert.equal((await t.admin.listEvents({ cluster: 'main', limit: 1000 })).events.length, before);
    assert.deepEqual(
      (await t.admin.listBackups({ cluster: 'main' })).backups.map((b) => b.label),
      [backupLabel, LATE_LABEL, label],
    );
    back.stream.end();
  });
});
