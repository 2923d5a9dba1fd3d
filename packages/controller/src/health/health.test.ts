// The health state machine: RPO and archive assessment from heartbeat figures, and the
// hysteresis (one event on crossing, one on recovery, none per heartbeat, none again after a
// restart) against a real SQLite catalog; thresholds per cluster from the policies.
import { strict as assert } from 'node:assert';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { toJson } from '@bufbuild/protobuf';
import { timestampFromMs } from '@bufbuild/protobuf/wkt';
import { silentLogger } from '@pgfleet/core';
import { SqliteCatalogStore, type CatalogStore } from '@pgfleet/catalog';
import { ArchiverStatsSchema, type Event } from '@pgfleet/proto';
import { decodeOutboxEvent } from '../jobs/events.js';
import {
  HealthMonitor,
  archiveFailing,
  assessCluster,
  clusterThresholds,
  rpoSeconds,
  scheduleStaleSeconds,
  type ArchiverFigures,
  type ClusterObservation,
  type HealthThresholds,
} from './health.js';

const T: HealthThresholds = { rpoSeconds: 60, staleBackupSeconds: 3600, silenceSeconds: 30 };
const dirs: string[] = [];
after(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

const archiver = (o: Partial<ArchiverFigures> = {}): ArchiverFigures => ({
  archivedCount: 10n,
  lastArchivedWal: '000000010000000000000005',
  lastArchivedTime: 1_000_000,
  failedCount: 0n,
  lastFailedWal: '',
  lastFailedTime: null,
  ...o,
});

function obs(
  now: number,
  a: ArchiverFigures | undefined,
  extra: Partial<NonNullable<ClusterObservation['agent']>> = {},
): ClusterObservation {
  return {
    cluster: 'main',
    now,
    clusterCreatedAt: 0,
    lastBackup: { label: 'b', stopTime: now - 1000 },
    agent: {
      id: 'a1',
      connected: true,
      lastSeen: now,
      ...(a ? { archiver: a } : {}),
      currentLsn: '0/6000100',
      ...extra,
    },
  };
}

test('RPO: last archived time; the heartbeat time when everything is archived or streamed; unknown without figures', () => {
  assert.equal(rpoSeconds(obs(1_090_000, archiver())), 90);
  // current LSN still inside the last archived segment's end: nothing unarchived.
  assert.equal(rpoSeconds(obs(1_090_000, archiver(), { currentLsn: '0/6000000' })), 0);
  // streaming has everything PostgreSQL wrote.
  assert.equal(rpoSeconds(obs(1_090_000, archiver(), { streamedLsn: '0/6000100' })), 0);
  assert.equal(rpoSeconds(obs(1_090_000, archiver(), { streamedLsn: '0/6000000' })), 90);
  // ...but not while archiving fails.
  const failing = archiver({ failedCount: 3n, lastFailedTime: 1_050_000, lastFailedWal: '000000010000000000000006' });
  assert.equal(archiveFailing(failing), true);
  assert.equal(rpoSeconds(obs(1_090_000, failing, { streamedLsn: '0/6000100' })), 90);
  assert.equal(rpoSeconds(obs(1_090_000, undefined)), undefined);
  // An old failure followed by success is not failing.
  assert.equal(archiveFailing(archiver({ failedCount: 3n, lastFailedTime: 900_000 })), false);
});

test('assessment of staleness and silence', () => {
  const a = assessCluster(
    { ...obs(10_000_000, archiver()), lastBackup: { label: 'old', stopTime: 10_000_000 - 3_601_000 } },
    T,
  );
  assert.equal(a.conditions.backup_stale.breached, true);
  const s = assessCluster(obs(2_000_000, archiver(), { lastSeen: 2_000_000 - 31_000 }), T);
  assert.equal(s.conditions.agent_silent.breached, true);
  const closed = assessCluster(obs(2_000_000, archiver(), { lastSeen: 0, connected: false }), T);
  assert.equal(closed.conditions.agent_silent.breached, false);
});

async function catalog(): Promise<CatalogStore> {
  const dir = mkdtempSync(join(tmpdir(), 'pgfleet-health-'));
  dirs.push(dir);
  const store = SqliteCatalogStore.open(join(dir, 'catalog.db'));
  await store.upsertCluster({ name: 'main', systemIdentifier: '1', pgVersion: 170000 }, 0);
  await store.upsertAgent({ id: 'a1', cluster: 'main', hostname: 'h', version: '1' }, 0);
  return store;
}

async function beat(
  store: CatalogStore,
  now: number,
  a: ArchiverFigures,
  currentLsn = '0/6000100',
  agent = { cluster: 'main', agentId: 'a1' },
): Promise<void> {
  const json = toJson(ArchiverStatsSchema, {
    $typeName: 'pgfleet.v1.ArchiverStats',
    archivedCount: a.archivedCount,
    lastArchivedWal: a.lastArchivedWal,
    failedCount: a.failedCount,
    lastFailedWal: a.lastFailedWal,
    ...(a.lastArchivedTime !== null ? { lastArchivedTime: timestampFromMs(a.lastArchivedTime) } : {}),
    ...(a.lastFailedTime !== null ? { lastFailedTime: timestampFromMs(a.lastFailedTime) } : {}),
  } as never);
  await store.recordHeartbeats([{ agent, figures: { archiver: json, currentLsn }, at: now }]);
}

async function kinds(store: CatalogStore): Promise<string[]> {
  return (await store.listEvents({ limit: 1000 })).map((e) => e.kind).filter((k) => !k.startsWith('agent.'));
}

test('hysteresis: breach and recovery are each reported once, across heartbeats and a restart', async () => {
  const store = await catalog();
  let now = 1_000_000;
  await store.insertBackup({
    cluster: 'main',
    label: 'b1',
    type: 'full',
    startLsn: '0/1000000',
    stopLsn: '0/2000000',
    startTime: now - 2000,
    stopTime: now - 1000,
    timeline: 1,
    systemIdentifier: '1',
    pgVersion: 170000,
    sizeBytes: 1,
    storedBytes: 1,
    fileCount: 1,
    walStart: '000000010000000000000001',
    walStop: '000000010000000000000002',
    jobId: 'j',
    priorLabel: '',
  });
  let notified = 0;
  const monitor = () =>
    new HealthMonitor(store, {
      thresholds: T,
      intervalSeconds: 0,
      logger: silentLogger(),
      now: () => now,
      onEvents: () => notified++,
    });
  let m = monitor();
  const ok = archiver({ lastArchivedTime: now });
  await beat(store, now, ok);
  await m.evaluate('main');
  assert.deepEqual(await kinds(store), []);

  // Archiving starts failing: archive_failed at once; RPO crosses 60 s later, once.
  const failing = archiver({
    lastArchivedTime: 1_000_000,
    failedCount: 2n,
    lastFailedTime: 1_010_000,
    lastFailedWal: '000000010000000000000006',
  });
  for (const t of [1_010_000, 1_020_000, 1_050_000, 1_070_000, 1_080_000, 1_090_000]) {
    now = t;
    await beat(store, now, failing);
    await m.evaluate('main');
  }
  assert.deepEqual(await kinds(store), ['wal.archive_failed', 'rpo.breached']);
  assert.equal(notified, 2);

  // A restarted controller finds the states in the catalog: nothing is sent again.
  m = monitor();
  now = 1_100_000;
  await beat(store, now, failing);
  await m.evaluate('main');
  assert.deepEqual(await kinds(store), ['wal.archive_failed', 'rpo.breached']);

  // Fixed: both recover, once.
  const fixed = archiver({
    archivedCount: 12n,
    lastArchivedWal: '000000010000000000000006',
    lastArchivedTime: 1_105_000,
    failedCount: 2n,
    lastFailedTime: 1_010_000,
  });
  for (const t of [1_106_000, 1_110_000, 1_120_000]) {
    now = t;
    await beat(store, now, fixed, '0/7000000');
    await m.evaluate('main');
  }
  const events = (await store.listEvents({ limit: 1000 }))
    .map(decodeOutboxEvent)
    .filter((e: Event) => !e.kind.startsWith('agent.'));
  assert.deepEqual(
    events.map((e) => e.kind),
    ['wal.archive_failed', 'rpo.breached', 'wal.archive_recovered', 'rpo.recovered'],
  );
  const breached = events[1]!.payload;
  assert.equal(breached.case, 'rpoBreached');
  if (breached.case === 'rpoBreached') {
    assert.equal(breached.value.thresholdSeconds, 60);
    assert.ok(breached.value.rpoSeconds > 60);
    assert.equal(breached.value.lastArchivedWal, '000000010000000000000005');
  }
  const recovered = events[3]!.payload;
  assert.equal(recovered.case, 'rpoRecovered');
  if (recovered.case === 'rpoRecovered') assert.ok(recovered.value.breachedSeconds > 0);
  const failed = events[0]!.payload;
  if (failed.case === 'walArchiveFailed') assert.equal(failed.value.failedCount, 2n);

  // Staleness and silence: reported once each, re-armed silently on recovery.
  now = 1_000_000 + 3_700_000;
  await m.evaluate('main'); // no heartbeat for an hour: silent, the backup is stale, and the RPO unknown-old again
  await m.evaluate('main');
  assert.deepEqual((await kinds(store)).slice(4), ['rpo.breached', 'backup.stale']);
  const all = (await store.listEvents({ limit: 1000 })).map((e) => e.kind);
  assert.equal(all.filter((k) => k === 'agent.silent').length, 1);
  assert.equal(all.filter((k) => k === 'backup.stale').length, 1);
  await store.close();
});

test('thresholds per cluster: the cluster policy, else the fleet policy, else the controller flags', () => {
  const policy = (scope: string, health: Record<string, number>) => ({
    scope,
    schedules: {},
    retention: {},
    health,
    updatedAt: 0,
  });
  const policies = [policy('*', { rpoSeconds: 120, silenceSeconds: 90 }), policy('main', { rpoSeconds: 30 })];
  assert.deepEqual(clusterThresholds(T, policies, 'main'), {
    rpoSeconds: 30,
    staleBackupSeconds: 3600,
    silenceSeconds: 90,
  });
  assert.deepEqual(clusterThresholds(T, policies, 'other'), {
    rpoSeconds: 120,
    staleBackupSeconds: 3600,
    silenceSeconds: 90,
  });
  assert.deepEqual(clusterThresholds(T, [], 'main'), T);
});

test('backup staleness is judged against the schedule unless a policy sets the threshold', () => {
  const policy = (scope: string, schedules: Record<string, string>, health: Record<string, number> = {}) => ({
    scope,
    schedules,
    retention: {},
    health,
    updatedAt: 0,
  });
  const grace = 3 * 3600;
  // A daily full: the longest gap is a day, plus the grace.
  assert.equal(scheduleStaleSeconds(['0 1 * * *']), 24 * 3600 + grace);
  // Weekly full + incr on the other days at 01:00: still one day between backups.
  assert.equal(scheduleStaleSeconds(['0 1 * * 0', '0 1 * * 1-6']), 24 * 3600 + grace);
  // Hourly incrs beside a nightly full (which may hold them back for hours): 4 h.
  assert.equal(scheduleStaleSeconds(['0 1 * * *', '0 * * * *']), 3600 + grace);
  // Full on Sundays only: a week.
  assert.equal(scheduleStaleSeconds(['30 2 * * 0']), 7 * 86400 + grace);
  // Every minute: a minute plus the grace.
  assert.equal(scheduleStaleSeconds(['* * * * *']), 60 + grace);
  // Workdays at 01:00: Friday -> Monday is the longest gap (3 days).
  assert.equal(scheduleStaleSeconds(['0 1 * * 1-5']), 3 * 86400 + grace);
  // Quarterly: the longest quarter (92 days), found because the horizon covers more than a year.
  assert.equal(scheduleStaleSeconds(['0 3 1 */3 *']), 92 * 86400 + grace);
  const scheduled = [
    policy('*', { full: '0 1 * * 0', incr: '0 1 * * 1-6', drill: '0 5 * * *' }),
    policy('pinned', {}, { staleBackupSeconds: 600 }),
  ];
  const t = clusterThresholds(T, scheduled, 'main');
  assert.equal(t.staleBackupSeconds, 27 * 3600);
  assert.equal(t.staleSchedule, '0 1 * * 0 | 0 1 * * 1-6', 'drills are not backups');
  // An explicit threshold wins over the schedule; no schedule: the controller flag.
  assert.equal(clusterThresholds(T, scheduled, 'pinned').staleBackupSeconds, 600);
  assert.equal(clusterThresholds(T, [], 'main').staleBackupSeconds, T.staleBackupSeconds);
});

test('per-policy RPO thresholds decide the breach and travel in the events; policies are read once per round, not per heartbeat', async () => {
  const store = await catalog();
  await store.upsertCluster({ name: 'other', systemIdentifier: '2', pgVersion: 170000 }, 0);
  await store.upsertAgent({ id: 'a2', cluster: 'other', hostname: 'h2', version: '1' }, 0);
  await store.putPolicy({ scope: '*', schedules: {}, retention: {}, health: { rpoSeconds: 200 } }, 0);
  await store.putPolicy({ scope: 'main', schedules: {}, retention: {}, health: { rpoSeconds: 20 } }, 0);
  const { counted: counting, calls: policyReads } = countingCalls(store, 'listPolicies');
  let now = 1_000_000;
  const m = new HealthMonitor(counting, { thresholds: T, intervalSeconds: 10, logger: silentLogger(), now: () => now });
  // Archiving stopped at 1_000_000 on both clusters (the current LSN is past the last archived segment).
  const stuck = archiver({ lastArchivedTime: 1_000_000 });
  for (const t of [1_001_000, 1_002_000, 1_005_000, 1_008_000]) {
    now = t;
    for (const [agent, cluster] of [
      ['a1', 'main'],
      ['a2', 'other'],
    ] as const) {
      await beat(store, now, stuck, '0/6000100', { cluster, agentId: agent });
      await m.onHeartbeat(agent, cluster, { streamedLsn: '', currentLsn: '0/6000100' });
    }
  }
  assert.equal(policyReads(), 1, 'eight heartbeat evaluations within one interval read the policies once');
  now = 1_030_000; // main's 20 s are exceeded, the fleet's 200 s for other are not
  await m.evaluateAll();
  assert.equal(policyReads(), 2, 'a timer round reads them once for every cluster');
  now = 1_130_000; // the controller flag (60 s) would have fired for other by now; its fleet policy says 200 s
  await m.evaluateAll();
  const breaches = (await store.listEvents({ limit: 1000 }))
    .map(decodeOutboxEvent)
    .filter((e) => e.kind === 'rpo.breached');
  assert.deepEqual(
    breaches.map((e) => e.cluster),
    ['main'],
  );
  const p = breaches[0]!.payload;
  assert.equal(p.case, 'rpoBreached');
  if (p.case === 'rpoBreached') assert.deepEqual([p.value.thresholdSeconds, p.value.rpoSeconds], [20, 30]);
  assert.equal(m.assessments().get('other')?.thresholds.rpoSeconds, 200);

  // A policy change is picked up within one interval (or at once after policiesChanged()).
  await store.putPolicy({ scope: 'other', schedules: {}, retention: {}, health: { rpoSeconds: 100 } }, now);
  m.policiesChanged();
  await m.evaluate('other');
  const other = (await store.listEvents({ limit: 1000 }))
    .map(decodeOutboxEvent)
    .filter((e) => e.kind === 'rpo.breached' && e.cluster === 'other');
  assert.equal(other.length, 1);
  assert.ok(other[0]!.payload.case === 'rpoBreached' && other[0]!.payload.value.thresholdSeconds === 100);
  await store.close();
});

test("an agent of another cluster with the same id streams nothing for this cluster's RPO", async () => {
  const store = await catalog();
  await store.upsertCluster({ name: 'other', systemIdentifier: '2', pgVersion: 170000 }, 0);
  await store.upsertAgent({ id: 'a1', cluster: 'other', hostname: 'h2', version: '1' }, 0);
  const now = 1_090_000;
  const m = new HealthMonitor(store, { thresholds: T, intervalSeconds: 10, logger: silentLogger(), now: () => now });
  // main's a1: archived up to segment 5, writing in 6, not streaming: 90 s of WAL at risk.
  await beat(store, now, archiver(), '0/6000100');
  await m.onHeartbeat('a1', 'main', { streamedLsn: '', currentLsn: '0/6000100' });
  // other's a1 then streams everything up to the same position (of its own cluster's WAL).
  await m.onHeartbeat('a1', 'other', { streamedLsn: '0/6000100', currentLsn: '0/6000100' });
  assert.equal((await m.evaluate('main'))?.rpoSeconds, 90);
  await m.stop();
});

test('heartbeats evaluate a cluster at most once per interval, and queued evaluations of a cluster merge', async () => {
  const store = await catalog();
  // One listHealthStates per evaluation.
  const { counted: counting, calls: evaluations } = countingCalls(store, 'listHealthStates');
  let now = 1_000_000;
  const m = new HealthMonitor(counting, { thresholds: T, intervalSeconds: 10, logger: silentLogger(), now: () => now });
  const stuck = archiver({ lastArchivedTime: 1_000_000 });
  // Ten beats in 9 s (a fleet's agents beat every few seconds): one evaluation.
  for (let i = 0; i < 10; i++, now += 900) {
    await beat(store, now, stuck, '0/6000100');
    await m.onHeartbeat('a1', 'main', { streamedLsn: '', currentLsn: '0/6000100' });
  }
  assert.equal(evaluations(), 1);
  // The next interval's first beat evaluates again, and sees what the beats recorded.
  now = 1_100_000;
  await beat(store, now, stuck, '0/6000100');
  await m.onHeartbeat('a1', 'main', { streamedLsn: '', currentLsn: '0/6000100' });
  assert.equal(evaluations(), 2);
  assert.equal(m.assessments().get('main')?.rpoSeconds, 100);
  // Five requests before the queue gets to the cluster: one evaluation answers them all.
  const all = await Promise.all([1, 2, 3, 4, 5].map(() => m.evaluate('main')));
  assert.equal(evaluations(), 3);
  assert.ok(all.every((a) => a?.rpoSeconds === 100));
  await m.stop();
});

/** The store, counting the calls of one of its methods. */
function countingCalls(
  store: CatalogStore,
  method: keyof CatalogStore,
): { counted: CatalogStore; calls: () => number } {
  let calls = 0;
  const counted = proxied(store, (prop) => {
    if (prop === method) calls++;
    return undefined;
  });
  return { counted, calls: () => calls };
}

/** The store with the members `hook` answers (undefined: the store's own). */
function proxied(store: CatalogStore, hook: (prop: string | symbol) => unknown): CatalogStore {
  return new Proxy(store, {
    get(target, prop, receiver) {
      const own = hook(prop);
      if (own !== undefined) return own;
      const v = Reflect.get(target, prop, receiver) as unknown;
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
    },
  });
}

test('a health round whose leadership was taken over meanwhile writes no state and no event, and stops', async () => {
  const store = await catalog();
  await store.upsertCluster({ name: 'other', systemIdentifier: '2', pgVersion: 170000 }, 0);
  const now = 1_090_000;
  await beat(store, now, archiver({ lastArchivedTime: 1_000_000 }), '0/6000100');
  // The round's fence is an epoch another controller has since replaced: a paused ex-leader's round.
  let stale: { name: string; epoch: number } | undefined;
  const paused = proxied(store, (prop) => (prop === 'leadershipFence' ? () => stale : undefined));
  assert.ok(await store.tryAcquireLeadership('health'));
  const fence = store.leadershipFence('health')!;
  stale = { ...fence, epoch: fence.epoch - 1 };
  const m = new HealthMonitor(paused, { thresholds: T, intervalSeconds: 10, logger: silentLogger(), now: () => now });
  await m.evaluateAll();
  assert.deepEqual(await store.listHealthStates(), [], 'nothing written');
  assert.deepEqual(await store.listEvents({ limit: 100 }), [], 'no event');
  // The current epoch's round writes main's breach.
  stale = fence;
  await m.evaluateAll();
  assert.ok((await store.listHealthStates('main')).some((h) => h.state === 'breached'));
  await m.stop();
});
