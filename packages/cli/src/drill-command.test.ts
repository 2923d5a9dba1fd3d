// `pgfleet drill`: the optional target (the restore flags, always promoting) and the human
// rendering of a drill result: verdict, RTO, amcheck, row counts.
import { strict as assert } from 'node:assert';
import { test } from 'node:test';
import { create } from '@bufbuild/protobuf';
import { PgfleetError } from '@pgfleet/core';
import { DrillResultSchema, TargetAction } from '@pgfleet/proto';
import { describeDrill, drillTargetFromOptions, dumpDrillFromOptions } from './drill-command.js';
import { describeDrillDetails } from './drill-format.js';

test('drill targets: none means a fresh restore point; a given one always promotes', () => {
  assert.equal(drillTargetFromOptions({}), undefined);
  const t = drillTargetFromOptions({ 'target-lsn': '0/3000060', 'target-action': 'pause' })!;
  assert.deepEqual([t.target.case, t.target.value, t.action], ['lsn', '0/3000060', TargetAction.UNSPECIFIED]);
  assert.throws(
    () => drillTargetFromOptions({ 'target-lsn': 'x' }),
    (e: unknown) => PgfleetError.is(e, 'TargetInvalid'),
  );
  assert.throws(
    () => drillTargetFromOptions({ 'target-exclusive': true }),
    (e: unknown) => PgfleetError.is(e, 'TargetInvalid'),
  );
});

test('describeDrill: a pass with its RTO, amcheck and exact counts; a failure with its stage and reasons', () => {
  const passed = describeDrill(
    create(DrillResultSchema, {
      backupLabel: '20261124-130000F',
      ok: true,
      stage: 'done',
      restoreSeconds: 2.25,
      recoverySeconds: 4.5,
      rtoSeconds: 6.75,
      restoredBytes: 30n << 20n,
      recoveredLsn: '0/9000100',
      databasesChecked: 1,
      relationsChecked: 42,
      countsCompared: true,
      tablesCompared: 4,
      countsEqual: true,
      countChangeBound: 0n,
      source: { restorePoint: 'pgfleet-drill-j1', lsn: '0/9000100' },
    }),
  );
  assert.match(passed, /^drill PASSED: backup 20261124-130000F$/m);
  assert.match(passed, /^RTO 6\.8 s \(restore 2\.3 s of 30 MB, recovery 4\.5 s\), recovered to 0\/9000100$/m);
  assert.match(passed, /^amcheck: clean, 42 relation\(s\) in 1 database\(s\)$/m);
  assert.match(
    passed,
    /^row counts: equal in 4 table\(s\) \(source quiet: exact comparison; restore point pgfleet-drill-j1 at 0\/9000100\)$/m,
  );

  const failed = describeDrill(
    create(DrillResultSchema, {
      backupLabel: '20261124-130000F',
      ok: false,
      stage: 'counts',
      reasons: ['row counts differ in 1 table(s) (sum of differences 3)'],
      restoreSeconds: 2,
      recoverySeconds: 1,
      rtoSeconds: 3,
      databasesChecked: 1,
      relationsChecked: 42,
      amcheckFindings: [
        {
          database: 'app',
          relation: 'public.t_pkey',
          check: 'bt_index_check',
          message: 'item order invariant violated',
        },
      ],
      countsCompared: true,
      tablesCompared: 4,
      countDiffs: [{ database: 'app', schema: 'public', table: 't', sourceRows: 10n, restoredRows: 7n }],
      countChangeBound: 0n,
    }),
  );
  assert.match(failed, /^drill FAILED in stage counts: backup 20261124-130000F$/m);
  assert.match(failed, /^ {2}reason: row counts differ in 1 table\(s\)/m);
  assert.match(failed, /^ {2}bt_index_check app\.public\.t_pkey: item order invariant violated$/m);
  assert.match(failed, /^app +public\.t +10 +7$/m);
});

test("a drill that failed in recovery: PostgreSQL's words, its log lines and the kept directory", () => {
  const fatal = "2026-11-24 12:00:00.100 UTC [7] FATAL:  requested timeline 2 is not a child of this server's history";
  const d = create(DrillResultSchema, {
    backupLabel: '20261124-130000F',
    ok: false,
    stage: 'recovery',
    restoreSeconds: 2,
    reasons: [
      "recovery failed: FATAL: requested timeline 2 is not a child of this server's history",
      "recovery: the drill's PostgreSQL exited during recovery",
    ],
    postgresLogProblems: [fatal],
    postgresLogTail: [
      '2026-11-24 12:00:00.000 UTC [6] LOG:  starting PostgreSQL 15.8',
      fatal,
      '2026-11-24 12:00:00.200 UTC [6] LOG:  database system is shut down',
    ],
    keptDir: '/scratch/pgfleet-drill-j1',
  });
  const text = describeDrill(d);
  assert.match(text, /^drill FAILED in stage recovery: backup 20261124-130000F$/m);
  assert.match(
    text,
    /^ {2}reason: recovery failed: FATAL: requested timeline 2 is not a child of this server's history$/m,
  );
  assert.match(
    text,
    /^PostgreSQL log, FATAL\/PANIC\/ERROR\/WARNING lines:\n {2}2026-11-24 12:00:00\.100 UTC \[7\] FATAL: {2}requested timeline 2/m,
  );
  assert.match(
    text,
    /^PostgreSQL log, last 3 line\(s\):\n {2}.*starting PostgreSQL 15\.8\n {2}.*FATAL.*\n {2}.*database system is shut down$/m,
  );
  assert.match(
    text,
    /^scratch directory kept: \/scratch\/pgfleet-drill-j1 \(restored data directory \/scratch\/pgfleet-drill-j1\/data, server log \/scratch\/pgfleet-drill-j1\/postgres\.log\)/m,
  );

  const details = describeDrillDetails([
    { jobId: 'j1', result: d },
    { jobId: 'j0', result: create(DrillResultSchema, { ok: true, stage: 'done' }) },
  ]).join('\n');
  assert.match(
    details,
    /^j1 \(failed in stage recovery\):\n {2}PostgreSQL log:\n {4}2026-11-24 12:00:00\.100 UTC \[7\] FATAL: {2}requested timeline 2/m,
  );
  assert.match(details, /\(last 3 log line\(s\): pgfleet job j1\)/);
  assert.doesNotMatch(details, /j0/, 'a drill with nothing to show adds no lines');
});

test('dump drills: --dump latest or a label, not with a backup or a target; the verdict names the dump and the tables', () => {
  assert.equal(dumpDrillFromOptions({}, false), undefined);
  assert.deepEqual(dumpDrillFromOptions({ dump: 'latest' }, false), { label: '', database: '', jobs: 2 });
  assert.deepEqual(dumpDrillFromOptions({ dump: '20261207-040000-000L', database: 'shop', jobs: 4 }, false), {
    label: '20261207-040000-000L',
    database: 'shop',
    jobs: 4,
  });
  for (const [s, target] of [
    [{ dump: 'latest', backup: '20261124-130000F' }, false],
    [{ dump: 'latest' }, true],
    [{ database: 'shop' }, false],
  ] as const)
    assert.throws(
      () => dumpDrillFromOptions(s, target),
      (e: unknown) => PgfleetError.is(e, 'InvalidArgument'),
    );
  const failed = describeDrill(
    create(DrillResultSchema, {
      dumpLabel: '20261207-040000-000L',
      dumpDatabases: ['shop'],
      ok: false,
      stage: 'counts',
      reasons: ["row counts differ from the dump's in 1 table(s): shop.sales.orders (dump 30000, restored 29999)"],
      restoreSeconds: 4.2,
      rtoSeconds: 4.2,
      restoredBytes: 1048576n,
      countsCompared: true,
      countsEqual: false,
      tablesCompared: 5,
      countDiffs: [{ database: 'shop', schema: 'sales', table: 'orders', sourceRows: 30000n, restoredRows: 29999n }],
    }),
  );
  assert.match(failed, /^dump drill FAILED in stage counts: dump 20261207-040000-000L \(shop\)/);
  assert.match(failed, /reason: row counts differ from the dump's in 1 table\(s\): shop\.sales\.orders/);
  assert.match(failed, /restore time 4\.2 s \(fetch and pg_restore of 1\.0 MB\)/);
  assert.match(failed, /row counts: 1 table\(s\) differ in 5 table\(s\)/);
  assert.match(failed, /DUMP\s+RESTORED/);
  assert.doesNotMatch(failed, /amcheck|restore point/);
});
