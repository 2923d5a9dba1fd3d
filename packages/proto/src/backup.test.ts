import { test } from 'node:test';
import assert from 'node:assert/strict';
import { create } from '@bufbuild/protobuf';
import { timestampMs } from '@bufbuild/protobuf/wkt';
import { backupInfoFromManifest, backupTypeFromProto, backupTypeToProto, type BackupTypeName } from './backup.js';
import { BackupInfoSchema, BackupType } from './gen/pgfleet/v1/common_pb.js';

test('backup types map to the wire and back; UNSPECIFIED is full, an unknown value is undefined', () => {
  for (const name of ['full', 'diff', 'incr'] as BackupTypeName[])
    assert.equal(backupTypeFromProto(backupTypeToProto(name)), name);
  assert.equal(backupTypeToProto(undefined), BackupType.UNSPECIFIED);
  assert.equal(backupTypeFromProto(BackupType.UNSPECIFIED), 'full');
  assert.equal(backupTypeFromProto(99 as BackupType), undefined);
});

test('a manifest becomes BackupInfo with its times to the millisecond and its counts as 64-bit', () => {
  const info = create(
    BackupInfoSchema,
    backupInfoFromManifest(
      {
        label: '20260301-010000F_20260302-010000I',
        cluster: 'main',
        type: 'incr',
        priorLabel: '20260301-010000F',
        systemIdentifier: '7300000000000000001',
        pgVersionNum: 150019,
        timeline: 2,
        startLsn: '0/3000028',
        stopLsn: '0/3000100',
        startTime: '2026-03-02T01:00:00.123Z',
        stopTime: '2026-03-02T01:00:05.456Z',
        walStart: '000000020000000000000003',
        walStop: '000000020000000000000003',
        files: [{}, {}, {}],
        sizeBytes: 2 ** 40,
        storedBytes: 1234,
      },
      'job-1',
    ),
  );
  assert.equal(info.type, BackupType.INCR);
  assert.equal(timestampMs(info.startTime!), Date.parse('2026-03-02T01:00:00.123Z'));
  assert.equal(timestampMs(info.stopTime!), Date.parse('2026-03-02T01:00:05.456Z'));
  assert.deepEqual(
    [info.sizeBytes, info.storedBytes, info.fileCount, info.jobId, info.priorLabel, info.pgVersion],
    [2n ** 40n, 1234n, 3, 'job-1', '20260301-010000F', 150019],
  );
});
