// The merge and compare SQL recover-table prints, run against nothing: its text is the contract.
import { strict as assert } from 'node:assert';
import { test } from 'node:test';
import { mergeStatements } from './merge-sql.js';

const live = { schema: 'public', name: 'orders' };

test('with a primary key: insert the recovered rows whose key the live table lacks', () => {
  const m = mergeStatements({
    live,
    recovered: 'orders',
    primaryKey: ['id', 'Region'],
    liveExists: true,
    identityAlways: false,
  });
  assert.equal(
    m.merge,
    'INSERT INTO "public"."orders" SELECT * FROM "pgfleet_recovered"."orders" r WHERE NOT EXISTS (SELECT 1 FROM "public"."orders" t WHERE t."id" = r."id" AND t."Region" = r."Region");',
  );
  assert.equal(m.compare, 'SELECT * FROM "pgfleet_recovered"."orders" EXCEPT ALL SELECT * FROM "public"."orders";');
  assert.match(
    mergeStatements({ live, recovered: 'o', primaryKey: ['id'], liveExists: true, identityAlways: true }).merge,
    /^INSERT INTO "public"."orders" OVERRIDING SYSTEM VALUE SELECT/,
  );
});

test('without a primary key: the rows the live table lacks, compared whole', () => {
  assert.equal(
    mergeStatements({ live, recovered: 'o2', primaryKey: [], liveExists: true, identityAlways: false }).merge,
    'INSERT INTO "public"."orders" SELECT * FROM (SELECT * FROM "pgfleet_recovered"."o2" EXCEPT ALL SELECT * FROM "public"."orders") AS missing;',
  );
});

test('a dropped table is moved back under its own name', () => {
  assert.equal(
    mergeStatements({ live, recovered: 'orders', primaryKey: ['id'], liveExists: false, identityAlways: false }).merge,
    'ALTER TABLE "pgfleet_recovered"."orders" SET SCHEMA "public";',
  );
  assert.equal(
    mergeStatements({ live, recovered: 'o_old', primaryKey: [], liveExists: false, identityAlways: false }).merge,
    'ALTER TABLE "pgfleet_recovered"."o_old" RENAME TO "orders";\nALTER TABLE "pgfleet_recovered"."orders" SET SCHEMA "public";',
  );
});
