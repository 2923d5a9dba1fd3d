// The pg_class follower against a real PostgreSQL 15: a catalog snapshot is taken by SQL, then
// tables are renamed, rewritten, truncated, created, dropped, renamed in an aborted transaction
// and in subtransactions, moved to another schema whose name then changes. After each step a
// row is deleted and the SQL catalog's name for the table noted with the deleting xid; the WAL
// is decoded and the tracker's name for that DELETE must be the same. Two phases: a CHECKPOINT
// before each DDL (pg_class pages arrive as full-page images, lz4-compressed: wal_compression=lz4),
// then full_page_writes off (no images: rows rebuilt from records alone, prefix/suffix-compressed
// updates included).
import { strict as assert } from 'node:assert';
import { after, before, test } from 'node:test';
import pg from 'pg';
import { startWalCluster, type WalCluster } from '@pgfleet/testkit';
import { combineCatalogSnapshots, readCatalogRows, readCatalogSnapshotLsn } from './catalog-snapshot.js';
import { RelationNames, type CatalogSnapshot } from './relation-names.js';
import { TransactionTracker, type TransactionSummary } from './transaction-tracker.js';
import { decodeWalSegments } from './wal-reader.js';
import { interpretHeapRecord, XLH_UPDATE_PREFIX_FROM_OLD, XLH_UPDATE_SUFFIX_FROM_OLD } from './rmgr-records.js';
import { BKPIMAGE_COMPRESS_LZ4, lsnNumber } from './wal-format.js';

let cluster: WalCluster;
/** xid of a probe DELETE -> the name SQL gave the table in that transaction */
const probes: { phase: string; step: string; xid: number; expected: string }[] = [];
let summaries: Map<number, TransactionSummary>;
let summariesOnlyB: Map<number, TransactionSummary>;
let compressedUpdatesB = 0;
let names: RelationNames;
let dbOidSeen = 0;
const dbOid0 = (s: CatalogSnapshot) => s.databases[0]!.oid;
const catalogRecordsWithImage = { A: 0, B: 0 };
let lz4CatalogImagesA = 0;

async function sql(text: string): Promise<Record<string, unknown>[]> {
  return cluster.pg.query(text);
}

/** Deletes one row of `table` and notes the xid and the catalog's name of the table then. */
async function probe(phase: string, step: string, table: string): Promise<void> {
  const [row] = await sql(
    `with d as (delete from ${table} where id = (select min(id) from ${table}) returning 1)
     select txid_current()::text as xid, (select count(*) from d)::int as n,
            current_database() || '.' || n.nspname || '.' || c.relname as name
     from pg_class c join pg_namespace n on n.oid = c.relnamespace where c.oid = '${table}'::regclass`,
  );
  assert.equal(row!.n, 1, `${step}: a row was deleted from ${table}`);
  probes.push({ phase, step, xid: Number(row!.xid), expected: String(row!.name) });
}

async function phase(p: 'A' | 'B', checkpointFirst: boolean): Promise<void> {
  const ddl = async (text: string) => {
    if (checkpointFirst) await sql('checkpoint');
    await sql(text);
  };
  const t = (n: number) => `t${n}_${p.toLowerCase()}`;
  await ddl(`alter table ${t(1)} rename to ${t(1)}_renamed`);
  await probe(p, 'rename', `${t(1)}_renamed`);
  await ddl(`vacuum full ${t(2)}`);
  await probe(p, 'vacuum full', t(2));
  await ddl(`truncate ${t(3)}`);
  await sql(`insert into ${t(3)} select g, 'after truncate' from generate_series(1, 10) g`);
  await probe(p, 'truncate', t(3));
  await ddl(`create table ${t(4)} (id int, v text); insert into ${t(4)} select g, 'new' from generate_series(1, 10) g`);
  await probe(p, 'create', t(4));
  await ddl(`begin; alter table ${t(5)} rename to ${t(5)}_aborted; rollback`);
  await probe(p, 'aborted rename', t(5));
  await ddl(`begin; savepoint a; alter table ${t(6)} rename to ${t(6)}_sub; release a; commit`);
  await probe(p, 'rename in a subtransaction', `${t(6)}_sub`);
  await ddl(`begin; savepoint a; alter table ${t(6)}_sub rename to ${t(6)}_rolled_back; rollback to a; commit`);
  await probe(p, 'rename in a rolled-back subtransaction', `${t(6)}_sub`);
  await ddl(`alter table ${t(8)} set schema s_${p}`);
  await probe(p, 'set schema', `s_${p}.${t(8)}`);
  await ddl(`alter schema s_${p} rename to s_${p}_renamed`);
  await probe(p, 'schema renamed', `s_${p}_renamed.${t(8)}`);
  await ddl(`alter table ${t(9)} add column w int default random()::int`); // a table rewrite
  await probe(p, 'alter table rewrite', t(9));
  // TRUNCATE and a reload in one transaction: rows written into the new file, still a truncate.
  await ddl(
    `begin; truncate ${t(10)}; insert into ${t(10)} select g, 'reloaded' from generate_series(1, 10) g; commit`,
  );
  await probe(p, 'truncate and reload', t(10));
  // VACUUM FULL of a table with no live row writes no page, and is still a rewrite.
  await sql(`delete from ${t(11)}`);
  await ddl(`vacuum full ${t(11)}`);
  await sql(`insert into ${t(11)} values (1, 'after vacuum full')`);
  await probe(p, 'vacuum full of an empty table', t(11));
}

const dropXid: Record<string, number> = {};

/** DELETE every row and DROP the table in one transaction; its xid. */
async function deleteAndDrop(table: string): Promise<number> {
  const client = new pg.Client({ connectionString: cluster.pg.connectionString });
  await client.connect();
  try {
    await client.query('begin');
    const del = await client.query(`delete from ${table}`);
    assert.equal(del.rowCount, 1000);
    const xid = Number((await client.query('select txid_current()::text as xid')).rows[0].xid);
    await client.query(`drop table ${table}`);
    await client.query('commit');
    return xid;
  } finally {
    await client.end();
  }
}

before(async () => {
  cluster = await startWalCluster();
  for (const p of ['a', 'b']) {
    await sql(`create schema s_${p}`);
    for (const n of [1, 2, 3, 5, 6, 7, 8, 9, 10, 11]) {
      await sql(`create table t${n}_${p} (id int primary key, v text)`);
      await sql(`insert into t${n}_${p} select g, repeat('v', 50) from generate_series(1, 1000) g`);
    }
  }
  await sql('create table pt (id int, at int) partition by range (at)');
  await sql('create table pt_1 partition of pt for values from (0) to (10) partition by range (id)');
  await sql('create table pt_1_a partition of pt_1 for values from (0) to (10)');
  await sql(`create table t0_race (id int primary key, v text)`);
  await sql(`insert into t0_race select g, 'race' from generate_series(1, 10) g`);
  // The snapshot, as a backup takes it (takeCatalogSnapshotOfDatabase), with a rename committed
  // by another session between its two steps: after the LSN, so replayed over rows that show it.
  const client = new pg.Client({ connectionString: cluster.pg.connectionString });
  await client.connect();
  const snapLsn = await readCatalogSnapshotLsn(client);
  await sql('alter table t0_race rename to t0_race_renamed');
  const snap = { lsn: snapLsn, database: await readCatalogRows(client) };
  await client.end();
  assert.ok(
    snap.database.relations.some((r) => r.name === 't0_race_renamed'),
    'the rows show the rename committed after the LSN',
  );
  await probe('S', 'renamed between the snapshot LSN and its rows', 't0_race_renamed');
  const rel = (name: string) => snap.database.relations.find((r) => r.name === name)!;
  assert.equal(rel('pt_1').parentOid, rel('pt').oid, 'a partition names its parent');
  assert.equal(rel('pt_1_a').parentOid, rel('pt_1').oid, 'a sub-partition names its parent');
  assert.equal(rel('pt').parentOid, undefined, 'a table that is no partition has none');
  assert.equal(rel('t0_race_renamed').parentOid, undefined);
  const snapshot: CatalogSnapshot = combineCatalogSnapshots([snap]);
  const first = String((await sql(`select pg_walfile_name('${snap.lsn}') as f`))[0]!.f);

  await sql('alter system set wal_compression = lz4');
  await sql('select pg_reload_conf()');
  const lsnA = String((await sql('select pg_current_wal_insert_lsn()::text as l'))[0]!.l);
  await phase('A', true);
  dropXid.A = await deleteAndDrop('t7_a');
  await sql('alter system set full_page_writes = off');
  await sql('select pg_reload_conf()');
  await sql('checkpoint');
  const lsnB = String((await sql('select pg_current_wal_insert_lsn()::text as l'))[0]!.l);
  await phase('B', false);
  dropXid.B = await deleteAndDrop('t7_b');
  const last = await cluster.switchAndArchive();
  const segs = await cluster.segments(first, last);
  const { records, end } = decodeWalSegments(segs, { segmentSize: cluster.segmentSize });
  assert.equal(end.reason, 'input-end', end.detail);
  names = new RelationNames(snapshot);
  dbOidSeen = dbOid0(snapshot);
  const tracker = new TransactionTracker(names);
  summaries = new Map();
  const dbOid = snap.database.oid;
  const classFile = snap.database.pgClassRelNumber;
  // A second follower sees only phase B's records: the catalog rows it rebuilds come from the
  // snapshot's fields alone (no image, no earlier record of those rows), through compressed updates.
  const onlyB = new TransactionTracker(new RelationNames(snapshot));
  summariesOnlyB = new Map();
  for (const r of records) {
    if (r.lsn >= lsnNumber(lsnB)) {
      const s = onlyB.observe(r);
      if (s) summariesOnlyB.set(s.xid, s);
      const h = r.rmid === 10 ? interpretHeapRecord(r) : undefined;
      const b = h?.block;
      if (
        h &&
        b &&
        b.dbOid === dbOid &&
        b.relNumber === classFile &&
        h.flags & (XLH_UPDATE_PREFIX_FROM_OLD | XLH_UPDATE_SUFFIX_FROM_OLD)
      ) {
        if (h.kind === 'update' || h.kind === 'hot-update') compressedUpdatesB++;
      }
    }
    if (r.blocks.some((b) => b.hasImage && b.dbOid === dbOid && b.relNumber === classFile)) {
      if (r.lsn >= lsnNumber(lsnB)) catalogRecordsWithImage.B++;
      else if (r.lsn >= lsnNumber(lsnA)) {
        catalogRecordsWithImage.A++;
        if (r.blocks.some((b) => b.hasImage && b.relNumber === classFile && b.bimgInfo & BKPIMAGE_COMPRESS_LZ4))
          lz4CatalogImagesA++;
      }
    }
    const s = tracker.observe(r);
    if (s) summaries.set(s.xid, s);
  }
});

after(async () => {
  await cluster?.stop();
});

test('phase A saw pg_class full-page images (lz4), phase B none', () => {
  assert.ok(catalogRecordsWithImage.A > 0, 'images in phase A');
  assert.ok(lz4CatalogImagesA > 0, 'lz4-compressed pg_class images in phase A');
  assert.equal(catalogRecordsWithImage.B, 0, 'no images in phase B');
});

test('a rename committed after the snapshot LSN but before its rows (replayed over them) is named right', () => {
  const [p] = probes.filter((x) => x.phase === 'S');
  assert.ok(p);
  const s = summaries.get(p.xid);
  assert.ok(s, `transaction ${p.xid} committed in the WAL`);
  assert.deepEqual(
    s.tables.map((t) => [t.label, t.deleted]),
    [[p.expected, 1]],
  );
  assert.match(p.expected, /\.public\.t0_race_renamed$/);
});

for (const phaseName of ['A', 'B']) {
  test(`phase ${phaseName}: every DELETE is named as the SQL catalog named its table then`, () => {
    const mine = probes.filter((p) => p.phase === phaseName);
    assert.equal(mine.length, 12);
    for (const p of mine) {
      const s = summaries.get(p.xid);
      assert.ok(s, `${p.step}: transaction ${p.xid} committed in the WAL`);
      assert.deepEqual(
        s.tables.map((t) => [t.label, t.deleted]),
        [[p.expected, 1]],
        `${p.step}: xid ${p.xid}`,
      );
    }
  });
}

test('phase B from the snapshot fields alone: prefix/suffix-compressed pg_class updates rebuilt, names still right', () => {
  assert.ok(compressedUpdatesB > 0, `compressed pg_class updates in phase B: ${compressedUpdatesB}`);
  for (const p of probes.filter((x) => x.phase === 'B')) {
    const s = summariesOnlyB.get(p.xid);
    assert.ok(s, `${p.step}: transaction ${p.xid}`);
    assert.deepEqual(
      s.tables.map((t) => t.label),
      [p.expected],
      p.step,
    );
  }
});

test('catalog events: created, renamed, rewritten, truncated, dropped (with the rows deleted before the drop)', () => {
  const all = [...summaries.values()].flatMap((s) => s.events.map((e) => ({ xid: s.xid, e })));
  const find = (kind: string, name: string) =>
    all.find(({ e }) => e.kind === kind && e.relation.name === name && e.relation.schema.length > 0);
  for (const p of ['a', 'b']) {
    assert.ok(find('created', `t4_${p}`), `t4_${p} created`);
    const renamed = find('renamed', `t1_${p}_renamed`);
    assert.ok(renamed && renamed.e.kind === 'renamed' && renamed.e.from.name === `t1_${p}`, `t1_${p} renamed`);
    assert.ok(find('rewritten', `t2_${p}`), `t2_${p} rewritten by VACUUM FULL`);
    assert.ok(find('rewritten', `t9_${p}`), `t9_${p} rewritten by ALTER TABLE`);
    assert.ok(find('truncated', `t3_${p}`), `t3_${p} truncated`);
    assert.ok(find('truncated', `t10_${p}`), `t10_${p} truncated and reloaded in one transaction`);
    assert.ok(!find('rewritten', `t10_${p}`), `t10_${p} is not a rewrite`);
    assert.ok(find('rewritten', `t11_${p}`), `t11_${p} rewritten by VACUUM FULL with no live row`);
    assert.ok(!all.some(({ e }) => e.relation.name === `t5_${p}_aborted`), 'the aborted rename left nothing');
    assert.ok(!all.some(({ e }) => e.relation.name === `t6_${p}_rolled_back`), 'the rolled-back rename left nothing');
  }
  for (const p of ['A', 'B']) {
    const table = `t7_${p.toLowerCase()}`;
    const drop = summaries.get(dropXid[p]!);
    assert.ok(drop, `the DELETE + DROP transaction of ${table}`);
    assert.deepEqual(
      drop.tables.map((t) => [t.label, t.deleted]),
      [[`postgres.public.${table}`, 1000]],
    );
    assert.ok(drop.events.some((e) => e.kind === 'dropped' && e.relation.name === table));
    assert.ok(drop.droppedFiles.length > 0, 'the commit drops the files');
  }
});

test('a file no catalog row names is an unknown relation, not a guess', () => {
  const locator = { spcOid: 1663, dbOid: dbOidSeen, relNumber: 999_999 };
  assert.equal(names.relation(locator), undefined);
  assert.equal(names.describe(locator), `unknown relation 1663/${dbOidSeen}/999999`);
});
