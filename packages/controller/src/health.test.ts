// The health state machine: RPO and archive assessment from heartbeat figures, and the
// hysteresis (one event on crossing, one on recovery, none per heartbeat, none again after a
// restart) against a real SQLite catalog.
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
import { decodeOutboxEvent } from './events.js';
import { HealthMonitor, archiveFailing, assessCluster, rpoSeconds, type ArchiverFigures, type ClusterObservation, type HealthThresholds } from './health.js';

const T: HealthThresholds = { rpoSeconds: 60, staleBackupSeconds: 3600, silenceSeconds: 30 };
const dirs: string[] = [];
after(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

const archiver = (o: Partial<ArchiverFigures> = {}): ArchiverFigures => ({
  archivedCount: 10n, lastArchivedWal: '000000010000000000000005', lastArchivedTime: 1_000_000, failedCount: 0n, lastFailedWal: '', lastFailedTime: null, ...o,
});

function obs(now: number, a: ArchiverFigures | undefined, extra: Partial<NonNullable<ClusterObservation['agent']>> = {}): ClusterObservation {
  return {
    cluster: 'main', now, clusterCreatedAt: 0, lastBackup: { label: 'b', stopTime: now - 1000 },
    agent: { id: 'a1', connected: true, lastSeen: now, ...(a ? { archiver: a } : {}), currentLsn: '0/6000100', ...extra },
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
  const a = assessCluster({ ...obs(10_000_000, archiver()), lastBackup: { label: 'old', stopTime: 10_000_000 - 3_601_000 } }, T);
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

async function beat(store: CatalogStore, now: number, a: ArchiverFigures, currentLsn = '0/6000100'): Promise<void> {
  const json = toJson(ArchiverStatsSchema, {
    $typeName: 'pgfleet.v1.ArchiverStats',
    archivedCount: a.archivedCount, lastArchivedWal: a.lastArchivedWal, failedCount: a.failedCount, lastFailedWal: a.lastFailedWal,
    ...(a.lastArchivedTime !== null ? { lastArchivedTime: timestampFromMs(a.lastArchivedTime) } : {}),
    ...(a.lastFailedTime !== null ? { lastFailedTime: timestampFromMs(a.lastFailedTime) } : {}),
  } as never);
  await store.recordHeartbeat('a1', { archiver: json, currentLsn }, now);
}

async function kinds(store: CatalogStore): Promise<string[]> {
  return (await store.listEvents({ limit: 1000 })).map((e) => e.kind).filter((k) => !k.startsWith('agent.'));
}

test('hysteresis: breach and recovery are each reported once, across heartbeats and a restart', async () => {
  const store = await catalog();
  let now = 1_000_000;
  await store.insertBackup({
    cluster: 'main', label: 'b1', type: 'full', startLsn: '0/1000000', stopLsn: '0/2000000', startTime: now - 2000, stopTime: now - 1000, timeline: 1,
    systemIdentifier: '1', pgVersion: 170000, sizeBytes: 1, storedBytes: 1, fileCount: 1, walStart: '000000010000000000000001', walStop: '000000010000000000000002', jobId: 'j', priorLabel: '',
  });
  let notified = 0;
  const monitor = () => new HealthMonitor(store, { thresholds: T, intervalSeconds: 0, logger: silentLogger(), now: () => now, onEvents: () => notified++ });
  let m = monitor();
  const ok = archiver({ lastArchivedTime: now });
  await beat(store, now, ok);
  await m.evaluate('main');
  assert.deepEqual(await kinds(store), []);

  // Archiving starts failing: archive_failed at once; RPO crosses 60 s later, once.
  const failing = archiver({ lastArchivedTime: 1_000_000, failedCount: 2n, lastFailedTime: 1_010_000, lastFailedWal: '000000010000000000000006' });
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
  const fixed = archiver({ archivedCount: 12n, lastArchivedWal: '000000010000000000000006', lastArchivedTime: 1_105_000, failedCount: 2n, lastFailedTime: 1_010_000 });
  for (const t of [1_106_000, 1_110_000, 1_120_000]) {
    now = t;
    await beat(store, now, fixed, '0/7000000');
    await m.evaluate('main');
  }
  const events = (await store.listEvents({ limit: 1000 })).map(decodeOutboxEvent).filter((e: Event) => !e.kind.startsWith('agent.'));
  assert.deepEqual(events.map((e) => e.kind), ['wal.archive_failed', 'rpo.breached', 'wal.archive_recovered', 'rpo.recovered']);
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
