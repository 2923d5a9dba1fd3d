// `pgfleet backup --type`: the option's choices are the names proto maps (one mapping of the
// backup type), and a bad value fails locally with the option table's error before any call.
import { strict as assert } from 'node:assert';
import { test } from 'node:test';
import { BackupType, backupTypeToProto, type BackupTypeName } from '@pgfleet/proto';
import { PgfleetError, parseCommandLine } from '@pgfleet/core';
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
