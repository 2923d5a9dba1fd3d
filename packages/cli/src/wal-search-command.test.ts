// `pgfleet wal search` flags checked before any call, and the table it prints.
import { strict as assert } from 'node:assert';
import { test } from 'node:test';
import { create } from '@bufbuild/protobuf';
import { timestampFromDate } from '@bufbuild/protobuf/wkt';
import { parseQualifiedTableName, PgfleetError } from '@pgfleet/core';
import { WalSearchResultSchema } from '@pgfleet/proto';
import { describeWalSearch, walSearchFromOptions } from './wal-search-command.js';

test('table names follow PostgreSQL identifier rules', () => {
  assert.deepEqual(parseQualifiedTableName('orders'), { schema: 'public', name: 'orders' });
  assert.deepEqual(parseQualifiedTableName('Sales.Orders'), { schema: 'sales', name: 'orders' });
  assert.deepEqual(parseQualifiedTableName('"Sales"."Or.ders"'), { schema: 'Sales', name: 'Or.ders' });
  for (const bad of ['a.b.c', '', 'a.', '.b', 'a b', '"unterminated'])
    assert.equal(parseQualifiedTableName(bad), undefined, bad);
});

test('flags: a search, or PGF-6122 naming what is wrong', () => {
  const s = walSearchFromOptions({
    table: 'Orders',
    kind: 'delete,truncate',
    'min-rows': 10,
    since: '2026-12-06T21:00:00Z',
  });
  assert.equal(s.table, 'public.orders');
  assert.deepEqual(s.kinds, ['delete', 'truncate']);
  assert.equal(s.minRows, 10n);
  for (const [flags, what] of [
    [{ table: 'a.b.c' }, /--table/],
    [{ kind: 'erase' }, /--kind 'erase'/],
    [{ since: 'yesterday' }, /--since/],
    [{ since: '2026-12-06T21:00:00Z', until: '2026-12-06T20:00:00Z' }, /before --since/],
  ] as const)
    assert.throws(
      () => walSearchFromOptions(flags),
      (err: unknown) => PgfleetError.is(err, 'WalSearchInvalid') && what.test(err.message),
    );
});

test('the table: one line per table of a transaction, and the commands to run next', () => {
  const r = create(WalSearchResultSchema, {
    transactions: [
      {
        xid: 774,
        commitTime: timestampFromDate(new Date('2026-12-06T21:42:07Z')),
        commitLsn: '0/5811D30',
        firstLsn: '0/57E9A28',
        tables: [
          { database: 'postgres', schema: 'public', name: 'orders', relation: '1663/5/16384', rowsDeleted: 500n },
          { database: 'postgres', relation: '1663/5/16999', rowsDeleted: 3n },
        ],
      },
    ],
    matched: 1,
    backupLabel: '20261206-214158F',
    snapshot: true,
    fromSegment: '000000010000000000000004',
    toSegment: '000000010000000000000005',
    segmentsRead: 2,
    bytesRead: 32n << 20n,
    elapsedSeconds: 0.5,
  });
  const text = describeWalSearch('shop', r);
  assert.match(text, /774 +2026-12-06 21:42:07Z +0\/5811D30 +0\/57E9A28 +postgres +public\.orders +500/);
  assert.match(text, /unknown relation 1663\/5\/16999/);
  assert.match(text, /pgfleet restore shop --before-xid 774/);
  assert.match(text, /pgfleet recover-table shop --table public\.orders --database postgres --before-xid 774/);
  assert.match(text, /2 segment\(s\), 32 MB in 0\.5 s \(64 MB\/s\)/);
});
