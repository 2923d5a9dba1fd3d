import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { CatalogSnapshot, RelationName, TransactionSummary } from '@pgfleet/pg';
import {
  DESTRUCTIVE_KINDS,
  foundTransaction,
  SearchResults,
  tableLine,
  type FoundTransaction,
  type SearchFilter,
} from './transactions.js';

const at = (s: number) => new Date(Date.UTC(2026, 11, 6, 12, 0, s));
const loc = (relNumber: number, dbOid = 5) => ({ spcOid: 1663, dbOid, relNumber });
const rel = (name: string, oid: number, relNumber = oid, dbOid = 5): RelationName => ({
  dbOid,
  database: dbOid === 5 ? 'postgres' : 'shop2',
  schema: 'public',
  name,
  oid,
  relNumber,
  kind: 'r',
});
const summary = (over: Partial<TransactionSummary>): TransactionSummary => ({
  xid: 700,
  subxacts: [],
  outcome: 'committed',
  endRecordLsn: 2000,
  time: at(1),
  firstRecordLsn: 1000,
  tables: [],
  events: [],
  droppedFiles: [],
  ...over,
});
const filter = (over: Partial<SearchFilter> = {}): SearchFilter => ({
  kinds: DESTRUCTIVE_KINDS,
  minRows: 0,
  limit: 50,
  ...over,
});
const dbName = (oid: number) => `database ${oid}`;
const tx = (xid: number, s: number, tables: FoundTransaction['tables']): FoundTransaction => ({
  xid,
  commitTime: at(s),
  commitLsn: xid * 10,
  firstLsn: xid * 10 - 5,
  timeline: 1,
  tables,
});
const line = (name: string, over: Partial<FoundTransaction['tables'][number]> = {}) => ({
  ...tableLine({ database: 'postgres', schema: 'public', name, relation: '1663/5/1' }),
  ...over,
});

test('a summary becomes one line per table; events land on their table by oid, unknown files keep their path', () => {
  const f = foundTransaction(
    summary({
      tables: [
        {
          locator: loc(16400),
          relation: rel('orders', 16384, 16400),
          label: '',
          inserted: 0,
          updated: 0,
          deleted: 500,
        },
        { locator: loc(16999), label: '', inserted: 1, updated: 0, deleted: 0 },
      ],
      events: [
        { kind: 'truncated', relation: rel('orders', 16384, 16500), oldRelNumber: 16400 },
        { kind: 'dropped', relation: rel('doomed', 16390) },
        { kind: 'renamed', relation: rel('items2', 16395), from: rel('items', 16395) },
      ],
      droppedFiles: [loc(16400), loc(16390)],
    }),
    1,
    dbName,
  );
  assert.equal(f.firstLsn, 1000);
  assert.equal(f.commitLsn, 2000);
  assert.deepEqual(
    f.tables.map((t) => [
      t.database,
      `${t.schema}.${t.name}`,
      t.relation,
      t.rowsDeleted,
      t.truncated,
      t.dropped,
      t.renamedFrom,
    ]),
    [
      ['postgres', 'public.orders', '1663/5/16400', 500, true, false, ''],
      ['database 5', '.', '1663/5/16999', 0, false, false, ''],
      ['postgres', 'public.doomed', '1663/5/16390', 0, false, true, ''],
      ['postgres', 'public.items2', '-/5/16395', 0, false, false, 'public.items'],
    ],
  );
});

test('culprits first: truncate and drop, then rows deleted + updated, then time; the limit keeps the best', () => {
  const r = new SearchResults(filter({ limit: 3 }));
  for (let i = 0; i < 100; i++) r.add(tx(1000 + i, i % 50, [line('t', { rowsUpdated: 1 })]));
  r.add(tx(5, 1, [line('t', { rowsDeleted: 500 })]));
  r.add(tx(6, 0, [line('t', { rowsUpdated: 500 })]));
  r.add(tx(7, 30, [line('logs', { truncated: true })]));
  assert.deepEqual(
    r.result().map((x) => x.xid),
    [7, 6, 5],
  );
  assert.equal(r.matched, 103);
  assert.equal(r.committed, 103);
});

test('filters: kinds, database, table (also by its name before a rename), min-rows, since/until', () => {
  const r = new SearchResults(
    filter({ table: { schema: 'public', name: 'items' }, minRows: 2, since: at(5), until: at(50) }),
  );
  r.add(tx(1, 10, [line('items', { rowsDeleted: 3 }), line('other', { rowsDeleted: 9 })]));
  r.add(tx(2, 11, [line('items', { rowsDeleted: 1 })])); // below min-rows
  r.add(tx(3, 1, [line('items', { rowsDeleted: 9 })])); // before since
  r.add(tx(4, 20, [line('items2', { rowsDeleted: 4, renamedFrom: 'public.items' })]));
  r.add(tx(5, 21, [line('items', { rowsInserted: 50 })])); // inserts are not destructive
  r.add(tx(8, 60, [line('items', { rowsDeleted: 9 })])); // after until
  const found = r.result();
  assert.deepEqual(
    found.map((x) => x.xid),
    [4, 1],
  );
  assert.deepEqual(
    found[1]!.tables.map((t) => t.name),
    ['items'],
    'only the table asked for',
  );
  const db = new SearchResults(filter({ database: 'shop2', kinds: ['all'] }));
  db.add(tx(1, 1, [line('a', { rowsInserted: 1 }), line('a', { database: 'shop2', rowsInserted: 1 })]));
  assert.deepEqual(
    db.result()[0]!.tables.map((t) => t.database),
    ['shop2'],
  );
});

test('--table naming a partitioned table matches the lines of its partitions (and theirs), shown per partition', () => {
  const relation = (oid: number, name: string, parentOid?: number, namespaceOid = 2200) => ({
    oid,
    relNumber: oid,
    namespaceOid,
    name,
    kind: parentOid === undefined ? 'p' : 'r',
    block: 0,
    offset: oid,
    ...(parentOid === undefined ? {} : { parentOid }),
  });
  const snapshot: CatalogSnapshot = {
    lsn: '0/1',
    databases: [
      {
        oid: 5,
        name: 'postgres',
        pgClassRelNumber: 1259,
        pgNamespaceRelNumber: 2615,
        namespaces: [
          { oid: 2200, name: 'public', block: 0, offset: 1 },
          { oid: 3000, name: 'archive', block: 0, offset: 2 },
        ],
        relations: [
          relation(100, 'measurements'),
          relation(101, 'measurements_1', 100),
          relation(102, 'measurements_2', 100, 3000), // a partition may live in another schema
          relation(103, 'measurements_2_a', 102),
          relation(104, 'other'),
          relation(105, 'cycle_a', 106),
          relation(106, 'cycle_b', 105),
        ],
      },
    ],
  };
  const r = new SearchResults(filter({ table: { schema: 'public', name: 'measurements' } }));
  r.learnSnapshot(snapshot);
  r.learnSnapshot(undefined); // a backup without a snapshot adds nothing
  r.add(
    tx(1, 1, [
      line('measurements_1', { rowsDeleted: 30 }),
      line('measurements_2', { schema: 'archive', rowsDeleted: 60 }),
      line('measurements_2_a', { rowsDeleted: 10 }),
      line('other', { rowsDeleted: 5 }),
    ]),
  );
  r.add(tx(2, 2, [line('measurements_1', { rowsDeleted: 1, database: 'shop2' })])); // same name, other database
  r.add(tx(3, 3, [line('cycle_a', { rowsDeleted: 1 })]));
  const found = r.result();
  assert.deepEqual(
    found.map((x) => [x.xid, x.tables.map((t) => [`${t.schema}.${t.name}`, t.rowsDeleted])]),
    [
      [
        1,
        [
          ['archive.measurements_2', 60],
          ['public.measurements_1', 30],
          ['public.measurements_2_a', 10],
        ],
      ],
    ],
  );
  assert.ok(r.namesSeen.has('public.measurements') && r.namesSeen.has('archive.measurements_2'));
  // A partition by its own name, and an intermediate parent, still match as before.
  const sub = new SearchResults(filter({ table: { schema: 'archive', name: 'measurements_2' } }));
  sub.learnSnapshot(snapshot);
  sub.add(tx(1, 1, [line('measurements_1', { rowsDeleted: 30 }), line('measurements_2_a', { rowsDeleted: 10 })]));
  assert.deepEqual(
    sub.result()[0]!.tables.map((t) => t.name),
    ['measurements_2_a'],
  );
});
