import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, open, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createLogger, settleAll } from '@pgfleet/core';
import { BLCKSZ, pageChecksum } from '@pgfleet/pg';
import {
  chunkedContentDigest,
  PosixDriver,
  Repository,
  type BackupManifest,
  type Codec,
  type ManifestFile,
} from '@pgfleet/storage';
import { FileCopier, type BackupOptions } from '../backup/backup.js';
import { listPgdata } from '../pgdata/walk.js';
import { RateLimiter } from './rate-limit.js';
import { ProgressTracker } from '../progress.js';
import { runRestore } from '../restore/restore.js';
import { runVerify } from '../verify/verify.js';
import { testFullManifest, testRestoreOptions } from '../testing/restore-fixtures.js';
import { TEST_MANIFEST_KEYS } from '../testing/repository-fixtures.js';

/** A relation page with a valid checksum (pd_lsn 0/1, pd_upper set), content varying by block. */
function page(block: number): Buffer {
  const p = Buffer.alloc(BLCKSZ);
  p.writeUInt32LE(0, 0);
  p.writeUInt32LE(1, 4); // pd_lsn 0/1: before any backup start
  p.writeUInt16LE(24, 12); // pd_lower
  p.writeUInt16LE(BLCKSZ - 64, 14); // pd_upper != 0: not a new page
  p.writeUInt16LE(BLCKSZ, 16);
  for (let i = 24; i < BLCKSZ; i += 4) p.writeUInt32LE((block * 2654435761 + i) >>> 0, i);
  p.writeUInt16LE(pageChecksum(p, block), 8);
  return p;
}

const CHUNK = 4 * BLCKSZ;
const START_LSN = { hi: 0xff, lo: 0 };

async function makePgdata(root: string): Promise<void> {
  await mkdir(join(root, 'base/1'), { recursive: true });
  await mkdir(join(root, 'global'), { recursive: true });
  // 11 pages: chunks of 4, 4 and 3 pages; block 6 is damaged on disk (in the second chunk).
  const pages = Array.from({ length: 11 }, (_, b) => page(b));
  pages[6]![100] = pages[6]![100]! ^ 0xff;
  await writeFile(join(root, 'base/1/16384'), Buffer.concat(pages));
  // Segment 1 of a relation: its blocks are numbered from RELSEG_SIZE, validated as such.
  await writeFile(join(root, 'base/1/16384.1'), Buffer.concat(Array.from({ length: 5 }, (_, b) => page(131072 + b))));
  await writeFile(join(root, 'global/pg_control'), randomBytes(CHUNK * 2 + 100)); // chunked, not a relation
  await writeFile(join(root, 'PG_VERSION'), '16\n');
  await writeFile(join(root, 'empty'), '');
}

/**
 * A backup of every file of `pgdata` through FileCopier. With `prior` (block maps on, every
 * relation file mapped), an incr on it: each file is copied against its prior entry, so the
 * relation files store only their changed blocks.
 */
async function backup(
  pgdata: string,
  repo: Repository,
  label: string,
  codec: Codec,
  rateLimit?: RateLimiter,
  paced?: { bytes: number },
  blocks?: { prior?: BackupManifest },
): Promise<BackupManifest> {
  const listing = await listPgdata(pgdata);
  const opts = {
    cluster: 'c1',
    pgdata,
    repo,
    codec,
    ...(rateLimit ? { rateLimit } : {}),
    ...(blocks ? { blockMinBytes: BLCKSZ } : {}),
    workers: 2,
    chunkBytes: CHUNK,
    log: createLogger({ level: 'silent' }),
    progress: () => {},
  } as unknown as BackupOptions;
  const copier = new FileCopier(opts, label, START_LSN, new ProgressTracker(() => {}, 'copy'));
  const priorEntry = new Map(blocks?.prior?.files.map((f) => [f.path, f]));
  let files: (ManifestFile | undefined)[];
  try {
    files = await settleAll(listing.files.map((f) => copier.copy(f, priorEntry.get(f.path))));
  } finally {
    await copier.pool.close();
  }
  if (paced) paced.bytes = copier.pool.pacedBytes;
  await repo.syncKeys(copier.written);
  const fl = files.filter((f): f is ManifestFile => f !== undefined).sort((a, b) => (a.path < b.path ? -1 : 1));
  const manifest = testFullManifest({
    label,
    systemIdentifier: (await readFile(join(pgdata, 'global/pg_control'))).readBigUInt64LE(0).toString(),
    directories: listing.directories,
    links: listing.links,
    files: fl,
  });
  if (blocks?.prior) {
    manifest.type = 'incr';
    manifest.priorLabel = blocks.prior.label;
    manifest.format = fl.some((f) => f.blocks?.changed) ? 2 : 1;
  }
  await repo.writeManifest(manifest);
  return manifest;
}

/** A test's temporary directory with a made-up PGDATA and a fresh posix repository, removed after. */
async function withPgdataAndRepo(fn: (root: string, pgdata: string, repo: Repository) => Promise<void>): Promise<void> {
  const root = await mkdtemp(join(tmpdir(), 'pgfleet-copy-'));
  try {
    const pgdata = join(root, 'pgdata');
    await makePgdata(pgdata);
    const repo = new Repository(new PosixDriver(join(root, 'repo')), TEST_MANIFEST_KEYS);
    await repo.init();
    await fn(root, pgdata, repo);
  } finally {
    await rm(root, { recursive: true, force: true });
  }
}

for (const codec of ['zstd', 'lz4', 'none', 'gzip'] as const) {
  test(`worker-thread backup and restore (${codec}): large files in chunks, page checksums per chunk, delta restore`, async () => {
    await withPgdataAndRepo(async (root, pgdata, repo) => {
      const m = await backup(pgdata, repo, '20260101-000000F', codec);
      const byPath = new Map(m.files.map((f) => [f.path, f]));

      const rel = byPath.get('base/1/16384')!;
      assert.equal(rel.chunks?.length, 3);
      assert.deepEqual(
        rel.chunks!.map((c) => [c.offset, c.size]),
        [
          [0, CHUNK],
          [CHUNK, CHUNK],
          [2 * CHUNK, 3 * BLCKSZ],
        ],
      );
      assert.deepEqual(
        rel.pageChecksumErrors,
        [6],
        'the damaged block is found in its chunk, numbered within the file',
      );
      assert.equal(rel.sha256, chunkedContentDigest(rel.chunks!.map((c) => c.sha256)));
      assert.equal(
        byPath.get('base/1/16384.1')!.pageChecksumErrors,
        undefined,
        'segment 1 pages validate with their own block numbers',
      );
      assert.equal(byPath.get('global/pg_control')!.chunks?.length, 3);
      assert.equal(byPath.get('PG_VERSION')!.chunks, undefined);
      assert.equal(byPath.get('empty')!.size, 0);

      const target = join(root, 'restored');
      const opts = testRestoreOptions(repo, join(root, 'repo'), m.label, target);
      await runRestore(opts);
      for (const f of m.files) {
        assert.deepEqual(
          await readFile(join(target, f.path)),
          await readFile(join(pgdata, f.path)),
          `${f.path} restored`,
        );
        assert.equal(Math.floor((await stat(join(target, f.path))).mtimeMs), Math.floor(f.mtimeMs)); // utimes keeps milliseconds
      }

      // Damage one chunk of a chunked file and remove another file: delta fetches just those.
      const damaged = await readFile(join(target, 'global/pg_control'));
      damaged[CHUNK + 5] = damaged[CHUNK + 5]! ^ 1;
      await writeFile(join(target, 'global/pg_control'), damaged);
      await rm(join(target, 'empty'));
      const out = await runRestore({ ...opts, delta: true });
      assert.equal(out.kept, m.files.length - 2);
      assert.deepEqual(
        await readFile(join(target, 'global/pg_control')),
        await readFile(join(pgdata, 'global/pg_control')),
      );

      // A stored chunk that does not match its checksum fails the restore loudly.
      const chunk = rel.chunks![1]!;
      const path = join(root, 'repo', ...chunk.key.split('/'));
      const bytes = await readFile(path);
      bytes[bytes.length >> 1] = bytes[bytes.length >> 1]! ^ 0x55;
      await writeFile(path, bytes);
      await assert.rejects(
        runRestore({ ...opts, targetDir: join(root, 'again') }),
        /RepoChecksumMismatch|checksum|decoded/,
      );
    });
  });
}

/**
 * Restores backup `m` through `limiter`, which its backup already advanced by `content` bytes
 * (the content of every file): the restore paces each byte it writes once, into one bucket, and
 * the files come back as they are in `pgdata`.
 */
async function restorePaced(
  root: string,
  pgdata: string,
  repo: Repository,
  m: BackupManifest,
  limiter: RateLimiter,
  content: number,
): Promise<void> {
  const out = await runRestore(
    testRestoreOptions(repo, join(root, 'repo'), m.label, join(root, 'restored'), { rateLimit: limiter }),
  );
  assert.equal(out.pacedBytes, content, 'the restore paced exactly the bytes it wrote');
  assert.equal(limiter.admittedBytes(), 2 * content, 'one bucket for both jobs');
  for (const f of m.files)
    assert.deepEqual(await readFile(join(root, 'restored', f.path)), await readFile(join(pgdata, f.path)));
}

// The block path (zstd) and the stream path (gzip), on worker threads: --max-rate meters every content byte once.
for (const codec of ['zstd', 'gzip'] as const) {
  test(`--max-rate (${codec}): every byte a worker-thread backup reads and a restore writes goes through the agent's one bucket`, async () => {
    await withPgdataAndRepo(async (root, pgdata, repo) => {
      // High enough that nothing waits long: the accounting is what is checked, not the time.
      const limiter = RateLimiter.create(1 << 30);
      const paced = { bytes: 0 };
      const m = await backup(pgdata, repo, '20260101-000000F', codec, limiter, paced);
      const content = m.files.reduce((n, f) => n + f.size, 0);
      assert.equal(paced.bytes, content, 'the backup paced exactly the bytes it copied');
      assert.equal(limiter.admittedBytes(), content);
      await restorePaced(root, pgdata, repo, m, limiter, content);
    });
  });
}

test('--max-rate on a block-incremental incr: every byte its reads of whole relation files take is paced once, and every block its restore writes', async () => {
  await withPgdataAndRepo(async (root, pgdata, repo) => {
    const full = await backup(pgdata, repo, '20260101-000000F', 'zstd', undefined, undefined, {});
    // Block 2 of the relation changes (a valid page still), block 11 is new: the incr stores those two blocks only.
    const changed = page(2);
    changed.writeUInt16LE(0, 8);
    changed[200] = changed[200]! ^ 0xff;
    changed.writeUInt16LE(pageChecksum(changed, 2), 8);
    const fh = await open(join(pgdata, 'base/1/16384'), 'r+');
    try {
      await fh.write(changed, 0, BLCKSZ, 2 * BLCKSZ);
      await fh.write(page(11), 0, BLCKSZ, 11 * BLCKSZ);
    } finally {
      await fh.close();
    }
    const limiter = RateLimiter.create(1 << 30);
    const paced = { bytes: 0 };
    const incr = await backup(pgdata, repo, '20260101-000000F_20260101-000100I', 'zstd', limiter, paced, {
      prior: full,
    });
    const relEntry = incr.files.find((f) => f.path === 'base/1/16384')!;
    assert.equal(relEntry.blocks?.changed?.count, 2, 'only the changed and the new block are stored');
    assert.deepEqual(relEntry.blocks.from, [full.label]);
    const content = incr.files.reduce((n, f) => n + f.size, 0);
    assert.equal(paced.bytes, content, 'the incr paced every byte it read, stored or not, once');
    assert.equal(limiter.admittedBytes(), content);
    // Each block written once, from whichever backup the map names.
    await restorePaced(root, pgdata, repo, incr, limiter, content);
  });
});

test('block-incrementals with XOR deltas through FileCopier: every link restores; verify --full reads their maps and their blocks.from', async () => {
  await withPgdataAndRepo(async (root, pgdata, repo) => {
    // A relation of 40 blocks of which each link changes 3: a map stays under REBASE_LOAD (3 blocks
    // with up to 4 layers each: 12 of 40), so every link stores deltas rather than the file whole.
    const rel = 'base/1/16390';
    await writeFile(join(pgdata, rel), Buffer.concat(Array.from({ length: 40 }, (_, b) => page(b))));
    let prior = await backup(pgdata, repo, '20260101-000000F', 'zstd', undefined, undefined, {});
    // Each link edits a few bytes of some pages (valid pages still): stored as deltas, up to 3 deep.
    for (let i = 1; i <= 5; i++) {
      const fh = await open(join(pgdata, rel), 'r+');
      try {
        for (const b of [1, 2, 5]) {
          const p = Buffer.alloc(BLCKSZ);
          await fh.read(p, 0, BLCKSZ, b * BLCKSZ);
          p[300 + i] = p[300 + i]! ^ 0x5a;
          p.writeUInt16LE(0, 8);
          p.writeUInt16LE(pageChecksum(p, b), 8);
          await fh.write(p, 0, BLCKSZ, b * BLCKSZ);
        }
      } finally {
        await fh.close();
      }
      const label = `20260101-000000F_20260101-00010${i}I`;
      prior = await backup(pgdata, repo, label, 'zstd', undefined, undefined, { prior });
      const entry = prior.files.find((f) => f.path === rel)!;
      assert.equal(entry.blocks?.changed?.count, 3);
      const map = await repo.readBlockMap('c1', entry);
      assert.equal(Math.max(map.depth(1), map.depth(2), map.depth(5)), i % 4 === 0 ? 0 : i > 4 ? i - 4 : i);
      const dest = join(root, `restored-${i}`);
      await runRestore(testRestoreOptions(repo, join(root, 'repo'), label, dest));
      assert.deepEqual(await readFile(join(dest, rel)), await readFile(join(pgdata, rel)), `link ${i}`);
    }
    const mapProblems = async () =>
      (await runVerify({ cluster: 'c1', repo, full: true, log: createLogger({ level: 'silent' }) })).problems.filter(
        (p) => p.path === rel,
      );
    assert.deepEqual(await mapProblems(), []);
    // A manifest whose entry does not name every backup its map reads (an expire would delete one).
    const entry = prior.files.find((f) => f.path === rel)!;
    entry.blocks!.from = entry.blocks!.from!.slice(1);
    await repo.writeManifest(prior);
    const problems = await mapProblems();
    assert.ok(
      problems.some((p) => p.kind === 'unreadable' && /reads backups its entry does not name/.test(p.message)),
      JSON.stringify(problems),
    );
  });
});
