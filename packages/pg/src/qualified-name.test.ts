// Table names as recover-table reads them: PostgreSQL's identifier rules.
import { strict as assert } from 'node:assert';
import { test } from 'node:test';
import { PgfleetError } from '@pgfleet/core';
import { parseIdentifiers, parseRecoveredName, parseTableName, recoverTablePlan } from './qualified-name.js';

const invalid = (err: unknown) => PgfleetError.is(err, 'RecoverTableNameInvalid');

test('identifiers fold like PostgreSQL: unquoted to lower case, quoted kept with "" for a quote', () => {
  assert.deepEqual(parseTableName('public.Orders'), { schema: 'public', name: 'orders' });
  assert.deepEqual(parseTableName('"Sales"."Order ""Lines"""'), { schema: 'Sales', name: 'Order "Lines"' });
  assert.deepEqual(parseTableName(' app.t$1 '), { schema: 'app', name: 't$1' });
  assert.deepEqual(parseIdentifiers('a."b.c"'), ['a', 'b.c']);
  for (const bad of [
    'orders',
    'a.b.c',
    'public.',
    '.orders',
    'public."',
    'public.""',
    '1abc.x',
    `public.${'x'.repeat(64)}`,
    'a b.c',
  ])
    assert.throws(() => parseTableName(bad), invalid, bad);
});

test('--into: a name, or pgfleet_recovered.name, nothing else', () => {
  assert.equal(parseRecoveredName('orders_before'), 'orders_before');
  assert.equal(parseRecoveredName('pgfleet_recovered."Old"'), 'Old');
  for (const bad of ['public.orders', 'a.b.c', '', 'x-y', `${'y'.repeat(64)}`])
    assert.throws(() => parseRecoveredName(bad), invalid, bad);
});

test('a plan: one --into per --table or none, no two tables under one name', () => {
  assert.deepEqual(recoverTablePlan(['public.orders', 'app.orders2'], []), [
    { table: { schema: 'public', name: 'orders' }, into: 'orders' },
    { table: { schema: 'app', name: 'orders2' }, into: 'orders2' },
  ]);
  assert.deepEqual(recoverTablePlan(['public.orders'], ['o_before'])[0]!.into, 'o_before');
  assert.throws(() => recoverTablePlan([], []), invalid);
  assert.throws(() => recoverTablePlan(['public.a', 'public.b'], ['x']), invalid);
  assert.throws(() => recoverTablePlan(['public.orders', 'app.orders'], []), /two tables would land/);
});
