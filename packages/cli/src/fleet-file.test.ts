// The fleet file of `pgfleet apply`: the shipped example parses to exactly its settings, and
// every kind of mistake fails before any connection with the key path and what is allowed.
import { strict as assert } from 'node:assert';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, test } from 'node:test';
import { PgfleetError } from '@pgfleet/core';
import { loadFleetFile, parseFleetDocument } from './fleet-file.js';

const EXAMPLE = fileURLToPath(new URL('../../../deploy/config/fleet.yaml', import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'pgfleet-fleet-file-'));
after(() => rmSync(dir, { recursive: true, force: true }));

function fails(doc: unknown, pattern: RegExp): void {
  assert.throws(
    () => parseFleetDocument(doc, 'fleet file f.yaml'),
    (err: unknown) => PgfleetError.is(err, 'InvalidConfig') && pattern.test(err.message),
    JSON.stringify(doc),
  );
}

test('the example in deploy/config parses to its settings, keys as the API names them', () => {
  const f = loadFleetFile(EXAMPLE);
  assert.deepEqual(f.fleet, {
    full: '0 1 * * 0',
    incr: '0 1 * * 1-6',
    spreadMinutes: 60,
    drill: '0 4 * * 3',
    pitrWindowDays: 7,
    daily: 7,
    weekly: 4,
    monthly: 12,
    minFull: 2,
    rpoThresholdSeconds: 300,
  });
  assert.deepEqual(f.clusters, {
    orders: { full: '30 0 * * *', incr: '0 */4 * * *', pitrWindowDays: 14, yearly: 3, rpoThresholdSeconds: 60 },
    reporting: { incr: '', pitrWindowDays: 1, monthly: 0 },
  });
});

test('sections may be absent or empty; an empty cluster section clears its override', () => {
  assert.deepEqual(parseFleetDocument({ clusters: { a: null, b: {} } }, 'f'), { clusters: { a: {}, b: {} } });
  assert.deepEqual(parseFleetDocument({ fleet: { daily: 3 } }, 'f'), { fleet: { daily: 3 }, clusters: {} });
});

test('mistakes name the key path and what is allowed', () => {
  fails(null, /is empty/);
  fails(['fleet'], /expected a mapping with the keys fleet, clusters/);
  fails({ fleets: {} }, /unknown key 'fleets'; the top level holds fleet and clusters/);
  fails(
    { fleet: { dayly: 3 } },
    /key 'fleet\.dayly'.*known keys: full, diff, incr, drill, logical, dump-drill, spread-minutes/,
  );
  fails({ clusters: { db1: { daily: 'seven' } } }, /key 'clusters\.db1\.daily'.*expected an integer from 0 to 100000/);
  fails({ clusters: { db1: { daily: -1 } } }, /key 'clusters\.db1\.daily'/);
  fails({ fleet: { 'pitr-window-days': 1.5 } }, /key 'fleet\.pitr-window-days'.*an integer/);
  fails({ fleet: { full: 5 } }, /key 'fleet\.full'.*a string/);
  fails({ fleet: { full: '0 1 * *' } }, /key 'fleet\.full': '0 1 \* \*' is not a 5-field cron expression/);
  fails({ clusters: ['db1'] }, /key 'clusters': expected a mapping/);
  fails({ clusters: { db1: 'daily' } }, /key 'clusters\.db1': expected a mapping of policy keys/);
});

test('cluster names in a fleet file follow the one rule agents register under (PGF-1010)', () => {
  // `shop/wal` would alias shop's WAL prefix; upper case aliases on case-insensitive storage.
  for (const name of ['a/b', 'shop/wal', 'Shop', '..', 'a..b', '-x', 'x'.repeat(64), 'a b', '']) {
    assert.throws(
      () => parseFleetDocument({ clusters: { [name]: {} } }, 'fleet file f.yaml'),
      (err: unknown) =>
        PgfleetError.is(err, 'InvalidClusterName') &&
        err.message.includes('is not a cluster name') &&
        err.message.length < 400,
      name,
    );
  }
  for (const name of ['db1', 'db-0042.prod', 'a_b', 'x'.repeat(63)])
    assert.deepEqual(Object.keys(parseFleetDocument({ clusters: { [name]: {} } }, 'f').clusters), [name]);
});

test('YAML errors and unreadable files name the file', () => {
  const bad = join(dir, 'bad.yaml');
  writeFileSync(bad, 'fleet:\n  full: * * * * *\n');
  assert.throws(
    () => loadFleetFile(bad),
    (err: unknown) =>
      PgfleetError.is(err, 'InvalidConfig') && err.message.startsWith(`fleet file ${bad} is not valid YAML`),
  );
  assert.throws(
    () => loadFleetFile(join(dir, 'missing.yaml')),
    (err: unknown) => PgfleetError.is(err, 'InvalidConfig') && /cannot be read/.test(err.message),
  );
});
