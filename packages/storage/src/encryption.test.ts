/**
 * Encryption at rest through the real posix driver: what goes in comes out, on every path (block
 * I/O, streams, small objects, one-pass WAL), and every way a stored object can be altered, cut,
 * moved or opened with the wrong key fails with the code that says which.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { chmod, mkdtemp, readdir, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { createHash, randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable, Writable } from 'node:stream';
import { ErrorCodes, PgfleetError, type ErrorName } from '@pgfleet/core';
import { PosixDriver } from './posix-driver.js';
import { Repository } from './repository.js';
import type { Codec } from './codec.js';
import { sink, TEST_MANIFEST_KEYS, testWalKey } from './driver-suite.js';
import { fixedKeys, keyResolver, readKeyFile, runKeyCommand } from './key-source.js';
import { kekId } from './repository-keys.js';
import { FRAME_OVERHEAD, FrameSealer, HEADER_BYTES } from './object-cipher.js';
import type { RepositoryDriver } from './driver.js';

const dirs: string[] = [];
after(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});
async function tempDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'pgfleet-enc-'));
  dirs.push(dir);
  return dir;
}

const KEK = randomBytes(32);
const OTHER = randomBytes(32);
const MARKER = 'row-value-7c1f3e-must-not-leak';
const NOISE = randomBytes(4096);

function open(dir: string, kek?: Buffer): Repository {
  return new Repository(new PosixDriver(dir), TEST_MANIFEST_KEYS, kek ? fixedKeys({ c: kek }) : undefined);
}

/** Content with a recognisable plaintext marker, several block frames long. */
function content(bytes = 3 << 20): Buffer {
  const data = Buffer.alloc(bytes);
  for (let i = 0; i < bytes; i += 64) data.write(MARKER, i, 'latin1');
  NOISE.copy(data, 1000); // some bytes compression cannot remove (the same in every call: results are compared)
  return data;
}

async function rejectsWith(p: Promise<unknown>, name: ErrorName, mentions?: string): Promise<PgfleetError> {
  try {
    await p;
  } catch (err) {
    assert.ok(err instanceof PgfleetError, `expected ${name}, got ${String(err)}`);
    assert.equal(err.code, ErrorCodes[name].code, `${name} expected, got ${err.errorName}: ${err.message}`);
    if (mentions) assert.ok(err.message.includes(mentions), `'${err.message}' should name ${mentions}`);
    return err;
  }
  assert.fail(`expected ${name}, it succeeded`);
}

async function allFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { recursive: true, withFileTypes: true }))
    if (e.isFile()) out.push(join(e.parentPath, e.name));
  return out;
}

/** Stores `data` as a backup file through the block path (a local file) and returns its key and checksum. */
async function storeBackupFile(r: Repository, dir: string, data: Buffer, codec: Codec = 'zstd') {
  const src = join(dir, `src-${Math.random().toString(36).slice(2)}`);
  await writeFile(src, data);
  const key = r.backupFileKey('c', 'L', 'base/1/1259', codec);
  const stored = await r.objects.storeFile(key, { path: src, offset: 0 }, codec);
  return { key, sha256: stored!.sha256, size: data.length };
}

async function restore(
  r: Repository,
  dir: string,
  f: { key: string; sha256: string; size: number },
  codec: Codec = 'zstd',
) {
  const dest = join(dir, `out-${Math.random().toString(36).slice(2)}`);
  await r.objects.restoreFile(f.key, codec, { sha256: f.sha256, size: f.size }, { path: dest, mode: 0o600 });
  return readFile(dest);
}

test('stored figures name the stored bytes for every codec, plaintext and encrypted (codec none in plaintext: the content itself, hashed once)', async () => {
  const dir = await tempDir();
  const data = content();
  const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
  for (const [name, r] of [
    ['plaintext', open(join(dir, 'plain'))],
    ['encrypted', open(join(dir, 'enc'), KEK)],
  ] as const)
    for (const [i, codec] of (['zstd', 'lz4', 'gzip', 'none'] as Codec[]).entries()) {
      const src = join(dir, `src-${name}-${codec}`);
      await writeFile(src, data);
      const key = r.backupFileKey('c', 'L', `base/1/${1300 + i}`, codec);
      const s = (await r.objects.storeFile(key, { path: src, offset: 0 }, codec))!;
      const stored = await readFile(join(dir, name === 'plaintext' ? 'plain' : 'enc', key));
      assert.equal(s.sha256, sha(data), `${name} ${codec}: content`);
      assert.equal(s.storedSize, stored.length, `${name} ${codec}: stored size`);
      assert.equal(s.storedSha256, sha(stored), `${name} ${codec}: stored sha256`);
      if (codec === 'none') assert.equal(stored.equals(data), name === 'plaintext', `${name} none: stored as is`);
    }
});

for (const codec of ['zstd', 'lz4', 'gzip', 'none'] as Codec[]) {
  test(`encrypted objects round-trip with ${codec} (block I/O and streams) and hold no plaintext`, async () => {
    const dir = await tempDir();
    const r = open(join(dir, 'repo'), KEK);
    const data = content();
    const f = await storeBackupFile(r, dir, data, codec);
    assert.deepEqual(await restore(r, dir, f, codec), data);
    const out = sink();
    await r.readObject(f.key, codec, { sha256: f.sha256, size: f.size }, out);
    assert.deepEqual(out.data(), data);
    const streamed = await r.writeObject('c/backup/L/pg_data/base/1/2000', Readable.from([data]), codec);
    assert.deepEqual(
      await restore(
        r,
        dir,
        { key: 'c/backup/L/pg_data/base/1/2000', sha256: streamed.sha256, size: data.length },
        codec,
      ),
      data,
    );
    const empty = await storeBackupFile(r, dir, Buffer.alloc(0), codec);
    assert.equal((await restore(r, dir, empty, codec)).length, 0);
    for (const file of await allFiles(join(dir, 'repo')))
      assert.ok(!(await readFile(file)).includes(MARKER), `${file} holds plaintext`);
  });
}

test('cluster.json, manifests and WAL are encrypted too, and read back', async () => {
  const dir = await tempDir();
  const r = open(join(dir, 'repo'), KEK);
  await r.ensureClusterInfo('c', {
    systemIdentifier: '7441000000000000001',
    pgVersionNum: 150000,
    walSegmentSize: 16 << 20,
  });
  assert.equal((await r.readClusterInfo('c'))?.systemIdentifier, '7441000000000000001');
  const wal = join(dir, '000000010000000000000003');
  await writeFile(wal, content(1 << 20));
  const pushed = await r.archiveWal('c', '000000010000000000000003', wal, 'zstd', 1 << 20);
  assert.equal(pushed.result, 'stored');
  const out = sink();
  await r.fetchWal('c', '000000010000000000000003', out);
  assert.deepEqual(out.data(), await readFile(wal));
  const raw = await readFile(join(dir, 'repo', 'c', 'cluster.json'));
  assert.ok(!raw.includes('7441000000000000001'), 'cluster.json is stored encrypted');
  const record = JSON.parse(await readFile(join(dir, 'repo', 'c', 'encryption.json'), 'utf8')) as {
    kekId: string;
    cipher: string;
  };
  assert.deepEqual(record, { format: 1, cipher: 'aes-256-gcm', kekId: kekId(KEK) });
  assert.equal(JSON.parse(await readFile(join(dir, 'repo', 'pgfleet.json'), 'utf8')).format, 2);
  for (const file of await allFiles(join(dir, 'repo')))
    assert.ok(!(await readFile(file)).includes(MARKER), `${file} holds plaintext`);
});

test('a flipped byte, a cut, a swapped object and reordered frames fail as tampered, naming the object', async () => {
  const dir = await tempDir();
  const r = open(join(dir, 'repo'), KEK);
  const f = await storeBackupFile(r, dir, content(), 'none'); // codec none: 3 frames of 1 MiB
  const path = join(dir, 'repo', f.key);
  const good = await readFile(path);

  const flipped = Buffer.from(good);
  flipped[good.length >> 1]! ^= 1;
  await writeFile(path, flipped);
  await rejectsWith(restore(r, dir, f, 'none'), 'RepoObjectTampered', f.key);
  await rejectsWith(r.readObject(f.key, 'none', f, sink()), 'RepoObjectTampered', f.key);

  // Cut at the boundary before the last frame (the third 1 MiB frame, flagged last).
  const frameBytes = 5 + (1 << 20) + 16;
  await writeFile(path, good.subarray(0, good.length - frameBytes));
  await rejectsWith(restore(r, dir, f, 'none'), 'RepoObjectTampered', 'ends before its last frame');
  await rejectsWith(r.readObject(f.key, 'none', f, sink()), 'RepoObjectTampered', 'ends before its last frame');
  await writeFile(path, good.subarray(0, good.length - 1000));
  await rejectsWith(r.readObject(f.key, 'none', f, sink()), 'RepoObjectTampered', f.key);

  // Frames 1 and 2 swapped (same lengths: 1 MiB each; frame 2 is the last).
  const header = 29;
  const frame = frameBytes;
  const swapped = Buffer.concat([
    good.subarray(0, header + frame),
    good.subarray(header + 2 * frame, header + 3 * frame),
    good.subarray(header + frame, header + 2 * frame),
    good.subarray(header + 3 * frame),
  ]);
  assert.equal(swapped.length, good.length);
  await writeFile(path, swapped);
  await rejectsWith(restore(r, dir, f, 'none'), 'RepoObjectTampered', 'frame 1');

  // Another object's bytes (same data key, same content) under this key.
  await writeFile(path, good);
  const other = await r.writeObject('c/backup/L/pg_data/base/1/3000', Readable.from([content()]), 'none');
  await writeFile(path, await readFile(join(dir, 'repo', 'c/backup/L/pg_data/base/1/3000')));
  await rejectsWith(restore(r, dir, { ...f, sha256: other.sha256 }, 'none'), 'RepoObjectTampered', f.key);
  assert.equal(other.sha256, f.sha256, 'the same content: only the key binding tells them apart');

  // A plaintext object put in place of an encrypted one (a downgrade) is refused too.
  await writeFile(path, content());
  await rejectsWith(restore(r, dir, f, 'none'), 'RepoObjectTampered', 'not in the encrypted form');
});

test('an encrypted zstd object restores checked by its stored bytes (the ciphertext) and zstd frame checksums; flipped or cut ciphertext still fails as tampered', async () => {
  const dir = await tempDir();
  const r = open(join(dir, 'repo'), KEK);
  const data = content();
  const src = join(dir, 'src-zstd');
  await writeFile(src, data);
  const key = r.backupFileKey('c', 'L', 'base/1/1262', 'zstd');
  const s = (await r.objects.storeFile(key, { path: src, offset: 0 }, 'zstd'))!;
  const path = join(dir, 'repo', key);
  const good = await readFile(path);
  assert.equal(s.storedSha256, createHash('sha256').update(good).digest('hex'), 'storedSha256 covers the ciphertext');
  const restoreAs = async (expected: { sha256: string; size: number; storedSha256?: string }) => {
    const dest = join(dir, `out-${Math.random().toString(36).slice(2)}`);
    await r.objects.restoreFile(key, 'zstd', expected, { path: dest, mode: 0o600 });
    return readFile(dest);
  };
  const full = { sha256: s.sha256, size: s.size, storedSha256: s.storedSha256 };
  assert.deepEqual(await restoreAs(full), data);
  // The stored bytes are what is checked: a manifest naming other ones is refused.
  const other = createHash('sha256').update('other').digest('hex');
  await rejectsWith(restoreAs({ ...full, storedSha256: other }), 'RepoChecksumMismatch', key);
  await rejectsWith(restoreAs({ ...full, size: s.size - 1 }), 'RepoChecksumMismatch', key);
  // Without storedSha256 (a manifest of an older agent), the content is hashed as before.
  assert.deepEqual(await restoreAs({ sha256: s.sha256, size: s.size }), data);
  await rejectsWith(restoreAs({ sha256: other, size: s.size }), 'RepoChecksumMismatch', key);
  // Altered ciphertext whose sha256 the manifest would name: authentication still refuses it.
  const flipped = Buffer.from(good);
  flipped[good.length >> 1]! ^= 1;
  await writeFile(path, flipped);
  const flippedSha = createHash('sha256').update(flipped).digest('hex');
  await rejectsWith(restoreAs({ ...full, storedSha256: flippedSha }), 'RepoObjectTampered', key);
  const cut = good.subarray(0, good.length - 100);
  await writeFile(path, cut);
  await rejectsWith(
    restoreAs({ ...full, storedSha256: createHash('sha256').update(cut).digest('hex') }),
    'RepoObjectTampered',
    key,
  );
});

test('a small object is one frame flagged last; objects closed by an empty last frame (as first written) still read', async () => {
  const dir = await tempDir();
  const r = open(join(dir, 'repo'), KEK);
  const data = randomBytes(8192);
  const f = await storeBackupFile(r, dir, data, 'none');
  const path = join(dir, 'repo', f.key);
  const stored = await readFile(path);
  assert.equal(stored.length, HEADER_BYTES + FRAME_OVERHEAD + data.length, 'header and one frame, no closing frame');
  assert.equal(stored[HEADER_BYTES + 4], 1, 'the content frame carries the last flag');

  // The first writers closed every object with an empty last frame: same header, same data key.
  const id = stored.subarray(5, 13).toString('hex');
  const dataKey = { id, key: await (await r.objects.keys!.forRead(f.key))!(id) };
  const sealer = new FrameSealer(dataKey, f.key);
  await writeFile(path, Buffer.concat([sealer.seal(data), sealer.finish()]));
  assert.deepEqual(await restore(r, dir, f, 'none'), data);
  const chunks: Buffer[] = [];
  await r.readObject(f.key, 'none', f, new Writable({ write: (c: Buffer, _e, cb) => (chunks.push(c), cb()) }));
  assert.deepEqual(Buffer.concat(chunks), data);
  // A sealer refuses a frame after its last.
  const closed = new FrameSealer(dataKey, f.key);
  closed.seal(data, true);
  assert.throws(() => closed.finish(), /after the last frame/);
});

test('block-incremental objects (produced content, restored by runs) are sealed and read back', async () => {
  const dir = await tempDir();
  const r = open(join(dir, 'repo'), KEK);
  const B = 8192;
  // Three changed blocks of a 6-block file, produced as a block-incremental backup produces them.
  const blocks = [randomBytes(B), Buffer.alloc(B, MARKER), randomBytes(B)];
  let next = 0;
  const key = r.backupFileKey('c', 'L', 'pg_blocks/base/1/16384/data', 'zstd');
  const stored = await r.objects.storeProduced(
    key,
    {
      read: (buf: Buffer) => (next < blocks.length ? blocks[next++]!.copy(buf) : 0),
      close: async () => {},
    },
    'zstd',
  );
  const raw = await readFile(join(dir, 'repo', key));
  assert.ok(!raw.includes(Buffer.from(MARKER)), 'no plaintext in the stored object');
  const target = join(dir, 'rebuilt');
  const base = Buffer.alloc(6 * B, 0x5a);
  await writeFile(target, base);
  // Content blocks 0 and 1 go to file blocks 1 and 2, content block 2 to file block 5.
  await r.objects.restoreRuns(
    key,
    'zstd',
    { sha256: stored.sha256, size: stored.size },
    target,
    Uint32Array.from([0, 1, 2, 2, 5, 1]),
    B,
    6 * B,
  );
  const want = Buffer.from(base);
  blocks[0]!.copy(want, 1 * B);
  blocks[1]!.copy(want, 2 * B);
  blocks[2]!.copy(want, 5 * B);
  assert.deepEqual(await readFile(target), want);
  // A flipped ciphertext byte fails as tampered before any block is trusted.
  raw[raw.length >> 1]! ^= 1;
  await writeFile(join(dir, 'repo', key), raw);
  await rejectsWith(
    r.objects.restoreRuns(
      key,
      'zstd',
      { sha256: stored.sha256, size: stored.size },
      target,
      Uint32Array.from([0, 1, 2]),
      B,
      6 * B,
    ),
    'RepoObjectTampered',
    key,
  );
});

test('verify-style measuring reports a tampered object as its own fault', async () => {
  const dir = await tempDir();
  const r = open(join(dir, 'repo'), KEK);
  const f = await storeBackupFile(r, dir, content());
  const path = join(dir, 'repo', f.key);
  const bytes = await readFile(path);
  bytes[100]! ^= 0x40;
  await writeFile(path, bytes);
  const m = await r.objects.measure(f.key, 'zstd', true);
  assert.match(m.decodeError ?? '', /fails authentication/);
});

test('a wrong key, no key and a key for a plaintext cluster fail clearly', async () => {
  const dir = await tempDir();
  const f = await storeBackupFile(open(join(dir, 'repo'), KEK), dir, content());
  await rejectsWith(restore(open(join(dir, 'repo'), OTHER), dir, f), 'EncryptionKeyWrong', kekId(KEK));
  await rejectsWith(restore(open(join(dir, 'repo')), dir, f), 'EncryptionModeMismatch', 'is encrypted');
  await rejectsWith(
    open(join(dir, 'repo')).writeObject('c/backup/M/pg_data/x', Readable.from([Buffer.from('x')]), 'none'),
    'EncryptionModeMismatch',
  );

  const plain = join(dir, 'plain');
  const pf = await storeBackupFile(open(plain), dir, content());
  await rejectsWith(restore(open(plain, KEK), dir, pf), 'EncryptionModeMismatch', 'not encrypted');
  await rejectsWith(storeBackupFile(open(plain, KEK), dir, content()), 'EncryptionModeMismatch', 'not encrypted');
  assert.equal(JSON.parse(await readFile(join(plain, 'pgfleet.json'), 'utf8').catch(() => '{"format":2}')).format, 2);
});

test('format-1 repositories are still read (plaintext objects) and stay format 1', async () => {
  const dir = await tempDir();
  await writeFile(join(dir, 'pgfleet.json'), JSON.stringify({ format: 1, createdBy: 'pgfleet' }));
  const r = open(dir);
  await r.init();
  const f = await storeBackupFile(r, await tempDir(), content());
  assert.deepEqual(await restore(r, await tempDir(), f), content());
  assert.equal(JSON.parse(await readFile(join(dir, 'pgfleet.json'), 'utf8')).format, 1);
  // A new encrypted cluster in it raises the marker: older pgfleet must not write there.
  const enc = new Repository(new PosixDriver(dir), TEST_MANIFEST_KEYS, fixedKeys({ e: KEK }));
  await enc.writeObject('e/backup/L/pg_data/x', Readable.from([Buffer.from('x')]), 'none');
  assert.equal(JSON.parse(await readFile(join(dir, 'pgfleet.json'), 'utf8')).format, 2);
});

/** `driver` with some of its methods replaced; the others are its own. */
function withMethods(driver: RepositoryDriver, replaced: Partial<RepositoryDriver>): RepositoryDriver {
  return new Proxy(driver, {
    get(target, prop, receiver) {
      if (Object.hasOwn(replaced, prop)) return replaced[prop as keyof RepositoryDriver];
      const v = Reflect.get(target, prop, receiver) as unknown;
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
    },
  });
}

/** A driver that fails every put after `allowed` of them (a rotate-key killed half-way). */
function failingAfter(driver: RepositoryDriver, allowed: number): RepositoryDriver {
  let puts = 0;
  return withMethods(driver, {
    put: async (...args: Parameters<RepositoryDriver['put']>) => {
      if (++puts > allowed) throw new Error('killed');
      return driver.put(...args);
    },
  });
}

test('rotate-key re-wraps data keys only, the old key stops working, and an interrupted rotation finishes', async () => {
  const dir = await tempDir();
  const repoDir = join(dir, 'repo');
  const r = open(repoDir, KEK);
  await r.ensureClusterInfo('c', { systemIdentifier: '1', pgVersionNum: 150000, walSegmentSize: 16 << 20 });
  const f = await storeBackupFile(r, dir, content());
  const wal = join(dir, '000000010000000000000001');
  await writeFile(wal, content(1 << 20));
  await r.archiveWal('c', '000000010000000000000001', wal, 'zstd', 1 << 20);
  const dataBefore = await readFile(join(repoDir, f.key));

  const NEW = randomBytes(32);
  // Killed after the record and one key object: some keys under the old KEK, some under the new.
  await assert.rejects(
    new Repository(failingAfter(new PosixDriver(repoDir), 2), TEST_MANIFEST_KEYS).rotateKey('c', KEK, NEW),
    /killed/,
  );
  await rejectsWith(restore(open(repoDir, KEK), dir, f), 'EncryptionKeyWrong');
  const done = await open(repoDir).rotateKey('c', KEK, NEW);
  assert.equal(done.rewrapped + done.alreadyNew, 3); // cluster, backup, WAL directory
  assert.equal(done.alreadyNew, 1);

  assert.deepEqual(await readFile(join(repoDir, f.key)), dataBefore, 'data objects are not rewritten');
  assert.deepEqual(await restore(open(repoDir, NEW), dir, f), content());
  await rejectsWith(restore(open(repoDir, KEK), dir, f), 'EncryptionKeyWrong', 'rotated out');
  // A run after the finished one goes over the key objects again and finds them all new.
  assert.deepEqual(await open(repoDir).rotateKey('c', KEK, NEW), { rewrapped: 0, alreadyNew: 3 });
  await rejectsWith(open(repoDir).rotateKey('c', OTHER, NEW), 'EncryptionKeyWrong');
  const out = sink();
  await open(repoDir, NEW).fetchWal('c', '000000010000000000000001', out);
  assert.deepEqual(out.data(), await readFile(wal));
});

test('a writer still holding the rotated-out key makes no new data key with it (a running agent after rotate-key)', async () => {
  const dir = await tempDir();
  const repoDir = join(dir, 'repo');
  const running = open(repoDir, KEK);
  await running.ensureClusterInfo('c', { systemIdentifier: '1', pgVersionNum: 150000, walSegmentSize: 16 << 20 });
  await storeBackupFile(running, dir, content(1 << 20));
  const NEW = randomBytes(32);
  await open(repoDir).rotateKey('c', KEK, NEW);
  // The next backup needs a new data key: wrapping it with the old key would leave it unreadable
  // with the new one (and readable by the old), so the writer is refused until given the new key.
  const src = join(dir, 'next-backup-file');
  await writeFile(src, content(1 << 20));
  const nextKey = running.backupFileKey('c', 'M', 'base/1/1259', 'zstd');
  await rejectsWith(
    running.objects.storeFile(nextKey, { path: src, offset: 0 }, 'zstd'),
    'EncryptionKeyWrong',
    'rotated out',
  );
  const renewed = open(repoDir, NEW);
  const stored = await renewed.objects.storeFile(nextKey, { path: src, offset: 0 }, 'zstd');
  const f = { key: nextKey, sha256: stored!.sha256, size: 1 << 20 };
  assert.deepEqual(await restore(open(repoDir, NEW), dir, f), content(1 << 20));
});

/** An agent's resolver after its restart for a rotation: `current` in the key file, `previous` the old key. */
function rotatingKeys(current: Buffer, previous?: Buffer) {
  const keys = fixedKeys({ c: current });
  if (previous) keys.previous = fixedKeys({ c: previous });
  return keys;
}

test('restarted with the new key and the old one as previous: works under the old one until rotateToCurrentKey, then under the new', async () => {
  const dir = await tempDir();
  const repoDir = join(dir, 'repo');
  const r = open(repoDir, KEK);
  const info = { systemIdentifier: '1', pgVersionNum: 150000, walSegmentSize: 16 << 20 };
  await r.ensureClusterInfo('c', info);
  const first = await archiveSegment(r, dir, '000000010000000000000001');
  const NEW = randomBytes(32);

  // The agent restarted: reads and writes go on under the previous key (the repository's).
  const agent = new Repository(new PosixDriver(repoDir), TEST_MANIFEST_KEYS, rotatingKeys(NEW, KEK));
  assert.deepEqual(await fetched(agent, '000000010000000000000001'), first.bytes);
  const f = await storeBackupFile(agent, dir, content(1 << 20));
  const second = await archiveSegment(agent, dir, '000000010000000000000002');
  const before = new Set(await dataKeyIds(repoDir));

  // Refusals first: no previous key, and a previous key that is not the repository's.
  const noPrevious = new Repository(new PosixDriver(repoDir), TEST_MANIFEST_KEYS, rotatingKeys(NEW));
  await rejectsWith(noPrevious.rotateToCurrentKey('c'), 'EncryptionPreviousKeyMissing', kekId(KEK));
  const stranger = new Repository(new PosixDriver(repoDir), TEST_MANIFEST_KEYS, rotatingKeys(NEW, OTHER));
  await rejectsWith(stranger.rotateToCurrentKey('c'), 'EncryptionPreviousKeyWrong', kekId(OTHER));

  const seen: number[] = [];
  const done = await agent.rotateToCurrentKey('c', (d) => seen.push(d.rewrapped + d.alreadyNew));
  assert.deepEqual(done, { rewrapped: before.size, alreadyNew: 0, oldKeyId: kekId(KEK), newKeyId: kekId(NEW) });
  assert.deepEqual(
    seen,
    [...Array(before.size).keys()].map((i) => i + 1),
    'progress after every key object',
  );
  // The same process seals what it writes next under data keys made under the new key.
  const third = await archiveSegment(agent, dir, '000000010000000000000003');
  assert.ok(!before.has(await sealedUnder(join(repoDir, third.key))), 'a data key from before the rotation');
  const reader = open(repoDir, NEW);
  for (const [name, seg] of [
    ['000000010000000000000001', first],
    ['000000010000000000000002', second],
    ['000000010000000000000003', third],
  ] as const)
    assert.deepEqual(await fetched(reader, name), seg.bytes);
  assert.deepEqual(await restore(reader, dir, f), content(1 << 20));
  await rejectsWith(fetched(open(repoDir, KEK), '000000010000000000000001'), 'EncryptionKeyWrong', 'rotated out');
  // Again: nothing left to do while the previous key is still configured; refused once it is dropped.
  const again = await agent.rotateToCurrentKey('c');
  assert.equal(again.rewrapped, 0);
  assert.equal(again.alreadyNew, before.size + 1);
  await rejectsWith(noPrevious.rotateToCurrentKey('c'), 'EncryptionPreviousKeyMissing', 'nothing to rotate');
});

test('mid-rotation (interrupted), a process with the new key and the previous one reads every object', async () => {
  const dir = await tempDir();
  const repoDir = join(dir, 'repo');
  const r = open(repoDir, KEK);
  await r.ensureClusterInfo('c', { systemIdentifier: '1', pgVersionNum: 150000, walSegmentSize: 16 << 20 });
  const seg = await archiveSegment(r, dir, '000000010000000000000001');
  const f = await storeBackupFile(r, dir, content(1 << 20));
  const NEW = randomBytes(32);
  await assert.rejects(
    new Repository(failingAfter(new PosixDriver(repoDir), 2), TEST_MANIFEST_KEYS).rotateKey('c', KEK, NEW),
    /killed/,
  );
  const both = new Repository(new PosixDriver(repoDir), TEST_MANIFEST_KEYS, rotatingKeys(NEW, KEK));
  assert.deepEqual(await fetched(both, '000000010000000000000001'), seg.bytes);
  assert.deepEqual(await restore(both, dir, f), content(1 << 20));
  const done = await both.rotateToCurrentKey('c');
  assert.equal(done.alreadyNew, 1);
  assert.equal(done.rewrapped, 2);
  assert.deepEqual(await restore(open(repoDir, NEW), dir, f), content(1 << 20));
});

test('a previous key needs a current one; file and command of the previous key exclude each other', () => {
  assert.throws(() => keyResolver({ previousFile: 'a' }), /needs the current key/);
  assert.throws(() => keyResolver({ file: 'k', previousFile: 'a', previousCommand: 'b' }), /exclude each other/);
  assert.equal(typeof keyResolver({ file: 'k', previousFile: 'a' })!.previous, 'function');
});

test('a key file readable by others is refused, directly or through a link; a 0600 one is read', async () => {
  const dir = await tempDir();
  const file = join(dir, 'kek');
  await writeFile(file, `${KEK.toString('base64')}\n`, { mode: 0o600 });
  assert.deepEqual(await readKeyFile(file), KEK);
  const link = join(dir, 'kek-link');
  await symlink(file, link);
  assert.deepEqual(await readKeyFile(link), KEK);
  await chmod(file, 0o640);
  await rejectsWith(readKeyFile(file), 'EncryptionKeyInvalid', '0640');
  await rejectsWith(readKeyFile(link), 'EncryptionKeyInvalid', 'other users');
  const bad = join(dir, 'short');
  await writeFile(bad, 'c2hvcnQ=', { mode: 0o600 });
  await rejectsWith(readKeyFile(bad), 'EncryptionKeyInvalid', '32 bytes');
  // %c in the path: one setting, a file per cluster.
  await writeFile(join(dir, 'c.key'), KEK.toString('hex'), { mode: 0o400 });
  assert.deepEqual(await keyResolver({ file: join(dir, '%c.key') })!('c'), KEK);
});

test('a key command prints the key; %c names the cluster; failure and garbage are clear errors', async () => {
  const dir = await tempDir();
  await writeFile(join(dir, 'shop.key'), KEK.toString('base64'), { mode: 0o600 });
  assert.deepEqual(await runKeyCommand(`cat ${dir}/$PGFLEET_CLUSTER.key`, 'shop'), KEK);
  const resolve = keyResolver({ command: `cat ${dir}/%c.key` }, 'shop')!;
  assert.deepEqual(await resolve('shop'), KEK);
  assert.equal(await resolve('other'), undefined, "an agent's resolver holds its own cluster's key only");
  await rejectsWith(runKeyCommand('echo nope >&2; exit 3', 'shop'), 'EncryptionKeyInvalid', 'exit status 3): nope');
  await rejectsWith(runKeyCommand('echo not-a-key', 'shop'), 'EncryptionKeyInvalid', 'base64');
  assert.throws(() => keyResolver({ file: 'a', command: 'b' }), /exclude each other/);
});

/** The data key ids of the cluster's key objects (`dek-<id>.key`) in the repository directory. */
async function dataKeyIds(repoDir: string): Promise<string[]> {
  const out: string[] = [];
  for (const file of await allFiles(repoDir)) {
    const m = /dek-([0-9a-f]{16})\.key$/.exec(file);
    if (m) out.push(m[1]!);
  }
  return out;
}

/** The data key id an encrypted object's header names. */
async function sealedUnder(path: string): Promise<string> {
  return (await readFile(path)).subarray(5, 13).toString('hex');
}

async function archiveSegment(r: Repository, dir: string, name: string): Promise<{ key: string; bytes: Buffer }> {
  const path = join(dir, `${name}-${Math.random().toString(36).slice(2)}`);
  const bytes = Buffer.concat([randomBytes(4096), content(1 << 16)]);
  await writeFile(path, bytes);
  assert.equal((await r.archiveWal('c', name, path, 'zstd', bytes.length)).result, 'stored');
  const [found] = await r.findWal('c', name);
  return { key: found!.key, bytes };
}

async function fetched(r: Repository, name: string): Promise<Buffer> {
  const out = sink();
  await r.fetchWal('c', name, out);
  return out.data();
}

test('after a rotate-key, new objects are sealed under data keys made after it; the new key alone reads old and new', async () => {
  const dir = await tempDir();
  const repoDir = join(dir, 'repo');
  const r = open(repoDir, KEK);
  const info = { systemIdentifier: '1', pgVersionNum: 150000, walSegmentSize: 16 << 20 };
  await r.ensureClusterInfo('c', info);
  const first = await archiveSegment(r, dir, '000000010000000000000001');
  const f = await storeBackupFile(r, dir, content());
  const before = new Set(await dataKeyIds(repoDir));
  assert.equal(before.size, 3); // cluster, backup, WAL directory

  const NEW = randomBytes(32);
  await open(repoDir).rotateKey('c', KEK, NEW);
  const renewed = open(repoDir, NEW);
  // The same WAL directory, and the cluster's own scope, written after the cut-over.
  const second = await archiveSegment(renewed, dir, '000000010000000000000002');
  await renewed.objects.storeSmall('c/cluster.json', Buffer.from(JSON.stringify(info)));
  for (const key of [second.key, 'c/cluster.json']) {
    const id = await sealedUnder(join(repoDir, key));
    assert.ok(!before.has(id), `${key} is sealed under data key ${id}, which existed before the rotation`);
  }
  assert.ok(before.has(await sealedUnder(join(repoDir, first.key))), 'older objects keep their data key');
  // Another process with the new key joins the directory's new data key instead of making a third.
  const third = await archiveSegment(open(repoDir, NEW), dir, '000000010000000000000003');
  assert.equal(await sealedUnder(join(repoDir, third.key)), await sealedUnder(join(repoDir, second.key)));
  assert.equal((await dataKeyIds(join(repoDir, 'c', 'wal'))).length, 2);

  const reader = open(repoDir, NEW);
  assert.deepEqual(await fetched(reader, '000000010000000000000001'), first.bytes);
  assert.deepEqual(await fetched(reader, '000000010000000000000002'), second.bytes);
  assert.deepEqual(await fetched(reader, '000000010000000000000003'), third.bytes);
  assert.deepEqual(await reader.readClusterInfo('c'), info);
  assert.deepEqual(await restore(reader, dir, f), content());
  await rejectsWith(fetched(open(repoDir, KEK), '000000010000000000000002'), 'EncryptionKeyWrong', 'rotated out');
  await rejectsWith(fetched(open(repoDir, KEK), '000000010000000000000001'), 'EncryptionKeyWrong', 'rotated out');
});

test('a key object moved past the cut-over without the key is refused, and a rotated-out key cannot come back', async () => {
  const dir = await tempDir();
  const repoDir = join(dir, 'repo');
  await archiveSegment(open(repoDir, KEK), dir, '000000010000000000000001');
  const NEW = randomBytes(32);
  await open(repoDir).rotateKey('c', KEK, NEW);
  // Someone with write access (and the old key) makes the old data key look made under the new KEK.
  const [id] = await dataKeyIds(join(repoDir, 'c', 'wal'));
  const keyPath = join(repoDir, 'c', 'wal', '0000000100000000', `dek-${id}.key`);
  const stored = JSON.parse(await readFile(keyPath, 'utf8')) as Record<string, string>;
  await writeFile(keyPath, JSON.stringify({ ...stored, createdUnder: kekId(NEW) }));
  await rejectsWith(
    archiveSegment(open(repoDir, NEW), dir, '000000010000000000000002'),
    'RepoObjectTampered',
    `dek-${id}.key`,
  );
  // Without the claim the old key is left alone and a new one seals the segment.
  await writeFile(keyPath, JSON.stringify(stored));
  const next = await archiveSegment(open(repoDir, NEW), dir, '000000010000000000000002');
  assert.notEqual(await sealedUnder(join(repoDir, next.key)), id);

  await rejectsWith(open(repoDir).rotateKey('c', NEW, KEK), 'InvalidArgument', 'rotated out');
});

/** The driver of `dir`, calling `hook` once right after the first delete that removes a data key object. */
function afterKeyDelete(dir: string, hook: () => Promise<void>): RepositoryDriver {
  const driver = new PosixDriver(dir);
  let fired = false;
  return withMethods(driver, {
    delete: async (keys: readonly string[]) => {
      await driver.delete(keys);
      if (!fired && keys.some((k) => k.includes('/dek-'))) {
        fired = true;
        await hook();
      }
    },
  });
}

test('expire removes a WAL directory key object with its last segment, and puts it back when a segment arrives meanwhile', async () => {
  const dir = await tempDir();
  const repoDir = join(dir, 'repo');
  const archiver = open(repoDir, KEK);
  const a = await archiveSegment(archiver, dir, '000000010000000000000001');
  await archiveSegment(archiver, dir, '000000010000000000000002');
  const wal = async (r: Repository) => {
    const out = [];
    for await (const w of r.listWal('c')) out.push(w);
    return out;
  };
  const keyFiles = async () =>
    (await readdir(join(repoDir, 'c', 'wal', '0000000100000000'))).filter((n) => n.startsWith('dek-'));
  const keyBefore = await keyFiles();

  // An archiver holding the directory's data key stores a segment right after the expire's
  // delete of the key object and before its look afterwards: the expire puts the key back.
  const lateName = '000000010000000000000009';
  const late = content(1 << 16);
  const lateKey = testWalKey('c', lateName, createHash('sha256').update(late).digest('hex'));
  const expire = new Repository(
    afterKeyDelete(repoDir, async () => {
      await archiver.objects.storeStream(lateKey, Readable.from([late]), 'none');
    }),
  );
  assert.equal(await expire.deleteWal(await wal(expire)), 0);
  assert.deepEqual(await keyFiles(), keyBefore, 'the key object is back, as it was');
  assert.deepEqual(await fetched(open(repoDir, KEK), lateName), late);

  // Nothing arrives: the key object goes with the last segment (an expire needs no key for it).
  assert.equal(await new Repository(new PosixDriver(repoDir)).deleteWal(await wal(open(repoDir))), 1);
  assert.deepEqual(await keyFiles(), []);
  // The archiver still holds the data key: its next segment brings the key object back.
  const b = await archiveSegment(archiver, dir, '000000010000000000000003');
  assert.deepEqual(await keyFiles(), keyBefore);
  assert.deepEqual(await fetched(open(repoDir, KEK), '000000010000000000000003'), b.bytes);
  assert.notEqual(a.key, b.key);
});

test('adoptWal puts back the WAL directory key object an expire released meanwhile, as every WAL write', async () => {
  const dir = await tempDir();
  const repoDir = join(dir, 'repo');
  const name = '000000010000000000000001';
  const body = content(1 << 16);
  const sum = createHash('sha256').update(body).digest('hex');
  const scope = 'c/wal/0000000100000000/';
  // A segment archived before WAL names carried a MAC, in an encrypted cluster.
  const unsigned = `${scope}${name}-${sum}`;
  await open(repoDir, KEK).objects.storeStream(unsigned, Readable.from([body]), 'none');
  const keyFiles = async () =>
    (await readdir(join(repoDir, 'c', 'wal', '0000000100000000'))).filter((n) => n.startsWith('dek-'));
  const keyBefore = await keyFiles();
  assert.equal(keyBefore.length, 1);
  // The signed copy lands right after an expire released the directory's key object.
  const base = new PosixDriver(repoDir);
  const racing = withMethods(base, {
    put: async (...args: Parameters<RepositoryDriver['put']>) => {
      await base.put(...args);
      if (args[0].startsWith(`${scope}${name}-`) && args[0] !== unsigned)
        await base.delete((await keyFiles()).map((k) => `${scope}${k}`));
    },
  });
  const adopter = new Repository(racing, TEST_MANIFEST_KEYS, fixedKeys({ c: KEK }));
  const [found] = await adopter.findWal('c', name);
  assert.equal(await adopter.adoptWal('c', found!), 'signed');
  assert.deepEqual(await keyFiles(), keyBefore, 'the key object is back, as it was');
  assert.deepEqual(await fetched(open(repoDir, KEK), name), body);
});

test("expire deletes a backup's files first and its data key object last", async () => {
  const dir = await tempDir();
  const repoDir = join(dir, 'repo');
  const r = open(repoDir, KEK);
  await storeBackupFile(r, dir, content());
  const deletes: string[][] = [];
  const driver = new PosixDriver(repoDir);
  const recording = withMethods(driver, {
    delete: async (keys: readonly string[]) => {
      deletes.push([...keys]);
      await driver.delete(keys);
    },
  });
  const expire = new Repository(recording);
  const objects = await expire.backupObjects('c', 'L');
  assert.ok(objects.some((o) => o.key.includes('/dek-')));
  await expire.deleteBackupFiles('c', 'L', objects);
  assert.ok(deletes.flat().length > 0);
  assert.ok(
    !deletes.flat().some((k) => k.includes('/dek-')),
    'data key objects go only with the label directory, last',
  );
  assert.equal(await expire.labelInUse('c', 'L'), false);
});
