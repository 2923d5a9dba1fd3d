// recover-table's flags: names as lists (repeated or comma-separated), one target, always promoted.
import { strict as assert } from 'node:assert';
import { test } from 'node:test';
import { PgfleetError } from '@pgfleet/core';
import { TargetAction } from '@pgfleet/proto';
import { recoverTableRequestFromOptions, splitNameList } from './recover-table-command.js';

test('name lists split at commas outside quotes', () => {
  assert.deepEqual(splitNameList('public.a, public.b'), ['public.a', 'public.b']);
  assert.deepEqual(splitNameList('"odd,name".t,public.x'), ['"odd,name".t', 'public.x']);
  assert.deepEqual(splitNameList(undefined), []);
  assert.deepEqual(splitNameList(',,'), []);
});

test('the request: tables, their new names, the database, an exclusive xid target that promotes', () => {
  const req = recoverTableRequestFromOptions('shop', {
    table: 'public.orders,public.items',
    into: 'o_before,i_before',
    database: 'app',
    'before-xid': '774',
  });
  assert.deepEqual(
    [req.tables, req.into, req.database, req.backupLabel],
    [['public.orders', 'public.items'], ['o_before', 'i_before'], 'app', ''],
  );
  assert.deepEqual(
    [req.target.target, req.target.inclusive, req.target.action],
    [{ case: 'xid', value: '774' }, false, TargetAction.PROMOTE],
  );
  assert.throws(
    () => recoverTableRequestFromOptions('shop', { 'before-xid': '774' }),
    (e: unknown) => PgfleetError.is(e, 'RecoverTableNameInvalid'),
  );
  assert.throws(
    () => recoverTableRequestFromOptions('shop', { table: 'public.orders' }),
    (e: unknown) => PgfleetError.is(e, 'TargetInvalid'),
  );
  assert.throws(
    () =>
      recoverTableRequestFromOptions('shop', {
        table: 'public.orders',
        'before-xid': '1',
        'target-time': '2026-01-01T00:00:00Z',
      }),
    (e: unknown) => PgfleetError.is(e, 'TargetInvalid'),
  );
});
