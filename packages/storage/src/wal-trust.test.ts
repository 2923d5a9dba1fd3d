/**
 * The WAL rules a PITR relies on (wal-auth.ts): an archived WAL or history object is used only
 * when the MAC in its key matches under the cluster's key for its cluster, name and checksum.
 * Objects planted by someone who can write to the repository but does not hold the key (no MAC,
 * a made-up one, one of another cluster or of another name) are refused by every reader, and never
 * stop the genuine file from being archived or fetched.
 */
import assert from 'node:assert/strict';
import { createHmac, randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { after, test } from 'node:test';
import { PgfleetError, type ErrorName } from '@pgfleet/core';
import { sha, sink, TEST_MANIFEST_KEYS, testWalKey } from './driver-suite.js';
import { clusterManifestKeys, deriveManifestKey, secretManifestKeys } from './manifest-auth.js';
import { PosixDriver } from './posix-driver.js';
import { Repository } from './repository.js';
import { walMac, walMacMatches } from './wal-auth.js';

const dirs: string[] = [];
after(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

async function repo(): Promise<Repository> {
  const dir = await mkdtemp(join(tmpdir(), 'pgfleet-wal-trust-'));
  dirs.push(dir);
  return new Repository(new PosixDriver(dir), TEST_MANIFEST_KEYS);
}

const SEG = '000000010000000000000007';
const NEXT = '000000010000000000000008';
const genuine = Buffer.alloc(8192, 1);
const forged = Buffer.alloc(8192, 2);

const push = (r: Repository, name: string, body: Buffer, cluster = 'shop') =>
  r.pushWal(cluster, name, sha(body), () => Readable.from([body]), 'none');

/** An object put straight into the repository, as an attacker with write access would. */
const plant = (r: Repository, key: string, body: Buffer) => r.driver.put(key, body);

const refusedWith = (name: ErrorName, key?: string) => (e: unknown) =>
  PgfleetError.is(e, name) && (key === undefined || (e as Error).message.includes(key));

test('the MAC binds cluster, name and checksum; a round trip through push, list and fetch', async () => {
  const key = deriveManifestKey(Buffer.alloc(32, 0x5a), 'shop');
  const mac = walMac(key, 'shop', SEG, sha(genuine));
  assert.match(mac, /^[0-9a-f]{32}$/);
  assert.ok(walMacMatches(key, 'shop', SEG, sha(genuine), mac));
  assert.ok(!walMacMatches(key, 'other', SEG, sha(genuine), mac), 'another cluster');
  assert.ok(!walMacMatches(key, 'shop', NEXT, sha(genuine), mac), 'another name');
  assert.ok(!walMacMatches(key, 'shop', SEG, sha(forged), mac), 'another checksum');
  assert.ok(!walMacMatches(deriveManifestKey(Buffer.alloc(32, 1), 'shop'), 'shop', SEG, sha(genuine), mac));

  const r = await repo();
  assert.equal(await push(r, SEG, genuine), 'stored');
  const [w] = await r.findWal('shop', SEG);
  assert.equal(w!.key, testWalKey('shop', SEG, sha(genuine)));
  assert.equal(w!.authentic, true);
  const listed = [];
  for await (const l of r.listWal('shop')) listed.push(l);
  assert.deepEqual(
    listed.map((l) => [l.name, l.authentic]),
    [[SEG, true]],
  );
  const out = sink();
  assert.equal((await r.fetchWal('shop', SEG, out)).key, w!.key);
  assert.deepEqual(out.data(), genuine);

  // A process without the cluster's key trusts nothing and archives nothing.
  const keyless = new Repository(r.driver);
  await assert.rejects(keyless.fetchWal('shop', SEG, sink()), refusedWith('WalKeyMissing'));
  await assert.rejects(push(keyless, NEXT, genuine), refusedWith('WalKeyMissing'));
  const otherCluster = new Repository(r.driver, clusterManifestKeys('other', deriveManifestKey(Buffer.alloc(32), 'x')));
  await assert.rejects(otherCluster.readWalFile('shop', SEG), refusedWith('WalKeyMissing'));
});

test('planted segments (no MAC, a made-up MAC, one of another cluster or name) are refused by every reader', async () => {
  const r = await repo();
  await push(r, SEG, genuine);
  const stolen = testWalKey('other', NEXT, sha(forged)); // genuine in cluster "other"
  const cases: [string, string][] = [
    ['no MAC (the format before WAL names were authenticated)', `shop/wal/0000000100000000/${NEXT}-${sha(forged)}`],
    ['a made-up MAC', `shop/wal/0000000100000000/${NEXT}-${sha(forged)}-${'0'.repeat(32)}`],
    ['the MAC of another cluster', `shop/${stolen.slice(stolen.indexOf('/') + 1)}`],
    ['the MAC of another name (a genuine object renamed)', testWalKey('shop', SEG, sha(forged)).replace(SEG, NEXT)],
  ];
  for (const [what, key] of cases) {
    await plant(r, key, forged);
    await assert.rejects(r.fetchWal('shop', NEXT, sink()), refusedWith('WalUnauthenticated', key), what);
    await assert.rejects(r.readWalFile('shop', NEXT), refusedWith('WalUnauthenticated', key), what);
    assert.equal(await r.authenticWal('shop', NEXT), undefined, what);
    assert.equal(await r.isWalArchived('shop', NEXT), false, `${what}: not archived`);
    assert.deepEqual(await r.syncWal('shop', [NEXT]), [NEXT], `${what}: lacking`);
    await r.driver.delete([key]);
  }
  // A genuine object renamed: its MAC names the other segment, so it fails just the same.
  const [seg] = await r.findWal('shop', SEG);
  const renamed = seg!.key.replaceAll(SEG, NEXT);
  await plant(r, renamed, genuine);
  await assert.rejects(r.fetchWal('shop', NEXT, sink()), refusedWith('WalUnauthenticated', renamed));
});

test('a planted copy next to the genuine one blocks neither archiving nor fetching it', async () => {
  const r = await repo();
  // Planted first, under the name the next segment will have, with other content.
  const planted = `shop/wal/0000000100000000/${SEG}-${sha(forged)}`;
  await plant(r, planted, forged);
  // Not "already archived", and not "the same name with other content" (WalConflict): stored.
  assert.equal(await push(r, SEG, genuine), 'stored');
  assert.equal(await push(r, SEG, genuine), 'exists');
  assert.equal(await r.isWalArchived('shop', SEG), true);
  const out = sink();
  await r.fetchWal('shop', SEG, out);
  assert.deepEqual(out.data(), genuine, 'the authenticated copy, never the planted one');
  assert.deepEqual((await r.readWalFile('shop', SEG, 1 << 20))!, genuine);
  // Listings still show the planted object, so retention can delete it and verify report it.
  const listed = [];
  for await (const w of r.listWal('shop')) listed.push([w.key, w.authentic]);
  assert.deepEqual(
    listed.sort(),
    [
      [planted, false],
      [testWalKey('shop', SEG, sha(genuine)), true],
    ].sort(),
  );
  // A planted one with a (made-up) MAC and the genuine content's checksum does not stand for it either.
  const r2 = await repo();
  await plant(r2, `shop/wal/0000000100000000/${SEG}-${sha(genuine)}-${'f'.repeat(32)}`, genuine);
  assert.equal(await r2.isWalArchived('shop', SEG), false);
  assert.equal(await push(r2, SEG, genuine), 'stored');
});

test('a planted timeline history is never listed or read; the genuine one is', async () => {
  const r = await repo();
  const history = Buffer.from('1\t0/3000000\tno recovery target specified\n');
  await r.pushWal('shop', '00000002.history', sha(history), () => Readable.from([history]), 'none');
  const crafted = Buffer.from('1\t0/5000000\tno recovery target specified\n2\t0/6000000\tcrafted\n');
  const planted = `shop/wal/timelines/00000003.history-${sha(crafted)}`;
  await plant(r, planted, crafted);
  await plant(r, `shop/wal/timelines/00000002.history-${sha(crafted)}`, crafted);
  assert.deepEqual(
    (await r.listTimelineHistories('shop')).map((h) => h.name),
    ['00000002.history'],
  );
  assert.deepEqual(await r.readWalFile('shop', '00000002.history'), history);
  await assert.rejects(r.readWalFile('shop', '00000003.history'), refusedWith('WalUnauthenticated', planted));
});

test('adoptWal signs WAL archived before names carried a MAC, and never one with a bad MAC', async () => {
  const r = await repo();
  const old = `shop/wal/0000000100000000/${SEG}-${sha(genuine)}`;
  await plant(r, old, genuine);
  const [found] = await r.findWal('shop', SEG);
  assert.equal(await r.adoptWal('shop', found!, true), 'signed', 'dry run');
  assert.equal((await r.findWal('shop', SEG))[0]!.key, old, 'a dry run changes nothing');
  assert.equal(await r.adoptWal('shop', found!), 'signed');
  const now = await r.findWal('shop', SEG);
  assert.deepEqual(
    now.map((w) => [w.key, w.authentic]),
    [[testWalKey('shop', SEG, sha(genuine)), true]],
  );
  assert.equal(await r.adoptWal('shop', now[0]!), 'valid');
  const out = sink();
  await r.fetchWal('shop', SEG, out);
  assert.deepEqual(out.data(), genuine);

  const badMac = `shop/wal/0000000100000000/${NEXT}-${sha(forged)}-${'0'.repeat(32)}`;
  await plant(r, badMac, forged);
  await assert.rejects(r.adoptWal('shop', (await r.findWal('shop', NEXT))[0]!), refusedWith('WalUnauthenticated'));
  // An unsigned copy whose content does not match its name's checksum is not signed either.
  await r.driver.delete([badMac]);
  const lying = `shop/wal/0000000100000000/${NEXT}-${sha(genuine)}`;
  await plant(r, lying, forged);
  await assert.rejects(r.adoptWal('shop', (await r.findWal('shop', NEXT))[0]!), refusedWith('RepoChecksumMismatch'));
  assert.equal(await r.authenticWal('shop', NEXT), undefined);
  // An unsigned copy with other content than the authenticated copy of its name: a conflict.
  await plant(r, `shop/wal/0000000100000000/${SEG}-${sha(forged)}`, forged);
  const unsigned = (await r.findWal('shop', SEG)).find((w) => !w.authentic)!;
  await assert.rejects(r.adoptWal('shop', unsigned), refusedWith('WalConflict'));
  // The secret's keys (the controller's) sign for every cluster.
  assert.ok(secretManifestKeys(Buffer.alloc(32, 0x5a)).keyFor('any'));
});

test('the WAL MAC is HMAC-SHA256 truncated to 128 bits, for any key length (names archived before stay valid)', () => {
  for (const key of [Buffer.alloc(32, 0x5a), randomBytes(32), randomBytes(64), randomBytes(80), randomBytes(7)]) {
    for (const name of ['000000010000000000000001', '00000002.history']) {
      const digest = 'ab'.repeat(32);
      const expected = createHmac('sha256', key)
        .update(`pgfleet wal v1\0shop\0${name}\0${digest}`)
        .digest()
        .subarray(0, 16)
        .toString('hex');
      assert.equal(walMac(key, 'shop', name, digest), expected);
      assert.equal(walMacMatches(key, 'shop', name, digest, expected), true);
    }
  }
});

test('listWalKeys gives every key but the histories unparsed, with sizes only where the listing has them; walKeyParser judges each MAC', async () => {
  const r = await repo();
  await push(r, SEG, genuine);
  await push(r, '00000002.history', Buffer.from('1\t0/7000000\tno recovery target specified\n'));
  const planted = `shop/wal/${NEXT.slice(0, 16)}/${NEXT}-${sha(forged)}-${'0'.repeat(32)}`;
  await plant(r, planted, forged);
  // The same repository through a driver without listKeys (as S3): the listing's sizes come along.
  const posix = r.driver as PosixDriver;
  const listing = Object.assign(Object.create(posix) as PosixDriver, { listKeys: undefined });
  const plain = new Repository(listing, TEST_MANIFEST_KEYS);
  const all = async (repository: Repository) => {
    const out: [string, number | undefined][] = [];
    for await (const b of repository.listWalKeys('shop')) b.keys.forEach((k, i) => out.push([k, b.sizes?.[i]]));
    return out;
  };
  const genuineKey = testWalKey('shop', SEG, sha(genuine));
  assert.deepEqual(await all(r), [
    [genuineKey, undefined],
    [planted, undefined],
  ]);
  assert.deepEqual(await all(plain), [
    [genuineKey, genuine.length],
    [planted, forged.length],
  ]);
  const parse = r.walKeyParser('shop');
  assert.deepEqual(
    [genuineKey, planted, 'shop/wal/0000000100000000/not-a-wal-key'].map((k) => {
      const w = parse(k, undefined);
      return w && [w.name, w.authentic, w.storedSize];
    }),
    [[SEG, true, undefined], [NEXT, false, undefined], undefined],
  );
  assert.deepEqual(
    (await r.listWalHistories('shop')).map((w) => [w.name, w.authentic]),
    [['00000002.history', true]],
  );
});
