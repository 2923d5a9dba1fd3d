/**
 * Undo a bad statement without losing today's writes (docs/undo.md), end to end on one cluster
 * with a writer inserting into several tables the whole time:
 * - `DELETE FROM orders` (no WHERE), its xid captured in the same transaction; more orders arrive
 *   after it. `pgfleet recover-table --table public.orders --before-xid X` loads exactly the
 *   deleted rows into pgfleet_recovered.orders (md5 of the ordered rows equals the one taken in
 *   the DELETE's own transaction), with its own sequence (the live one is not moved) and the
 *   merge SQL by primary key, which puts the rows back;
 * - one bad migration transaction (TRUNCATE items, DROP TABLE customers CASCADE, UPDATE prices
 *   without WHERE, DELETE from a partitioned table): one job brings the four back (the dropped
 *   table exists only in the copy; prices' foreign key to customers is left out; the partitioned
 *   table lands partitioned with its partitions), --into renames one;
 * - a table of a second database (--database);
 * - a load the live cluster refuses (a column type dropped since) fails with RecoverTableLoadFailed
 *   and leaves nothing of the table (one transaction);
 * - every live table (rows and sequences) is the same before and after the recover-table jobs,
 *   the scratch directory is empty at the end, restore.completed carries the tables;
 * - refusals with their codes: a table that never existed (RecoverTableNotFound, after the copy
 *   was made and removed, nothing loaded), a database the live cluster lacks
 *   (RecoverTableLiveUnreachable), a name already taken in pgfleet_recovered (RecoveredTableExists,
 *   before any restore), a bad --into (RecoverTableNameInvalid), an xid the archive never saw
 *   (RestorePointNotFound, which says that one older than the backup is not found either).
 *
 * The destructive transactions lock their tables first (LOCK ... IN EXCLUSIVE MODE): the writer's
 * concurrent inserts then commit either before the snapshot the test takes or after the mistake,
 * so "the rows just before the mistake" is one exact set to compare with.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import pg from 'pg';
import { ErrorCodes, sleep } from '@pgfleet/core';
import { startFleet, waitFor, type Fleet, type RunResult } from './harness.js';

const CLUSTER = 'undo';

interface RecoveredTableJson {
  table: string;
  recoveredAs: string;
  rowsRecovered: number;
  liveRows: number;
  primaryKey?: string[];
  mergeSql: string;
  compareSql: string;
  partitions?: string[];
  droppedForeignKeys?: string[];
  droppedFunctionCalls?: string[];
}
interface JobJson {
  state: string;
  error?: { code: string; message: string };
  recoverTable?: {
    backupLabel: string;
    database: string;
    tables: RecoveredTableJson[];
    totalSeconds: number;
    restoreSeconds: number;
    recoverySeconds: number;
  };
}

/** md5 of a relation's rows in key order: what "the same rows" means here. */
const DIGEST = (rel: string, key: string) =>
  `SELECT count(*)::text AS n, coalesce(md5(string_agg(t::text, E'\\n' ORDER BY ${key})), '') AS md5 FROM ${rel} t`;

describe('recover-table: rows back from just before a mistake, beside the live writes', { timeout: 1_800_000 }, () => {
  let fleet: Fleet;
  let scratch: string;
  let writer: { stop(): Promise<void>; count(): number };
  /** The mistakes' xids and the digests taken in their transactions just before the damage. */
  let deleteXid: string;
  let migrationXid: string;
  let invoicesXid: string;
  /** A transaction that committed before the backup ended. */
  let oldXid: string;
  const snap: Record<string, { n: string; md5: string }> = {};
  let liveBefore: string;

  const client = async (database = 'postgres'): Promise<pg.Client> => {
    const c = new pg.Client({ host: '127.0.0.1', port: fleet.pg.port, user: 'postgres', database });
    c.on('error', () => {});
    await c.connect();
    return c;
  };

  const json = (r: RunResult, what: string): JobJson => {
    try {
      return JSON.parse(r.stdout) as JobJson;
    } catch {
      return assert.fail(`${what} printed no JSON (exit ${r.code}):\n${r.stdout}\n${r.stderr}`);
    }
  };

  async function recoverTable(...args: string[]): Promise<{ r: RunResult; job: JobJson }> {
    const r = await fleet.cli('recover-table', CLUSTER, '--wait', '--output', 'json', ...args);
    return { r, job: json(r, `recover-table ${args.join(' ')}`) };
  }

  async function digest(rel: string, key = '1', database = 'postgres'): Promise<{ n: string; md5: string }> {
    const c = await client(database);
    try {
      return (await c.query<{ n: string; md5: string }>(DIGEST(rel, key))).rows[0]!;
    } finally {
      await c.end();
    }
  }

  /** Rows and sequences of every live table outside pgfleet_recovered, in both databases. */
  async function liveState(): Promise<string> {
    const out: Record<string, unknown> = {};
    for (const db of ['postgres', 'shop2']) {
      const c = await client(db);
      try {
        const rels = (
          await c.query<{ r: string; k: string }>(
            `SELECT format('%I.%I', n.nspname, c.relname) AS r, c.relkind AS k FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'S') ORDER BY 1`,
          )
        ).rows;
        for (const { r, k } of rels)
          out[`${db}:${r}`] =
            k === 'S'
              ? (await c.query(`SELECT last_value::text, is_called FROM ${r}`)).rows[0]
              : (await c.query(DIGEST(r, '1'))).rows[0];
      } finally {
        await c.end();
      }
    }
    return JSON.stringify(out, null, 1);
  }

  /** Inserts into orders, items and events_log in one transaction after another until stopped. */
  function startWriter(): { stop(): Promise<void>; count(): number } {
    let stopped = false;
    let n = 0;
    const done = (async () => {
      const c = await client();
      try {
        while (!stopped) {
          await c.query(`BEGIN;
            INSERT INTO orders (customer, note) VALUES (${n % 7}, 'live ${n}');
            INSERT INTO items (order_id, qty) VALUES (currval('orders_id_seq'), ${n % 5});
            INSERT INTO events_log (msg) VALUES ('written ${n}');
            COMMIT`);
          n++;
          // Pacing only: the test waits on the count, never on time.
          await sleep(10);
        }
      } finally {
        await c.end();
      }
    })();
    return {
      count: () => n,
      async stop() {
        stopped = true;
        await done;
      },
    };
  }

  const moreWrites = async (k: number) => {
    const at = writer.count();
    await waitFor(`${k} more writer transactions`, async () => writer.count() >= at + k);
  };

  /** Runs `damage` in one transaction after locking `tables` and digesting them; returns the xid. */
  async function mistake(
    database: string,
    tables: { rel: string; key: string; name: string }[],
    damage: string,
  ): Promise<string> {
    const c = await client(database);
    try {
      await c.query('BEGIN');
      await c.query(`LOCK TABLE ${tables.map((t) => t.rel).join(', ')} IN EXCLUSIVE MODE`);
      for (const t of tables) snap[t.name] = (await c.query<{ n: string; md5: string }>(DIGEST(t.rel, t.key))).rows[0]!;
      await c.query(damage);
      const xid = (await c.query<{ x: string }>('SELECT txid_current()::text AS x')).rows[0]!.x;
      await c.query('COMMIT');
      return xid;
    } finally {
      await c.end();
    }
  }

  before(async () => {
    fleet = await startFleet({ cluster: CLUSTER, startAgent: false });
    scratch = join(fleet.dir, 'scratch');
    await fleet.startAgent(['--scratch-dir', scratch]);
    await fleet.pg.query(`
      CREATE TABLE orders (id serial PRIMARY KEY, customer int NOT NULL, note text NOT NULL);
      CREATE TABLE items (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, order_id int NOT NULL, qty int NOT NULL);
      CREATE TABLE events_log (id bigserial PRIMARY KEY, msg text NOT NULL);
      CREATE TABLE customers (id int PRIMARY KEY, name text NOT NULL);
      CREATE TABLE prices (sku text PRIMARY KEY, customer_id int REFERENCES customers (id), price numeric NOT NULL);
      CREATE TABLE measurements (id int NOT NULL, v int NOT NULL) PARTITION BY RANGE (id);
      CREATE TABLE measurements_low PARTITION OF measurements FOR VALUES FROM (MINVALUE) TO (500);
      CREATE TABLE measurements_high PARTITION OF measurements FOR VALUES FROM (500) TO (MAXVALUE);
      CREATE TYPE mood AS ENUM ('ok', 'sad');
      CREATE TABLE tagged (id int PRIMARY KEY, m mood NOT NULL);
      INSERT INTO tagged SELECT g, 'ok' FROM generate_series(1, 10) g;
      INSERT INTO orders (customer, note) SELECT g % 7, 'order ' || g FROM generate_series(1, 2000) g;
      INSERT INTO items (order_id, qty) SELECT g, g % 5 FROM generate_series(1, 3000) g;
      INSERT INTO customers SELECT g, 'customer ' || g FROM generate_series(1, 50) g;
      INSERT INTO prices SELECT 'sku-' || g, 1 + g % 50, g * 1.5 FROM generate_series(1, 400) g;
      INSERT INTO measurements SELECT g, g * 3 FROM generate_series(1, 1000) g;`);
    await fleet.pg.query('CREATE DATABASE shop2');
    const c2 = await client('shop2');
    // Owner code on the table (a CHECK, an expression index, a generated column calling a user
    // function): replaced after the mistake by one that fails, it must not run in the live cluster.
    await c2.query(`CREATE FUNCTION total_ok(numeric) RETURNS boolean IMMUTABLE LANGUAGE sql AS 'SELECT $1 >= 0';
      CREATE TABLE invoices (no int PRIMARY KEY, total numeric NOT NULL CONSTRAINT total_checked CHECK (total_ok(total)),
        ok boolean GENERATED ALWAYS AS (total_ok(total)) STORED);
      CREATE INDEX invoices_ok ON invoices (total_ok(total));
      INSERT INTO invoices SELECT g, g * 10 FROM generate_series(1, 300) g`);
    await c2.end();

    oldXid = (await fleet.pg.query<{ x: string }>('SELECT txid_current()::text AS x'))[0]!.x;
    const b = await fleet.cli('backup', CLUSTER, '--wait');
    assert.equal(b.code, 0, `backup failed:\n${b.stdout}\n${b.stderr}\n${await fleet.logs()}`);

    writer = startWriter();
    await moreWrites(20);
    deleteXid = await mistake('postgres', [{ rel: 'orders', key: 'id', name: 'orders' }], 'DELETE FROM orders');
    await moreWrites(20);
    migrationXid = await mistake(
      'postgres',
      [
        { rel: 'items', key: 'id', name: 'items' },
        { rel: 'customers', key: 'id', name: 'customers' },
        { rel: 'prices', key: 'sku', name: 'prices' },
        { rel: 'measurements', key: 'id', name: 'measurements' },
      ],
      `TRUNCATE items; DROP TABLE customers CASCADE; UPDATE prices SET price = 0; DELETE FROM measurements WHERE v % 2 = 0;
       DROP TYPE mood CASCADE`,
    );
    await moreWrites(20);
    invoicesXid = await mistake('shop2', [{ rel: 'invoices', key: 'no', name: 'invoices' }], 'DELETE FROM invoices');
    const c3 = await client('shop2');
    await c3.query(`CREATE OR REPLACE FUNCTION total_ok(numeric) RETURNS boolean IMMUTABLE LANGUAGE plpgsql
      AS $$BEGIN RAISE EXCEPTION 'the live function was called'; END$$`);
    await c3.end();
    await moreWrites(20);
    await writer.stop();
    // Recovery stops at the mistake's commit record: the segment holding it must be archived.
    await fleet.switchAndArchive();
    liveBefore = await liveState();
  });

  after(async () => {
    await writer?.stop().catch(() => {});
    await fleet?.stop();
  });

  it('DELETE without WHERE: exactly the deleted rows come back in pgfleet_recovered.orders, and merge back', async () => {
    const { r, job } = await recoverTable('--table', 'public.orders', '--before-xid', deleteXid);
    assert.equal(r.code, 0, `recover-table failed:\n${r.stdout}\n${r.stderr}\n${await fleet.logs()}`);
    const t = job.recoverTable!.tables[0]!;
    assert.equal(t.recoveredAs, 'pgfleet_recovered.orders');
    assert.equal(t.rowsRecovered, Number(snap.orders!.n));
    assert.deepEqual(await digest('pgfleet_recovered.orders', 'id'), snap.orders);
    assert.deepEqual(t.primaryKey, ['id']);
    assert.ok(BigInt(t.liveRows) > 0n, 'orders written after the DELETE are live');
    assert.ok(job.recoverTable!.totalSeconds > 0);
    // Its own sequence: the live one stays where the writer left it (checked with every table at the end).
    const seq = await fleet.pg.query<{ d: string }>(
      `SELECT pg_get_expr(adbin, adrelid) AS d FROM pg_attrdef WHERE adrelid = 'pgfleet_recovered.orders'::regclass`,
    );
    assert.match(seq[0]!.d, /pgfleet_recovered\.orders_id_seq/);
    // The merge SQL, run in a transaction that is rolled back: every deleted row is back, the later ones stay.
    const c = await client();
    try {
      await c.query('BEGIN');
      const live = (await c.query<{ n: string }>('SELECT count(*)::text AS n FROM orders')).rows[0]!.n;
      await c.query(t.mergeSql);
      const merged = (await c.query<{ n: string }>('SELECT count(*)::text AS n FROM orders')).rows[0]!.n;
      assert.equal(BigInt(merged), BigInt(live) + BigInt(snap.orders!.n));
      await c.query('ROLLBACK');
    } finally {
      await c.end();
    }
  });

  it('TRUNCATE, DROP TABLE, UPDATE without WHERE and a partitioned table: one job brings the four back', async () => {
    const { r, job } = await recoverTable(
      '--table',
      'public.items,public.customers',
      '--table',
      'public.prices',
      '--table',
      'public.measurements',
      '--into',
      'items,customers,prices_before_update,measurements',
      '--before-xid',
      migrationXid,
    );
    assert.equal(r.code, 0, `recover-table failed:\n${r.stdout}\n${r.stderr}\n${await fleet.logs()}`);
    const byTable = new Map(job.recoverTable!.tables.map((t) => [t.table, t]));
    assert.deepEqual(await digest('pgfleet_recovered.items', 'id'), snap.items);
    assert.deepEqual(await digest('pgfleet_recovered.customers', 'id'), snap.customers);
    assert.deepEqual(await digest('pgfleet_recovered.prices_before_update', 'sku'), snap.prices);
    assert.deepEqual(await digest('pgfleet_recovered.measurements', 'id'), snap.measurements);
    assert.equal(byTable.get('public.customers')!.liveRows, -1, 'the dropped table exists only in the copy');
    assert.match(byTable.get('public.customers')!.mergeSql, /SET SCHEMA "public"/);
    assert.deepEqual(byTable.get('public.prices')!.droppedForeignKeys, ['public.prices.prices_customer_id_fkey']);
    assert.deepEqual([...(byTable.get('public.measurements')!.partitions ?? [])].sort(), [
      'pgfleet_recovered.measurements_high',
      'pgfleet_recovered.measurements_low',
    ]);
    const kind = await fleet.pg.query<{ k: string }>(
      `SELECT relkind AS k FROM pg_class WHERE oid = 'pgfleet_recovered.measurements'::regclass`,
    );
    assert.equal(kind[0]!.k, 'p', 'the partitioned table lands partitioned');
    assert.equal(byTable.get('public.items')!.liveRows !== 0, true, 'items written after the TRUNCATE are live');
  });

  it('a load the live cluster refuses (a type it no longer has) leaves nothing of that table', async () => {
    const { r, job } = await recoverTable('--table', 'public.tagged', '--before-xid', migrationXid);
    assert.notEqual(r.code, 0);
    assert.equal(job.error?.code, ErrorCodes.RecoverTableLoadFailed.code, r.stdout);
    assert.match(job.error!.message, /type "public\.mood" does not exist/);
    assert.deepEqual(await fleet.pg.query(`SELECT to_regclass('pgfleet_recovered.tagged') AS r`), [{ r: null }]);
  });

  it("a table of a second database (--database), loaded without running its owner's functions", async () => {
    const { r, job } = await recoverTable(
      '--table',
      'public.invoices',
      '--database',
      'shop2',
      '--before-xid',
      invoicesXid,
    );
    assert.equal(r.code, 0, `recover-table failed:\n${r.stdout}\n${r.stderr}\n${await fleet.logs()}`);
    assert.equal(job.recoverTable!.database, 'shop2');
    assert.deepEqual(await digest('pgfleet_recovered.invoices', 'no', 'shop2'), snap.invoices);
    // Loaded without calling total_ok (replaced since by one that raises): its uses were left out, and said so.
    assert.deepEqual(job.recoverTable!.tables[0]!.droppedFunctionCalls, [
      'check public.invoices.total_checked',
      'index public.invoices_ok',
      'generated column public.invoices.ok',
    ]);
  });

  it('refusals: a name taken, a bad --into, an unknown database, a table that never existed, an xid not in the archive or before the backup', async () => {
    /** A recover-table job that fails with `code`; returns its error message. */
    const refused = async (code: string, ...args: string[]): Promise<string> => {
      const { r, job } = await recoverTable(...args);
      assert.notEqual(r.code, 0);
      assert.equal(job.error?.code, code, r.stdout);
      return job.error!.message;
    };
    await refused(ErrorCodes.RecoveredTableExists.code, '--table', 'public.orders', '--before-xid', deleteXid);
    const badInto = await fleet.cli(
      'recover-table',
      CLUSTER,
      ...['--table', 'public.orders', '--into', 'public.x', '--before-xid', deleteXid],
    );
    assert.notEqual(badInto.code, 0);
    assert.match(badInto.stderr, new RegExp(ErrorCodes.RecoverTableNameInvalid.code));
    const orders = ['--table', 'public.orders', '--into', 'o3'];
    await refused(
      ErrorCodes.RecoverTableLiveUnreachable.code,
      ...orders,
      '--database',
      'no_such_db',
      '--before-xid',
      deleteXid,
    );
    // A table that did not exist at the target fails the job before any table is loaded.
    const never = await refused(
      ErrorCodes.RecoverTableNotFound.code,
      ...['--table', 'public.orders,public.never_was', '--into', 'o3,nw', '--before-xid', deleteXid],
    );
    assert.match(never, /"public"\."never_was" does not exist/);
    assert.deepEqual(await fleet.pg.query(`SELECT to_regclass('pgfleet_recovered.o3') AS r`), [{ r: null }]);
    await refused(ErrorCodes.RestorePointNotFound.code, ...orders, '--before-xid', '4000000000');
    // One that committed before the backup: the archive is read from the backup's first segment on, which says so.
    assert.match(
      await refused(ErrorCodes.RestorePointNotFound.code, ...orders, '--before-xid', oldXid),
      /committed before it is not found either/,
    );
  });

  it('leaves every live table as it was, removes the copy, and reports the tables in restore.completed', async () => {
    assert.equal(await liveState(), liveBefore);
    assert.deepEqual(await readdir(scratch), [], 'the scratch directory is empty');
    const r = await fleet.cli('events', '--cluster', CLUSTER, '--output', 'json', '--limit', '500');
    assert.equal(r.code, 0, r.stderr);
    const completed = r.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { kind: string; restoreCompleted?: { recoveredTables?: RecoveredTableJson[] } })
      .filter((e) => e.kind === 'restore.completed')
      .flatMap((e) => e.restoreCompleted?.recoveredTables ?? [])
      .map((t) => `${t.table} -> ${t.recoveredAs}`);
    assert.ok(completed.includes('public.orders -> pgfleet_recovered.orders'), completed.join(', '));
    assert.ok(completed.includes('public.prices -> pgfleet_recovered.prices_before_update'), completed.join(', '));
  });
});
