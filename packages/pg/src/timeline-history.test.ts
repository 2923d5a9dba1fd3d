import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ErrorCodes, PgfleetError } from '@pgfleet/core';
import { TimelineHistory } from './timeline-history.js';
import { timelineStartFromSegment, readWalRecordAt } from './timeline-start.js';
import { validateWalSegment } from './wal-header.js';

const code = (f: () => unknown) => {
  try {
    f();
  } catch (e) {
    return (e as PgfleetError).code;
  }
  return 'none';
};

/** What PostgreSQL writes for timeline 3 after two promotions. */
const H3 = '1\t0/3002190\tbefore 2026-12-06 05:51:27.463841+00\n\n2\t0/5000000\tno recovery target specified\n';

test('a history names who owns each position, like tliOfPointInHistory', () => {
  const h = TimelineHistory.parse(3, H3);
  assert.equal(h.parent, 2);
  assert.equal(h.startLsn, 0x5000000n);
  assert.equal(h.timelineAt(0x3000000n), 1);
  assert.equal(h.timelineAt(0x3002190n), 2);
  assert.equal(h.timelineAt(0x5000000n), 3);
  assert.equal(h.contains(1, 0x3002190n), true);
  assert.equal(
    h.contains(1, 0x3002191n),
    false,
    'a backup of timeline 1 consistent after the switch is not in this history',
  );
  assert.equal(h.contains(3, 0xffffffffn), true);
  assert.equal(h.contains(4, 0n), false);
  assert.equal(h.extends(TimelineHistory.parse(2, '1\t0/3002190\tx\n')), true);
  assert.equal(
    h.extends(TimelineHistory.parse(2, '1\t0/3002198\tx\n')),
    false,
    'another switch point: another lineage',
  );
  assert.equal(TimelineHistory.parse(2, '1\t0/3002190\tx\n').extends(TimelineHistory.root(1)), true);
});

test('histories PostgreSQL never writes are refused', () => {
  assert.equal(
    code(() => TimelineHistory.parse(2, 'garbage here\n')),
    ErrorCodes.WalFileInvalid.code,
  );
  assert.equal(
    code(() => TimelineHistory.parse(2, '# nothing\n')),
    ErrorCodes.WalFileInvalid.code,
  );
  assert.equal(
    code(() => TimelineHistory.parse(2, '2\t0/1000000\tself\n')),
    ErrorCodes.WalFileInvalid.code,
    'a timeline cannot descend from itself',
  );
  assert.equal(
    code(() => TimelineHistory.parse(4, '2\t0/5000000\tx\n1\t0/6000000\tx\n')),
    ErrorCodes.WalFileInvalid.code,
    'ancestors in order',
  );
});

test("a history whose switch points go back is PostgreSQL's own (a recovery that followed timeline 2 but stopped before it began)", () => {
  // Timeline 2 began at 0/5000000; a restore of a timeline 1 backup following timeline 2 stopped at 0/4000000 and promoted to 3.
  const h = TimelineHistory.parse(3, '1\t0/5000000\tx\n2\t0/4000000\tbefore 0/4000000\n');
  assert.equal(h.startLsn, 0x4000000n);
  assert.equal(h.timelineAt(0x3ffffffn), 1);
  assert.equal(h.timelineAt(0x4000000n), 3, 'tliOfPointInHistory: timeline 3 from 0/4000000 on');
  assert.equal(h.timelineAt(0x4800000n), 3, 'the part of timeline 1 after 0/4000000 is not in this history');
  assert.equal(h.switchPointOf(1), 0x4000000n);
  assert.equal(h.contains(1, 0x3000000n), true);
  assert.equal(h.contains(1, 0x4000000n), true, 'consistent exactly where timeline 1 ends here');
  assert.equal(h.contains(1, 0x4800000n), false);
  assert.equal(h.contains(2, 0x4000000n), false, 'timeline 2 contributes nothing');
});

function longHeader(tli: number, addr: bigint): Buffer {
  const b = Buffer.alloc(40);
  b.writeUInt16LE(0xd110, 0);
  b.writeUInt16LE(0x0002, 2);
  b.writeUInt32LE(tli, 4);
  b.writeBigUInt64LE(addr, 8);
  b.writeBigUInt64LE(7000000000000000001n, 24);
  b.writeUInt32LE(16 << 20, 32);
  b.writeUInt32LE(8192, 36);
  return b;
}

test('the first segment of a new timeline may carry its ancestor id, as its history says', () => {
  const name = '000000020000000000000003';
  const h2 = TimelineHistory.parse(2, '1\t0/3002190\tx\n');
  assert.equal(validateWalSegment(name, longHeader(1, 0x3000000n), 16 << 20, undefined, h2).timeline, 1);
  assert.equal(
    code(() => validateWalSegment(name, longHeader(1, 0x3000000n), 16 << 20)),
    ErrorCodes.WalFileInvalid.code,
    'without the history it is refused',
  );
  // Timeline 2 starting in a later segment: segment 3 of timeline 2 must be all timeline 2.
  const later = TimelineHistory.parse(2, '1\t0/4000000\tx\n');
  assert.equal(
    code(() => validateWalSegment(name, longHeader(1, 0x3000000n), 16 << 20, undefined, later)),
    ErrorCodes.WalFileInvalid.code,
  );
  // A history of another timeline proves nothing.
  assert.equal(
    code(() => validateWalSegment(name, longHeader(1, 0x3000000n), 16 << 20, undefined, TimelineHistory.parse(3, H3))),
    ErrorCodes.WalFileInvalid.code,
  );
  // An unrelated timeline id in the header.
  assert.equal(
    code(() => validateWalSegment(name, longHeader(5, 0x3000000n), 16 << 20, undefined, h2)),
    ErrorCodes.WalFileInvalid.code,
  );
});

/** A segment with the end-of-recovery checkpoint of timeline 2 at `offset`, its record split over a page boundary when asked. */
function segmentWithCheckpoint(offset: number, timeSec: number): Buffer {
  const seg = Buffer.alloc(64 * 1024);
  longHeader(1, 0x3000000n).copy(seg, 0);
  const rec = Buffer.alloc(24 + 2 + 88);
  rec.writeUInt32LE(rec.length, 0);
  rec[16] = 0x00; // CHECKPOINT_SHUTDOWN
  rec[17] = 0; // RM_XLOG_ID
  rec[24] = 255;
  rec[25] = 88;
  rec.writeUInt32LE(2, 26 + 8);
  rec.writeUInt32LE(1, 26 + 12);
  rec.writeBigInt64LE(BigInt(timeSec), 26 + 64);
  // Copy across pages: each later 8 KiB page starts with a 24-byte header.
  let pos = offset;
  for (let i = 0; i < rec.length; i++) {
    if (pos % 8192 === 0) pos += 24;
    seg[pos++] = rec[i]!;
  }
  return seg;
}

test('the start time of a timeline is read from its end-of-recovery record, also across a page boundary', () => {
  const t = Date.UTC(2026, 11, 6, 5, 51, 35) / 1000;
  const inPage = segmentWithCheckpoint(0x2190, t);
  assert.deepEqual(timelineStartFromSegment(inPage, 0x3002190n, 16 << 20, 2, 1), {
    time: new Date(t * 1000),
    record: 'checkpoint-shutdown',
  });
  for (const offset of [8192 - 10, 8192 - 30, 8192 - 100]) {
    const split = segmentWithCheckpoint(offset, t);
    assert.equal(readWalRecordAt(split, offset)?.length, 114);
    assert.equal(
      timelineStartFromSegment(split, 0x3000000n + BigInt(offset), 16 << 20, 2, 1)?.time.getTime(),
      t * 1000,
      `record at ${offset}`,
    );
  }
  assert.equal(timelineStartFromSegment(inPage, 0x3002190n, 16 << 20, 3, 1), undefined, 'another timeline switch');
  assert.equal(timelineStartFromSegment(inPage, 0x3002198n, 16 << 20, 2, 1), undefined, 'no record there');
});

test('an XLOG_OVERWRITE_CONTRECORD at the switch point (recovery ended in a torn record) is skipped', () => {
  const t = Date.UTC(2026, 11, 6, 6, 0, 0) / 1000;
  const seg = segmentWithCheckpoint(0x2190 + 48, t);
  // The overwrite record: header + short data block of 16 bytes (aborted LSN, overwrite time), 42 bytes, next record at +48.
  const rec = Buffer.alloc(42);
  rec.writeUInt32LE(42, 0);
  rec[16] = 0xd0;
  rec[17] = 0;
  rec[24] = 255;
  rec[25] = 16;
  rec.copy(seg, 0x2190);
  assert.equal(timelineStartFromSegment(seg, 0x3002190n, 16 << 20, 2, 1)?.time.getTime(), t * 1000);
});
