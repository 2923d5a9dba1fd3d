// The human rendering of a verify result: a row per backup, the verdict lines, the problems.
import { strict as assert } from 'node:assert';
import { test } from 'node:test';
import { create } from '@bufbuild/protobuf';
import { timestampFromDate } from '@bufbuild/protobuf/wkt';
import { BackupType, VerifyResultSchema } from '@pgfleet/proto';
import { describeVerify } from './verify-command.js';

test('describeVerify lists verdicts and names every problem', () => {
  const text = describeVerify(
    create(VerifyResultSchema, {
      full: false,
      ok: false,
      walSegmentsChecked: 9,
      walNewest: ['000000010000000000000009'],
      backups: [
        {
          label: '20261124-130000F',
          type: BackupType.FULL,
          restorable: true,
          fromLsn: '0/2000100',
          fromTime: timestampFromDate(new Date('2026-11-24T13:00:05Z')),
          toLsn: '0/7000000',
          toTimeline: 1,
          reasons: [
            'recovery stops at 0/7000000: WAL gap [0/7000000, 0/8000000) on timeline 1: segment 000000010000000000000007 missing',
          ],
          filesChecked: 900,
          bytesChecked: 4096n,
        },
        {
          label: '20261124-140000I',
          type: BackupType.INCR,
          restorable: false,
          fromLsn: '0/9000028',
          reasons: ['missing file base/5/1259 (main/backup/20261124-140000I/pg_data/base/5/1259.zst)'],
          filesChecked: 900,
        },
      ],
      problems: [
        {
          kind: 'wal-gap',
          timeline: 1,
          lsnFrom: '0/7000000',
          lsnTo: '0/8000000',
          path: '000000010000000000000007',
          segments: ['000000010000000000000007'],
          message: 'WAL gap [0/7000000, 0/8000000) on timeline 1: segment 000000010000000000000007 missing',
        },
        {
          kind: 'missing-file',
          label: '20261124-140000I',
          path: 'base/5/1259',
          key: 'main/backup/20261124-140000I/pg_data/base/5/1259.zst',
          message: 'main/backup/20261124-140000I/pg_data/base/5/1259.zst is missing from the repository',
        },
      ],
    }),
  );
  assert.match(
    text,
    /^20261124-130000F: restorable to \[0\/2000100 \(2026-11-24 13:00:05Z\), 0\/7000000 on timeline 1\]$/m,
  );
  assert.match(text, /^ {2}note: recovery stops at 0\/7000000/m);
  assert.match(text, /^20261124-140000I: not restorable: missing file base\/5\/1259/m);
  assert.match(text, /^ {2}wal-gap +timeline 1 \[0\/7000000, 0\/8000000\): WAL gap/m);
  assert.match(text, /^ {2}missing-file +20261124-140000I base\/5\/1259: /m);
  assert.match(
    text,
    /^verify FAILED \(fast\): 1 of 2 backup\(s\) restorable, 9 WAL segment\(s\) checked, newest 000000010000000000000009$/m,
  );
});

test('describeVerify lists the timelines after a failover and calls a fork a fork', () => {
  const text = describeVerify(
    create(VerifyResultSchema, {
      ok: true,
      backups: [],
      timelines: [
        { timeline: 1, newestSegment: '000000010000000000000005', onLiveLineage: true, liveKnown: true },
        {
          timeline: 2,
          parent: 1,
          switchLsn: '0/5000100',
          startedAt: timestampFromDate(new Date('2026-12-06T05:51:35Z')),
          newestSegment: '000000020000000000000007',
          onLiveLineage: true,
          liveKnown: true,
        },
        {
          timeline: 3,
          parent: 2,
          switchLsn: '0/6000100',
          newestSegment: '000000030000000000000006',
          onLiveLineage: false,
          liveKnown: true,
        },
      ],
    }),
  );
  assert.match(text, /^2 +1 +0\/5000100 +2026-12-06 05:51:35Z +000000020000000000000007 +live$/m);
  assert.match(text, /^3 +2 +0\/6000100 +- +000000030000000000000006 +FORK \(restores never follow it\)$/m);
  assert.match(text, /note: timeline\(s\) 3 are not on the cluster's current lineage/);
  // One timeline: nothing to say.
  assert.doesNotMatch(
    describeVerify(create(VerifyResultSchema, { ok: true, timelines: [{ timeline: 1, onLiveLineage: true }] })),
    /timelines:/,
  );
});
