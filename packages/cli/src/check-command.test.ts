// The human rendering of a check result and the --timeout forms `pgfleet check` accepts.
import { strict as assert } from 'node:assert';
import { test } from 'node:test';
import { create } from '@bufbuild/protobuf';
import { CheckResultSchema, CheckVerdict } from '@pgfleet/proto';
import { PgfleetError } from '@pgfleet/core';
import { checkTimeoutSeconds, describeCheck } from './check-command.js';

test('describeCheck prints one aligned line per check, FAIL in capitals, then the verdict', () => {
  const text = describeCheck(
    create(CheckResultSchema, {
      ok: false,
      items: [
        { name: 'wal_level', verdict: CheckVerdict.OK, message: 'wal_level = replica' },
        {
          name: 'archive_command',
          verdict: CheckVerdict.FAIL,
          message: "archive_command '/bin/true' does not run pgfleet-agent wal-push",
        },
        { name: 'data_checksums', verdict: CheckVerdict.WARN, message: 'data checksums off' },
      ],
    }),
  );
  assert.equal(
    text,
    [
      'ok    wal_level        wal_level = replica',
      "FAIL  archive_command  archive_command '/bin/true' does not run pgfleet-agent wal-push",
      'warn  data_checksums   data checksums off',
      '',
      'check FAILED: 3 check(s), 1 failed, 1 warning(s)',
    ].join('\n'),
  );
  const ok = describeCheck(
    create(CheckResultSchema, {
      ok: true,
      walSegment: '000000010000000000000003',
      walSeconds: 0.42,
      items: [{ name: 'wal_archived', verdict: CheckVerdict.OK, message: 'segment reached' }],
    }),
  );
  assert.match(
    ok,
    /^check OK: 1 check\(s\), 0 failed, 0 warning\(s\); WAL segment 000000010000000000000003 archived in 0\.4 s$/m,
  );
});

test('--timeout takes a duration or bare seconds, within 1 s .. 1 h', () => {
  assert.equal(checkTimeoutSeconds({ timeout: '60s' }), 60);
  assert.equal(checkTimeoutSeconds({ timeout: '2m' }), 120);
  assert.equal(checkTimeoutSeconds({ timeout: '90' }), 90);
  for (const bad of ['0', '2h', 'soon', '-5s'])
    assert.throws(
      () => checkTimeoutSeconds({ timeout: bad }),
      (e) => PgfleetError.is(e, 'InvalidArgument'),
      bad,
    );
});
