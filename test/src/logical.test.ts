/**
 * Logical backups end to end (issue 17, docs/logical.md), on two clusters sharing one controller
 * and repository (every case uses the same two, which keeps this test to one fleet):
 * - a source cluster with two databases: `shop` (schema sales with several tables, a serial and a
 *   standalone sequence, a view, large objects, the pg_trgm extension with a trigram index) and
 *   `crm`; `pgfleet dump --jobs 2` records every database with its tables' row estimates, sizes,
 *   the pg_dump version and the globals (role passwords left out), and `pgfleet dumps` lists it;
 * - `restore-dump --to-cluster` into new databases of the other cluster gives the same data
 *   (md5 of every table's ordered rows, of every large object, the sequences' positions) and the
 *   same schema (`pg_dump --schema-only` of both, compared as text);
 * - a single table restore (--table) brings that table and nothing else;
 * - an existing target is refused (RestoreDumpTargetExists) and replaced with --clean, which the
 *   output says;
 * - `--globals`: roles created on the source (an owner with a password, kept by `dump
 *   --with-passwords`, and a role granted to it) exist on the target after restore-dump, the
 *   restored table owned and granted as on the source, the password hash equal, existing roles
 *   (the superuser; the app's on a second run) skipped; without --globals pg_restore fails on the
 *   missing owner saying --globals creates it, and a restore that needs no roles says the globals
 *   were not applied;
 * - a dump that cannot get its locks within --lock-wait-timeout, and one whose database is dropped
 *   while it runs, fail with DumpFailed, are not listed and leave nothing in the repository;
 * - `pgfleet verify` checks the dump (every file against the catalog's checksums, toc.dat listed
 *   by pg_restore with every recorded table in it); a flipped byte in a stored dump file is found
 *   by verify (VerifyFailed, naming the file) and fails the restore (RestoreDumpFailed), which
 *   leaves no database behind.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import pg from 'pg';
import { ErrorCodes } from '@pgfleet/core';
import type { PgInstance } from '@pgfleet/testkit';
import { startFleet, waitFor, type Fleet, type FleetMember } from './harness.js';

const SOURCE = 'lsrc';
const TARGET = 'ldst';

interface DumpJson {
  label: string;
  pgDumpVersion: string;
  withPasswords?: boolean;
  globals?: { size: number };
  databases: {
    name: string;
    dir: string;
    size: number;
    files: { name: string; sha256: string; size: number }[];
    tables: { schema: string; name: string; rowEstimate: number }[];
  }[];
}
interface JobJson {
  state: string;
  error?: { code: string; message: string };
  dump?: DumpJson;
  restoreDump?: {
    toDatabase: string;
    droppedExisting?: boolean;
    bytes: number;
    globals?: { rolesCreated?: string[]; rolesSkipped?: string[]; withPasswords?: boolean; statements?: number };
  };
}

async function withDb<T>(db: PgInstance, database: string, fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const c = new pg.Client({ host: db.host, port: db.port, user: db.user, database });
  await c.connect();
  try {
    return await fn(c);
  } finally {
    await c.end();
  }
}

/** Every user table's row count and md5 of its rows in order, every large object's md5, every sequence's position. */
async function fingerprint(db: PgInstance, database: string): Promise<Record<string, string>> {
  return withDb(db, database, async (c) => {
    const out: Record<string, string> = {};
    const tables = (
      await c.query<{ t: string }>(
        `SELECT format('%I.%I', n.nspname, r.relname) AS t FROM pg_class r JOIN pg_namespace n ON n.oid = r.relnamespace
          WHERE r.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1`,
      )
    ).rows;
    for (const { t } of tables) {
      const [row] = (
        await c.query<{ n: string; md5: string }>(
          `SELECT count(*)::text AS n, coalesce(md5(string_agg(x::text, E'\\n' ORDER BY x::text)), '') AS md5 FROM ${t} x`,
        )
      ).rows;
      out[t] = `${row!.n} ${row!.md5}`;
    }
    for (const lo of (
      await c.query<{ oid: string; md5: string }>(
        'SELECT oid::text AS oid, md5(lo_get(oid)) AS md5 FROM pg_largeobject_metadata ORDER BY oid',
      )
    ).rows)
      out[`lo ${lo.oid}`] = lo.md5;
    for (const s of (
      await c.query<{ s: string; v: string }>(
        `SELECT format('%I.%I', schemaname, sequencename) AS s, coalesce(last_value, 0)::text AS v FROM pg_sequences ORDER BY 1`,
      )
    ).rows)
      out[`seq ${s.s}`] = s.v;
    return out;
  });
}

/** `pg_dump --schema-only` of a database, without the lines that differ by run (psql's \restrict key). */
async function schemaOnly(db: PgInstance, database: string): Promise<string> {
  const child = spawn(join(db.binDir, 'pg_dump'), ['--schema-only', '--no-password'], {
    env: { ...process.env, PGHOST: db.host, PGPORT: String(db.port), PGUSER: db.user, PGDATABASE: database },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let text = '';
  let err = '';
  child.stdout.on('data', (d: Buffer) => (text += d.toString()));
  child.stderr.on('data', (d: Buffer) => (err += d.toString()));
  const code = await new Promise<number>((r) => child.on('close', (c) => r(c ?? -1)));
  assert.equal(code, 0, `pg_dump --schema-only ${database}: ${err}`);
  return text
    .split('\n')
    .filter((l) => !/^\\(un)?restrict /.test(l))
    .join('\n');
}

describe('logical backups: pgfleet dump and restore-dump', { timeout: 1_200_000 }, () => {
  let fleet: Fleet;
  let target: FleetMember;
  let dump: DumpJson;

  const jobOf = (stdout: string): JobJson => JSON.parse(stdout) as JobJson;
  const dumpDirs = async (): Promise<string[]> =>
    (await readdir(join(fleet.repoDir, SOURCE, 'dump')).catch(() => [] as string[])).sort();
  const listed = async (): Promise<string[]> => {
    const r = await fleet.cli('dumps', SOURCE, '--output', 'json');
    assert.equal(r.code, 0, r.stderr);
    return (JSON.parse(r.stdout) as { dump: DumpJson }[]).map((d) => d.dump.label);
  };
  /** `pgfleet restore-dump` of a source database into a database of the target cluster. */
  const restoreInto = (database: string, into: string, ...more: string[]) =>
    fleet.cli('restore-dump', SOURCE, '--database', database, '--to-cluster', TARGET, '--to-database', into, ...more);
  const databases = (db: PgInstance) =>
    db.query<{ datname: string }>('SELECT datname FROM pg_database ORDER BY 1').then((r) => r.map((x) => x.datname));

  before(async () => {
    fleet = await startFleet({ cluster: SOURCE, archive: false });
    target = await fleet.addCluster(TARGET);
    const src = fleet.pg;
    await src.query('CREATE DATABASE shop');
    await src.query('CREATE DATABASE crm');
    await withDb(src, 'shop', async (c) => {
      await c.query(`
        CREATE EXTENSION pg_trgm;
        CREATE SCHEMA sales;
        CREATE TABLE sales.customers (id int PRIMARY KEY, name text NOT NULL, email text);
        CREATE TABLE sales.orders (
          id bigserial PRIMARY KEY,
          customer_id int NOT NULL REFERENCES sales.customers(id),
          placed timestamptz NOT NULL,
          amount numeric(12,2) NOT NULL,
          note text);
        CREATE TABLE sales.items (order_id bigint REFERENCES sales.orders(id), sku text, qty int, PRIMARY KEY (order_id, sku));
        CREATE TABLE sales.documents (id int PRIMARY KEY, title text, body oid);
        CREATE INDEX customers_name_trgm ON sales.customers USING gin (name gin_trgm_ops);
        CREATE SEQUENCE sales.invoice_no START 1000;
        CREATE VIEW sales.big_orders AS SELECT o.id, c.name, o.amount FROM sales.orders o JOIN sales.customers c ON c.id = o.customer_id WHERE o.amount > 500;
        INSERT INTO sales.customers SELECT g, 'customer ' || g, 'c' || g || '@example.com' FROM generate_series(1, 2000) g;
        INSERT INTO sales.orders (customer_id, placed, amount, note)
          SELECT 1 + g % 2000, '2026-01-01'::timestamptz + g * interval '1 minute', (g % 1000) + 0.25, CASE WHEN g % 7 = 0 THEN NULL ELSE repeat('x', g % 50) END
            FROM generate_series(1, 30000) g;
        INSERT INTO sales.items SELECT id, 'sku-' || (id % 97), 1 + id % 5 FROM sales.orders;
        INSERT INTO sales.documents SELECT g, 'doc ' || g, lo_from_bytea(0, convert_to(repeat('page ' || g, 300 * g), 'UTF8')) FROM generate_series(1, 5) g;
        SELECT setval('sales.invoice_no', 4242);
        ANALYZE;
      `);
    });
    await withDb(src, 'crm', async (c) => {
      await c.query(`
        CREATE TABLE contacts (id int PRIMARY KEY, who text, tags text[]);
        INSERT INTO contacts SELECT g, 'who ' || g, ARRAY['a' || g % 3, 'b'] FROM generate_series(1, 500) g;
        ANALYZE;
      `);
    });
  });

  after(async () => {
    if (process.exitCode && fleet) console.error(await fleet.logs());
    await fleet?.stop();
  });

  it('dumps every database in parallel, records it in the catalog and lists it', async () => {
    const r = await fleet.cli('dump', SOURCE, '--jobs', '2', '--wait', '--output', 'json');
    assert.equal(r.code, 0, `${r.stderr}\n${await fleet.logs()}`);
    const job = jobOf(r.stdout);
    assert.equal(job.state, 'succeeded');
    dump = job.dump!;
    assert.deepEqual(dump.databases.map((d) => d.name).sort(), ['crm', 'postgres', 'shop']);
    assert.match(dump.pgDumpVersion, /^pg_dump \(PostgreSQL\) 15\./);
    assert.ok(!dump.withPasswords);
    assert.ok(Number(dump.globals!.size) > 0);
    const shop = dump.databases.find((d) => d.name === 'shop')!;
    const estimate = (name: string) => Number(shop.tables.find((t) => t.name === name)!.rowEstimate);
    assert.deepEqual(
      shop.tables.map((t) => `${t.schema}.${t.name}`),
      ['sales.customers', 'sales.documents', 'sales.items', 'sales.orders'],
    );
    // Row estimates as ANALYZE left them in pg_class.reltuples (exact for tables this small).
    assert.equal(estimate('orders'), 30000);
    assert.equal(estimate('customers'), 2000);
    assert.ok(shop.files.some((f) => f.name === 'toc.dat'));
    // pg_dump compresses; the record's size is its files' bytes.
    assert.ok(Number(shop.size) > 100_000);
    assert.equal(
      Number(shop.size),
      shop.files.reduce((a, f) => a + Number(f.size), 0),
    );
    assert.deepEqual(await listed(), [dump.label]);
    // Stored where the repository keeps dumps, manifest included.
    assert.deepEqual(await dumpDirs(), [dump.label]);
    assert.ok((await readdir(join(fleet.repoDir, SOURCE, 'dump', dump.label))).includes('dump.json'));
    // verify reads every file back against the catalog's checksums and lists each toc.dat.
    const verified = await fleet.cli('verify', SOURCE, '--wait');
    assert.equal(verified.code, 0, `${verified.stdout}\n${verified.stderr}`);
    assert.match(verified.stdout, new RegExp(`${dump.label} ok: \\d+ file\\(s\\)`));
    // The human listing names it with its databases.
    const human = await fleet.cli('dumps', SOURCE);
    assert.match(human.stdout, new RegExp(`${dump.label}.*crm,postgres,shop`));
  });

  it('restore-dump into another cluster gives equal data and equal schema, for both databases', async () => {
    for (const [db, into] of [
      ['shop', 'shop_copy'],
      ['crm', 'crm'],
    ] as const) {
      const r = await restoreInto(db, into, '--dump', dump.label, '--jobs', '2', '--wait');
      assert.equal(r.code, 0, `${r.stderr}\n${await fleet.logs()}`);
      assert.match(
        r.stdout,
        new RegExp(`restored database '${db}' of dump ${dump.label} into '${into}' on cluster '${TARGET}'`),
      );
      assert.deepEqual(await fingerprint(target.pg, into), await fingerprint(fleet.pg, db));
      assert.equal(await schemaOnly(target.pg, into), await schemaOnly(fleet.pg, db));
    }
    const shop = await fingerprint(target.pg, 'shop_copy');
    // What the comparison covered: the tables, 5 large objects, both sequences where they were.
    assert.equal(shop['sales.orders']!.split(' ')[0], '30000');
    assert.equal(Object.keys(shop).filter((k) => k.startsWith('lo ')).length, 5);
    assert.equal(shop['seq sales.invoice_no'], '4242');
    assert.equal(shop['seq sales.orders_id_seq'], '30000');
    // The view is there and reads the same rows.
    const viewRows = (db: PgInstance, database: string) =>
      withDb(
        db,
        database,
        async (c) => (await c.query<{ n: string }>('SELECT count(*)::text AS n FROM sales.big_orders')).rows[0]!.n,
      );
    assert.equal(await viewRows(target.pg, 'shop_copy'), await viewRows(fleet.pg, 'shop'));
  });

  it('restores a single table, and nothing else', async () => {
    const r = await restoreInto('shop', 'only_customers', '--schema', 'sales', '--table', 'customers', '--wait');
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /only tables customers; schemas sales/);
    const copy = await fingerprint(target.pg, 'only_customers');
    const source = await fingerprint(fleet.pg, 'shop');
    assert.deepEqual(
      Object.keys(copy).filter((k) => !k.startsWith('seq ')),
      ['sales.customers'],
    );
    assert.equal(copy['sales.customers'], source['sales.customers']);
  });

  it('refuses an existing database unless --clean, which says it replaced it', async () => {
    await withDb(target.pg, 'shop_copy', (c) => c.query('DELETE FROM sales.items WHERE qty = 1'));
    const refused = await restoreInto('shop', 'shop_copy', '--wait');
    assert.notEqual(refused.code, 0);
    assert.match(refused.stderr, new RegExp(ErrorCodes.RestoreDumpTargetExists.code));
    assert.match(refused.stderr, /already exists/);
    const cleaned = await restoreInto('shop', 'shop_copy', '--clean', '--jobs', '2', '--wait');
    assert.equal(cleaned.code, 0, cleaned.stderr);
    assert.match(
      cleaned.stdout,
      /--clean: the existing database 'shop_copy' on cluster 'ldst' was DROPPED and replaced/,
    );
    assert.deepEqual(await fingerprint(target.pg, 'shop_copy'), await fingerprint(fleet.pg, 'shop'));
  });

  it('a dump that cannot get its locks fails clearly and leaves nothing listed or stored', async () => {
    const holder = new pg.Client({ host: fleet.pg.host, port: fleet.pg.port, user: fleet.pg.user, database: 'shop' });
    await holder.connect();
    try {
      await holder.query('BEGIN');
      await holder.query('LOCK TABLE sales.orders IN ACCESS EXCLUSIVE MODE');
      const r = await fleet.cli('dump', SOURCE, '--database', 'shop', '--lock-wait-timeout', '1s', '--wait');
      assert.notEqual(r.code, 0);
      assert.match(r.stderr, new RegExp(ErrorCodes.DumpFailed.code));
      assert.match(r.stderr, /database 'shop': could not lock its tables within --lock-wait-timeout/);
    } finally {
      await holder.end();
    }
    assert.deepEqual(await listed(), [dump.label]);
    assert.deepEqual(await dumpDirs(), [dump.label]);
  });

  it('a dump whose database is dropped while it runs fails clearly and leaves nothing', async () => {
    await fleet.pg.query('CREATE DATABASE victim');
    const holder = new pg.Client({ host: fleet.pg.host, port: fleet.pg.port, user: fleet.pg.user, database: 'shop' });
    await holder.connect();
    try {
      // shop's pg_dump waits for this lock (a generous --lock-wait-timeout) while victim is dropped.
      await holder.query('BEGIN');
      await holder.query('LOCK TABLE sales.customers IN ACCESS EXCLUSIVE MODE');
      const running = fleet.cli('dump', SOURCE, '--database', 'shop,victim', '--lock-wait-timeout', '5m', '--wait');
      await waitFor('pg_dump of shop to wait for its lock', async () => {
        const rows = await fleet.pg.query(
          "SELECT 1 FROM pg_stat_activity WHERE application_name = 'pgfleet-dump' AND datname = 'shop' AND wait_event_type = 'Lock'",
        );
        return rows.length > 0;
      });
      await fleet.pg.query('DROP DATABASE victim WITH (FORCE)');
      await holder.query('ROLLBACK');
      const r = await running;
      assert.notEqual(r.code, 0);
      assert.match(r.stderr, new RegExp(ErrorCodes.DumpFailed.code));
      assert.match(r.stderr, /victim/);
    } finally {
      await holder.end();
    }
    assert.deepEqual(await listed(), [dump.label]);
    assert.deepEqual(await dumpDirs(), [dump.label]);
  });

  it('a flipped byte in a stored dump file is found by verify and fails the restore, leaving no database', async () => {
    const shop = dump.databases.find((d) => d.name === 'shop')!;
    const dir = join(fleet.repoDir, SOURCE, 'dump', dump.label, shop.dir);
    const biggest = (
      await Promise.all((await readdir(dir)).map(async (n) => ({ n, size: (await readFile(join(dir, n))).length })))
    ).sort((a, b) => b.size - a.size)[0]!.n;
    const bytes = await readFile(join(dir, biggest));
    const at = Math.floor(bytes.length / 2);
    bytes[at] = bytes[at]! ^ 0x01;
    await writeFile(join(dir, biggest), bytes);
    const verified = await fleet.cli('verify', SOURCE, '--wait');
    assert.notEqual(verified.code, 0);
    assert.match(verified.stderr, new RegExp(ErrorCodes.VerifyFailed.code));
    assert.match(
      verified.stdout,
      new RegExp(`${dump.label} DAMAGED: .*database shop file ${biggest.replace('.', '\\.')}`),
    );
    const r = await restoreInto('shop', 'from_damaged', '--wait');
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, new RegExp(ErrorCodes.RestoreDumpFailed.code));
    assert.match(r.stderr, new RegExp(biggest.replace('.', '\\.')));
    assert.ok(!(await databases(target.pg)).includes('from_damaged'));
  });

  // Last: its own dump of 'owned' would be one more in the listings the cases above compare.
  it("--globals creates the dump's roles on the target first, existing ones skipped; without it the output says so", async () => {
    const src = fleet.pg;
    await src.query("CREATE ROLE app_owner LOGIN PASSWORD 'owner secret'");
    await src.query('CREATE ROLE app_reader NOLOGIN');
    await src.query('GRANT app_reader TO app_owner');
    await src.query('CREATE DATABASE owned');
    await withDb(src, 'owned', (c) =>
      c.query(`
        CREATE TABLE ledger (id int PRIMARY KEY, v text);
        INSERT INTO ledger SELECT g, 'v' || g FROM generate_series(1, 100) g;
        ALTER TABLE ledger OWNER TO app_owner;
        GRANT SELECT ON ledger TO app_reader;
      `),
    );
    const dumped = await fleet.cli(
      'dump',
      SOURCE,
      '--database',
      'owned',
      '--with-passwords',
      '--wait',
      '--output',
      'json',
    );
    assert.equal(dumped.code, 0, dumped.stderr);
    const label = jobOf(dumped.stdout).dump!.label;
    const appRoles = async (db: PgInstance) =>
      (await db.query<{ rolname: string }>("SELECT rolname FROM pg_roles WHERE rolname LIKE 'app\\_%' ORDER BY 1")).map(
        (r) => r.rolname,
      );
    assert.deepEqual(await appRoles(target.pg), []);
    // Without --globals the owner is missing on the target: pg_restore fails, saying what would create it.
    const without = await restoreInto('owned', 'owned', '--dump', label, '--wait');
    assert.notEqual(without.code, 0);
    assert.match(without.stderr, new RegExp(ErrorCodes.RestoreDumpFailed.code));
    assert.match(without.stderr, /role "app_owner" does not exist[\s\S]*--globals creates them/);
    assert.ok(!(await databases(target.pg)).includes('owned'));

    const r = await restoreInto('owned', 'owned', '--dump', label, '--globals', '--wait', '--output', 'json');
    assert.equal(r.code, 0, `${r.stderr}\n${await fleet.logs()}`);
    const globals = jobOf(r.stdout).restoreDump?.globals;
    assert.deepEqual(globals?.rolesCreated?.filter((x) => x.startsWith('app_')).sort(), ['app_owner', 'app_reader']);
    assert.ok(globals?.rolesSkipped?.includes(target.pg.user), `the target's superuser is skipped: ${r.stdout}`);
    assert.equal(globals?.withPasswords, true);
    assert.deepEqual(await appRoles(target.pg), ['app_owner', 'app_reader']);
    const onTarget = await withDb(target.pg, 'owned', async (c) => {
      const one = async (sql: string) => Object.values((await c.query(sql)).rows[0] as object)[0] as unknown;
      return {
        owner: await one("SELECT tableowner FROM pg_tables WHERE tablename = 'ledger'"),
        member: await one("SELECT pg_has_role('app_owner', 'app_reader', 'MEMBER')"),
        reads: await one("SELECT has_table_privilege('app_reader', 'ledger', 'SELECT')"),
        rows: await one('SELECT count(*)::int FROM ledger'),
      };
    });
    assert.deepEqual(onTarget, { owner: 'app_owner', member: true, reads: true, rows: 100 });
    const hash = async (db: PgInstance) =>
      (await db.query<{ p: string }>("SELECT rolpassword AS p FROM pg_authid WHERE rolname = 'app_owner'"))[0]?.p;
    assert.match((await hash(target.pg)) ?? '', /^SCRAM-SHA-256\$/);
    assert.equal(await hash(target.pg), await hash(fleet.pg));

    // Again: the roles exist now, they are skipped and left as they are; the human output says so.
    const again = await restoreInto('owned', 'owned_again', '--dump', label, '--globals', '--wait');
    assert.equal(again.code, 0, again.stderr);
    assert.match(again.stdout, /globals applied to cluster 'ldst' .*: roles created none;/);
    assert.match(again.stdout, /skipped, they already exist and were left as they are: roles [^;]*app_owner/);
    assert.match(again.stdout, /role passwords: set from the dump/);
    // Without --globals (the roles are there now) it restores and says the globals were not applied.
    const plain = await restoreInto('owned', 'owned_plain', '--dump', label, '--wait');
    assert.equal(plain.code, 0, plain.stderr);
    assert.match(plain.stdout, /globals \(roles, tablespaces\) were not applied: give --globals/);
  });
});
