import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ErrorCodes, PgfleetError } from '@pgfleet/core';
import { serverLogExcerpt } from '@pgfleet/pg';
import { compareTableCounts, failureReasons, tableKey, type RestoredCounts } from './drill.js';
import { requireDrillVersion, type TableRowCountInit } from './capture.js';
import { defaultScratchDir } from '../options.js';

const t = (table: string, rows: bigint, database = 'app'): TableRowCountInit => ({
  database,
  schema: 'public',
  table,
  rows,
});
/** The copy's counts: { db: { table: rows } } in schema public. */
const copy = (dbs: Record<string, Record<string, bigint>>): RestoredCounts =>
  new Map(
    Object.entries(dbs).map(([db, tables]) => [
      db,
      new Map(Object.entries(tables).map(([name, rows]) => [tableKey('public', name), rows])),
    ]),
  );

test('equal counts pass, exact or bounded', () => {
  const tables = [t('a', 10n), t('b', 0n), t('c', 5n, 'other')];
  const restored = copy({ app: { a: 10n, b: 0n }, other: { c: 5n } });
  for (const changeBound of [0n, 100n]) {
    const r = compareTableCounts({ tables, changeBound }, restored);
    assert.equal(r.ok, true);
    assert.equal(r.differing, 0);
    assert.deepEqual(r.diffs, []);
    assert.equal(r.reason, undefined);
  }
});

test('a table missing from the copy fails whatever the change bound', () => {
  const tables = [t('a', 10n), t('gone', 3n)];
  for (const changeBound of [0n, 1_000_000n]) {
    const r = compareTableCounts({ tables, changeBound }, copy({ app: { a: 10n } }));
    assert.equal(r.ok, false, `bound ${changeBound}`);
    assert.equal(r.missing, 1);
    assert.deepEqual(r.diffs, [
      { database: 'app', schema: 'public', table: 'gone', sourceRows: 3n, restoredRows: -1n },
    ]);
    assert.match(r.reason!, /1 table\(s\) of the source missing from the restored copy: app\.public\.gone/);
  }
  // A whole database missing from the copy: each of its tables is missing.
  const r = compareTableCounts(
    { tables: [t('a', 1n), t('x', 0n, 'lost')], changeBound: 50n },
    copy({ app: { a: 1n } }),
  );
  assert.equal(r.ok, false);
  assert.equal(r.missing, 1);
  assert.match(r.reason!, /lost\.public\.x/);
});

test('an empty table missing from the copy fails too (zero rows are still a table)', () => {
  const r = compareTableCounts({ tables: [t('empty', 0n)], changeBound: 10n }, copy({ app: {} }));
  assert.equal(r.ok, false);
  assert.equal(r.missing, 1);
});

test('a table only the copy has: a difference on a quiet source, its rows count against the bound on a busy one', () => {
  const tables = [t('a', 10n)];
  const restored = copy({ app: { a: 10n, fresh: 4n } });
  const quiet = compareTableCounts({ tables, changeBound: 0n }, restored);
  assert.equal(quiet.ok, false);
  assert.equal(quiet.extra, 1);
  assert.deepEqual(quiet.diffs, [
    { database: 'app', schema: 'public', table: 'fresh', sourceRows: -1n, restoredRows: 4n },
  ]);
  assert.match(quiet.reason!, /1 not counted on the source.*must be equal/);
  assert.equal(
    compareTableCounts({ tables, changeBound: 4n }, restored).ok,
    true,
    'created and filled while counted: within the bound',
  );
  assert.equal(
    compareTableCounts({ tables, changeBound: 3n }, restored).ok,
    false,
    'more rows than the source changed',
  );
  // An extra database of the copy is the same: its tables were not counted.
  assert.equal(compareTableCounts({ tables, changeBound: 0n }, copy({ app: { a: 10n }, newdb: { t: 0n } })).ok, false);
});

test('differences within the change bound pass, beyond it fail, and never on a quiet source', () => {
  const tables = [t('a', 100n), t('b', 50n), t('c', 7n)];
  const restored = copy({ app: { a: 103n, b: 48n, c: 7n } }); // |+3| + |-2| = 5
  const within = compareTableCounts({ tables, changeBound: 5n }, restored);
  assert.equal(within.ok, true);
  assert.equal(within.sumAbs, 5n);
  assert.equal(within.differing, 2);
  assert.deepEqual(
    within.diffs.map((d) => [d.table, d.sourceRows, d.restoredRows]),
    [
      ['a', 100n, 103n],
      ['b', 50n, 48n],
    ],
  );
  const beyond = compareTableCounts({ tables, changeBound: 4n }, restored);
  assert.equal(beyond.ok, false);
  assert.match(
    beyond.reason!,
    /row counts differ in 2 table\(s\), sum of differences 5, more than the 4 row change\(s\)/,
  );
  const quiet = compareTableCounts({ tables, changeBound: 0n }, restored);
  assert.equal(quiet.ok, false);
  assert.match(quiet.reason!, /the source was quiet at the restore point, so they must be equal/);
});

test('tables are told apart by database and schema', () => {
  const tables = [
    { database: 'app', schema: 's1', table: 't', rows: 1n },
    { database: 'app', schema: 's2', table: 't', rows: 2n },
  ];
  const restored: RestoredCounts = new Map([
    [
      'app',
      new Map([
        [tableKey('s1', 't'), 1n],
        [tableKey('s2', 't'), 2n],
      ]),
    ],
  ]);
  assert.equal(compareTableCounts({ tables, changeBound: 0n }, restored).ok, true);
  const swapped: RestoredCounts = new Map([
    [
      'app',
      new Map([
        [tableKey('s1', 't'), 2n],
        [tableKey('s2', 't'), 1n],
      ]),
    ],
  ]);
  assert.equal(compareTableCounts({ tables, changeBound: 0n }, swapped).ok, false);
});

test('the reported differences are capped, the count of differing tables is not', () => {
  const tables = Array.from({ length: 250 }, (_, i) => t(`t${i}`, 1n));
  const r = compareTableCounts(
    { tables, changeBound: 0n },
    copy({ app: Object.fromEntries(tables.map((x) => [x.table, 2n])) }),
  );
  assert.equal(r.differing, 250);
  assert.equal(r.diffs.length, 200);
  assert.equal(r.sumAbs, 250n);
});

test('drills refuse PostgreSQL before 14 up front, with a stable code', () => {
  for (const v of [90624, 120018, 130014]) {
    assert.throws(
      () => requireDrillVersion(v, 'cluster main'),
      (e: unknown) =>
        e instanceof PgfleetError &&
        e.code === ErrorCodes.PgVersionUnsupported.code &&
        e.errorName === 'PgVersionUnsupported' &&
        new RegExp(
          `cluster main is PostgreSQL ${Math.floor(v / 10000)}: restore drills need PostgreSQL 14 or later`,
        ).test(e.message),
    );
  }
  for (const v of [140000, 150019, 170002]) requireDrillVersion(v, 'cluster main');
});

test('the default scratch area is beside the data directory, not in the temp directory', () => {
  assert.equal(defaultScratchDir('/var/lib/postgresql/15/main'), '/var/lib/postgresql/15/pgfleet-scratch');
});

test("a failed stage always says why: PostgreSQL's first FATAL quoted first, then what the stage saw", () => {
  const log = serverLogExcerpt(
    [
      "2026-11-24 12:00:00.100 UTC [7] FATAL:  requested timeline 2 is not a child of this server's history",
      '2026-11-24 12:00:00.101 UTC [6] LOG:  startup process (PID 7) exited with exit code 1',
    ].join('\n'),
  );
  const exited = failureReasons(
    'recovery',
    new PgfleetError('DrillFailed', "the drill's PostgreSQL exited during recovery"),
    log,
  );
  assert.deepEqual(exited.reasons, [
    "recovery failed: FATAL: requested timeline 2 is not a child of this server's history",
    "recovery: the drill's PostgreSQL exited during recovery",
  ]);
  assert.equal(
    exited.summary,
    "the drill's PostgreSQL exited during recovery (PostgreSQL: FATAL: requested timeline 2 is not a child of this server's history)",
  );
  // Nothing fatal: the last ERROR or WARNING is the clue.
  const paused = failureReasons(
    'recovery',
    new PgfleetError('DrillFailed', 'recovery paused instead of promoting (at 0/3000000)'),
    serverLogExcerpt(
      '2026-11-24 12:00:00.100 UTC [7] WARNING:  hot standby is not possible because of insufficient parameter settings',
    ),
  );
  assert.deepEqual(paused.reasons, [
    'recovery: recovery paused instead of promoting (at 0/3000000) (server log: WARNING: hot standby is not possible because of insufficient parameter settings)',
  ]);
  // No server (restore stage), and an error without a message: still a reason.
  assert.deepEqual(failureReasons('restore', new PgfleetError('Internal', ''), undefined).reasons, [
    'restore: Internal (PGF-9001) without a message',
  ]);
  assert.deepEqual(
    failureReasons('restore', new PgfleetError('WalNotInRepository', 'segment X is missing'), serverLogExcerpt(''))
      .reasons,
    ['restore: segment X is missing'],
  );
});
