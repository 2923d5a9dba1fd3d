// The verify job against a real posix repository in a temp directory: verdicts, references between
// backups, incomplete backups, WAL gaps inside and after a backup's own WAL, timeline switches.
import { strict as assert } from 'node:assert';
import { createHash } from 'node:crypto';
import { beforeEach, describe, test } from 'node:test';
import { silentLogger } from '@pgfleet/core';
import type { ManifestFile, Repository } from '@pgfleet/storage';
import { testWalKey } from '@pgfleet/storage/testing';
import { manifestFile, segmentName, tempRepositories, testBackupWriter } from '../testing/repository-fixtures.js';
import { runVerify } from './verify.js';

const C = 'main';
const SEG = 1024 * 1024;
const DATA = Buffer.from('data');
const SHA = createHash('sha256').update(DATA).digest('hex');
let repo: Repository;
const newRepository = tempRepositories('pgfleet-verify-');
const backup = testBackupWriter(() => repo, C, DATA, { walSegmentSize: SEG });

const seg = segmentName;
const file = (path: string, backup: string, sha = SHA): ManifestFile => manifestFile(path, backup, sha);

/** Backups here start and stop at the same instant. */
const at = (time: string) => ({ startTime: time, stopTime: time });

/** The key of a WAL object as the cluster's agent names it (with its MAC); fast mode only looks at stored sizes, so a few zstd-named bytes will do. */
function walKey(name: string, body: Buffer = Buffer.from('w')): string {
  // History files are read by content (their checksum is checked); segments only by name here.
  const history = name.includes('.history');
  const sha = history ? createHash('sha256').update(body).digest('hex') : 'a'.repeat(64);
  return testWalKey(C, name, sha, history ? '' : '.zst');
}

async function wal(name: string, body: Buffer = Buffer.from('w')): Promise<void> {
  await repo.driver.put(walKey(name, body), body);
}

const verify = () => runVerify({ cluster: C, repo, full: false, log: silentLogger() });

beforeEach(async () => {
  ({ repo } = newRepository());
  await repo.ensureClusterInfo(C, { systemIdentifier: '1', pgVersionNum: 170000, walSegmentSize: SEG });
  // F1 (WAL 2..3) <- I1 (reads base/1 from F1; WAL 5..5); WAL 1..10 on timeline 1.
  await backup(
    'F1',
    'full',
    seg(1, 2),
    seg(1, 3),
    [file('base/1', 'F1'), file('base/2', 'F1')],
    at('2026-01-01T00:01:00Z'),
  );
  await backup(
    'I1',
    'incr',
    seg(1, 5),
    seg(1, 5),
    [file('base/1', 'F1'), file('base/2', 'I1')],
    at('2026-01-01T01:01:00Z'),
  );
  for (let n = 1; n <= 10; n++) await wal(seg(1, n));
});

describe('verify job', () => {
  test('a clean repository: every backup restorable to the end of the newest segment', async () => {
    const v = await verify();
    assert.deepEqual(v.problems, []);
    assert.equal(v.ok, true);
    assert.deepEqual(
      v.backups.map((b) => [b.label, b.restorable, b.fromLsn, b.toLsn, b.toTimeline]),
      [
        ['F1', true, '0/2', '0/B00000', 1],
        ['I1', true, '0/2', '0/B00000', 1],
      ],
    );
    assert.deepEqual(v.walNewest, [seg(1, 10)]);
    assert.equal(v.walSegmentsChecked, 10);
  });

  test('a reference to a missing backup, and one to a backup describing other bytes', async () => {
    await backup(
      'I2',
      'incr',
      seg(1, 6),
      seg(1, 6),
      [file('base/1', 'F0'), file('base/2', 'F1', 'b'.repeat(64))],
      at('2026-01-01T02:01:00Z'),
    );
    const v = await verify();
    const refs = v.problems.filter((p) => p.kind === 'bad-reference').map((p) => [p.label, p.path]);
    assert.deepEqual(refs, [
      ['I2', 'base/1'],
      ['I2', 'base/2'],
    ]);
    // base/1 of F0 is not there at all; base/2 of F1 is there with other bytes.
    assert.deepEqual(
      v.problems.filter((p) => p.kind !== 'bad-reference').map((p) => [p.kind, p.label, p.path]),
      [
        ['missing-file', 'I2', 'base/1'],
        ['checksum-mismatch', 'I2', 'base/2'],
      ],
    );
    const i2 = v.backups.find((b) => b.label === 'I2')!;
    assert.equal(i2.restorable, false);
    assert.match(i2.reasons.join('\n'), /bad reference: base\/1 reads from backup F0, which is not in the repository/);
    assert.equal(v.backups.find((b) => b.label === 'I1')!.restorable, true);
    assert.equal(v.ok, false);
  });

  test('a backup without a manifest is incomplete, not a fault; a corrupt manifest is', async () => {
    await repo.driver.put(repo.backupFileKey(C, 'F9', 'base/1', 'none'), DATA);
    let v = await verify();
    assert.deepEqual(
      v.problems.map((p) => [p.kind, p.label]),
      [['incomplete-backup', 'F9']],
    );
    assert.equal(v.ok, true);
    await repo.driver.put(`${C}/backup/F9/backup.manifest`, Buffer.from('{"format": 1, "label": "F9"'));
    v = await verify();
    assert.deepEqual(
      v.problems.map((p) => [p.kind, p.label, p.key]),
      [['manifest-corrupt', 'F9', `${C}/backup/F9/backup.manifest`]],
    );
    assert.deepEqual(
      v.backups.map((b) => [b.label, b.restorable]),
      [
        ['F1', true],
        ['I1', true],
        ['F9', false],
      ],
    );
    assert.match(
      v.backups[2]!.reasons[0]!,
      /^manifest corrupt: manifest of backup F9 of cluster main .* carries no authentication code/,
    );
  });

  test("a gap inside a backup's own WAL makes it unrestorable; after it, it ends the range", async () => {
    await repo.driver.delete([walKey(seg(1, 3))]);
    await repo.driver.delete([walKey(seg(1, 7))]);
    const v = await verify();
    assert.deepEqual(
      v.problems.map((p) => [p.kind, p.lsnFrom, p.lsnTo, p.segments]),
      [
        ['wal-gap', '0/300000', '0/400000', [seg(1, 3)]],
        ['wal-gap', '0/700000', '0/800000', [seg(1, 7)]],
      ],
    );
    const [f1, i1] = v.backups;
    assert.equal(f1!.restorable, false);
    assert.match(
      f1!.reasons[0]!,
      /WAL gap \[0\/300000, 0\/400000\) on timeline 1: segment 000000010000000000000003 missing, inside the WAL the backup needs/,
    );
    assert.equal(i1!.restorable, true);
    assert.equal(i1!.toLsn, '0/700000');
    assert.match(i1!.reasons[0]!, /^recovery stops at 0\/700000: WAL gap \[0\/700000, 0\/800000\)/);
  });

  test('planted WAL (no MAC, a wrong one) is named and never used: a planted copy alone breaks continuity, one beside the genuine copy does not', async () => {
    const forged = Buffer.from('forged');
    const sha = createHash('sha256').update(forged).digest('hex');
    // Beside the genuine segment 4; instead of segment 7 (deleted); a crafted history for timeline 2.
    const beside = `${C}/wal/${seg(1, 4).slice(0, 16)}/${seg(1, 4)}-${sha}.zst`;
    const instead = `${C}/wal/${seg(1, 7).slice(0, 16)}/${seg(1, 7)}-${sha}-${'0'.repeat(32)}.zst`;
    const history = `${C}/wal/timelines/00000002.history-${sha}`;
    await repo.driver.delete([walKey(seg(1, 7))]);
    for (const key of [beside, instead, history]) await repo.driver.put(key, forged);
    for (let n = 9; n <= 12; n++) await wal(seg(2, n));
    const v = await verify();
    assert.deepEqual(
      v.problems.map((p) => [p.kind, p.path, p.key]).sort(),
      [
        ['wal-unauthenticated', '00000002.history', history],
        ['wal-unauthenticated', seg(1, 4), beside],
        ['wal-unauthenticated', seg(1, 7), instead],
      ].sort(),
    );
    // Timeline 2 is not followed: its only history is planted.
    assert.deepEqual(
      v.backups.map((b) => [b.label, b.toLsn, b.toTimeline]),
      [
        ['F1', '0/700000', 1],
        ['I1', '0/700000', 1],
      ],
    );
  });

  test('an empty stored segment is named and breaks continuity', async () => {
    await wal(seg(1, 5), Buffer.alloc(0));
    const v = await verify();
    assert.deepEqual(
      v.problems.map((p) => [p.kind, p.path]),
      [['wal-empty', seg(1, 5)]],
    );
    assert.equal(v.backups[1]!.restorable, false);
    assert.equal(v.backups[0]!.restorable, true);
    assert.equal(v.backups[0]!.toLsn, '0/500000');
  });

  test('follows a timeline history to the newer timeline', async () => {
    await wal('00000002.history', Buffer.from('1\t0/900100\tno recovery target specified\n'));
    for (let n = 9; n <= 12; n++) await wal(seg(2, n));
    const v = await verify();
    assert.deepEqual(v.problems, []);
    assert.deepEqual(
      v.backups.map((b) => [b.label, b.toLsn, b.toTimeline]),
      [
        ['F1', '0/D00000', 2],
        ['I1', '0/D00000', 2],
      ],
    );
    assert.deepEqual(v.walNewest, [seg(1, 10), seg(2, 12)]);
  });
});
