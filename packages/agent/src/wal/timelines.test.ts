// Which timeline a restore follows: the one the cluster ran on at the target, never a branch
// that does not hold the backup, and the newer lineage where the old timeline's WAL is not archived.
import { strict as assert } from 'node:assert';
import { test } from 'node:test';
import { PgfleetError } from '@pgfleet/core';
import { TimelineHistory } from '@pgfleet/pg';
import type { Repository } from '@pgfleet/storage';
import {
  lineageOf,
  preferArchivedLineage,
  timelineLivingAt,
  timelinesWithStart,
  type TimelineInfo,
} from './timelines.js';

const SEG = 16 << 20;
const info = (tli: number, text: string, startedAt?: number): [number, TimelineInfo] => [
  tli,
  { history: TimelineHistory.parse(tli, text), startedAt: startedAt === undefined ? undefined : new Date(startedAt) },
];

// Timeline 1 ran until an in-place PITR at t=100 went back to 0/5000000 (timeline 2); at t=200
// a second PITR went back to 0/7000000 on timeline 2 (timeline 3). A restored copy promoted
// elsewhere at t=150 pushed timeline 4, branched off timeline 1 at 0/2000000 (before the backup).
const timelines = new Map<number, TimelineInfo>([
  info(2, '1\t0/5000000\tbefore t=40\n', 100_000),
  info(3, '1\t0/5000000\tx\n2\t0/7000000\tbefore t=150\n', 200_000),
  info(4, '1\t0/2000000\tx\n', 150_000),
]);
const backup = { timeline: 1, stopLsn: 0x3000000n };

test('a time target follows the timeline the cluster ran on then', () => {
  assert.equal(
    timelineLivingAt(backup, timelines, 50_000),
    1,
    'before the first PITR: timeline 1, including its abandoned part',
  );
  assert.equal(timelineLivingAt(backup, timelines, 120_000), 2);
  assert.equal(timelineLivingAt(backup, timelines, 250_000), 3);
  assert.equal(timelineLivingAt(backup, timelines), 3, 'latest: the newest timeline');
});

test('a timeline that branched off before the backup is consistent is never followed', () => {
  // Timeline 4 started at t=150, but it left timeline 1 at 0/2000000, before the backup's stop at 0/3000000.
  assert.equal(timelineLivingAt(backup, timelines, 160_000), 2);
  assert.equal(timelines.get(4)!.history.contains(1, backup.stopLsn), false);
  assert.equal(
    timelineLivingAt({ timeline: 1, stopLsn: 0x1000000n }, timelines, 160_000),
    4,
    'an older backup can follow it',
  );
  // A backup on timeline 2 after its switch to 3 reaches only timeline 2.
  assert.equal(timelineLivingAt({ timeline: 2, stopLsn: 0x8000000n }, timelines), 2);
});

test('without a start time a timeline counts as the oldest of its siblings', () => {
  const t = new Map<number, TimelineInfo>([info(2, '1\t0/5000000\tx\n'), info(3, '1\t0/6000000\tx\n', 10)]);
  assert.equal(timelineLivingAt(backup, t), 3);
  assert.equal(timelineLivingAt(backup, t, 5), 2);
});

test('a target before a switch moves to the newer timeline when the old one never archived its switch segment', async () => {
  const archivedSet = new Set(['000000010000000000000004']);
  const archived = async (s: string) => archivedSet.has(s);
  // Timeline 1's segment 5 (holding the switch to 2) was lost with the old primary: timeline 2 holds that WAL.
  assert.equal(
    await preferArchivedLineage(1, 3, timelines, archived, SEG),
    3,
    'timeline 2 switch segment 7 is missing too',
  );
  archivedSet.add('000000020000000000000007');
  assert.equal(await preferArchivedLineage(1, 3, timelines, archived, SEG), 2);
  archivedSet.add('000000010000000000000005');
  assert.equal(
    await preferArchivedLineage(1, 3, timelines, archived, SEG),
    1,
    'the abandoned part of timeline 1 is archived: follow it',
  );
  assert.equal(await preferArchivedLineage(4, 3, timelines, archived, SEG), 4, 'a branch of its own stays');
});

test('with the live timeline known, a fork another copy archived is never followed', () => {
  // Production stays on timeline 1; a copy promoted at t=150 archived timeline 4 (after the backup this time).
  const forked = new Map<number, TimelineInfo>([info(4, '1\t0/6000000\tx\n', 150_000)]);
  assert.equal(timelineLivingAt(backup, forked, 200_000), 4, 'without knowing the live timeline the newest one wins');
  assert.equal(timelineLivingAt(backup, forked, 200_000, lineageOf(1, undefined)), 1);
  assert.equal(
    timelineLivingAt(backup, timelines, 250_000, lineageOf(3, timelines.get(3)?.history)),
    3,
    'the live lineage itself is followed',
  );
  assert.equal(timelineLivingAt(backup, timelines, 50_000, lineageOf(3, timelines.get(3)?.history)), 1);
});

test('a timeline that left no segment of its own (two promotions in one segment) is stepped over', () => {
  // Timeline 2 ran for less than a segment: only timeline 3's history and first segment are archived.
  const t = new Map<number, TimelineInfo>([info(3, '1\t0/5000100\tx\n2\t0/5000200\tx\n', 300_000)]);
  assert.equal(timelineLivingAt(backup, t), 3);
  assert.equal(timelineLivingAt(backup, t, 100_000), 1);
});

test('a timeline whose first segment cannot be read fails the restore with that code, never drops the timeline', async () => {
  const history = TimelineHistory.parse(2, '1\t0/5000000\tx\n');
  const histories = new Map([[2, history]]);
  // Only the two calls timelinesWithStart makes; the rest of the repository is never asked.
  const repoFailing = (err: Error | undefined) =>
    ({
      readWalFile: async () => {
        if (err) throw err;
        return undefined;
      },
      authenticWal: async () => undefined,
    }) as unknown as Repository;
  // Not archived (or only without the cluster's MAC): that timeline never ran here.
  assert.deepEqual([...(await timelinesWithStart(repoFailing(undefined), 'c', histories, SEG)).keys()], []);
  const planted = new PgfleetError('WalUnauthenticated', 'no copy with a matching MAC');
  assert.deepEqual([...(await timelinesWithStart(repoFailing(planted), 'c', histories, SEG)).keys()], []);
  // A repository that times out: the restore stops with RepoIoFailed instead of following timeline 1.
  await assert.rejects(
    timelinesWithStart(repoFailing(new PgfleetError('RepoIoFailed', 'read timed out')), 'c', histories, SEG),
    (err: unknown) => PgfleetError.is(err, 'RepoIoFailed'),
  );
});
