// Recovery target flags: exactly one target, each in a form PostgreSQL accepts.
import { strict as assert } from 'node:assert';
import { test } from 'node:test';
import { ErrorCodes, PgfleetError } from '@pgfleet/core';
import { TargetAction } from '@pgfleet/proto';
import { parseTargetTime, parsedTimeToDate, recoveryTargetFromOptions } from './target.js';

const iso = (text: string) => parsedTimeToDate(parseTargetTime(text)).toISOString();

test('ISO-8601 and PostgreSQL time formats', () => {
  assert.equal(iso('2026-03-01T12:00:00Z'), '2026-03-01T12:00:00.000Z');
  assert.equal(iso('2026-03-01 12:00:00+00'), '2026-03-01T12:00:00.000Z');
  assert.equal(iso('2026-03-01 14:30:00.250+02'), '2026-03-01T12:30:00.250Z');
  assert.equal(iso('2026-03-01 12:00:00-05:30'), '2026-03-01T17:30:00.000Z');
  assert.equal(iso('2026-03-01T12:00:00.5+0100'), '2026-03-01T11:00:00.500Z');
  assert.equal(iso('2026-03-01 12:00:00 UTC'), '2026-03-01T12:00:00.000Z');
  assert.equal(iso('2026-03-01 12:00'), new Date(2026, 2, 1, 12, 0, 0).toISOString()); // no zone: local time
  // Microseconds survive (Date alone would drop them).
  assert.deepEqual(parseTargetTime('2026-03-01 12:00:00.123456+00'), {
    seconds: BigInt(Date.parse('2026-03-01T12:00:00Z') / 1000),
    nanos: 123456000,
  });
});

test('bad times are PGF-6003', () => {
  for (const bad of [
    'yesterday',
    '2026-02-30 00:00:00Z',
    '2026-13-01T00:00:00Z',
    '2026-03-01T24:00:00Z',
    '2026-03-01 12:00:00+25',
    '2026/03/01 12:00:00',
    '',
  ]) {
    assert.throws(
      () => parseTargetTime(bad),
      (err: unknown) => PgfleetError.is(err, 'TargetInvalid') && err.code === ErrorCodes.TargetInvalid.code,
      bad,
    );
  }
});

test('exactly one target', () => {
  const bad = [
    {},
    { 'target-time': '2026-03-01T00:00:00Z', 'target-lsn': '0/1' },
    { target: 'latest', 'target-name': 'x' },
  ];
  for (const o of bad)
    assert.throws(
      () => recoveryTargetFromOptions(o),
      (err: unknown) => PgfleetError.is(err, 'TargetInvalid'),
    );
});

test('each target kind', () => {
  assert.deepEqual(recoveryTargetFromOptions({ 'target-lsn': '0/a000060' }).target, {
    case: 'lsn',
    value: '0/A000060',
  });
  assert.deepEqual(recoveryTargetFromOptions({ 'target-name': 'before_upgrade' }).target, {
    case: 'name',
    value: 'before_upgrade',
  });
  assert.deepEqual(recoveryTargetFromOptions({ 'target-xid': '74211' }).target, { case: 'xid', value: '74211' });
  assert.deepEqual(recoveryTargetFromOptions({ target: 'immediate' }).target, { case: 'immediate', value: true });
  const latest = recoveryTargetFromOptions({ target: 'latest', 'target-action': 'promote', 'target-exclusive': true });
  assert.deepEqual(
    [latest.target, latest.action, latest.inclusive],
    [{ case: 'latest', value: true }, TargetAction.PROMOTE, false],
  );
  assert.throws(() => recoveryTargetFromOptions({ 'target-lsn': '3000060' }), /not an LSN/);
  assert.throws(() => recoveryTargetFromOptions({ 'target-xid': '-1' }), /transaction id/);
  assert.throws(() => recoveryTargetFromOptions({ 'target-name': '' }), /empty/);
});

test('--before-xid and --before-lsn: the xid or LSN target, exclusive, and one target among the others', () => {
  const xid = recoveryTargetFromOptions({ 'before-xid': '74211' });
  assert.deepEqual([xid.target, xid.inclusive], [{ case: 'xid', value: '74211' }, false]);
  const lsn = recoveryTargetFromOptions({ 'before-lsn': '0/a000060', 'target-action': 'promote' });
  assert.deepEqual(
    [lsn.target, lsn.inclusive, lsn.action],
    [{ case: 'lsn', value: '0/A000060' }, false, TargetAction.PROMOTE],
  );
  // Saying exclusive twice is no conflict.
  assert.equal(recoveryTargetFromOptions({ 'before-xid': '9', 'target-exclusive': true }).inclusive, false);
  for (const o of [
    { 'before-xid': '74211', 'target-xid': '74211' },
    { 'before-lsn': '0/1', 'target-time': '2026-03-01T00:00:00Z' },
    { 'before-xid': '1', 'before-lsn': '0/1' },
  ])
    assert.throws(
      () => recoveryTargetFromOptions(o),
      (err: unknown) => PgfleetError.is(err, 'TargetInvalid') && /exactly one recovery target/.test(err.message),
    );
  assert.throws(() => recoveryTargetFromOptions({ 'before-xid': 'abc' }), /--before-xid 'abc' is not a transaction id/);
  assert.throws(() => recoveryTargetFromOptions({ 'before-lsn': '3000060' }), /--before-lsn '3000060' is not an LSN/);
});
