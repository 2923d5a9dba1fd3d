import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Lsn } from './lsn.js';
import { WalSegmentName, walFileKind, timelineHistoryName } from './wal-segment-name.js';
import { validateWalSegment } from './wal-header.js';
import { parseBackupLabel } from './backup-label.js';
import { ErrorCodes, PgfleetError } from '@pgfleet/core';

test('LSNs compare by value, not as text', () => {
  assert.equal(Lsn.parse('0/A0000000').compare(Lsn.parse('1/0')), -1);
  assert.equal(Lsn.parse('16/B374D848').toString(), '16/B374D848');
  assert.equal(Lsn.parse('0/3000060').value, 0x3000060n);
  assert.throws(
    () => Lsn.parse('nope'),
    (e: unknown) => PgfleetError.is(e, 'InvalidArgument'),
  );
});

test('segment names follow PostgreSQL for 16 MiB and 64 MiB segments', () => {
  const lsn = Lsn.parse('1/2A000028');
  assert.equal(WalSegmentName.fromLsn(1, lsn).toString(), '00000001000000010000002A');
  assert.equal(WalSegmentName.fromLsn(3, lsn, 64 << 20).toString(), '00000003000000010000000A');
  const s = WalSegmentName.parse('0000000100000000000000FF');
  assert.equal(s.next().toString(), '000000010000000100000000');
  assert.equal(WalSegmentName.parse('00000002000000010000002A').startLsn.toString(), '1/2A000000');
  const range = WalSegmentName.range(1, Lsn.parse('0/2000028'), Lsn.parse('0/4000100'));
  assert.deepEqual(range.map(String), [
    '000000010000000000000002',
    '000000010000000000000003',
    '000000010000000000000004',
  ]);
  assert.equal(timelineHistoryName(10), '0000000A.history');
});

test('archive file kinds', () => {
  assert.equal(walFileKind('000000010000000000000002'), 'segment');
  assert.equal(walFileKind('00000002.history'), 'history');
  assert.equal(walFileKind('000000010000000000000002.00000028.backup'), 'backup');
  assert.equal(walFileKind('000000010000000000000002.partial'), 'partial');
  assert.equal(walFileKind('../etc/passwd'), undefined);
});

function header(opts: { magic?: number; tli?: number; addr?: bigint; sysid?: bigint; seg?: number }): Buffer {
  const b = Buffer.alloc(40);
  b.writeUInt16LE(opts.magic ?? 0xd110, 0);
  b.writeUInt16LE(0x0002, 2);
  b.writeUInt32LE(opts.tli ?? 1, 4);
  b.writeBigUInt64LE(opts.addr ?? 0x2000000n, 8);
  b.writeBigUInt64LE(opts.sysid ?? 7000000000000000001n, 24);
  b.writeUInt32LE(opts.seg ?? 16 << 20, 32);
  b.writeUInt32LE(8192, 36);
  return b;
}

test('WAL segment validation refuses empty, truncated and foreign files', () => {
  const name = '000000010000000000000002';
  const ok = validateWalSegment(name, header({}), 16 << 20, '7000000000000000001');
  assert.equal(ok.pgMajor, 15);
  const code = (f: () => unknown) => {
    try {
      f();
    } catch (e) {
      return (e as PgfleetError).code;
    }
    return 'none';
  };
  assert.equal(
    code(() => validateWalSegment(name, Buffer.alloc(0), 0)),
    ErrorCodes.WalFileEmpty.code,
  );
  assert.equal(
    code(() => validateWalSegment(name, header({}), 8192)),
    ErrorCodes.WalFileEmpty.code,
  );
  assert.equal(
    code(() => validateWalSegment(name, Buffer.alloc(40), 16 << 20)),
    ErrorCodes.WalFileInvalid.code,
  );
  assert.equal(
    code(() => validateWalSegment(name, header({ tli: 2 }), 16 << 20)),
    ErrorCodes.WalFileInvalid.code,
  );
  assert.equal(
    code(() => validateWalSegment(name, header({ addr: 0x3000000n }), 16 << 20)),
    ErrorCodes.WalFileInvalid.code,
  );
  assert.equal(
    code(() => validateWalSegment(name, header({}), 16 << 20, '42')),
    ErrorCodes.WalFileInvalid.code,
  );
});

test('backup_label parsing', () => {
  const l = parseBackupLabel(`START WAL LOCATION: 0/2000028 (file 000000010000000000000002)
CHECKPOINT LOCATION: 0/2000060
BACKUP METHOD: streamed
BACKUP FROM: primary
START TIME: 2026-11-24 12:00:00 UTC
LABEL: 20261124-120000F
START TIMELINE: 1
`);
  assert.equal(l.startLsn.toString(), '0/2000028');
  assert.equal(l.checkpointLsn?.toString(), '0/2000060');
  assert.equal(l.startTimeline, 1);
  assert.equal(l.label, '20261124-120000F');
});
