// `pgfleet backup --type` and `--resume`/`--no-resume`: the option's choices are the names proto
// maps (one mapping each), and bad values fail locally before any call.
import { strict as assert } from 'node:assert';
import { test } from 'node:test';
import { BackupResume, backupResumeToProto, BackupType, backupTypeToProto, type BackupTypeName } from '@pgfleet/proto';
import { PgfleetError, parseCommandLine } from '@pgfleet/core';
import { runCommand } from './commands.js';
import { cliProgram } from './program.js';

test('every --type choice maps to a known backup type', () => {
  const option = cliProgram.options.find((o) => o.name === 'type');
  assert.deepEqual(option?.choices, ['full', 'diff', 'incr']);
  const mapped = option.choices.map((name) => backupTypeToProto(name as BackupTypeName));
  assert.deepEqual(mapped, [BackupType.FULL, BackupType.DIFF, BackupType.INCR]);
});

test('a bad --type is refused with InvalidConfig naming the allowed values', () => {
  assert.throws(
    () => parseCommandLine(cliProgram, ['backup', 'main', '--type', 'weekly']),
    (e: unknown) =>
      e instanceof PgfleetError &&
      e.errorName === 'InvalidConfig' &&
      e.message === "--type: 'weekly' is not allowed; expected one of full, diff, incr",
  );
});

test('--resume and --no-resume map to the resume modes; both at once are refused before any call', async () => {
  assert.deepEqual(
    [backupResumeToProto('required'), backupResumeToProto('fresh'), backupResumeToProto(undefined)],
    [BackupResume.REQUIRED, BackupResume.FRESH, BackupResume.UNSPECIFIED],
  );
  // No controller listens there: the refusal comes first.
  const parsed = parseCommandLine(cliProgram, [
    'backup',
    'main',
    '--resume',
    '--no-resume',
    '--controller',
    '127.0.0.1:1',
    '--insecure',
  ]);
  await assert.rejects(
    runCommand(parsed),
    (e: unknown) => e instanceof PgfleetError && e.errorName === 'InvalidArgument' && /contradict/.test(e.message),
  );
});
