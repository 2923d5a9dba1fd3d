// The messages status builds as literals (timestampOfMs, backupInfoFromRecord) are the ones
// create() builds from the same values, byte for byte on the wire.
import { strict as assert } from 'node:assert';
import { test } from 'node:test';
import { equals, fromJson, toBinary } from '@bufbuild/protobuf';
import { timestampFromMs, TimestampSchema } from '@bufbuild/protobuf/wkt';
import type { BackupRecord } from '@pgfleet/catalog';
import { BackupInfoSchema } from '@pgfleet/proto';
import { backupInfoFromRecord, timestampOfMs } from './wire.js';

test('timestampOfMs is timestampFromMs', () => {
  for (const ms of [0, 1, 999, 1000, 1_773_479_213_589, -1, -1001, 253402300799999]) {
    assert.ok(equals(TimestampSchema, timestampOfMs(ms), timestampFromMs(ms)), String(ms));
    assert.deepEqual(toBinary(TimestampSchema, timestampOfMs(ms)), toBinary(TimestampSchema, timestampFromMs(ms)));
  }
});

test('backupInfoFromRecord is the message of the record, as create() or fromJson make it', () => {
  const b: BackupRecord = {
    cluster: 'db-1',
    label: '20260314-010000F',
    type: 'incr',
    startLsn: '0/2000028',
    stopLsn: '0/3000100',
    startTime: 1_773_450_000_123,
    stopTime: 1_773_450_060_456,
    timeline: 2,
    systemIdentifier: '7300000000000000001',
    pgVersion: 170002,
    sizeBytes: 123_456_789,
    storedBytes: 23_456_789,
    fileCount: 1200,
    walStart: '000000020000000000000002',
    walStop: '000000020000000000000003',
    jobId: 'j-1',
    priorLabel: '20260313-010000F',
    pinned: true,
  };
  // What the record says, written out as the message's JSON.
  const expected = fromJson(BackupInfoSchema, {
    label: '20260314-010000F',
    cluster: 'db-1',
    type: 'BACKUP_TYPE_INCR',
    startLsn: '0/2000028',
    stopLsn: '0/3000100',
    startTime: '2026-03-14T01:00:00.123Z',
    stopTime: '2026-03-14T01:01:00.456Z',
    timeline: 2,
    systemIdentifier: '7300000000000000001',
    pgVersion: 170002,
    sizeBytes: '123456789',
    storedBytes: '23456789',
    fileCount: 1200,
    walStart: '000000020000000000000002',
    walStop: '000000020000000000000003',
    jobId: 'j-1',
    priorLabel: '20260313-010000F',
    pinned: true,
  });
  const got = backupInfoFromRecord(b);
  assert.ok(equals(BackupInfoSchema, got, expected));
  assert.deepEqual(toBinary(BackupInfoSchema, got), toBinary(BackupInfoSchema, expected));
  assert.deepEqual(Object.keys(got).sort(), Object.keys(expected).sort());
});
