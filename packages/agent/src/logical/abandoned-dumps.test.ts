// Dumps whose agent died, against a real posix repository: which unfinished dump directories the
// sweep removes (dead leases) and which it never touches (running dumps, complete dumps).
import { strict as assert } from 'node:assert';
import { spawnSync } from 'node:child_process';
import { hostname } from 'node:os';
import { describe, test } from 'node:test';
import { dumpLabel, silentLogger } from '@pgfleet/core';
import type { BackupLease, Repository } from '@pgfleet/storage';
import { tempRepositories } from '../testing/repository-fixtures.js';
import { BackupLeaseHolder } from '../backup/lease.js';
import { removeAbandonedDumps, runningDump, UNLEASED_DUMP_AGE_MS } from './abandoned-dumps.js';

const C = 'shop';
const newRepository = tempRepositories('pgfleet-abandoned-dumps-');
const NOW = Date.parse('2026-12-07T11:00:00Z');
const at = (minutesAgo: number) => new Date(NOW - minutesAgo * 60_000);

/** A dump directory as a dump leaves it: a database's table file and toc.dat, dump.json when complete. */
async function putDump(repo: Repository, label: string, complete = false): Promise<void> {
  const prefix = repo.dumpPrefix(C, label);
  await repo.driver.put(`${prefix}/16384/3001.dat.gz`, Buffer.from('table data'));
  await repo.driver.put(`${prefix}/16384/toc.dat`, Buffer.from('toc'));
  if (complete) await repo.driver.put(`${prefix}/dump.json`, Buffer.from('{}'));
}

async function putLease(
  repo: Repository,
  label: string,
  holder: { host?: string; pid: number; refreshedMinutesAgo?: number },
): Promise<void> {
  const refreshed = at(holder.refreshedMinutesAgo ?? 0).toISOString();
  const lease: BackupLease = {
    format: 1,
    cluster: C,
    label,
    chain: [],
    host: holder.host ?? hostname(),
    pid: holder.pid,
    startedAt: refreshed,
    refreshedAt: refreshed,
    staleAfterMs: 10 * 60_000,
  };
  await repo.writeDumpLease(lease);
}

const labels = async (repo: Repository) => (await repo.dumpDirectories(C)).map((d) => d.label);
const sweep = (repo: Repository, dryRun = false) =>
  removeAbandonedDumps({ repo, cluster: C, log: silentLogger(), now: () => NOW, dryRun });

describe('dumps whose agent died', () => {
  test('removes unfinished dumps whose lease no longer holds them, and only those', async () => {
    const { repo } = newRepository();
    // A pid whose process has exited: what an agent killed with -9 mid-dump leaves in its lease.
    const dead = spawnSync(process.execPath, ['-e', '']).pid!;
    const L = (minutesAgo: number) => dumpLabel(at(minutesAgo));
    const complete = L(60);
    const killedHere = L(50);
    const otherAgentHere = L(40);
    const thisProcessRunning = L(30);
    const thisProcessNotRunning = L(29);
    const otherHostLive = L(20);
    const otherHostStale = L(19);
    const unleasedOld = dumpLabel(new Date(NOW - UNLEASED_DUMP_AGE_MS - 60_000));
    const unleasedNew = L(5);
    const unreadable = L(4);
    for (const l of [
      killedHere,
      otherAgentHere,
      thisProcessRunning,
      thisProcessNotRunning,
      otherHostLive,
      otherHostStale,
      unleasedOld,
      unleasedNew,
      unreadable,
    ])
      await putDump(repo, l);
    // Complete: listed, whatever its (stale, dead) lease says.
    await putDump(repo, complete, true);
    await putLease(repo, complete, { pid: dead, refreshedMinutesAgo: 60 });
    await putLease(repo, killedHere, { pid: dead });
    await putLease(repo, otherAgentHere, { pid: process.ppid });
    await putLease(repo, thisProcessRunning, { pid: process.pid });
    await putLease(repo, thisProcessNotRunning, { pid: process.pid });
    await putLease(repo, otherHostLive, { host: 'elsewhere.example', pid: dead, refreshedMinutesAgo: 9 });
    await putLease(repo, otherHostStale, { host: 'elsewhere.example', pid: dead, refreshedMinutesAgo: 11 });
    await repo.driver.put(`${repo.dumpPrefix(C, unreadable)}/dump.lease`, Buffer.from('not json'));
    const ended = runningDump(C, thisProcessRunning);
    try {
      const gone = [killedHere, thisProcessNotRunning, otherHostStale, unleasedOld, unreadable].sort();
      // A dry run says what would go and removes nothing.
      assert.deepEqual((await sweep(repo, true)).sort(), gone);
      assert.equal((await labels(repo)).length, 10);
      assert.deepEqual((await sweep(repo)).sort(), gone);
      assert.deepEqual(
        await labels(repo),
        [complete, otherAgentHere, thisProcessRunning, otherHostLive, unleasedNew].sort(),
      );
      // What stays is untouched, file for file.
      for (const l of [otherAgentHere, thisProcessRunning, otherHostLive])
        assert.deepEqual(
          (await repo.dumpObjects(C, l)).map((o) => o.key.slice(repo.dumpPrefix(C, l).length + 1)),
          ['16384/3001.dat.gz', '16384/toc.dat', 'dump.lease'],
        );
      assert.deepEqual(await repo.listDumpLabels(C), [complete]);
      // Nothing more to do: a second sweep removes nothing.
      assert.deepEqual(await sweep(repo), []);
    } finally {
      ended();
    }
    // Once this process no longer runs it, its dump is a dead one's too.
    assert.deepEqual(await sweep(repo), [thisProcessRunning]);
  });

  test("a dump that completes between the sweep's two looks at its lease is kept", async () => {
    const { repo } = newRepository();
    // A dump running for over a day, stalled long enough for its lease to go stale, that then
    // writes its dump.json and drops its lease between the sweep's first and second look: the
    // second look finds no lease on a label over a day old, so only a listing taken after it
    // can tell the dump is complete.
    const label = dumpLabel(new Date(NOW - UNLEASED_DUMP_AGE_MS - 3_600_000));
    await putDump(repo, label);
    await putLease(repo, label, { host: 'elsewhere.example', pid: 1, refreshedMinutesAgo: 60 });
    const prefix = repo.dumpPrefix(C, label);
    let looks = 0;
    const racing = Object.create(repo) as Repository;
    racing.readDumpLease = async (cluster, l, nowMs) => {
      // The dump finishes just before the second look.
      if (++looks === 2) {
        await repo.driver.put(`${prefix}/dump.json`, Buffer.from('{}'));
        await repo.driver.delete([`${prefix}/dump.lease`]);
      }
      return repo.readDumpLease(cluster, l, nowMs);
    };
    assert.deepEqual(await removeAbandonedDumps({ repo: racing, cluster: C, log: silentLogger(), now: () => NOW }), []);
    assert.equal(looks, 2);
    assert.deepEqual(await repo.listDumpLabels(C), [label]);
    assert.deepEqual(
      (await repo.dumpObjects(C, label)).map((o) => o.key.slice(prefix.length + 1)),
      ['16384/3001.dat.gz', '16384/toc.dat', 'dump.json'],
    );
  });

  test("a dump's lease: written at its start, refreshed, removed after its dump.json; a failed refresh fails confirm with DumpLeaseLost", async () => {
    const { repo } = newRepository();
    const label = dumpLabel(new Date());
    const ended = runningDump(C, label);
    const lease = await BackupLeaseHolder.acquireDump(repo, C, label, silentLogger(), 50);
    try {
      const first = await repo.readDumpLease(C, label, Date.now());
      assert.equal(first?.state, 'live');
      assert.equal(first?.lease?.pid, process.pid);
      assert.deepEqual(first?.lease?.chain, []);
      // A sweep meanwhile leaves it (its process runs it), and it is not listed.
      await putDump(repo, label);
      assert.deepEqual(await removeAbandonedDumps({ repo, cluster: C, log: silentLogger() }), []);
      assert.deepEqual(await repo.listDumpLabels(C), []);
      await new Promise((r) => setTimeout(r, 200));
      const later = await repo.readDumpLease(C, label, Date.now());
      assert.ok(Date.parse(later!.lease!.refreshedAt) > Date.parse(first!.lease!.refreshedAt), 'refreshed');
      await lease.confirm();
      await repo.driver.put(`${repo.dumpPrefix(C, label)}/dump.json`, Buffer.from('{}'));
      await lease.release(true);
      assert.equal(await repo.readDumpLease(C, label, Date.now()), undefined, 'the lease goes after dump.json');
      assert.deepEqual(await repo.listDumpLabels(C), [label]);
    } finally {
      await lease.release(false);
      ended();
    }
    // A repository that refuses the refresh: confirm fails with DumpLeaseLost.
    const label2 = dumpLabel(new Date(Date.now() + 1));
    const held = await BackupLeaseHolder.acquireDump(repo, C, label2, silentLogger(), 60_000);
    const put = repo.driver.put.bind(repo.driver);
    repo.driver.put = () => Promise.reject(new Error('read-only file system'));
    try {
      await assert.rejects(held.confirm(), (err: Error & { errorName?: string }) => {
        assert.equal(err.errorName, 'DumpLeaseLost');
        assert.match(err.message, /^dump .* could not refresh its lease/);
        return true;
      });
    } finally {
      repo.driver.put = put;
      await held.release(true);
    }
  });
});
