/**
 * `pgfleet wal search` end to end (issue 15, "Find the mistake"): a real cluster archiving into
 * the repository, a full backup (with its catalog snapshot), a background workload writing other
 * tables, then the mistakes a DBA fears, in this order: DELETE FROM orders without WHERE, more
 * writes, an UPDATE without WHERE, a table renamed and then deleted from, a table rewritten by
 * VACUUM FULL and then deleted from, a TRUNCATE, a DROP TABLE, a delete in a second database and
 * one on a partitioned table. The search, from the repository alone, must list each with the xid
 * the deleting session saw, the right table name (as it was named then), row counts, and LSNs
 * that bracket the commit; the filters must narrow; bad input gets its code; and the xid it
 * finds, given to recover-table, brings back a renamed and a rewritten table as they were.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import pg from 'pg';
import { ErrorCodes } from '@pgfleet/core';
import { startFleet, type Fleet, type RunResult } from './harness.js';

interface TableJson {
  database: string;
  schema?: string;
  name?: string;
  relation: string;
  rowsDeleted?: number;
  rowsUpdated?: number;
  rowsInserted?: number;
  truncated?: boolean;
  dropped?: boolean;
  rewritten?: boolean;
  renamedFrom?: string;
}
interface TransactionJson {
  xid: number;
  commitTime: string;
  commitLsn: string;
  firstLsn: string;
  timeline: number;
  tables: TableJson[];
}
interface SearchJson {
  transactions?: TransactionJson[];
  matched?: number;
  backupLabel: string;
  snapshot?: boolean;
  segmentsRead?: number;
  bytesRead?: number;
}

const lsnValue = (lsn: string): bigint => {
  const [hi, lo] = lsn.split('/');
  return (BigInt(`0x${hi}`) << 32n) + BigInt(`0x${lo}`);
};
const n = (v: number | undefined): number => v ?? 0;
const named = (t: TableJson): string => `${t.schema}.${t.name}`;

const ORDERS = 500;

describe('pgfleet wal search', { timeout: 600_000 }, () => {
  let fleet: Fleet;
  let ordersXid: number;
  let updateXid: number;
  let lsnBeforeDelete: string;
  let lsnAfterDelete: string;
  let afterDeleteTime: string;
  let all: SearchJson;

  /** One session, so txid_current() is the deleting transaction's own xid. */
  async function inTransaction(sql: string, database = 'postgres'): Promise<number> {
    const c = new pg.Client({ connectionString: fleet.pg.connectionString.replace(/\/postgres$/, `/${database}`) });
    await c.connect();
    try {
      await c.query('BEGIN');
      const xid = Number((await c.query<{ x: string }>('SELECT txid_current()::text AS x')).rows[0]!.x);
      await c.query(sql);
      await c.query('COMMIT');
      return xid;
    } finally {
      await c.end();
    }
  }

  const lsnNow = async (): Promise<string> =>
    (await fleet.pg.query<{ l: string }>('SELECT pg_current_wal_insert_lsn()::text AS l'))[0]!.l;

  const search = (...args: string[]): Promise<RunResult> =>
    fleet.cli('wal', 'search', 'shop', '--output', 'json', ...args);

  async function searchJson(...args: string[]): Promise<SearchJson> {
    const r = await search(...args);
    assert.equal(r.code, 0, `wal search ${args.join(' ')} failed:\n${r.stdout}\n${r.stderr}`);
    return JSON.parse(r.stdout) as SearchJson;
  }

  const findTable = (s: SearchJson, table: string, database = 'postgres') =>
    (s.transactions ?? []).filter((x) => x.tables.some((t) => named(t) === table && t.database === database));

  before(async () => {
    fleet = await startFleet({ cluster: 'shop' });
    const db = fleet.pg;
    await db.query(`
      CREATE TABLE orders (id int PRIMARY KEY, note text NOT NULL);
      INSERT INTO orders SELECT g, 'order ' || g FROM generate_series(1, ${ORDERS}) g;
      CREATE TABLE customers (id int PRIMARY KEY, x int NOT NULL);
      INSERT INTO customers SELECT g, 0 FROM generate_series(1, 200) g;
      CREATE TABLE items (id int PRIMARY KEY, v text);
      INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 100) g;
      CREATE TABLE big (id int PRIMARY KEY, pad text);
      INSERT INTO big SELECT g, repeat('x', 200) FROM generate_series(1, 300) g;
      CREATE TABLE logs (id int, line text);
      INSERT INTO logs SELECT g, 'line ' || g FROM generate_series(1, 50) g;
      CREATE TABLE doomed (id int);
      INSERT INTO doomed SELECT g FROM generate_series(1, 40) g;
      CREATE TABLE measurements (id int, at int NOT NULL) PARTITION BY RANGE (at);
      CREATE TABLE measurements_1 PARTITION OF measurements FOR VALUES FROM (0) TO (100);
      CREATE TABLE measurements_2 PARTITION OF measurements FOR VALUES FROM (100) TO (200);
      INSERT INTO measurements SELECT g, g FROM generate_series(0, 29) g;
      INSERT INTO measurements SELECT g, 100 + g FROM generate_series(0, 69) g;
      CREATE TABLE activity (id serial PRIMARY KEY, v int);
      CREATE TABLE counters (id int PRIMARY KEY, n int);
      INSERT INTO counters SELECT g, 0 FROM generate_series(1, 10) g;`);
    await db.query('CREATE DATABASE shop2');
    const c2 = new pg.Client({ connectionString: db.connectionString.replace(/\/postgres$/, '/shop2') });
    await c2.connect();
    await c2.query(`CREATE TABLE payments (id int PRIMARY KEY, amount int);
      INSERT INTO payments SELECT g, g FROM generate_series(1, 120) g;`);
    await c2.end();

    // A database that refuses the agent (pg_hba reject): the backup goes on, the snapshot says it was skipped.
    await db.query('CREATE DATABASE locked');
    const hba = join(db.dataDir, 'pg_hba.conf');
    await writeFile(hba, `host locked all all reject\nlocal locked all reject\n${await readFile(hba, 'utf8')}`);
    await db.query('SELECT pg_reload_conf()');

    const backup = await fleet.cli('backup', 'shop', '--wait');
    assert.equal(backup.code, 0, `backup failed:\n${backup.stdout}\n${backup.stderr}\n${await fleet.logs()}`);

    // Background writes on other tables all along: the search must pick the mistakes out of them.
    let stop = false;
    const workload = (async () => {
      const w = new pg.Client({ connectionString: db.connectionString });
      await w.connect();
      try {
        for (let i = 0; !stop; i++) {
          await w.query('INSERT INTO activity (v) VALUES ($1)', [i]);
          await w.query('UPDATE counters SET n = n + 1 WHERE id = $1', [(i % 10) + 1]);
        }
      } finally {
        await w.end();
      }
    })();

    lsnBeforeDelete = await lsnNow();
    ordersXid = await inTransaction('DELETE FROM orders');
    lsnAfterDelete = await lsnNow();
    afterDeleteTime = (
      await db.query<{ t: string }>(
        `SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS t`,
      )
    )[0]!.t;
    await db.query(`INSERT INTO orders SELECT g, 'new ' || g FROM generate_series(1001, 1010) g`);
    updateXid = await inTransaction('UPDATE customers SET x = x + 1');
    await db.query('ALTER TABLE items RENAME TO items2');
    await db.query('DELETE FROM items2 WHERE id <= 25');
    await db.query('VACUUM FULL big');
    await db.query('DELETE FROM big WHERE id <= 60');
    await db.query('TRUNCATE logs');
    await db.query('DROP TABLE doomed');
    await inTransaction('DELETE FROM payments', 'shop2');
    await db.query('DELETE FROM measurements');
    stop = true;
    await workload;
    await fleet.switchAndArchive();
    all = await searchJson('--limit', '200');
  });

  after(async () => {
    await fleet?.stop();
  });

  it('lists DELETE FROM orders with its xid, table, row count and LSNs', () => {
    assert.equal(all.snapshot, true, 'the backup carries a catalog snapshot');
    const [x] = findTable(all, 'public.orders');
    assert.ok(x, `no transaction on public.orders in ${JSON.stringify(all.transactions?.map((t) => t.xid))}`);
    assert.equal(x.xid, ordersXid);
    const t = x.tables.find((y) => named(y) === 'public.orders')!;
    assert.equal(n(t.rowsDeleted), ORDERS);
    const commit = lsnValue(x.commitLsn);
    assert.ok(commit > lsnValue(lsnBeforeDelete) && commit < lsnValue(lsnAfterDelete), x.commitLsn);
    const first = lsnValue(x.firstLsn);
    assert.ok(first >= lsnValue(lsnBeforeDelete) && first < commit, x.firstLsn);
    assert.ok(Date.parse(x.commitTime) <= Date.parse(afterDeleteTime));
  });

  it("takes the backup's catalog snapshot without the database that refused it", async () => {
    const m = await fleet.repo.readManifest('shop', all.backupLabel);
    assert.ok(m.catalogSnapshot, 'the manifest records the snapshot');
    assert.deepEqual(
      m.catalogSnapshot.skipped.map((x) => x.database),
      ['locked'],
    );
    assert.ok(m.catalogSnapshot.databases >= 2, 'postgres and shop2 (template1 too) are in it');
  });

  it('puts TRUNCATE and DROP first, then the largest deletes and updates', () => {
    const txs = all.transactions ?? [];
    const ddl = (x: TransactionJson) => x.tables.some((t) => t.truncated || t.dropped);
    assert.ok(ddl(txs[0]!) && ddl(txs[1]!), JSON.stringify(txs.slice(0, 3)));
    assert.ok(
      txs[0]!.tables.some((t) => named(t) === 'public.logs' && t.truncated) ||
        txs[1]!.tables.some((t) => named(t) === 'public.logs' && t.truncated),
    );
    assert.ok(txs.slice(0, 2).some((x) => x.tables.some((t) => named(t) === 'public.doomed' && t.dropped)));
    assert.equal(txs[2]!.xid, ordersXid, 'the 500-row delete comes right after the truncate and the drop');
    const [u] = findTable(all, 'public.customers');
    assert.equal(u!.xid, updateXid);
    assert.equal(n(u!.tables[0]!.rowsUpdated), 200);
  });

  it('names renamed and rewritten tables as they were at the time', () => {
    const [renamed] = findTable(all, 'public.items2');
    assert.ok(renamed, 'the delete on the renamed table is listed under its new name');
    assert.equal(n(renamed.tables.find((t) => named(t) === 'public.items2')!.rowsDeleted), 25);
    const [rewritten] = findTable(all, 'public.big');
    assert.ok(rewritten, 'the delete after VACUUM FULL is listed under the table name');
    assert.equal(n(rewritten.tables.find((t) => named(t) === 'public.big')!.rowsDeleted), 60);
  });

  it('names the second database and counts rows per partition', async () => {
    const [p] = findTable(all, 'public.payments', 'shop2');
    assert.ok(p, 'the delete in shop2 is listed');
    assert.equal(n(p.tables[0]!.rowsDeleted), 120);
    const [m] = findTable(all, 'public.measurements_1');
    assert.ok(m, 'the partitioned delete is listed');
    const rows = Object.fromEntries(m.tables.map((t) => [named(t), n(t.rowsDeleted)]));
    assert.deepEqual(rows, { 'public.measurements_1': 30, 'public.measurements_2': 70 });
    // --table naming the partitioned table lists the same delete, still per partition.
    const parted = await searchJson('--table', 'public.measurements');
    assert.deepEqual(
      parted.transactions?.map((x) => [x.xid, Object.fromEntries(x.tables.map((t) => [named(t), n(t.rowsDeleted)]))]),
      [[m.xid, rows]],
    );
  });

  it('narrows with --table, --database, --kind, --min-rows, --since and --until', async () => {
    const byTable = await searchJson('--table', 'public.orders');
    assert.deepEqual(
      byTable.transactions?.map((x) => x.xid),
      [ordersXid],
    );
    const byDb = await searchJson('--database', 'shop2');
    assert.deepEqual(
      byDb.transactions?.flatMap((x) => x.tables.map((t) => `${t.database}:${named(t)}`)),
      ['shop2:public.payments'],
    );
    const truncates = await searchJson('--kind', 'truncate');
    assert.deepEqual(
      truncates.transactions?.flatMap((x) => x.tables.map(named)),
      ['public.logs'],
    );
    const big = await searchJson('--min-rows', '150', '--kind', 'delete,update');
    assert.deepEqual(
      big.transactions?.map((x) => x.xid),
      [ordersXid, updateXid],
    );
    const since = await searchJson('--since', afterDeleteTime);
    assert.ok(!(since.transactions ?? []).some((x) => x.xid === ordersXid));
    assert.ok((since.transactions ?? []).some((x) => x.xid === updateXid));
    const until = await searchJson('--until', afterDeleteTime);
    assert.ok((until.transactions ?? []).some((x) => x.xid === ordersXid));
    assert.ok(!(until.transactions ?? []).some((x) => x.xid === updateXid));
  });

  it('prints a table with the command to run next', async () => {
    const r = await fleet.cli('wal', 'search', 'shop', '--limit', '8');
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, new RegExp(`^${ordersXid} .* public\\.orders +${ORDERS} `, 'm'));
    assert.match(r.stdout, /to undo transaction \d+: pgfleet restore shop --before-xid \d+/);
    const orders = await fleet.cli('wal', 'search', 'shop', '--table', 'orders');
    assert.match(
      orders.stdout,
      new RegExp(`pgfleet recover-table shop --table public\\.orders --database postgres --before-xid ${ordersXid}`),
    );
  });

  it('refuses a table that never existed and a --since before the oldest backup, with their codes', async () => {
    const never = await search('--table', 'public.never_was');
    assert.equal(never.code, ErrorCodes.WalSearchTableUnknown.exit, never.stderr);
    assert.match(never.stderr, new RegExp(ErrorCodes.WalSearchTableUnknown.code));
    const early = await search('--since', '2001-01-01T00:00:00Z');
    assert.equal(early.code, ErrorCodes.WalSearchBeforeOldestBackup.exit, early.stderr);
    assert.match(early.stderr, new RegExp(ErrorCodes.WalSearchBeforeOldestBackup.code));
    const bad = await search('--table', 'a.b.c');
    assert.equal(bad.code, ErrorCodes.WalSearchInvalid.exit, bad.stderr);
    assert.match(bad.stderr, new RegExp(ErrorCodes.WalSearchInvalid.code));
  });

  // The whole undo: the xid the search found (not one the test kept) recovers the tables as they
  // were just before that transaction, across a rename and a VACUUM FULL made after the backup.
  it("recover-table --before-xid the search's xid brings back the renamed and the rewritten table", async () => {
    const [del] = findTable(all, 'public.big').filter((x) =>
      x.tables.some((t) => named(t) === 'public.big' && n(t.rowsDeleted) === 60),
    );
    assert.ok(del, 'the delete on big is listed');
    const r = await fleet.cli(
      'recover-table',
      'shop',
      ...['--table', 'public.big', '--table', 'public.items2', '--before-xid', String(del.xid)],
      ...['--wait', '--output', 'json'],
    );
    assert.equal(r.code, 0, `recover-table failed:\n${r.stdout}\n${r.stderr}\n${await fleet.logs()}`);
    const ids = async (table: string): Promise<string> =>
      (
        await fleet.pg.query<{ r: string }>(
          `SELECT count(*) || ':' || min(id) || '-' || max(id) AS r FROM pgfleet_recovered.${table}`,
        )
      )[0]!.r;
    // big: every row, the delete not yet made; items2: its own delete (ids 1-25) already made.
    assert.equal(await ids('big'), '300:1-300');
    assert.equal(await ids('items2'), '75:26-100');
    assert.equal((await fleet.pg.query<{ n: string }>('SELECT count(*)::text AS n FROM big'))[0]!.n, '240');
  });

  // Last: it damages the snapshot the other cases read.
  it('verify checks the catalog snapshot (a damaged one is named; the backup stays restorable)', async () => {
    const backupDir = join(fleet.repoDir, 'shop', 'backup', all.backupLabel);
    const name = (await readdir(backupDir)).find((f) => f.startsWith('catalog-snapshot.json'));
    assert.ok(name, `no catalog snapshot in ${backupDir}`);
    const path = join(backupDir, name);
    const bytes = await readFile(path);
    const at = bytes.length >> 1;
    bytes[at] = bytes[at]! ^ 0x40;
    await writeFile(path, bytes);
    const r = await fleet.cli('verify', 'shop', '--wait', '--output', 'json');
    assert.notEqual(r.code, 0, r.stdout);
    const v = (
      JSON.parse(r.stdout) as {
        verify: { problems: { kind: string; path: string }[]; backups: { label: string; restorable?: boolean }[] };
      }
    ).verify;
    assert.deepEqual(
      v.problems.map((p) => [p.kind, p.path]),
      [['checksum-mismatch', 'catalog snapshot']],
    );
    // A restore never reads the snapshot: the backup stays restorable.
    assert.equal(v.backups.find((b) => b.label === all.backupLabel)?.restorable, true, r.stdout);
  });
});
