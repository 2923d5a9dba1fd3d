import assert from 'node:assert/strict';
import { test } from 'node:test';
import { create } from '@bufbuild/protobuf';
import { BackupInfoSchema, BackupType, JobInfoSchema, JobState } from '@pgfleet/proto';
import { jsonOf } from './output.js';

test('--output json: enum values as the tables print them, 64-bit numbers as numbers, LSNs as strings', () => {
  const job = create(JobInfoSchema, {
    id: 'j1',
    kind: 'backup',
    state: JobState.SUCCEEDED,
    backup: create(BackupInfoSchema, {
      label: '20260301-120000I',
      type: BackupType.INCR,
      startLsn: '0/16B3748',
      sizeBytes: 3n * 1024n ** 3n,
      storedBytes: 2n ** 60n, // beyond 2^53: kept exact as a decimal string
      fileCount: 7,
    }),
  });
  const j = jsonOf(JobInfoSchema, job) as {
    state: unknown;
    backup: { type: unknown; startLsn: unknown; sizeBytes: unknown; storedBytes: unknown; fileCount: unknown };
  };
  assert.equal(j.state, 'succeeded');
  assert.equal(j.backup.type, 'incr');
  assert.equal(j.backup.startLsn, '0/16B3748');
  assert.equal(j.backup.sizeBytes, 3 * 1024 ** 3);
  assert.equal(j.backup.storedBytes, String(2n ** 60n));
  assert.equal(j.backup.fileCount, 7);
  // Lists go through the same mapping; unset enums read "unspecified", never the proto name.
  const list = jsonOf(BackupInfoSchema, [create(BackupInfoSchema, { label: 'x' })]) as { type: unknown }[];
  assert.deepEqual(
    list.map((b) => b.type),
    ['unspecified'],
  );
});
