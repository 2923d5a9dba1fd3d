// The SQLite catalog over real temp files: the shared store suite, plus what only SQLite has
// (WAL journal mode, the file itself).
import { strict as assert } from 'node:assert';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import Database from 'better-sqlite3';
import { PgfleetError } from '@pgfleet/core';
import {
  AGENTS_BEFORE_CLUSTER_KEY,
  DUMPS_BEFORE_TABLE,
  catalogStoreSuite,
  checkAgentsKeyedUpgrade,
  checkDumpsBackfill,
} from './catalog-suite.js';
import { CATALOG_SCHEMA_VERSION, SQLITE_MIGRATIONS, SqliteCatalogStore, openCatalog } from './index.js';

let dir: string;
before(() => {
  dir = mkdtempSync(join(tmpdir(), 'pgfleet-catalog-'));
});
after(() => rmSync(dir, { recursive: true, force: true }));

let n = 0;
function freshPath(): string {
  return join(dir, `catalog-${++n}.db`);
}

catalogStoreSuite('sqlite', async () => SqliteCatalogStore.open(freshPath()));

describe('sqlite: migrations and the file', () => {
  test('a new file gets every migration, WAL mode; reopening applies nothing twice', async () => {
    const path = freshPath();
    const first = SqliteCatalogStore.open(path);
    assert.equal(first.schemaVersion(), CATALOG_SCHEMA_VERSION);
    await first.upsertCluster({ name: 'c', systemIdentifier: '1', pgVersion: 160000 }, 1);
    await first.close();

    const second = SqliteCatalogStore.open(path);
    assert.equal(second.schemaVersion(), CATALOG_SCHEMA_VERSION);
    assert.deepEqual(
      (await second.listClusters()).map((c) => c.name),
      ['c'],
    );
    await second.close();

    const raw = new Database(path, { readonly: true });
    const rows = raw.prepare('SELECT version FROM schema_migrations ORDER BY version').all() as { version: number }[];
    assert.deepEqual(
      rows.map((r) => r.version),
      Array.from({ length: CATALOG_SCHEMA_VERSION }, (_, i) => i + 1),
    );
    assert.equal(raw.pragma('journal_mode', { simple: true }), 'wal');
    raw.close();
  });

  test('a version 1 catalog upgrades in place: jobs keep their order, backups are unpinned, expire jobs fit', async () => {
    const path = freshPath();
    const raw = new Database(path);
    raw.exec('CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)');
    raw.exec(SQLITE_MIGRATIONS[0]!);
    raw.prepare('INSERT INTO schema_migrations VALUES (1, 0)').run();
    raw.prepare("INSERT INTO clusters VALUES ('main', '1', 170002, 0)").run();
    raw
      .prepare(
        `INSERT INTO backups (cluster, label, type, start_lsn, start_lsn_num, stop_lsn, stop_lsn_num, start_time, stop_time, timeline,
      system_identifier, pg_version, size_bytes, stored_bytes, file_count, wal_start, wal_stop, job_id)
      VALUES ('main', 'b1', 'full', '0/2000028', 33554472, '0/2000100', 33554688, 1, 2, 1, '1', 170002, 1, 1, 1,
      '000000010000000000000002', '000000010000000000000002', 'j')`,
      )
      .run();
    // Same millisecond, ids sorting against creation order: only the kept rowid tells them apart.
    for (const id of ['j9', 'j1'])
      raw
        .prepare(
          "INSERT INTO jobs (id, cluster, kind, state, agent_id, created_at) VALUES (?, 'main', 'backup', 'queued', 'a', 5)",
        )
        .run(id);
    raw.close();

    const store = SqliteCatalogStore.open(path);
    assert.equal(store.schemaVersion(), CATALOG_SCHEMA_VERSION);
    assert.deepEqual(
      (await store.listJobs()).map((j) => j.id),
      ['j1', 'j9'],
    );
    assert.equal((await store.getBackup('main', 'b1'))?.pinned, false);
    await store.createJob({ id: 'e', cluster: 'main', kind: 'expire', agentId: 'a', params: {} }, 6);
    assert.deepEqual(
      (await store.listActiveJobs()).map((j) => j.id),
      ['j9', 'j1', 'e'],
    );
    await store.close();
  });

  test('a catalog with agents keyed by id alone upgrades: agents kept, their ids free in other clusters', async () => {
    const path = freshPath();
    const raw = new Database(path);
    raw.exec('CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)');
    for (let v = 1; v <= AGENTS_BEFORE_CLUSTER_KEY.version; v++) {
      raw.exec(SQLITE_MIGRATIONS[v - 1]!);
      raw.prepare('INSERT INTO schema_migrations VALUES (?, 0)').run(v);
    }
    for (const sql of AGENTS_BEFORE_CLUSTER_KEY.rows) raw.exec(sql);
    raw.close();
    const store = SqliteCatalogStore.open(path);
    assert.equal(store.schemaVersion(), CATALOG_SCHEMA_VERSION);
    await checkAgentsKeyedUpgrade(store);
    await store.close();
  });

  test('dump jobs from before the dumps table become dumps: succeeded ones with their sizes, failed ones not', async () => {
    const path = freshPath();
    const raw = new Database(path);
    raw.exec('CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)');
    for (let v = 1; v <= DUMPS_BEFORE_TABLE.version; v++) {
      raw.exec(SQLITE_MIGRATIONS[v - 1]!);
      raw.prepare('INSERT INTO schema_migrations VALUES (?, 0)').run(v);
    }
    for (const sql of DUMPS_BEFORE_TABLE.rows) raw.exec(sql);
    raw.close();
    const store = SqliteCatalogStore.open(path);
    assert.equal(store.schemaVersion(), CATALOG_SCHEMA_VERSION);
    await checkDumpsBackfill(store);
    await store.close();
  });

  test('a catalog from a newer version is refused with PGF-1002', async () => {
    const path = freshPath();
    await SqliteCatalogStore.open(path).close();
    const raw = new Database(path);
    raw.prepare('INSERT INTO schema_migrations (version, applied_at) VALUES (?, 0)').run(CATALOG_SCHEMA_VERSION + 1);
    raw.close();
    assert.throws(
      () => SqliteCatalogStore.open(path),
      (err: unknown) => PgfleetError.is(err, 'InvalidConfig') && /newer/.test(err.message),
    );
  });

  test('an unopenable path is a config error naming the path', () => {
    const path = join(dir, 'no-such-dir', 'c.db');
    assert.throws(
      () => SqliteCatalogStore.open(path),
      (err: unknown) => PgfleetError.is(err, 'InvalidConfig') && err.message.includes(path),
    );
  });
});

describe('openCatalog', () => {
  test('a file path and sqlite:PATH open the SQLite catalog', async () => {
    const plain = freshPath();
    const a = await openCatalog(plain);
    assert.ok(a instanceof SqliteCatalogStore);
    assert.equal(a.path, plain);
    await a.close();
    const prefixed = freshPath();
    const b = await openCatalog(`sqlite:${prefixed}`);
    assert.ok(b instanceof SqliteCatalogStore);
    assert.equal(b.path, prefixed);
    await b.close();
  });

  test('anything else is InvalidConfig naming the value, password masked', async () => {
    for (const [url, shown] of [
      ['mysql://u:secret@db/x', 'mysql://u:***@db/x'],
      ['http://catalog.example', 'http://catalog.example'],
      ['sqlite:', 'sqlite:'],
      ['', "''"],
    ] as const) {
      await assert.rejects(
        openCatalog(url),
        (err: unknown) =>
          PgfleetError.is(err, 'InvalidConfig') &&
          err.message.includes(shown) &&
          !err.message.includes('secret') &&
          /postgres:\/\//.test(err.hint),
        url,
      );
    }
  });
});
