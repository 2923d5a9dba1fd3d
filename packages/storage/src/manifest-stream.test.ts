/**
 * Manifests written and read as streams (manifest-stream.ts): the stored bytes stay exactly what
 * sealManifest(JSON.stringify(m, null, 1)) made (so every older reader reads them), a streamed
 * reader sees every entry as the whole-text reader does, and refuses what it refuses.
 */
import assert from 'node:assert/strict';
import { mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { PgfleetError } from '@pgfleet/core';
import type { BackupManifest, ManifestFile } from './manifest.js';
import { sealManifest, secretManifestKeys } from './manifest-auth.js';
import { manifestHeadPieces, ManifestScanner } from './manifest-stream.js';
import { PosixDriver } from './posix-driver.js';
import { Repository } from './repository.js';
import { testManifest } from './test-manifest.js';

const dirs: string[] = [];
after(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});
const KEYS = secretManifestKeys(Buffer.alloc(32, 5));
const KEY = KEYS.keyFor('shop')!;

async function repo(): Promise<{ repo: Repository; dir: string }> {
  const dir = await mkdtemp(join(tmpdir(), 'pgfleet-mstream-'));
  dirs.push(dir);
  return { repo: new Repository(new PosixDriver(dir), KEYS), dir };
}

const sha = (n: number) => n.toString(16).padStart(64, '0');

function file(i: number): ManifestFile {
  return {
    // Escapes and multi-byte characters must survive the scanner's cuts between chunks.
    path: i % 97 === 0 ? `base/1/q"uo\\te-é-${i}` : `base/1/${16384 + i}`,
    size: i,
    mtimeMs: 1765000000000.125 + i,
    mode: 0o600,
    sha256: sha(i),
    storedSize: i + 1,
    storedSha256: sha(i + 1),
    codec: 'zstd',
    backup: '20260101-000000F',
    ...(i % 50 === 1 ? { pageChecksumErrors: [1, 2] } : {}),
    ...(i % 70 === 3
      ? {
          chunks: [
            {
              offset: 0,
              size: 1,
              sha256: sha(1),
              storedSize: 1,
              storedSha256: sha(2),
              key: `shop/backup/20260101-000000F/pg_chunks/base/1/x${i}/0000.zst`,
            },
          ],
        }
      : {}),
  };
}

function manifest(files: number): BackupManifest {
  return testManifest({
    backupLabel: 'START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\nLABEL: x\n',
    files: Array.from({ length: files }, (_, i) => file(i)),
  });
}

test('the pieces are JSON.stringify(m, null, 1) without its closing brace, for any number of files', async () => {
  const text = async (pieces: AsyncIterable<string>) => {
    let out = '';
    for await (const p of pieces) out += p;
    return out;
  };
  for (const n of [0, 1, 255, 256, 257, 1000]) {
    const m = manifest(n);
    const expected = JSON.stringify(m, null, 1).slice(0, -2);
    assert.equal(await text(manifestHeadPieces(m)), expected, `${n} files`);
    // Entries from elsewhere (a backup's local file), in the place the head marks.
    const entries = async function* () {
      yield* m.files;
    };
    assert.equal(await text(manifestHeadPieces({ ...m, files: [] }, entries())), expected, `${n} files streamed`);
  }
});

test('a streamed manifest is stored byte for byte as before and reads back entry by entry', async () => {
  const { repo: r, dir } = await repo();
  const m = manifest(3000);
  await r.writeManifest(m);
  const stored = await readFile(join(dir, 'shop/backup/20260101-000000F/backup.manifest'), 'utf8');
  assert.equal(stored, sealManifest(JSON.stringify(m, null, 1), KEY, 'shop', m.label));
  assert.deepEqual(await r.readManifest('shop', m.label), m);

  const reader = await r.openManifest('shop', m.label);
  try {
    assert.equal(reader.fileCount, 3000);
    const { files, ...head } = m;
    assert.deepEqual(reader.head, head);
    const seen: ManifestFile[] = [];
    for await (const f of reader.files()) seen.push(f);
    assert.deepEqual(seen, files);
    // Twice: a reader reads its local copy again, not the repository.
    let again = 0;
    for await (const _ of reader.files()) again++;
    assert.equal(again, 3000);
  } finally {
    await reader.close();
  }
});

test('a small manifest is held in memory by its reader, a large one in a local file: both read back the same', async () => {
  const { repo: r } = await repo();
  for (const n of [10, 8000]) {
    const m = manifest(n);
    await r.writeManifest(m);
    const reader = await r.openManifest('shop', m.label);
    try {
      const seen: ManifestFile[] = [];
      for await (const f of reader.files()) seen.push(f);
      assert.deepEqual({ ...reader.head, files: seen }, m, `${n} files`);
    } finally {
      await reader.close();
    }
    await r.deleteBackupManifest('shop', m.label);
  }
});

test('a manifest head (readManifestHead) is the manifest without its entries, with their count; a tampered one is refused', async () => {
  const { repo: r, dir } = await repo();
  const m = manifest(700);
  await r.writeManifest(m);
  const { files, ...head } = m;
  assert.deepEqual(await r.readManifestHead('shop', m.label), { ...head, fileCount: files.length });
  const key = join(dir, 'shop/backup/20260101-000000F/backup.manifest');
  await writeFile(key, (await readFile(key, 'utf8')).replace('"size": 500,', '"size": 501,'));
  await assert.rejects(r.readManifestHead('shop', m.label), (e) => PgfleetError.is(e, 'ManifestUnauthenticated'));
  await assert.rejects(r.readManifestHead('shop', '20260102-000000F'), (e) => PgfleetError.is(e, 'UnknownBackup'));
});

test('a streamed reader refuses what the whole-text reader refuses', async () => {
  const { repo: r, dir } = await repo();
  const m = manifest(600);
  const key = join(dir, 'shop/backup/20260101-000000F/backup.manifest');
  await r.writeManifest(m);
  const good = await readFile(key, 'utf8');
  const spools = async () => (await readdir(tmpdir())).filter((n) => n.startsWith('pgfleet-manifest-'));
  const before = await spools();

  // One entry changed after it was written: the MAC over the whole text fails.
  await writeFile(key, good.replace('"size": 500,', '"size": 501,'));
  await assert.rejects(r.openManifest('shop', m.label), (e) => PgfleetError.is(e, 'ManifestUnauthenticated'));
  // No MAC at all.
  await writeFile(key, JSON.stringify(m, null, 1));
  await assert.rejects(r.openManifest('shop', m.label), (e) => PgfleetError.is(e, 'ManifestUnsigned'));
  // Signed by the key holder, but a path listed twice (the check needs every path seen so far).
  const twice = manifest(600);
  twice.files[599] = { ...twice.files[599]!, path: twice.files[2]!.path };
  await writeFile(key, sealManifest(JSON.stringify(twice, null, 1), KEY, 'shop', m.label));
  await assert.rejects(r.openManifest('shop', m.label), (e) => PgfleetError.is(e, 'ManifestPathRejected'));
  // An entry escaping the data directory, far into the list.
  const escape = manifest(600);
  escape.files[400] = { ...escape.files[400]!, path: '../../etc/passwd' };
  await writeFile(key, sealManifest(JSON.stringify(escape, null, 1), KEY, 'shop', m.label));
  await assert.rejects(r.openManifest('shop', m.label), (e) => PgfleetError.is(e, 'ManifestPathRejected'));
  // A file list holding something that is not an object.
  const text = JSON.stringify(m, null, 1).replace('"files": [', '"files": [\n  7,');
  await writeFile(key, sealManifest(text, KEY, 'shop', m.label));
  await assert.rejects(r.openManifest('shop', m.label), (e) => PgfleetError.is(e, 'RepoManifestInvalid'));
  // No local copy is left behind by a refusal.
  assert.deepEqual(
    (await spools()).filter((n) => !before.includes(n)),
    [],
  );
});

test('the scanner keeps the head and hands over each entry, wherever the chunks are cut', () => {
  const m = manifest(40);
  const text = Buffer.from(JSON.stringify(m, null, 1));
  for (const cut of [1, 7, 64, 4096]) {
    const entries: ManifestFile[] = [];
    const s = new ManifestScanner('test', (t) => entries.push(JSON.parse(t) as ManifestFile));
    for (let i = 0; i < text.length; i += cut) s.push(text.subarray(i, i + cut));
    assert.deepEqual(JSON.parse(s.end()), { ...m, files: [] });
    assert.deepEqual(entries, m.files);
  }
});
