import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { RelationName, TransactionSummary } from '@pgfleet/pg';
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
