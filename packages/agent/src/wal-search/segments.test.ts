import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PosixDriver, Repository, secretManifestKeys, type ArchivedWal } from '@pgfleet/storage';
import { CopyPool } from '../copy/pool.js';
import { planSegments } from './segments.js';

const SIZE = 1 << 20;

/** A repository holding the named archive files (segment bytes do not matter to the plan). */
async function archive(names: string[], history?: string): Promise<{ repo: Repository; done: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), 'pgfleet-wal-search-plan-'));
  const repo = new Repository(new PosixDriver(join(dir, 'repo')), secretManifestKeys(randomBytes(32)));
  const file = join(dir, 'segment');
  await writeFile(file, Buffer.alloc(1024));
  for (const name of names) await repo.archiveWal('c', name, file, 'none', 1024);
  if (history) {
    await writeFile(join(dir, 'history'), history);
    await repo.archiveWal('c', '00000002.history', join(dir, 'history'), 'none', history.length);
  }
  return { repo, done: () => rm(dir, { recursive: true, force: true }) };
}

const seg = (tli: number, n: number) =>
  `${String(tli).padStart(8, '0')}00000000${n.toString(16).toUpperCase().padStart(8, '0')}`;

test('the plan stops at the first missing segment and names it', async () => {
  const { repo, done } = await archive([seg(1, 1), seg(1, 2), seg(1, 4), seg(1, 5)]);
  try {
    const plan = await planSegments({
      repo,
      cluster: 'c',
      fromSegment: seg(1, 1),
      walSegmentSize: SIZE,
      currentTimeline: 0,
    });
    assert.deepEqual(
      plan.segments.map((s) => s.name),
      [seg(1, 1), seg(1, 2)],
    );
    assert.equal(plan.gap, seg(1, 3));
  } finally {
    await done();
  }
});

test("the plan follows the current timeline's history: the old timeline up to the switch, the new one after", async () => {
  // Timeline 2 begins at 0/380000, inside segment 3: its copy of segment 3 is the one recovery reads.
  const { repo, done } = await archive(
    [seg(1, 1), seg(1, 2), seg(1, 3), seg(1, 4), seg(2, 3), seg(2, 4), seg(2, 5)],
    '1\t0/380000\tno recovery target specified\n',
  );
  try {
    const plan = await planSegments({
      repo,
      cluster: 'c',
      fromSegment: seg(1, 1),
      walSegmentSize: SIZE,
      currentTimeline: 2,
    });
    assert.equal(plan.timeline, 2);
    assert.equal(plan.gap, undefined);
    assert.deepEqual(
      plan.segments.map((s) => s.name),
      [seg(1, 1), seg(1, 2), seg(2, 3), seg(2, 4), seg(2, 5)],
    );
    const old = await planSegments({
      repo,
      cluster: 'c',
      fromSegment: seg(1, 1),
      walSegmentSize: SIZE,
      currentTimeline: 1,
    });
    assert.deepEqual(
      old.segments.map((s) => s.name),
      [seg(1, 1), seg(1, 2), seg(1, 3), seg(1, 4)],
    );
  } finally {
    await done();
  }
});

async function listed(repo: Repository): Promise<ArchivedWal[]> {
  const out: ArchivedWal[] = [];
  for await (const w of repo.listWal('c')) out.push(w);
  return out;
}

test('segments are read on a worker thread: the stored bytes come back whole; a damaged copy is refused', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'pgfleet-wal-search-read-'));
  const repo = new Repository(new PosixDriver(join(dir, 'repo')), secretManifestKeys(randomBytes(32)));
  const pool = new CopyPool(repo, { threads: 1, workersOnly: true });
  try {
    const content = randomBytes(SIZE);
    await writeFile(join(dir, 'segment'), content);
    await repo.archiveWal('c', seg(1, 1), join(dir, 'segment'), 'zstd', SIZE);
    const [wal] = await listed(repo);
    const read = () =>
      pool.run({ kind: 'read-object', key: wal!.key, codec: wal!.codec, sha256: wal!.sha256, maxSize: SIZE });
    const { bytes } = await read();
    assert.equal(Buffer.compare(Buffer.from(bytes), content), 0);
    // The same object stored over with other bytes: the checksum in its name no longer matches.
    await writeFile(join(dir, 'segment'), randomBytes(SIZE));
    await repo.archiveWal('c', seg(1, 3), join(dir, 'segment'), 'zstd', SIZE);
    const all = await listed(repo);
    const other = all.find((w) => w.name === seg(1, 3))!;
    await rename(join(dir, 'repo', other.key), join(dir, 'repo', wal!.key));
    await assert.rejects(read(), (err: Error) => /checksum|sha256/i.test(err.message));
  } finally {
    await pool.close();
    await rm(dir, { recursive: true, force: true });
  }
});
