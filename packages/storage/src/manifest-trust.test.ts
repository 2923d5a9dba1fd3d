/**
 * The manifest rules a restore relies on: every path checked (manifest-paths.ts) and the MAC
 * checked under the cluster's key for the very backup asked for (manifest-auth.ts), through the
 * Repository methods every reader uses.
 */
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { PgfleetError } from '@pgfleet/core';
import type { BackupManifest } from './manifest.js';
import { deriveManifestKey, secretManifestKeys, clusterManifestKeys } from './manifest-auth.js';
import { relativePathProblem, absolutePathProblem, validateManifestEntries } from './manifest-paths.js';
import { PosixDriver } from './posix-driver.js';
import { Repository } from './repository.js';
import { testManifest } from './test-manifest.js';

const dirs: string[] = [];
after(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});
const SECRET = Buffer.alloc(32, 9);

async function repo(keys = secretManifestKeys(SECRET)): Promise<Repository> {
  const dir = await mkdtemp(join(tmpdir(), 'pgfleet-trust-'));
  dirs.push(dir);
  return new Repository(new PosixDriver(dir), keys);
}

function manifest(over: Partial<BackupManifest> = {}): BackupManifest {
  return testManifest({
    links: [{ path: 'pg_tblspc/16384', target: '/srv/ts1' }],
    files: [
      {
        path: 'base/1/1259',
        size: 4,
        mtimeMs: 0,
        mode: 0o600,
        sha256: 'a'.repeat(64),
        storedSize: 4,
        storedSha256: 'a'.repeat(64),
        codec: 'none',
        backup: '20260101-000000F',
      },
    ],
    sizeBytes: 4,
    storedBytes: 4,
    ...over,
  });
}

const rejected = (e: unknown) => PgfleetError.is(e, 'ManifestPathRejected');

test('relative paths: absolute, .., ., empty segments, trailing /, control characters and length are refused', () => {
  for (const bad of [
    '',
    '/etc/passwd',
    '../x',
    'a/../b',
    'a/./b',
    '.',
    'a//b',
    'a/',
    'a\0b',
    'a\nb',
    'x'.repeat(1025),
    `a/${'y'.repeat(256)}`,
  ])
    assert.ok(relativePathProblem(bad), JSON.stringify(bad.slice(0, 20)));
  for (const good of ['base/1/1259', 'PG_VERSION', 'pg_tblspc/16384/PG_15_202209061/5/16385', 'a..b/c.d'])
    assert.equal(relativePathProblem(good), undefined, good);
  for (const bad of ['rel', '/', '/a/../b', '/a//b', '/a/', '/a/.']) assert.ok(absolutePathProblem(bad), bad);
  assert.equal(absolutePathProblem('/srv/ts1'), undefined);
});

test('a manifest is refused whole for any entry that breaks a rule, naming the entry', () => {
  const where = 'test';
  const ok = manifest();
  validateManifestEntries(ok, where);
  const file = ok.files[0]!;
  const cases: [string, BackupManifest][] = [
    ['absolute file', manifest({ files: [{ ...file, path: '/etc/cron.d/x' }] })],
    ['.. in a directory', manifest({ directories: [{ path: 'base/../../escape', mode: 0o700 }] })],
    ['.. in a link', manifest({ links: [{ path: 'pg_tblspc/../../x', target: '/srv/ts1' }] })],
    ['link named backup_label', manifest({ links: [{ path: 'backup_label', target: '/etc/x' }] })],
    ['link outside pg_tblspc', manifest({ links: [{ path: 'base/evil', target: '/tmp' }] })],
    ['relative link target', manifest({ links: [{ path: 'pg_tblspc/1', target: 'tmp/x' }] })],
    ['unnormalised link target', manifest({ links: [{ path: 'pg_tblspc/1', target: '/srv/../etc' }] })],
    [
      'file under a (pg_wal) link',
      manifest({ links: [{ path: 'pg_wal', target: '/tmp/out' }], files: [{ ...file, path: 'pg_wal/x' }] }),
    ],
    [
      'duplicate',
      manifest({
        directories: [
          { path: 'base', mode: 0o700 },
          { path: 'base', mode: 0o700 },
        ],
      }),
    ],
    ['directory at a link', manifest({ directories: [{ path: 'pg_tblspc/16384', mode: 0o700 }] })],
    ['file backup_label', manifest({ files: [{ ...file, path: 'backup_label' }] })],
    ['a label with a /', manifest({ files: [{ ...file, backup: '../other/backup/X' }] })],
    [
      'a chunk key of another cluster',
      manifest({
        files: [
          {
            ...file,
            chunks: [
              {
                offset: 0,
                size: 4,
                sha256: '',
                storedSize: 4,
                storedSha256: '',
                key: 'bank/backup/X/pg_chunks/base/1/1259/0000',
              },
            ],
          },
        ],
      }),
    ],
    ['empty segment', manifest({ files: [{ ...file, path: 'base//1259' }] })],
  ];
  for (const [what, m] of cases) assert.throws(() => validateManifestEntries(m, where), rejected, what);
  // A tablespace's own files are stored under its link (and restored into the directory the restore chooses).
  validateManifestEntries(
    manifest({
      directories: [{ path: 'pg_tblspc/16384/PG_15_1', mode: 0o700 }],
      files: [{ ...file, path: 'pg_tblspc/16384/PG_15_1/x' }],
    }),
    where,
  );
});

test('a written manifest reads back; an edited field, a copy over another backup and another cluster’s key are refused', async () => {
  const r = await repo();
  const m = manifest();
  await r.writeManifest(m);
  assert.deepEqual(await r.readManifest('shop', m.label), m);
  const key = r.backupManifestKey('shop', m.label);
  const stored = await readFile(join(r.location, key), 'utf8');
  assert.match(stored, /"mac": "hmac-sha256:[0-9a-f]{64}"\n}\n$/);

  // An edited field (the stop LSN), MAC left as it was.
  await writeFile(join(r.location, key), stored.replace('0/2000100', 'FF/FFFFFFFF'));
  await assert.rejects(
    r.readManifest('shop', m.label),
    (e: unknown) => PgfleetError.is(e, 'ManifestUnauthenticated') && /20260101-000000F/.test((e as Error).message),
  );

  // A genuine manifest of another backup copied over this one.
  const other = manifest({ label: '20260102-000000F', files: [] });
  await r.writeManifest(other);
  const otherText = await readFile(join(r.location, r.backupManifestKey('shop', other.label)), 'utf8');
  await writeFile(join(r.location, key), otherText);
  await assert.rejects(r.readManifest('shop', m.label), (e: unknown) => PgfleetError.is(e, 'ManifestUnauthenticated'));

  // A genuine manifest of another cluster (its own key) put under this cluster.
  const bank = manifest({ cluster: 'bank' });
  await r.writeManifest(bank);
  await mkdir(join(r.location, 'shop/backup', m.label), { recursive: true });
  await writeFile(
    join(r.location, key),
    await readFile(join(r.location, r.backupManifestKey('bank', m.label)), 'utf8'),
  );
  await assert.rejects(r.readManifest('shop', m.label), (e: unknown) => PgfleetError.is(e, 'ManifestUnauthenticated'));

  // An agent holding only bank's key can neither read nor write shop's manifests.
  const bankOnly = r.withManifestKeys(clusterManifestKeys('bank', deriveManifestKey(SECRET, 'bank')));
  assert.equal((await bankOnly.readManifest('bank', m.label)).cluster, 'bank');
  await assert.rejects(bankOnly.readManifest('shop', other.label), (e: unknown) =>
    PgfleetError.is(e, 'ManifestKeyMissing'),
  );
  await assert.rejects(bankOnly.writeManifest(manifest()), (e: unknown) => PgfleetError.is(e, 'ManifestKeyMissing'));
});

test('an unsigned manifest is refused until adopted; adoption checks its paths and never re-signs a bad MAC', async () => {
  const r = await repo();
  const m = manifest();
  const key = r.backupManifestKey('shop', m.label);
  await r.driver.put(key, Buffer.from(JSON.stringify(m, null, 1)));
  await assert.rejects(r.readManifest('shop', m.label), (e: unknown) => PgfleetError.is(e, 'ManifestUnsigned'));
  assert.equal(await r.adoptManifest('shop', m.label), 'signed');
  assert.deepEqual(await r.readManifest('shop', m.label), m);
  assert.equal(await r.adoptManifest('shop', m.label), 'valid');

  const bad = manifest({ label: '20260103-000000F', links: [{ path: 'backup_label', target: '/etc' }] });
  await r.driver.put(r.backupManifestKey('shop', bad.label), Buffer.from(JSON.stringify(bad, null, 1)));
  await assert.rejects(r.adoptManifest('shop', bad.label), rejected);

  const signed = await readFile(join(r.location, key), 'utf8');
  await writeFile(join(r.location, key), signed.replace('"agentVersion": "test"', '"agentVersion": "evil"'));
  await assert.rejects(r.adoptManifest('shop', m.label), (e: unknown) => PgfleetError.is(e, 'ManifestUnauthenticated'));
});
