// Table-driven tests of the PITR backup choice (pure: no catalog, no server).
import { strict as assert } from 'node:assert';
import { test } from 'node:test';
import { PgfleetError, type ErrorName } from '@pgfleet/core';
import { chooseBackup, FUTURE_SKEW_MS, type BackupSummary, type PitrTarget } from './pitr.js';

const T = Date.parse('2026-03-01T12:00:00Z');
const min = 60_000;
// Labels sort against time on purpose: the choice must follow stop times, never labels.
const backups: BackupSummary[] = [
  { label: 'c-newest', stopTime: T + 60 * min, stopLsn: '0/A0000000' },
  { label: 'a-oldest', stopTime: T, stopLsn: '0/3000100' },
  { label: 'b-middle', stopTime: T + 30 * min, stopLsn: '0/10000000' },
];
const now = T + 120 * min;

interface Case {
  name: string;
  target: PitrTarget;
  list?: BackupSummary[];
  label?: string;
  want?: string;
  error?: ErrorName;
}

const cases: Case[] = [
  { name: 'time after every backup -> newest', target: { kind: 'time', time: T + 90 * min }, want: 'c-newest' },
  { name: 'time between backups -> the one before', target: { kind: 'time', time: T + 45 * min }, want: 'b-middle' },
  {
    name: 'time exactly at a stop time -> that backup',
    target: { kind: 'time', time: T + 30 * min },
    want: 'b-middle',
  },
  { name: 'time at the oldest stop -> oldest', target: { kind: 'time', time: T }, want: 'a-oldest' },
  {
    name: 'time before the oldest backup ended',
    target: { kind: 'time', time: T - 1 },
    error: 'TargetBeforeOldestBackup',
  },
  {
    name: 'time in the future beyond the skew',
    target: { kind: 'time', time: now + FUTURE_SKEW_MS + 1000 },
    error: 'TargetInFuture',
  },
  {
    name: 'time within the skew allowance is accepted',
    target: { kind: 'time', time: now + FUTURE_SKEW_MS - 1000 },
    want: 'c-newest',
  },
  { name: 'time with no backups', target: { kind: 'time', time: T }, list: [], error: 'NoBackup' },
  // 0/A0000000 > 0/10000000 numerically although not as text.
  { name: 'lsn between backups compares numerically', target: { kind: 'lsn', lsn: '0/9FFFFFFF' }, want: 'b-middle' },
  { name: 'lsn at a stop lsn -> that backup', target: { kind: 'lsn', lsn: '0/A0000000' }, want: 'c-newest' },
  { name: 'lsn with a larger high half (1/0)', target: { kind: 'lsn', lsn: '1/0' }, want: 'c-newest' },
  { name: 'lsn before the oldest stop', target: { kind: 'lsn', lsn: '0/3000000' }, error: 'TargetBeforeOldestBackup' },
  { name: 'malformed lsn', target: { kind: 'lsn', lsn: '3000000' }, error: 'TargetInvalid' },
  { name: 'immediate -> newest', target: { kind: 'immediate' }, want: 'c-newest' },
  { name: 'latest -> newest', target: { kind: 'latest' }, want: 'c-newest' },
  { name: 'latest with no backups', target: { kind: 'latest' }, list: [], error: 'NoBackup' },
  { name: 'name -> empty label (the agent picks)', target: { kind: 'name', name: 'before_migration' }, want: '' },
  { name: 'xid -> empty label (the agent picks)', target: { kind: 'xid', xid: '7421' }, want: '' },
  { name: 'empty name', target: { kind: 'name', name: '' }, error: 'TargetInvalid' },
  { name: 'non-numeric xid', target: { kind: 'xid', xid: 'abc' }, error: 'TargetInvalid' },
  { name: 'explicit label is used', target: { kind: 'latest' }, label: 'a-oldest', want: 'a-oldest' },
  {
    name: 'explicit label with a name target',
    target: { kind: 'name', name: 'rp' },
    label: 'b-middle',
    want: 'b-middle',
  },
  { name: 'explicit label that does not exist', target: { kind: 'latest' }, label: 'nope', error: 'UnknownBackup' },
  {
    name: 'explicit label ending after the time target',
    target: { kind: 'time', time: T + 10 * min },
    label: 'b-middle',
    error: 'TargetInvalid',
  },
];

for (const c of cases) {
  test(c.name, () => {
    const run = () => chooseBackup(c.list ?? backups, c.target, now, c.label);
    if (c.error) {
      assert.throws(
        run,
        (err: unknown) => PgfleetError.is(err, c.error) || assert.fail(`expected ${c.error}, got ${String(err)}`),
      );
    } else {
      assert.equal(run(), c.want);
    }
  });
}
