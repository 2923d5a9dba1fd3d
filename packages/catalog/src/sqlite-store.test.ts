// Tests of the SQLite catalog over a real temp file: migrations, the job state machine, ordering.
import { strict as assert } from 'node:assert';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import Database from 'better-sqlite3';
import { PgfleetError } from '@pgfleet/core';
import { SQLITE_MIGRATIONS, SqliteCatalogStore, isLegalJobTransition, type BackupRecord, type JobStateName } from './index.js';

let dir: string;
before(() => {
  dir = mkdtempSync(join(tmpdir(), 'pgfleet-catalog-'));
});
after(() => rmSync(dir, { recursive: true, force: true }));

let n = 0;
function freshPath(): string {
  return join(dir, `catalog-${++n}.db`);
}

function backup(label: string, stopTime: number, stopLsn: string, extra: Partial<BackupRecord> = {}): BackupRecord {
  return {
    cluster: 'main', label, type: 'full', startLsn: '0/2000028', stopLsn, startTime: stopTime - 1000, stopTime, timeline: 1,
    systemIdentifier: '7300000000000000001', pgVersion: 170002, sizeBytes: 1234, storedBytes: 100, fileCount: 10,
    walStart: '000000010000000000000002', walStop: '000000010000000000000003', jobId: `job-${label}`, priorLabel: '', ...extra,
  };
}

async function storeWithCluster(): Promise<SqliteCatalogStore> {
  const store = SqliteCatalogStore.open(freshPath());
  await store.upsertCluster({ name: 'main', systemIdentifier: '7300000000000000001', pgVersion: 170002 }, 1000);
  await store.upsertAgent({ id: 'agent-1', cluster: 'main', hostname: 'db1', version: '0.1.0' }, 1000);
  return store;
}

describe('migrations', () => {
  test('a new file gets every migration, WAL mode; reopening applies nothing twice', async () => {
    const path = freshPath();
    const first = SqliteCatalogStore.open(path);
    assert.equal(first.schemaVersion(), SQLITE_MIGRATIONS.length);
    await first.upsertCluster({ name: 'c', systemIdentifier: '1', pgVersion: 160000 }, 1);
    await first.close();

    const second = SqliteCatalogStore.open(path);
    assert.equal(second.schemaVersion(), SQLITE_MIGRATIONS.length);
    assert.deepEqual((await second.listClusters()).map((c) => c.name), ['c']);
    await second.close();

    const raw = new Database(path, { readonly: true });
    const rows = raw.prepare('SELECT version FROM schema_migrations ORDER BY version').all() as { version: number }[];
    assert.deepEqual(rows.map((r) => r.version), SQLITE_MIGRATIONS.map((_, i) => i + 1));
    assert.equal(raw.pragma('journal_mode', { simple: true }), 'wal');
    raw.close();
  });

  test('a catalog from a newer version is refused with PGF-1002', async () => {
    const path = freshPath();
    await SqliteCatalogStore.open(path).close();
    const raw = new Database(path);
    raw.prepare('INSERT INTO schema_migrations (version, applied_at) VALUES (?, 0)').run(SQLITE_MIGRATIONS.length + 1);
    raw.close();
    assert.throws(() => SqliteCatalogStore.open(path), (err: unknown) => PgfleetError.is(err, 'InvalidConfig') && /newer/.test(err.message));
  });

  test('an unopenable path is a config error naming the path', () => {
    const path = join(dir, 'no-such-dir', 'c.db');
    assert.throws(() => SqliteCatalogStore.open(path), (err: unknown) => PgfleetError.is(err, 'InvalidConfig') && err.message.includes(path));
  });
});

describe('clusters and agents', () => {
  test('another system identifier under a known name is SystemIdMismatch', async () => {
    const store = await storeWithCluster();
    await assert.rejects(
      store.upsertCluster({ name: 'main', systemIdentifier: '999', pgVersion: 170002 }, 2000),
      (err: unknown) => PgfleetError.is(err, 'SystemIdMismatch') && err.code === 'PGF-3005',
    );
    // Same identifier, new server_version_num (a minor update keeps the identifier): accepted and recorded.
    const c = await store.upsertCluster({ name: 'main', systemIdentifier: '7300000000000000001', pgVersion: 170004 }, 3000);
    assert.equal(c.pgVersion, 170004);
    assert.equal(c.createdAt, 1000);
    await store.close();
  });

  test('heartbeats, disconnects and the start-up reset', async () => {
    const store = await storeWithCluster();
    await store.recordHeartbeat('agent-1', { archiver: { archivedCount: '3' }, currentLsn: '0/3000060' }, 5000);
    let a = await store.getAgent('agent-1');
    assert.deepEqual([a?.connected, a?.lastSeen, a?.currentLsn, a?.archiver], [true, 5000, '0/3000060', { archivedCount: '3' }]);
    await store.setAgentConnected('agent-1', false, 6000);
    a = await store.getAgent('agent-1');
    assert.equal(a?.connected, false);
    await store.upsertAgent({ id: 'agent-1', cluster: 'main', hostname: 'db1', version: '0.2.0' }, 7000);
    await store.disconnectAllAgents(8000);
    assert.deepEqual((await store.listAgents('main')).map((x) => [x.id, x.connected, x.version]), [['agent-1', false, '0.2.0']]);
    await store.close();
  });
});

describe('backups', () => {
  test('listed by stop time, not by label; re-inserting the same label is a no-op', async () => {
    const store = await storeWithCluster();
    // Labels deliberately sort the other way round from the stop times.
    await store.insertBackup(backup('20990101-000000F', 3000, '0/9000000'));
    await store.insertBackup(backup('20000101-000000F', 9000, '0/A0000000'));
    await store.insertBackup(backup('20500101-000000F', 5000, '0/10000000'));
    await store.insertBackup(backup('20500101-000000F', 1, '0/1'));
    const list = await store.listBackups('main');
    assert.deepEqual(list.map((b) => b.label), ['20990101-000000F', '20500101-000000F', '20000101-000000F']);
    assert.equal(list[1]!.stopTime, 5000);
    assert.deepEqual(await store.getBackup('main', '20000101-000000F'), backup('20000101-000000F', 9000, '0/A0000000'));
    assert.deepEqual(await store.listBackups('other'), []);
    await store.close();
  });

  test('stop LSNs are kept in numeric form (0/A0000000 > 0/10000000)', async () => {
    const store = await storeWithCluster();
    await store.insertBackup(backup('b1', 1000, '0/A0000000'));
    await store.insertBackup(backup('b2', 1000, '0/10000000'));
    assert.deepEqual((await store.listBackups('main')).map((b) => b.label), ['b2', 'b1']);
    await store.close();
  });

  test('a bad LSN is refused', async () => {
    const store = await storeWithCluster();
    await assert.rejects(store.insertBackup(backup('bad', 1, 'nonsense')), (err: unknown) => PgfleetError.is(err, 'InvalidArgument'));
    await store.close();
  });
});

describe('job state machine', () => {
  const all: JobStateName[] = ['queued', 'dispatched', 'running', 'succeeded', 'failed', 'cancelled'];
  const legal = new Set(['queued>dispatched', 'queued>failed', 'queued>cancelled', 'dispatched>running', 'dispatched>succeeded',
    'dispatched>failed', 'dispatched>cancelled', 'running>succeeded', 'running>failed', 'running>cancelled']);

  test('the transition table', () => {
    for (const from of all) for (const to of all) {
      if (from === to) continue;
      assert.equal(isLegalJobTransition(from, to), legal.has(`${from}>${to}`), `${from} -> ${to}`);
    }
  });

  test('a backup job runs to success and inserts its backup in the same step', async () => {
    const store = await storeWithCluster();
    const job = await store.createJob({ id: 'j1', cluster: 'main', kind: 'backup', agentId: 'agent-1', params: { type: 'full' } }, 100);
    assert.equal(job.state, 'queued');
    assert.deepEqual(job.params, { type: 'full' });
    assert.equal((await store.transitionJob('j1', 'dispatched', {}, 110)).changed, true);
    const p = await store.updateJobProgress('j1', { bytesDone: '5' }, 120);
    assert.deepEqual([p.job.state, p.job.startedAt, p.job.progress], ['running', 120, { bytesDone: '5' }]);
    await store.updateJobProgress('j1', { bytesDone: '9' }, 130);
    const done = await store.transitionJob('j1', 'succeeded', { result: { label: 'b1' }, backup: backup('b1', 140, '0/3000000', { jobId: 'j1' }) }, 140);
    assert.deepEqual([done.changed, done.job.state, done.job.startedAt, done.job.finishedAt, done.job.result], [true, 'succeeded', 120, 140, { label: 'b1' }]);
    assert.equal((await store.getBackup('main', 'b1'))?.jobId, 'j1');

    // Idempotent: the same terminal state again changes nothing.
    const again = await store.transitionJob('j1', 'succeeded', { result: { label: 'other' } }, 999);
    assert.deepEqual([again.changed, again.job.finishedAt, again.job.result], [false, 140, { label: 'b1' }]);
    // Late progress does not reopen it.
    const late = await store.updateJobProgress('j1', { bytesDone: '1' }, 1000);
    assert.deepEqual([late.changed, late.job.state, late.job.progress], [false, 'succeeded', { bytesDone: '9' }]);
    await store.close();
  });

  test('illegal transitions are rejected with JobStateConflict; unknown jobs with UnknownJob', async () => {
    const store = await storeWithCluster();
    await store.createJob({ id: 'j2', cluster: 'main', kind: 'restore', agentId: 'agent-1', params: {} }, 100);
    await assert.rejects(store.transitionJob('j2', 'running', {}, 101), (err: unknown) => PgfleetError.is(err, 'JobStateConflict') && err.code === 'PGF-2008');
    await store.transitionJob('j2', 'failed', { error: { code: 'PGF-2006', message: 'gone' } }, 102);
    await assert.rejects(store.transitionJob('j2', 'succeeded', {}, 103), (err: unknown) => PgfleetError.is(err, 'JobStateConflict'));
    const j = await store.getJob('j2');
    assert.deepEqual([j?.state, j?.error], ['failed', { code: 'PGF-2006', message: 'gone' }]);
    await assert.rejects(store.transitionJob('nope', 'failed', {}, 1), (err: unknown) => PgfleetError.is(err, 'UnknownJob'));
    await assert.rejects(store.updateJobProgress('nope', {}, 1), (err: unknown) => PgfleetError.is(err, 'UnknownJob'));
    await store.close();
  });

  test('failing the active jobs of an agent keeps the ones it still runs and the finished ones', async () => {
    const store = await storeWithCluster();
    await store.upsertAgent({ id: 'agent-2', cluster: 'main', hostname: 'db2', version: '0.1.0' }, 1000);
    for (const id of ['a', 'b', 'c', 'd']) await store.createJob({ id, cluster: 'main', kind: 'backup', agentId: 'agent-1', params: {} }, 1);
    await store.createJob({ id: 'other', cluster: 'main', kind: 'backup', agentId: 'agent-2', params: {} }, 1);
    await store.transitionJob('a', 'dispatched', {}, 2);
    await store.updateJobProgress('b', {}, 2).catch(() => undefined); // queued -> running is illegal; stays queued
    await store.transitionJob('c', 'cancelled', {}, 2);
    const failed = await store.failActiveJobsOfAgent('agent-1', { code: 'PGF-2006', message: 'agent restarted' }, 3, ['d']);
    assert.deepEqual(failed.map((j) => j.id).sort(), ['a', 'b']);
    assert.deepEqual((await store.getJob('c'))?.state, 'cancelled');
    assert.deepEqual((await store.getJob('d'))?.state, 'queued');
    assert.deepEqual((await store.getJob('other'))?.state, 'queued');

    const all = await store.failAllActiveJobs({ code: 'PGF-7003', message: 'controller restarted' }, 4);
    assert.deepEqual(all.map((j) => j.id).sort(), ['d', 'other']);
    assert.deepEqual((await store.getJob('other'))?.error, { code: 'PGF-7003', message: 'controller restarted' });
    await store.close();
  });

  test('listJobs is newest first, filtered and limited', async () => {
    const store = await storeWithCluster();
    await store.upsertCluster({ name: 'other', systemIdentifier: '2', pgVersion: 160000 }, 1);
    await store.createJob({ id: 'x1', cluster: 'main', kind: 'backup', agentId: 'agent-1', params: {} }, 10);
    await store.createJob({ id: 'x2', cluster: 'other', kind: 'backup', agentId: 'agent-9', params: {} }, 20);
    await store.createJob({ id: 'x3', cluster: 'main', kind: 'restore', agentId: 'agent-1', params: {} }, 30);
    assert.deepEqual((await store.listJobs()).map((j) => j.id), ['x3', 'x2', 'x1']);
    assert.deepEqual((await store.listJobs({ cluster: 'main' })).map((j) => j.id), ['x3', 'x1']);
    assert.deepEqual((await store.listJobs({ limit: 1 })).map((j) => j.id), ['x3']);
    await store.close();
  });
});
