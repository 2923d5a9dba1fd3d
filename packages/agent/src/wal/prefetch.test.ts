import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdir, mkdtemp, readFile, readdir, rm, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { silentLogger } from '@pgfleet/core';
import { PosixDriver, Repository } from '@pgfleet/storage';
import { TEST_MANIFEST_KEYS } from '../testing/repository-fixtures.js';
import { walFetch } from './fetch.js';
import { afterFetch, nextSegments, prefetchSegments, PREFETCH_DIR, takeFromSpool } from './prefetch.js';

const names = Array.from(
  { length: 8 },
  (_, i) => `0000000100000000000000${(i + 1).toString(16).toUpperCase().padStart(2, '0')}`,
);
const content = (n: string) => Buffer.from(`wal bytes of ${n} `.repeat(1000));
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

async function setup() {
  const root = await mkdtemp(join(tmpdir(), 'pgfleet-prefetch-'));
  const repo = new Repository(new PosixDriver(join(root, 'repo')), TEST_MANIFEST_KEYS);
  await repo.ensureClusterInfo('c', { systemIdentifier: '1', pgVersionNum: 150000, walSegmentSize: 16 * 1024 * 1024 });
  // Archive the first 6 segments (the archive ends there).
  for (const n of names.slice(0, 6))
    await repo.pushWal('c', n, sha(content(n)), () => Readable.from([content(n)]), 'zstd');
  const walDir = join(root, 'data', 'pg_wal');
  await mkdir(walDir, { recursive: true });
  return { root, repo, walDir, spool: join(walDir, PREFETCH_DIR) };
}

test('next segment names cross log boundaries', () => {
  assert.deepEqual(nextSegments('0000000100000001000000FE', 3), [
    '0000000100000001000000FF',
    '000000010000000200000000',
    '000000010000000200000001',
  ]);
});

test('prefetch downloads the next segments, stops at the end of the archive, and wal-fetch takes them by rename', async () => {
  const { root, repo, walDir, spool } = await setup();
  try {
    const started: string[] = [];
    const opts = {
      cluster: 'c',
      repo,
      log: silentLogger(),
      prefetch: 4,
      startPrefetch: (n: string) => started.push(n),
    };
    const dest = join(walDir, 'RECOVERYXLOG');
    assert.equal(await walFetch(names[0]!, dest, opts), true);
    assert.deepEqual(await readFile(dest), content(names[0]!));
    assert.deepEqual(started, [names[0]], 'empty spool: prefetch started');

    const got = await prefetchSegments(names[0]!, spool, { repo, cluster: 'c', prefetch: 4 });
    assert.deepEqual(got, names.slice(1, 5));
    assert.equal((await readdir(spool)).length, 4);
    // Running again (a second prefetcher) downloads nothing twice; past the archive's end there is nothing.
    assert.deepEqual(await prefetchSegments(names[0]!, spool, { repo, cluster: 'c', prefetch: 4 }), []);
    assert.deepEqual(await prefetchSegments(names[3]!, spool, { repo, cluster: 'c', prefetch: 4 }), [names[5]]);

    started.length = 0;
    assert.equal(await walFetch(names[1]!, dest, opts), true);
    assert.deepEqual(await readFile(dest), content(names[1]!));
    const left = await readdir(spool);
    assert.ok(!left.some((e) => e.startsWith(names[1]!)), 'taken by rename');
    assert.deepEqual(started, [], 'spool still full enough: no new prefetcher');
  } finally {
    await rm(root, { recursive: true, force: true });
  }
});

test('garbage in the spool is never handed to PostgreSQL', async () => {
  const { root, repo, walDir, spool } = await setup();
  try {
    await mkdir(spool, { recursive: true });
    const n = names[2]!;
    const right = (await repo.findWal('c', n))[0]!.sha256;
    // Garbage under the right checksum name, and a self-consistent file under another checksum.
    await writeFile(join(spool, `${n}-${right}`), 'garbage');
    const other = Buffer.from('other archive');
    await writeFile(join(spool, `${n}-${sha(other)}`), other);
    const dest = join(walDir, 'RECOVERYXLOG');
    assert.equal(await takeFromSpool(spool, n, right, dest), false);
    assert.deepEqual(await readdir(spool), [], 'bad copies removed');
    await writeFile(join(spool, `${n}-${right}`), content(n).subarray(0, 100)); // torn download
    assert.equal(await walFetch(n, dest, { cluster: 'c', repo, log: silentLogger(), prefetch: 4 }), true);
    assert.deepEqual(await readFile(dest), content(n), 'downloaded directly instead');
  } finally {
    await rm(root, { recursive: true, force: true });
  }
});

test('stale spool entries are cleaned: segments recovery has passed, dead downloads, old leftovers', async () => {
  const { root, repo, spool } = await setup();
  try {
    await mkdir(spool, { recursive: true });
    const old = new Date(Date.now() - 3600_000);
    const h = '0'.repeat(64);
    await writeFile(join(spool, `${names[0]}-${h}`), 'x'); // passed
    await writeFile(join(spool, `${names[4]}-${h}`), 'x'); // ahead: kept
    await writeFile(join(spool, `${names[5]}.pgfleet-tmp`), 'x'); // dead download
    await utimes(join(spool, `${names[5]}.pgfleet-tmp`), old, old);
    await writeFile(join(spool, `000000020000000000000001-${h}`), 'x'); // other timeline, old
    await utimes(join(spool, `000000020000000000000001-${h}`), old, old);
    const started: string[] = [];
    await afterFetch(spool, names[2]!, 4, (n) => started.push(n), repo, 'c');
    assert.deepEqual(await readdir(spool), [`${names[4]}-${h}`]);
    assert.deepEqual(started, [names[2]], '3 of the next 4 missing: prefetch');
  } finally {
    await rm(root, { recursive: true, force: true });
  }
});
