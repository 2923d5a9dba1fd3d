// The expire job against a real posix repository in a temp directory: which backups and WAL files
// go, which stay, and the re-checks the agent makes against the repository itself.
import { strict as assert } from 'node:assert';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { beforeEach, describe, test } from 'node:test';
import { PgfleetError, silentLogger } from '@pgfleet/core';
import type { BackupLease, ManifestFile, Repository } from '@pgfleet/storage';
import { manifestFile, segmentName, tempRepositories, testBackupWriter } from '../testing/repository-fixtures.js';
import { runExpire, walFileStays } from './expire.js';

const C = 'main';
const SHA = 'a'.repeat(64);
let root: string;
let repo: Repository;
const newRepository = tempRepositories('pgfleet-expire-');
const backup = testBackupWriter(() => repo, C, Buffer.from('data'));

const seg = segmentName;
const file = (path: string, backup: string): ManifestFile => manifestFile(path, backup, SHA);

async function wal(name: string): Promise<void> {
  const dir = name.includes('.history') ? 'timelines' : name.slice(0, 16);
  await repo.driver.put(`${C}/wal/${dir}/${name}-${SHA}`, Buffer.from('w'));
}

async function walNames(): Promise<string[]> {
  const out: string[] = [];
  for await (const w of repo.listWal(C)) out.push(w.name);
  return out.sort();
}

const labelsOf = async (): Promise<string[]> => (await repo.listBackups(C)).map((m) => m.label).sort();

beforeEach(async () => {
  ({ root, repo } = newRepository());
  // F1 (WAL 2..3) <- I1 (reads base/1 from F1; WAL 5..5), F2 (WAL 8..9) on timeline 1; timeline 2 from 9 on.
  await backup('F1', 'full', seg(1, 2), seg(1, 3), [file('base/1', 'F1'), file('base/2', 'F1')]);
  await backup('I1', 'incr', seg(1, 5), seg(1, 5), [file('base/1', 'F1'), file('base/2', 'I1')], {
    priorLabel: 'F1',
  });
  await backup('F2', 'full', seg(1, 8), seg(1, 9), [file('base/1', 'F2'), file('base/2', 'F2')]);
  for (let n = 1; n <= 10; n++) await wal(seg(1, n));
  await wal(`${seg(1, 2)}.00000028.backup`);
  await wal(`${seg(1, 4)}.partial`);
  await wal(seg(2, 9));
  await wal(seg(2, 10));
  await wal('00000002.history');
});

describe('expire job', () => {
  test('deletes the backups and the WAL before the keep point, except kept ranges and history', async () => {
    const out = await runExpire({
      cluster: C,
      repo,
      labels: ['F1', 'I1'],
      walKeepFrom: seg(1, 8),
      keepRanges: [{ timeline: 1, walStart: seg(1, 5), walStop: seg(1, 5) }],
      log: silentLogger(),
    });
    assert.deepEqual(out.deletedLabels, ['F1', 'I1']);
    assert.deepEqual(out.skippedLabels, []);
    assert.equal(out.backupFilesDeleted, 2 + 2 + 1 + 2); // F1: 2 files + summary + manifest; I1: 1 file + summary + manifest
    assert.deepEqual(await labelsOf(), ['F2']);
    // A posix repository is left without the emptied directories.
    assert.equal(existsSync(join(root, C, 'backup', 'F1')), false);
    assert.equal(existsSync(join(root, C, 'backup', 'I1')), false);
    assert.deepEqual(
      await walNames(),
      ['00000002.history', seg(1, 5), seg(1, 8), seg(1, 9), seg(1, 10), seg(2, 9), seg(2, 10)].sort(),
    );
    // Segments 1-4, 6, 7 and the .backup and .partial files before segment 8.
    assert.deepEqual([out.walFilesDeleted, out.walFirstDeleted, out.walLastDeleted], [8, seg(1, 1), seg(1, 7)]);
    // Again: converges, nothing left to do.
    const again = await runExpire({
      cluster: C,
      repo,
      labels: ['F1', 'I1'],
      walKeepFrom: seg(1, 8),
      keepRanges: [],
      log: silentLogger(),
    });
    assert.deepEqual([again.deletedLabels, again.backupFilesDeleted, again.walFilesDeleted], [['F1', 'I1'], 0, 1]); // seg 5 had only the controller's range
  });

  test('a backup a kept backup reads from stays, and so does the WAL of every kept backup', async () => {
    const out = await runExpire({
      cluster: C,
      repo,
      labels: ['F1'],
      walKeepFrom: seg(1, 8),
      keepRanges: [],
      log: silentLogger(),
    });
    assert.deepEqual([out.deletedLabels, out.skippedLabels], [[], ['F1']]);
    assert.deepEqual(await labelsOf(), ['F1', 'F2', 'I1']);
    const left = await walNames();
    // F1 (2..3) and I1 (5) are complete, kept backups in the repository: their ranges stay whatever the job said.
    for (const n of [2, 3, 5, 8, 9, 10]) assert.ok(left.includes(seg(1, n)), seg(1, n));
    for (const n of [1, 4, 6, 7]) assert.ok(!left.includes(seg(1, n)), seg(1, n));
    assert.ok(left.includes(`${seg(1, 2)}.00000028.backup`));
    assert.ok(!left.includes(`${seg(1, 4)}.partial`));
  });

  test('a backup that stays because a kept one reads from it keeps what it reads (a re-based incr over an incr)', async () => {
    // I2 builds on I1 (its prior) but reads nothing of F1: its block-mapped files were re-based.
    await backup('I2', 'incr', seg(1, 6), seg(1, 6), [file('base/1', 'I2'), file('base/2', 'I1')], {
      priorLabel: 'I1',
    });
    const out = await runExpire({
      cluster: C,
      repo,
      labels: ['F1', 'I1'],
      walKeepFrom: '',
      keepRanges: [],
      log: silentLogger(),
    });
    // I1 stays for I2, and F1 for I1 (which reads base/1 from it).
    assert.deepEqual([out.deletedLabels, out.skippedLabels.sort()], [[], ['F1', 'I1']]);
    assert.deepEqual(await labelsOf(), ['F1', 'F2', 'I1', 'I2']);
  });

  test('no keep point: no WAL is touched; dry run deletes nothing', async () => {
    const before = await walNames();
    const out = await runExpire({
      cluster: C,
      repo,
      labels: ['F1', 'I1'],
      walKeepFrom: '',
      keepRanges: [],
      log: silentLogger(),
      dryRun: true,
    });
    assert.deepEqual([out.deletedLabels, out.walFilesDeleted], [['F1', 'I1'], 0]);
    assert.deepEqual(await labelsOf(), ['F1', 'F2', 'I1']);
    const dry = await runExpire({
      cluster: C,
      repo,
      labels: [],
      walKeepFrom: seg(1, 8),
      keepRanges: [],
      log: silentLogger(),
      dryRun: true,
    });
    assert.ok(dry.walFilesDeleted > 0);
    assert.deepEqual(await walNames(), before);
  });

  test('labels and segment names that could reach outside the repository layout are refused', async () => {
    for (const bad of ['../F1', 'a/b', '', '.']) {
      await assert.rejects(
        runExpire({ cluster: C, repo, labels: [bad], walKeepFrom: '', keepRanges: [], log: silentLogger() }),
        (e: unknown) => PgfleetError.is(e, 'InvalidArgument'),
      );
    }
    await assert.rejects(
      runExpire({ cluster: C, repo, labels: [], walKeepFrom: 'nope', keepRanges: [], log: silentLogger() }),
      (e: unknown) => PgfleetError.is(e, 'InvalidArgument'),
    );
    assert.deepEqual(await labelsOf(), ['F1', 'F2', 'I1']);
  });

  test('walFileStays: history and unknown names always stay; position decides across timelines', () => {
    assert.equal(walFileStays('00000003.history', seg(1, 8), []), true);
    assert.equal(walFileStays('something-else', seg(1, 8), []), true);
    assert.equal(walFileStays(seg(3, 7), seg(1, 8), []), false);
    assert.equal(walFileStays(seg(3, 8), seg(1, 8), []), true);
    assert.equal(walFileStays(seg(1, 7), '', []), true);
    assert.equal(walFileStays(seg(2, 5), seg(1, 8), [{ timeline: 1, walStart: seg(1, 4), walStop: seg(1, 6) }]), false);
    assert.equal(walFileStays(seg(1, 5), seg(1, 8), [{ timeline: 1, walStart: seg(1, 4), walStop: seg(1, 6) }]), true);
  });

  // The leases of backups in progress (storage backup-lease.ts, agent backup/lease.ts).
  const NOW = Date.parse('2026-01-02T00:00:00Z');
  const lease = (label: string, chain: string[], ageMs: number, walStart?: string): BackupLease => ({
    format: 1,
    cluster: C,
    label,
    chain,
    ...(walStart ? { walStart } : {}),
    host: 'db1',
    pid: 42,
    startedAt: new Date(NOW - ageMs).toISOString(),
    refreshedAt: new Date(NOW - ageMs).toISOString(),
    staleAfterMs: 600_000,
  });
  const expireAll = () =>
    runExpire({
      cluster: C,
      repo,
      labels: ['F1', 'I1'],
      walKeepFrom: seg(1, 8),
      keepRanges: [],
      log: silentLogger(),
      now: () => NOW,
    });

  test('a backup in progress keeps its chain: a live lease naming them skips them, files and WAL of its start on', async () => {
    // I2 runs on I1 (which reads from F1) and recorded its first segment, 6.
    await repo.writeBackupLease(lease('I2', ['I1', 'F1'], 30_000, seg(1, 6)));
    const out = await expireAll();
    assert.deepEqual(out.deletedLabels, []);
    assert.deepEqual(out.skippedLabels, ['F1', 'I1']);
    assert.deepEqual(await labelsOf(), ['F1', 'F2', 'I1']);
    assert.ok(existsSync(join(root, repo.backupFileKey(C, 'F1', 'base/1', 'none'))));
    // WAL from the lease's first segment stays, older goes.
    assert.deepEqual(
      (await walNames()).filter((n) => /^[0-9A-F]{24}$/.test(n) && n.startsWith('00000001')),
      [seg(1, 2), seg(1, 3), seg(1, 5), seg(1, 6), seg(1, 7), seg(1, 8), seg(1, 9), seg(1, 10)],
      'kept backups keep their ranges; the lease keeps 6 on',
    );
  });

  test('a stale lease (its backup died) protects nothing', async () => {
    await repo.writeBackupLease(lease('I2', ['I1', 'F1'], 600_001, seg(1, 6)));
    const out = await expireAll();
    assert.deepEqual(out.deletedLabels, ['F1', 'I1']);
    assert.deepEqual(await labelsOf(), ['F2']);
    assert.ok(!(await walNames()).includes(seg(1, 6)));
  });

  test('a lease written while the manifests are withdrawn puts them back byte for byte, files kept', async () => {
    const manifestKey = repo.backupManifestKey(C, 'F1');
    const { readFile } = await import('node:fs/promises');
    const stored = await readFile(join(root, manifestKey));
    // The backup writes its lease between this expire's first look at the leases and its second.
    const withdraw = repo.withdrawManifest.bind(repo);
    let raced = false;
    repo.withdrawManifest = async (cluster, label) => {
      const taken = await withdraw(cluster, label);
      if (!raced) {
        raced = true;
        await repo.writeBackupLease(lease('I2', ['F1'], 0));
      }
      return taken;
    };
    const out = await expireAll();
    assert.deepEqual(out.skippedLabels, ['F1']);
    assert.deepEqual(out.deletedLabels, ['I1']);
    assert.deepEqual(await readFile(join(root, manifestKey)), stored);
    assert.ok(existsSync(join(root, repo.backupFileKey(C, 'F1', 'base/2', 'none'))));
    assert.deepEqual(await labelsOf(), ['F1', 'F2']);
  });

  // backup delete (ExpireJob.exact): exactly the labels or nothing, judged by the repository.
  const deleteExactly = (labels: string[]) =>
    runExpire({
      cluster: C,
      repo,
      labels,
      walKeepFrom: '',
      keepRanges: [],
      exact: true,
      log: silentLogger(),
      now: () => NOW,
    });

  test('backup delete: a backup another one reads from is refused (BackupHasDependents), nothing deleted; with it, both go', async () => {
    await assert.rejects(
      deleteExactly(['F1']),
      (e: unknown) => PgfleetError.is(e, 'BackupHasDependents') && /F1 \(read by I1\)/.test(e.message),
    );
    assert.deepEqual(await labelsOf(), ['F1', 'F2', 'I1']);
    const out = await deleteExactly(['I1', 'F1']);
    assert.deepEqual(out.deletedLabels, ['I1', 'F1']);
    assert.deepEqual(await labelsOf(), ['F2']);
    assert.equal(out.walFilesDeleted, 0, 'backup delete leaves WAL alone');
  });

  test('backup delete: a backup a running backup leased is refused (BackupHeld), nothing deleted', async () => {
    await repo.writeBackupLease(lease('I2', ['I1', 'F1'], 30_000));
    await assert.rejects(
      deleteExactly(['I1', 'F1']),
      (e: unknown) => PgfleetError.is(e, 'BackupHeld') && /I1 \(by I2\)/.test(e.message),
    );
    assert.deepEqual(await labelsOf(), ['F1', 'F2', 'I1']);
  });
});
