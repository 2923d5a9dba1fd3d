// pgfleet info against a real posix repository in a temp directory: chains and dependents from
// the manifests (priorLabel and the backups files name), WAL per timeline from one listing.
import { strict as assert } from 'node:assert';
import { test } from 'node:test';
import type { Repository } from '@pgfleet/storage';
import {
  manifestFile,
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
  await backup('I2', 'incr', seg(1, 6), seg(1, 6), [f('a', 'F1'), f('b', 'D1'), f('c', 'I2')], {
    priorLabel: 'D1',
    ...at(3),
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
  const wal = async (repo: Repository, name: string, bytes: number) => {
    const dir = name.includes('.history') ? 'timelines' : name.slice(0, 16);
    await repo.driver.put(`${C}/wal/${dir}/${name}-${SHA}`, Buffer.alloc(bytes));
  };
  for (const n of [2, 3, 4, 5, 6, 7]) await wal(repo, seg(1, n), 10);
  await wal(repo, `${seg(1, 2)}.00000028.backup`, 1);
  await wal(repo, seg(2, 7), 10);
  await wal(repo, seg(2, 8), 10);
  await wal(repo, `${seg(2, 9)}.partial`, 5);
  await wal(repo, '00000002.history', 2);

  const info = await readRepositoryInfo(repo, C);
  assert.equal(info.cluster, C);
  const backups = info.backups!;
  assert.deepEqual(
    backups.map((b) => b.backup!.label),
    ['F1', 'I1', 'D1', 'I2'],
  );
  const by = new Map(backups.map((b) => [b.backup!.label, b]));
  assert.deepEqual(by.get('F1')!.dependsOn, []);
  assert.deepEqual(by.get('I2')!.dependsOn, ['D1', 'F1'], 'nearest first');
  assert.deepEqual(by.get('F1')!.dependents, ['I1', 'D1', 'I2']);
  assert.deepEqual(by.get('D1')!.dependents, ['I2']);
  assert.deepEqual(by.get('I1')!.dependents, []);
  assert.equal(by.get('F1')!.ownSizeBytes, 12n, 'three 4-byte files of its own');
  assert.equal(by.get('I2')!.ownSizeBytes, 4n);
  assert.equal(by.get('I2')!.codec, 'none');
  assert.equal(info.backupOwnSizeBytes, 12n + 4n + 4n + 4n);
  assert.deepEqual(
    info.wal!.map((t) => [t.timeline, t.oldestSegment, t.newestSegment, t.segments, t.storedBytes, t.history]),
    [
      [1, seg(1, 2), seg(1, 7), 6n, 61n, false],
      [2, seg(2, 7), seg(2, 8), 2n, 27n, true],
    ],
  );
  assert.equal(info.walStoredBytes, 88n);
});
