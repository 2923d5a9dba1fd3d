// pgfleet info against a real posix repository in a temp directory: chains and dependents from
// the manifests (priorLabel, the backups files name, the backups block maps read), WAL per
// timeline from one listing, authenticated copies only.
import { strict as assert } from 'node:assert';
import { test } from 'node:test';
import { walMac, type ManifestFile, type Repository } from '@pgfleet/storage';
import {
  manifestFile,
  TEST_MANIFEST_KEYS,
  segmentName as seg,
  tempRepositories,
  testBackupWriter,
} from '../testing/repository-fixtures.js';
import { readRepositoryInfo } from './repository-info.js';

const C = 'main';
const SHA = 'b'.repeat(64);
const newRepository = tempRepositories('pgfleet-info-');

test('info: every backup oldest first with its chain and dependents, own sizes, and WAL per timeline', async () => {
  const { repo } = newRepository();
  const backup = testBackupWriter(() => repo, C, Buffer.from('data'));
  const at = (minute: number) => ({
    startTime: `2026-01-01T00:${String(minute).padStart(2, '0')}:00Z`,
    stopTime: `2026-01-01T00:${String(minute).padStart(2, '0')}:30Z`,
  });
  const f = (path: string, label: string) => manifestFile(path, label, SHA);
  // Written out of order: info orders by stop time.
  // A block-incremental file: 3 blocks, one changed block stored, its map reading I1's object too
  // (blocks.from counts as reading from I1 although I1 is not in I2's prior chain).
  const figures = (size: number) => ({ size, sha256: SHA, storedSize: size, storedSha256: SHA });
  const blockIncr: ManifestFile = {
    ...f('d', 'I2'),
    size: 3 * 8192,
    storedSize: 8192 + 100,
    blocks: { map: figures(100), changed: { ...figures(8192), count: 1 }, from: ['I1'] },
  };
  await backup('I2', 'incr', seg(1, 6), seg(1, 6), [f('a', 'F1'), f('b', 'D1'), f('c', 'I2'), blockIncr], {
    priorLabel: 'D1',
    ...at(3),
    format: 2,
  });
  await backup('F1', 'full', seg(1, 2), seg(1, 2), [f('a', 'F1'), f('b', 'F1'), f('c', 'F1')], at(0));
  await backup('I1', 'incr', seg(1, 4), seg(1, 4), [f('a', 'F1'), f('b', 'I1'), f('c', 'F1')], {
    priorLabel: 'F1',
    ...at(1),
  });
  await backup('D1', 'incr', seg(1, 5), seg(1, 5), [f('a', 'F1'), f('b', 'D1'), f('c', 'F1')], {
    priorLabel: 'F1',
    ...at(2),
  });
  // Archived under the cluster's key, as the agent names WAL (storage wal-auth.ts); `mac` overrides it (a planted copy).
  const wal = async (repo: Repository, name: string, bytes: number, mac?: string) => {
    const dir = name.includes('.history') ? 'timelines' : name.slice(0, 16);
    const sig = mac ?? walMac(TEST_MANIFEST_KEYS.keyFor(C)!, C, name, SHA);
    await repo.driver.put(`${C}/wal/${dir}/${name}-${SHA}-${sig}`, Buffer.alloc(bytes));
  };
  for (const n of [2, 3, 4, 5, 6, 7]) await wal(repo, seg(1, n), 10);
  await wal(repo, `${seg(1, 2)}.00000028.backup`, 1);
  await wal(repo, seg(2, 7), 10);
  await wal(repo, seg(2, 8), 10);
  await wal(repo, `${seg(2, 9)}.partial`, 5);
  await wal(repo, '00000002.history', 2);
  // Planted: a newer segment and a timeline 3 with a wrong MAC, and a segment named without one.
  await wal(repo, seg(1, 8), 10, '0'.repeat(32));
  await wal(repo, '00000003.history', 2, '0'.repeat(32));
  await repo.driver.put(`${C}/wal/${seg(3, 9).slice(0, 16)}/${seg(3, 9)}-${SHA}`, Buffer.alloc(10));

  const info = await readRepositoryInfo(repo, C);
  assert.equal(info.cluster, C);
  const backups = info.backups!;
  assert.deepEqual(
    backups.map((b) => b.backup!.label),
    ['F1', 'I1', 'D1', 'I2'],
  );
  const by = new Map(backups.map((b) => [b.backup!.label, b]));
  assert.deepEqual(by.get('F1')!.dependsOn, []);
  assert.deepEqual(by.get('I2')!.dependsOn, ['D1', 'F1', 'I1'], 'nearest first, then what a block map reads');
  assert.deepEqual(by.get('F1')!.dependents, ['I1', 'D1', 'I2']);
  assert.deepEqual(by.get('D1')!.dependents, ['I2']);
  assert.deepEqual(by.get('I1')!.dependents, ['I2'], 'a block map reading I1 makes I2 depend on it');
  assert.equal(by.get('F1')!.ownSizeBytes, 12n, 'three 4-byte files of its own');
  assert.equal(by.get('I2')!.ownSizeBytes, 4n + 8192n, 'a whole file and the one changed block it stored');
  assert.equal(by.get('I2')!.codec, 'none');
  assert.equal(info.backupOwnSizeBytes, 12n + 4n + 4n + 4n + 8192n);
  assert.deepEqual(
    info.wal!.map((t) => [t.timeline, t.oldestSegment, t.newestSegment, t.segments, t.storedBytes, t.history]),
    [
      [1, seg(1, 2), seg(1, 7), 6n, 61n, false],
      [2, seg(2, 7), seg(2, 8), 2n, 27n, true],
    ],
  );
  assert.equal(info.walStoredBytes, 88n);
  assert.equal(info.unauthenticatedWalFiles, 3n, 'planted copies are counted apart, nowhere else');
});
