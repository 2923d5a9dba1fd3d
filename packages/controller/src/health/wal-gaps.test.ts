// wal.gap_detected from verify results: the gap's figures (also past verify's cap on listed
// names, and with other segment sizes), the backups it affects, and one event per distinct gap
// however often verify reports it, against a real SQLite catalog.
import { strict as assert } from 'node:assert';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { create } from '@bufbuild/protobuf';
import { SqliteCatalogStore, type BackupRecord } from '@pgfleet/catalog';
import { VerifyProblemSchema, VerifyResultSchema, type VerifyProblem, type VerifyResult } from '@pgfleet/proto';
import { decodeOutboxEvent } from '../jobs/events.js';
import { WAL_GAP_CONDITION, backupsAffected, recordWalGaps, walGapOf } from './wal-gaps.js';

const dirs: string[] = [];
after(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

function gapProblem(timeline: number, lsnFrom: string, lsnTo: string, segments: string[]): VerifyProblem {
  return create(VerifyProblemSchema, {
    kind: 'wal-gap',
    path: segments[0]!,
    timeline,
    lsnFrom,
    lsnTo,
    segments,
    message: 'gap',
  });
}

const verifyWith = (...problems: VerifyProblem[]): VerifyResult =>
  create(VerifyResultSchema, {
    problems: [...problems, create(VerifyProblemSchema, { kind: 'missing-file', label: 'b1', path: 'base/1/2' })],
  });

/** Segment names of timeline 1 from `from` (hex segment number, 16 MiB segments), `n` of them. */
const names = (from: number, n: number) =>
  Array.from(
    { length: n },
    (_, i) => `00000001${'0'.repeat(8)}${(from + i).toString(16).toUpperCase().padStart(8, '0')}`,
  );

test("a gap's first and last missing segment and their count, from the LSN range", () => {
  // 0/31000000 .. 0/33000000: segments 31 and 32 are missing.
  assert.deepEqual(walGapOf(gapProblem(1, '0/31000000', '0/33000000', names(0x31, 2))), {
    key: '1:000000010000000000000031:000000010000000000000032',
    timeline: 1,
    firstMissingWal: '000000010000000000000031',
    lastMissingWal: '000000010000000000000032',
    missingSegments: 2n,
  });
  // Verify lists at most 256 names; 300 are missing.
  const long = walGapOf(gapProblem(1, '0/10000000', '1/3C000000', names(0x10, 256)))!;
  assert.equal(long.missingSegments, 300n);
  assert.equal(long.lastMissingWal, '00000001000000010000003B');
  // 64 MiB segments (initdb --wal-segsize=64): 0/8000000 is the start of segment 2.
  const big = walGapOf(
    gapProblem(1, '0/8000000', '0/14000000', [
      '000000010000000000000002',
      '000000010000000000000003',
      '000000010000000000000004',
    ]),
  )!;
  assert.deepEqual([big.lastMissingWal, big.missingSegments], ['000000010000000000000004', 3n]);
  assert.equal(
    walGapOf(create(VerifyProblemSchema, { kind: 'wal-empty', path: '000000010000000000000005' })),
    undefined,
  );
});

const backup = (label: string, walStart: string, walStop: string): BackupRecord => ({
  cluster: 'main',
  label,
  type: 'full',
  startLsn: '0/1',
  stopLsn: '0/2',
  startTime: 1,
  stopTime: 2,
  timeline: 1,
  systemIdentifier: '1',
  pgVersion: 170000,
  sizeBytes: 1,
  storedBytes: 1,
  fileCount: 1,
  walStart,
  walStop,
  jobId: 'j',
  priorLabel: '',
});

test('backups affected: those whose own WAL range overlaps the gap', () => {
  const gap = walGapOf(gapProblem(1, '0/31000000', '0/33000000', names(0x31, 2)))!;
  const backups = [
    backup('before', '000000010000000000000010', '000000010000000000000011'),
    backup('inside', '000000010000000000000030', '000000010000000000000031'),
    backup('spans', '000000010000000000000030', '000000010000000000000040'),
    backup('after', '000000010000000000000033', '000000010000000000000034'),
    backup('other-timeline', '000000020000000000000031', '000000020000000000000031'),
  ];
  assert.deepEqual(backupsAffected(gap, backups), ['inside', 'spans']);
});

test('one wal.gap_detected per distinct gap, not per verify run; a gap that is gone is forgotten', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'pgfleet-walgap-'));
  dirs.push(dir);
  const store = SqliteCatalogStore.open(join(dir, 'catalog.db'));
  await store.upsertCluster({ name: 'main', systemIdentifier: '1', pgVersion: 170000 }, 0);
  await store.insertBackup(backup('b1', '000000010000000000000030', '000000010000000000000031'));
  const a = gapProblem(1, '0/31000000', '0/33000000', names(0x31, 2));
  const b = gapProblem(1, '0/50000000', '0/51000000', names(0x50, 1));
  const gapEvents = async () =>
    (await store.listEvents({ limit: 100 })).map(decodeOutboxEvent).filter((e) => e.kind === 'wal.gap_detected');

  assert.equal(await recordWalGaps(store, 'main', verifyWith(a), 1000), true);
  assert.equal(await recordWalGaps(store, 'main', verifyWith(a), 2000), false);
  assert.equal(await recordWalGaps(store, 'main', verifyWith(a), 3000), false);
  let events = await gapEvents();
  assert.equal(events.length, 1);
  const first = events[0]!.payload;
  assert.ok(first.case === 'walGapDetected');
  assert.deepEqual(
    { ...first.value, $typeName: undefined },
    {
      $typeName: undefined,
      timeline: 1,
      firstMissingWal: '000000010000000000000031',
      lastMissingWal: '000000010000000000000032',
      missingSegments: 2n,
      affectedBackupLabels: ['b1'],
    },
  );
  const state = (await store.listHealthStates('main')).find((s) => s.condition === WAL_GAP_CONDITION);
  assert.deepEqual([state?.state, state?.since], ['breached', 1000]);

  // A second gap: reported on its own; the first is not repeated.
  assert.equal(await recordWalGaps(store, 'main', verifyWith(a, b), 4000), true);
  events = await gapEvents();
  assert.deepEqual(
    events.map((e) => (e.payload.case === 'walGapDetected' ? e.payload.value.firstMissingWal : '')),
    ['000000010000000000000031', '000000010000000000000050'],
  );

  // Both gone (the WAL came back, or retention removed the range): state ok, no event.
  assert.equal(await recordWalGaps(store, 'main', verifyWith(), 5000), false);
  assert.equal((await store.listHealthStates('main')).find((s) => s.condition === WAL_GAP_CONDITION)?.state, 'ok');
  assert.equal((await gapEvents()).length, 2);
  // ...and a gap that comes back is news again.
  assert.equal(await recordWalGaps(store, 'main', verifyWith(a), 6000), true);
  assert.equal((await gapEvents()).length, 3);
  await store.close();
});
