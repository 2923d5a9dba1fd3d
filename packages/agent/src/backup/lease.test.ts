// The backup lease against a real posix repository: what a backup in progress does with it, and
// a seeded race of backups against expires in which no listed backup ever misses a file.
import { strict as assert } from 'node:assert';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { PgfleetError, silentLogger, sleep } from '@pgfleet/core';
import { PosixDriver, Repository, type RepositoryDriver } from '@pgfleet/storage';
import {
  manifestFile,
  putTestBackup,
  segmentName,
  tempRepositories,
  TEST_MANIFEST_KEYS,
} from '../testing/repository-fixtures.js';
import { runExpire } from '../retention/expire.js';
import { BackupLeaseHolder, leaseChain, LEASE_STALE_REFRESHES } from './lease.js';

const C = 'main';
const SHA = 'b'.repeat(64);
const newRepository = tempRepositories('pgfleet-lease-');
const seg = segmentName;

/** F1 (full) and I1 (incr reading base/1 from F1). */
async function chain(repo: Repository): Promise<void> {
  await putTestBackup(
    repo,
    {
      cluster: C,
      label: 'F1',
      type: 'full',
      walStart: seg(1, 2),
      walStop: seg(1, 2),
      files: [manifestFile('base/1', 'F1', SHA), manifestFile('base/2', 'F1', SHA)],
    },
    Buffer.from('data'),
  );
  await putTestBackup(
    repo,
    {
      cluster: C,
      label: 'I1',
      type: 'incr',
      priorLabel: 'F1',
      walStart: seg(1, 3),
      walStop: seg(1, 3),
      files: [manifestFile('base/1', 'F1', SHA), manifestFile('base/2', 'I1', SHA)],
    },
    Buffer.from('data'),
  );
}

describe('backup lease', () => {
  test('names the prior and every backup the prior reads from', async () => {
    const { repo } = newRepository();
    await chain(repo);
    assert.deepEqual(leaseChain(await repo.readManifest(C, 'I1')).sort(), ['F1', 'I1']);
    assert.deepEqual(leaseChain(undefined), []);
  });

  test('is written at start, refreshed while the backup runs, removed at the end', async () => {
    const { repo } = newRepository();
    await chain(repo);
    const holder = await BackupLeaseHolder.acquire(repo, C, 'I2', ['I1', 'F1'], silentLogger(), 20);
    const [first] = await repo.listBackupLeases(C, Date.now());
    assert.deepEqual([first!.label, first!.state, first!.lease!.chain], ['I2', 'live', ['I1', 'F1']]);
    assert.equal(first!.lease!.staleAfterMs, 20 * LEASE_STALE_REFRESHES);
    await holder.recordWalStart(seg(1, 4));
    // Refreshed by its timer: the refresh time moves on.
    let later = first;
    for (let i = 0; i < 200 && later!.lease!.refreshedAt === first!.lease!.refreshedAt; i++) {
      await sleep(10);
      [later] = await repo.listBackupLeases(C, Date.now());
    }
    assert.notEqual(later!.lease!.refreshedAt, first!.lease!.refreshedAt);
    assert.equal(later!.lease!.walStart, seg(1, 4));
    await holder.confirm();
    await holder.release(true);
    assert.equal(await repo.hasBackupLease(C, 'I2'), false);
  });

  test('a chain member already expired stops the backup at its start, and at its end', async () => {
    const { repo } = newRepository();
    await chain(repo);
    await repo.withdrawManifest(C, 'F1');
    await assert.rejects(BackupLeaseHolder.acquire(repo, C, 'I2', ['I1', 'F1'], silentLogger()), (e: unknown) =>
      PgfleetError.is(e, 'BackupChainExpired'),
    );
    const holder = await BackupLeaseHolder.acquire(repo, C, 'I3', ['I1'], silentLogger());
    await repo.withdrawManifest(C, 'I1');
    await assert.rejects(holder.confirm(), (e: unknown) => PgfleetError.is(e, 'BackupChainExpired'));
    await holder.release(true);
  });

  test('a refresh that cannot be written fails the backup before its manifest', async () => {
    const { root, repo } = newRepository();
    await chain(repo);
    let broken = false;
    const driver = new PosixDriver(root);
    const put = driver.put.bind(driver);
    driver.put = async (...args) => {
      if (broken) throw new PgfleetError('RepoIoFailed', 'no space left on device');
      return put(...args);
    };
    const holder = await BackupLeaseHolder.acquire(
      new Repository(driver, TEST_MANIFEST_KEYS),
      C,
      'I2',
      ['I1'],
      silentLogger(),
    );
    broken = true;
    await assert.rejects(holder.confirm(), (e: unknown) => PgfleetError.is(e, 'BackupLeaseLost'));
    await holder.release(false);
  });

  test('seeded race of backups and expires: no listed backup ever misses a file', async () => {
    let seed = 0x5eed;
    const random = () => {
      // mulberry32: the same interleavings on every run.
      seed = (seed + 0x6d2b79f5) | 0;
      let t = seed;
      t = Math.imul(t ^ (t >>> 15), t | 1);
      t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
      return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    };
    /** The driver with a random pause before every operation: the two sides interleave differently each round. */
    const jittery = (d: RepositoryDriver): RepositoryDriver =>
      new Proxy(d, {
        get(target, prop, receiver) {
          const v = Reflect.get(target, prop, receiver) as unknown;
          if (typeof v !== 'function' || !['put', 'get', 'stat', 'delete', 'deletePrefix'].includes(String(prop)))
            return v;
          return async (...args: unknown[]) => {
            await sleep(Math.floor(random() * 4));
            return (v as (...a: unknown[]) => unknown).apply(target, args);
          };
        },
      });
    let completed = 0;
    let stopped = 0;
    let kept = 0;
    for (let round = 0; round < 40; round++) {
      const { root } = newRepository();
      const setup = new Repository(new PosixDriver(root), TEST_MANIFEST_KEYS);
      await chain(setup);
      const backupSide = new Repository(jittery(new PosixDriver(root)), TEST_MANIFEST_KEYS);
      const expireSide = new Repository(jittery(new PosixDriver(root)), TEST_MANIFEST_KEYS);
      const backup = (async () => {
        await sleep(Math.floor(random() * 6));
        const holder = await BackupLeaseHolder.acquire(backupSide, C, 'I2', ['I1', 'F1'], silentLogger());
        try {
          await sleep(Math.floor(random() * 6));
          await holder.confirm();
          // The manifest of a backup that references F1 and I1's files (as runBackup writes it).
          await putTestBackup(
            backupSide,
            {
              cluster: C,
              label: 'I2',
              type: 'incr',
              priorLabel: 'I1',
              walStart: seg(1, 4),
              walStop: seg(1, 4),
              files: [manifestFile('base/1', 'F1', SHA), manifestFile('base/2', 'I1', SHA)],
            },
            Buffer.from('data'),
          );
          await holder.release(true);
          return 'completed';
        } catch (err) {
          await holder.release(true);
          if (PgfleetError.is(err, 'BackupChainExpired')) return 'stopped';
          throw err;
        }
      })().catch((err: unknown) => {
        if (PgfleetError.is(err, 'BackupChainExpired')) return 'stopped';
        throw err;
      });
      const expire = runExpire({
        cluster: C,
        repo: expireSide,
        labels: ['F1', 'I1'],
        walKeepFrom: '',
        keepRanges: [],
        log: silentLogger(),
      });
      const [outcome, expired] = await Promise.all([backup, expire]);
      if (outcome === 'completed') completed++;
      else stopped++;
      if (expired.skippedLabels.length > 0) kept++;
      // What a user checks: every listed backup has every file its manifest names.
      for (const m of await setup.listBackups(C)) {
        for (const f of (await setup.manifestFor(m)).files) {
          const key = setup.backupFileKey(C, f.backup, f.path, 'none');
          assert.ok(existsSync(join(root, key)), `round ${round}: ${m.label} lists ${key}, which is missing`);
        }
      }
      assert.deepEqual(await setup.listBackupLeases(C, Date.now()), [], 'no lease left behind');
    }
    // Both outcomes happened, so the race was really run both ways.
    assert.ok(completed > 0 && stopped > 0 && kept > 0, `completed ${completed}, stopped ${stopped}, kept ${kept}`);
  });
});
