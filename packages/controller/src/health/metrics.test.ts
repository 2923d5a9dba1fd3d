// The /metrics text a Prometheus scrape gets, from a real SQLite catalog: backup figures, RPO
// against the cluster's own threshold, pg_stat_archiver and the agent's WAL health (bytes
// archived, pg_wal space, slot, stream lag), health conditions, jobs and agents.
import { strict as assert } from 'node:assert';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { create, toJson } from '@bufbuild/protobuf';
import { timestampFromMs } from '@bufbuild/protobuf/wkt';
import { silentLogger } from '@pgfleet/core';
import { SqliteCatalogStore } from '@pgfleet/catalog';
import { ArchiverStatsSchema, DrillResultSchema, VerifyResultSchema } from '@pgfleet/proto';
import { HealthMonitor, type HealthThresholds } from './health.js';
import { createMetricsRegistry } from './metrics.js';

const dirs: string[] = [];
after(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));
const T: HealthThresholds = { rpoSeconds: 300, staleBackupSeconds: 26 * 3600, silenceSeconds: 60 };
const MiB = 1024 * 1024;

test('a scrape shows per cluster backups, RPO and its policy threshold, archiving, WAL health, conditions, jobs and agents', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'pgfleet-metrics-'));
  dirs.push(dir);
  const store = SqliteCatalogStore.open(join(dir, 'catalog.db'));
  const now = 1_800_000_000_000;
  await store.upsertCluster({ name: 'main', systemIdentifier: '1', pgVersion: 170000 }, 0);
  await store.upsertCluster({ name: 'idle', systemIdentifier: '2', pgVersion: 170000 }, 0);
  await store.upsertAgent({ id: 'a1', cluster: 'main', hostname: 'h', version: '1' }, now - 5000);
  await store.putPolicy({ scope: 'main', schedules: {}, retention: {}, health: { rpoSeconds: 45 } }, 0);
  const b = {
    cluster: 'main',
    startLsn: '0/1000000',
    stopLsn: '0/2000000',
    timeline: 1,
    systemIdentifier: '1',
    pgVersion: 170000,
    fileCount: 1,
    walStart: '000000010000000000000001',
    walStop: '000000010000000000000002',
    jobId: 'j',
    priorLabel: '',
  };
  await store.insertBackup({
    ...b,
    label: 'f1',
    type: 'full',
    startTime: now - 7_200_000,
    stopTime: now - 7_140_000,
    sizeBytes: 1000,
    storedBytes: 300,
  });
  await store.insertBackup({
    ...b,
    label: 'i1',
    type: 'incr',
    startTime: now - 600_000,
    stopTime: now - 590_000,
    sizeBytes: 50,
    storedBytes: 20,
  });
  const archiver = toJson(ArchiverStatsSchema, {
    $typeName: 'pgfleet.v1.ArchiverStats',
    archivedCount: 41n,
    lastArchivedWal: '000000010000000000000029',
    lastArchivedTime: timestampFromMs(now - 100_000),
    failedCount: 2n,
    lastFailedWal: '00000001000000000000002A',
    lastFailedTime: timestampFromMs(now - 50_000),
  } as never);
  await store.recordHeartbeats([
    {
      agent: { cluster: 'main', agentId: 'a1' },
      figures: {
        archiver,
        currentLsn: '0/2A000100',
        walHealth: {
          pgWalBytes: 5 * 16 * MiB,
          pgWalFreeBytes: 40_000 * MiB,
          pgWalTotalBytes: 100_000 * MiB,
          slotName: 'pgfleet_main',
          slotActive: true,
          slotRestartLsn: '0/29000000',
          slotRetainedBytes: 16 * MiB + 256,
          slotWalStatus: 'reserved',
          streamLagBytes: 256,
          streamLagSeconds: 0,
          walSegmentsArchived: 12,
          walBytesArchived: 12 * 16 * MiB,
        },
      },
      at: now - 1000,
    },
  ]);
  await store.putHealthState({
    cluster: 'main',
    condition: 'archive',
    state: 'breached',
    since: now - 50_000,
    data: null,
  });
  await store.createJob({ id: 'j1', cluster: 'main', kind: 'backup', agentId: 'a1', params: {} }, now);
  // The newest verify found a fault; the newest drill passed in 42.5 s after an older one failed.
  const finished = async (id: string, kind: 'verify' | 'drill', at: number, result: unknown) => {
    await store.createJob({ id, cluster: 'main', kind, agentId: 'a1', params: {} }, at - 2000);
    await store.transitionJob(id, 'dispatched', {}, at - 1000);
    await store.transitionJob(id, 'succeeded', { result }, at);
  };
  const verdict = (ok: boolean) => ({ verify: toJson(VerifyResultSchema, create(VerifyResultSchema, { ok })) });
  const drilled = (ok: boolean, rtoSeconds: number) => ({
    drill: toJson(DrillResultSchema, create(DrillResultSchema, { ok, rtoSeconds, reasons: ok ? [] : ['amcheck'] })),
  });
  await finished('v1', 'verify', now - 90_000, verdict(true));
  await finished('v2', 'verify', now - 80_000, verdict(false));
  await finished('d1', 'drill', now - 70_000, drilled(false, 0));
  await finished('d2', 'drill', now - 60_000, drilled(true, 42.5));

  const health = new HealthMonitor(store, {
    thresholds: T,
    intervalSeconds: 0,
    logger: silentLogger(),
    now: () => now,
  });
  const { registry, refresh } = createMetricsRegistry({
    store,
    health,
    thresholds: T,
    now: () => now,
    ready: () => true,
  });
  await refresh();
  const text = await registry.metrics();
  const value = (series: string): number => {
    const line = text.split('\n').find((l) => l.startsWith(`${series} `));
    assert.ok(line, `${series} in\n${text}`);
    return Number(line.slice(series.length + 1));
  };

  assert.equal(value('pgfleet_scrape_catalog_ok'), 1);
  assert.equal(value('pgfleet_backups{cluster="main"}'), 2);
  assert.equal(value('pgfleet_last_backup_timestamp_seconds{cluster="main",type="any"}'), (now - 590_000) / 1000);
  assert.equal(value('pgfleet_last_backup_timestamp_seconds{cluster="main",type="full"}'), (now - 7_140_000) / 1000);
  assert.equal(value('pgfleet_last_backup_size_bytes{cluster="main",type="any"}'), 50);
  assert.equal(value('pgfleet_last_backup_stored_bytes{cluster="main",type="full"}'), 300);
  assert.equal(value('pgfleet_last_backup_duration_seconds{cluster="main",type="full"}'), 60);
  // Archiving fails: the RPO is the age of the last archived segment, judged against main's own 45 s.
  assert.equal(value('pgfleet_rpo_seconds{cluster="main"}'), 100);
  assert.equal(value('pgfleet_rpo_threshold_seconds{cluster="main"}'), 45);
  assert.equal(value('pgfleet_rpo_threshold_seconds{cluster="idle"}'), 300);
  assert.equal(value('pgfleet_backup_stale_threshold_seconds{cluster="main"}'), 26 * 3600);
  assert.equal(value('pgfleet_wal_archive_failing{cluster="main"}'), 1);
  assert.equal(value('pgfleet_wal_archive_failed_total{cluster="main"}'), 2);
  assert.equal(value('pgfleet_wal_archived_total{cluster="main"}'), 41);
  assert.equal(value('pgfleet_wal_last_archived_timestamp_seconds{cluster="main"}'), (now - 100_000) / 1000);
  assert.equal(value('pgfleet_wal_archived_bytes_total{cluster="main"}'), 12 * 16 * MiB);
  assert.equal(value('pgfleet_wal_archived_segments_total{cluster="main"}'), 12);
  assert.equal(value('pgfleet_pg_wal_bytes{cluster="main"}'), 80 * MiB);
  assert.equal(value('pgfleet_pg_wal_free_bytes{cluster="main"}'), 40_000 * MiB);
  assert.equal(value('pgfleet_pg_wal_filesystem_bytes{cluster="main"}'), 100_000 * MiB);
  assert.equal(value('pgfleet_wal_slot_retained_bytes{cluster="main",slot="pgfleet_main"}'), 16 * MiB + 256);
  assert.equal(value('pgfleet_wal_slot_active{cluster="main",slot="pgfleet_main",wal_status="reserved"}'), 1);
  assert.equal(value('pgfleet_wal_stream_lag_bytes{cluster="main"}'), 256);
  assert.equal(value('pgfleet_wal_stream_lag_seconds{cluster="main"}'), 0);
  assert.equal(value('pgfleet_health_breached{cluster="main",condition="archive"}'), 1);
  assert.equal(value('pgfleet_jobs{cluster="main",kind="backup",state="queued"}'), 1);
  assert.equal(value('pgfleet_agents_connected{cluster="main"}'), 1);
  assert.equal(value('pgfleet_agents_connected{cluster="idle"}'), 0);
  assert.equal(value('pgfleet_agent_last_heartbeat_timestamp_seconds{cluster="main"}'), (now - 1000) / 1000);
  assert.equal(value('pgfleet_last_verify_ok{cluster="main"}'), 0);
  assert.equal(value('pgfleet_last_verify_timestamp_seconds{cluster="main"}'), (now - 80_000) / 1000);
  assert.equal(value('pgfleet_last_drill_ok{cluster="main"}'), 1);
  assert.equal(value('pgfleet_last_drill_rto_seconds{cluster="main"}'), 42.5);
  assert.equal(value('pgfleet_last_drill_timestamp_seconds{cluster="main"}'), (now - 60_000) / 1000);
  // Never verified or drilled: no series rather than a verdict nobody gave.
  assert.doesNotMatch(text, /^pgfleet_last_(verify|drill)_ok\{cluster="idle"\}/m);
  assert.match(text, /^# TYPE pgfleet_wal_archived_bytes_total gauge$/m);
  // A cluster without an agent has no WAL figures rather than zeros.
  assert.doesNotMatch(text, /^pgfleet_(rpo_seconds|pg_wal_free_bytes|wal_archived_bytes_total)\{cluster="idle"\}/m);

  // The next scrape starts afresh: a slot that is gone is no longer reported.
  await store.recordHeartbeats([
    {
      agent: { cluster: 'main', agentId: 'a1' },
      figures: {
        walHealth: {
          ...(await store.getAgent({ cluster: 'main', agentId: 'a1' }))!.walHealth!,
          slotName: '',
          slotActive: false,
          slotRetainedBytes: 0,
        },
      },
      at: now,
    },
  ]);
  await refresh();
  assert.doesNotMatch(await registry.metrics(), /^pgfleet_wal_slot_/m);
  await store.close();
});

test('a metrics address already in use stops the controller start with PGF-1104, and the gRPC port is freed', async () => {
  const { createServer } = await import('node:net');
  const { startController } = await import('../server.js');
  const { PgfleetError } = await import('@pgfleet/core');
  const dir = mkdtempSync(join(tmpdir(), 'pgfleet-metrics-clash-'));
  dirs.push(dir);
  // Another process's exporter holds the port (here: a plain TCP listener).
  const other = createServer();
  await new Promise<void>((resolve) => other.listen(0, '127.0.0.1', resolve));
  const taken = `127.0.0.1:${(other.address() as { port: number }).port}`;
  const grpcHolder = createServer();
  await new Promise<void>((resolve) => grpcHolder.listen(0, '127.0.0.1', resolve));
  const grpcPort = (grpcHolder.address() as { port: number }).port;
  await new Promise<void>((resolve) => grpcHolder.close(() => resolve()));
  try {
    await assert.rejects(
      startController({
        listen: `127.0.0.1:${grpcPort}`,
        insecure: true,
        catalogPath: join(dir, 'catalog.db'),
        metricsListen: taken,
        heartbeatIntervalSeconds: 5,
        reportedBackupCheck: 'facts',
      }),
      (e: unknown) => PgfleetError.is(e, 'MetricsPortInUse') && e.message.includes(taken),
    );
    // Nothing of the failed start keeps listening: the same gRPC port can be bound again.
    const again = createServer();
    await new Promise<void>((resolve, reject) => {
      again.once('error', reject);
      again.listen(grpcPort, '127.0.0.1', resolve);
    });
    await new Promise<void>((resolve) => again.close(() => resolve()));
  } finally {
    await new Promise<void>((resolve) => other.close(() => resolve()));
  }
});
