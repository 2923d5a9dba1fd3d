import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PgfleetError, silentLogger } from '@pgfleet/core';
import { PosixDriver, Repository, secretManifestKeys, type BackupManifest } from '@pgfleet/storage';
import { searchWal } from './search.js';
import { DESTRUCTIVE_KINDS } from './transactions.js';

const SIZE = 1 << 20;
const silent = silentLogger();
const seg = (n: number) => `0000000100000000${n.toString(16).toUpperCase().padStart(8, '0')}`;

function manifest(label: string, startTime: string, walStart: string): BackupManifest {
  return {
    format: 1,
    label,
    cluster: 'c',
    type: 'full',
    systemIdentifier: '1',
    pgVersionNum: 150000,
    walSegmentSize: SIZE,
    timeline: 1,
    startLsn: '0/100028',
    stopLsn: '0/100100',
    startTime,
    stopTime: startTime,
    walStart,
    walStop: walStart,
    backupLabel: 'START WAL LOCATION: 0/100028\n',
    directories: [],
    links: [],
    files: [],
    sizeBytes: 0,
    storedBytes: 0,
    agentVersion: 'test',
  };
}

async function withRepository(fn: (repo: Repository, dir: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'pgfleet-wal-search-'));
  try {
    const repo = new Repository(new PosixDriver(join(dir, 'repo')), secretManifestKeys(randomBytes(32)));
    await repo.ensureClusterInfo('c', { systemIdentifier: '1', pgVersionNum: 150000, walSegmentSize: SIZE });
    await fn(repo, dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

const search = (repo: Repository, since?: Date) =>
  searchWal({
    repo,
    cluster: 'c',
    filter: { kinds: DESTRUCTIVE_KINDS, minRows: 0, limit: 50, ...(since ? { since } : {}) },
    currentTimeline: 0,
    log: silent,
    progress: () => {},
  });

const refusedWith = (name: string, message: RegExp) => (err: unknown) =>
  PgfleetError.is(err, name as Parameters<typeof PgfleetError.is>[1]) && message.test((err as Error).message);

test('without a backup the search is refused: it starts from one', async () => {
  await withRepository(async (repo) => {
    await assert.rejects(search(repo), refusedWith('WalSearchNoBackup', /no complete backup/));
  });
});

test('--since before the oldest backup is refused, naming the oldest', async () => {
  await withRepository(async (repo) => {
    await repo.writeManifest(manifest('20261206-120000F', '2026-12-06T12:00:00.000Z', seg(1)));
    await repo.writeManifest(manifest('20261206-130000F', '2026-12-06T13:00:00.000Z', seg(1)));
    await assert.rejects(
      search(repo, new Date('2026-12-06T11:00:00Z')),
      refusedWith('WalSearchBeforeOldestBackup', /oldest backup of cluster c \(20261206-120000F/),
    );
  });
});

test('a missing segment in the range is an error naming it', async () => {
  await withRepository(async (repo, dir) => {
    await repo.writeManifest(manifest('20261206-120000F', '2026-12-06T12:00:00.000Z', seg(1)));
    const file = join(dir, 'segment');
    await writeFile(file, Buffer.alloc(1024));
    // The backup's first segment is gone; later ones are there.
    for (const n of [2, 3]) await repo.archiveWal('c', seg(n), file, 'none', 1024);
    await assert.rejects(
      search(repo),
      refusedWith('WalSearchGap', new RegExp(`segment ${seg(1)} of cluster c is missing`)),
    );
  });
});
