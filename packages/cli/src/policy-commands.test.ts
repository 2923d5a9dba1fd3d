// policy set flags -> PolicySettings, checked before any call; plan rendering.
import { strict as assert } from 'node:assert';
import { test } from 'node:test';
import { create } from '@bufbuild/protobuf';
import { timestampFromMs } from '@bufbuild/protobuf/wkt';
import { PgfleetError, parseCommandLine } from '@pgfleet/core';
import { BackupType, PlanRetentionResponseSchema } from '@pgfleet/proto';
import { describePlan, policySettingsFromOptions } from './policy-commands.js';
import { cliProgram } from './program.js';

const settings = (...argv: string[]) =>
  policySettingsFromOptions(parseCommandLine(cliProgram, ['policy', 'set', 'main', ...argv], {}).options);

test('only the flags given become settings; cron text is trimmed; an empty cron turns a schedule off', () => {
  assert.deepEqual(settings('--full', ' 0 1 * * 0 ', '--incr', '', '--min-full', '2', '--pitr-window-days', '0'), {
    full: '0 1 * * 0',
    incr: '',
    minFull: 2,
    pitrWindowDays: 0,
  });
  assert.deepEqual(
    settings(
      '--drill',
      '0 3 * * 6',
      '--dump-drill',
      ' 0 5 * * 0',
      '--rpo-threshold',
      '60',
      '--stale-backup-threshold',
      '7200',
      '--agent-silence-threshold',
      '20',
    ),
    {
      drill: '0 3 * * 6',
      dumpDrill: '0 5 * * 0',
      rpoThresholdSeconds: 60,
      staleBackupThresholdSeconds: 7200,
      agentSilenceThresholdSeconds: 20,
    },
  );
  assert.deepEqual(
    settings('--spread-minutes', '45', '--daily', '7', '--weekly', '4', '--monthly', '12', '--yearly', '1'),
    { spreadMinutes: 45, daily: 7, weekly: 4, monthly: 12, yearly: 1 },
  );
});

test('a cron without 5 fields and a negative count are refused naming the flag', () => {
  assert.throws(
    () => settings('--diff', '0 1 * *'),
    (e: unknown) => PgfleetError.is(e, 'InvalidArgument') && /--diff/.test(e.message),
  );
  assert.throws(
    () => settings('--full', '0 0 1 * * *'),
    (e: unknown) => PgfleetError.is(e, 'InvalidArgument') && /--full/.test(e.message),
  );
  assert.throws(
    () => settings('--min-full=-1'),
    (e: unknown) => PgfleetError.is(e, 'InvalidConfig') && /--min-full/.test(e.message),
  );
  assert.throws(
    () => settings('--weekly', 'x'),
    (e: unknown) => PgfleetError.is(e, 'InvalidConfig') && /--weekly/.test(e.message),
  );
});

test('a plan shows every backup with its action and reasons, and the WAL rule', () => {
  const t = Date.UTC(2026, 0, 2, 3, 4, 5);
  const text = describePlan(
    create(PlanRetentionResponseSchema, {
      cluster: 'main',
      now: timestampFromMs(t),
      windowStart: timestampFromMs(t),
      anchorLabel: 'B',
      walKeepFrom: '000000010000000000000009',
      walKeepRanges: [
        { label: 'A', timeline: 1, walStart: '000000010000000000000002', walStop: '000000010000000000000003' },
      ],
      backups: [
        {
          label: 'A',
          type: BackupType.FULL,
          stopTime: timestampFromMs(t - 2000),
          keep: true,
          reasons: ['min-full'],
          walStart: '000000010000000000000002',
          walStop: '000000010000000000000003',
        },
        {
          label: 'X',
          type: BackupType.INCR,
          stopTime: timestampFromMs(t - 1500),
          keep: false,
          reasons: ['outside-retention'],
          walStart: '000000010000000000000005',
          walStop: '000000010000000000000005',
        },
        {
          label: 'B',
          type: BackupType.FULL,
          stopTime: timestampFromMs(t - 1000),
          keep: true,
          reasons: ['pitr-window', 'min-full'],
          walStart: '000000010000000000000009',
          walStop: '000000010000000000000009',
        },
      ],
      policy: { pitrWindowDays: 0, daily: 7, weekly: 4, monthly: 12, yearly: 0, minFull: 2 },
    }),
  );
  assert.match(
    text,
    /^X\s+incr\s+2026-01-02 03:04:03Z\s+expire\s+outside-retention\s+000000010000000000000005\.\.000000010000000000000005$/m,
  );
  assert.match(text, /^B\s+full\s+.*keep\s+pitr-window,min-full/m);
  assert.match(text, /1 of 3 backups would be removed/);
  assert.match(text, /kept from position 0000000000000009 .*first of PITR anchor B/);
  assert.match(text, /000000010000000000000002\.\.000000010000000000000003 \(A\)/);
});
