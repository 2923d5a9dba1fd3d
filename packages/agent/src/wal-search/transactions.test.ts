import { test } from 'node:test';
import assert from 'node:assert/strict';
import { TransactionLedger, DESTRUCTIVE_KINDS, type SearchFilter } from './transactions.js';

const rel = (relNumber: number) => ({ spcOid: 1663, dbOid: 5, relNumber });
const name = (n: string) => ({ database: 'postgres', schema: 'public', name: n });
const filter = (over: Partial<SearchFilter> = {}): SearchFilter => ({
  kinds: DESTRUCTIVE_KINDS,
  minRows: 0,
  limit: 50,
  ...over,
});
const at = (s: number) => new Date(Date.UTC(2026, 11, 6, 12, 0, s));

test('subtransactions fold into the commit; aborted ones and aborted transactions vanish', () => {
  const l = new TransactionLedger(filter());
  l.rows(100, 10, rel(16400), name('orders'), 'delete', 1);
  l.rows(101, 20, rel(16400), name('orders'), 'delete', 1); // subxact 101 of 100
  l.rows(102, 30, rel(16400), name('orders'), 'delete', 1); // subxact 102, rolled back to a savepoint
  l.abort(102, []);
  l.rows(200, 15, rel(16401), name('other'), 'delete', 5);
  l.abort(200, []);
  l.commit(100, [101], 40, at(1), 1);
  const [x, ...rest] = l.result();
  assert.equal(rest.length, 0);
  assert.equal(x!.xid, 100);
  assert.equal(x!.firstLsn, 10);
  assert.equal(x!.commitLsn, 40);
  assert.equal(x!.tables[0]!.rowsDeleted, 2);
  assert.equal(l.committed, 1);
});

test('culprits first: truncate and drop, then rows deleted + updated, then time; the limit keeps the best', () => {
  const l = new TransactionLedger(filter({ limit: 3 }));
  let lsn = 0;
  const tx = (xid: number, rows: number, s: number) => {
    l.rows(xid, ++lsn, rel(16400), name('t'), 'update', rows);
    l.commit(xid, [], ++lsn, at(s), 1);
  };
  for (let i = 0; i < 100; i++) tx(1000 + i, 1, i % 50);
  tx(5, 500, 1);
  tx(6, 500, 0);
  l.catalog(7, ++lsn, { kind: 'truncate', rel: rel(16500), table: name('logs') });
  l.commit(7, [], ++lsn, at(30), 1);
  assert.deepEqual(
    l.result().map((x) => x.xid),
    [7, 6, 5],
  );
  assert.equal(l.matched, 103);
});

test('filters: kinds, database, table (also by its name before a rename), min-rows, since/until', () => {
  const l = new TransactionLedger(
    filter({ table: { schema: 'public', name: 'items' }, minRows: 2, since: at(5), until: at(50) }),
  );
  l.rows(1, 1, rel(1), name('items'), 'delete', 3);
  l.commit(1, [], 2, at(10), 1);
  l.rows(2, 3, rel(1), name('items'), 'delete', 1); // below min-rows
  l.commit(2, [], 4, at(11), 1);
  l.rows(3, 5, rel(1), name('items'), 'delete', 9); // before since
  l.commit(3, [], 6, at(1), 1);
  l.rows(4, 7, rel(2), name('items2'), 'delete', 4);
  l.catalog(4, 8, { kind: 'rename', rel: rel(2), table: name('items2'), from: name('items') });
  l.commit(4, [], 9, at(20), 1);
  l.rows(5, 10, rel(1), name('items'), 'insert', 50); // inserts are not destructive
  l.commit(5, [], 11, at(21), 1);
  assert.deepEqual(
    l.result().map((x) => x.xid),
    [4, 1],
  );
  const db = new TransactionLedger(filter({ database: 'shop2', kinds: ['all'] }));
  db.rows(1, 1, rel(1), name('a'), 'insert', 1);
  db.rows(1, 2, { ...rel(1), dbOid: 6 }, { ...name('a'), database: 'shop2' }, 'insert', 1);
  db.commit(1, [], 3, at(1), 1);
  assert.deepEqual(
    db.result()[0]!.tables.map((t) => t.database),
    ['shop2'],
  );
});
