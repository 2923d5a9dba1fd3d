// The human summary of a finished recover-table job: where the rows are, how many, and the SQL.
import { strict as assert } from 'node:assert';
import { test } from 'node:test';
import { create } from '@bufbuild/protobuf';
import { RecoverTableResultSchema } from '@pgfleet/proto';
import { describeRecoverTable } from './recover-table-command.js';

test('per table: rows recovered and where, the live table now, key, foreign keys left out, compare and merge SQL, the times', () => {
  const text = describeRecoverTable(
    create(RecoverTableResultSchema, {
      backupLabel: '20261206-214158F',
      database: 'postgres',
      recoveredLsn: '0/5811C98',
      restoreSeconds: 1.2,
      recoverySeconds: 3.9,
      dumpLoadSeconds: 1.6,
      totalSeconds: 6.8,
      tables: [
        {
          table: 'public.orders',
          recoveredAs: 'pgfleet_recovered.orders',
          rowsRecovered: 2104n,
          liveRows: 61n,
          primaryKey: ['id'],
          mergeSql: 'INSERT INTO "public"."orders" SELECT 1;',
          compareSql: 'SELECT 2;',
          dumpBytes: 2048n,
        },
        {
          table: 'public.customers',
          recoveredAs: 'pgfleet_recovered.customers',
          rowsRecovered: 50n,
          liveRows: -1n,
          droppedForeignKeys: ['public.customers.c_fk'],
          mergeSql: 'ALTER TABLE a RENAME TO b;\nALTER TABLE b SET SCHEMA "public";',
          compareSql: 'SELECT 3;',
        },
      ],
    }),
  );
  assert.match(
    text,
    /recovered 2 table\(s\) of database postgres from backup 20261206-214158F \(recovered to LSN 0\/5811C98\) in 6\.8 s/,
  );
  assert.match(
    text,
    /public\.orders: 2104 row\(s\) recovered into pgfleet_recovered\.orders .*the live table holds 61 row\(s\) now/,
  );
  assert.match(text, /primary key: id/);
  assert.match(text, /merge: {3}INSERT INTO "public"\."orders" SELECT 1;/);
  assert.match(text, /public\.customers: 50 row\(s\) .*the live table does not exist \(dropped\)/);
  assert.match(text, /primary key: none/);
  assert.match(text, /foreign keys left out: public\.customers\.c_fk/);
  assert.match(text, /ALTER TABLE a RENAME TO b;\n {11}ALTER TABLE b SET SCHEMA "public";/);
});
