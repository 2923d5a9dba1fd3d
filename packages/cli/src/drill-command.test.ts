// `pgfleet drill`: the optional target (the restore flags, always promoting) and the human
// rendering of a drill result: verdict, RTO, amcheck, row counts.
import { strict as assert } from 'node:assert';
import { test } from 'node:test';
import { create } from '@bufbuild/protobuf';
import { PgfleetError } from '@pgfleet/core';
import { DrillResultSchema, TargetAction } from '@pgfleet/proto';
import { describeDrill, drillTargetFromOptions } from './drill-command.js';

test('drill targets: none means a fresh restore point; a given one always promotes', () => {
  assert.equal(drillTargetFromOptions({}), undefined);
  const t = drillTargetFromOptions({ 'target-lsn': '0/3000060', 'target-action': 'pause' })!;
  assert.deepEqual([t.target.case, t.target.value, t.action], ['lsn', '0/3000060', TargetAction.UNSPECIFIED]);
  assert.throws(() => drillTargetFromOptions({ 'target-lsn': 'x' }), (e: unknown) => PgfleetError.is(e, 'TargetInvalid'));
  assert.throws(() => drillTargetFromOptions({ 'target-exclusive': true }), (e: unknown) => PgfleetError.is(e, 'TargetInvalid'));
});

test('describeDrill: a pass with its RTO, amcheck and exact counts; a failure with its stage and reasons', () => {
  const passed = describeDrill(create(DrillResultSchema, {
    backupLabel: '20261124-130000F', ok: true, stage: 'done', restoreSeconds: 2.25, recoverySeconds: 4.5, rtoSeconds: 6.75, restoredBytes: 30n << 20n, recoveredLsn: '0/9000100',
    databasesChecked: 1, relationsChecked: 42, countsCompared: true, tablesCompared: 4, countsEqual: true, countChangeBound: 0n,
    source: { restorePoint: 'pgfleet-drill-j1', lsn: '0/9000100' },
  }));
  assert.match(passed, /^drill PASSED: backup 20261124-130000F$/m);
  assert.match(passed, /^RTO 6\.8 s \(restore 2\.3 s of 30 MB, recovery 4\.5 s\), recovered to 0\/9000100$/m);
  assert.match(passed, /^amcheck: clean, 42 relation\(s\) in 1 database\(s\)$/m);
  assert.match(passed, /^row counts: equal in 4 table\(s\) \(source quiet: exact comparison; restore point pgfleet-drill-j1 at 0\/9000100\)$/m);

  const failed = describeDrill(create(DrillResultSchema, {
    backupLabel: '20261124-130000F', ok: false, stage: 'counts', reasons: ['row counts differ in 1 table(s) (sum of differences 3)'], restoreSeconds: 2, recoverySeconds: 1, rtoSeconds: 3,
    databasesChecked: 1, relationsChecked: 42, amcheckFindings: [{ database: 'app', relation: 'public.t_pkey', check: 'bt_index_check', message: 'item order invariant violated' }],
    countsCompared: true, tablesCompared: 4, countDiffs: [{ database: 'app', schema: 'public', table: 't', sourceRows: 10n, restoredRows: 7n }], countChangeBound: 0n,
  }));
  assert.match(failed, /^drill FAILED in stage counts: backup 20261124-130000F$/m);
  assert.match(failed, /^ {2}reason: row counts differ in 1 table\(s\)/m);
  assert.match(failed, /^ {2}bt_index_check app\.public\.t_pkey: item order invariant violated$/m);
  assert.match(failed, /^app +public\.t +10 +7$/m);
});
