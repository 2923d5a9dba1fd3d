/**
 * The one test suite every RepositoryDriver must pass (posix now, S3 next). Exported through
 * '@pgfleet/storage/testing' so each driver's test file runs it against a real backend.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { Readable, Writable } from 'node:stream';
import { PgfleetError } from '@pgfleet/core';
import type { RepositoryDriver } from './driver.js';
import { openRepositoryDriver } from './open-repository.js';
import { fixedKeys } from './key-source.js';
import { readSmall } from './posix-driver.js';
import { secretManifestKeys } from './manifest-auth.js';
import { walMac } from './wal-auth.js';
import { Repository } from './repository.js';

/**
 * The cluster keys of every test repository (a fixed secret: tests sign manifests and WAL names
 * and check them like a fleet does).
 */
export const TEST_MANIFEST_KEYS = secretManifestKeys(Buffer.alloc(32, 0x5a));

/** The key a WAL file is archived under in a test repository (with its MAC under TEST_MANIFEST_KEYS; `ext`: '.zst' etc.). */
export function testWalKey(cluster: string, name: string, sha256: string, ext = ''): string {
  const dir = name.endsWith('.history') ? 'timelines' : name.slice(0, 16);
  const mac = walMac(TEST_MANIFEST_KEYS.keyFor(cluster)!, cluster, name, sha256);
  return `${cluster}/wal/${dir}/${name}-${sha256}-${mac}${ext}`;
}

/** The keys a listing yields, in order. */
export async function collect(it: AsyncIterable<{ key: string }>): Promise<string[]> {
  const out: string[] = [];
  for await (const o of it) out.push(o.key);
  return out;
}

/** A Writable that keeps what it is given: data() is all of it. */
export function sink(): Writable & { data(): Buffer } {
  const chunks: Buffer[] = [];
  const w = new Writable({
    write(c, _e, cb) {
      chunks.push(c);
      cb();
    },
  }) as Writable & { data(): Buffer };
  w.data = () => Buffer.concat(chunks);
  return w;
}
/** Everything a stream gives, as one buffer. */
export async function readAll(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of stream as AsyncIterable<Buffer>) chunks.push(c);
  return Buffer.concat(chunks);
}
export const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

/** What a driver offers beyond the required methods; the suite checks the claim and tests what is offered. */
export interface DriverCapabilities {
  /** objects live as local files (the posix fast path of the object I/O layer) */
  localFiles: boolean;
  /** a serialisable spec opens the same repository again (copy worker threads) */
  spec: boolean;
  /** keys listed without sizes (RepositoryDriver.listKeys); absent: not offered */
  listKeys?: boolean;
}

export function repositoryDriverSuite(
  name: string,
  make: () => Promise<RepositoryDriver>,
  capabilities: DriverCapabilities,
): void {
  describe(`repository driver: ${name}`, () => {
    it('offers exactly the capabilities it is known for', async () => {
      const d = await make();
      assert.equal(d.localFiles !== undefined, capabilities.localFiles, 'localFiles');
      assert.equal(d.spec !== undefined, capabilities.spec, 'spec');
      assert.equal(d.listKeys !== undefined, capabilities.listKeys ?? false, 'listKeys');
    });

    it('stores and reads back bytes, streamed and buffered', async () => {
      const d = await make();
      const big = randomBytes(3 * 1024 * 1024 + 17);
      await d.put('a/b/big.bin', Readable.from([big.subarray(0, 1000), big.subarray(1000)]));
      await d.put('a/small.txt', Buffer.from('hello'));
      assert.deepEqual(await readSmall(d, 'a/b/big.bin'), big);
      assert.equal((await readSmall(d, 'a/small.txt')).toString(), 'hello');
      assert.deepEqual(await d.stat('a/b/big.bin'), { key: 'a/b/big.bin', size: big.length });
    });

    it('reads byte ranges: at the start, in the middle, at the end, past the end, empty', async () => {
      const d = await make();
      const data = randomBytes(3 * 1024 * 1024 + 17);
      const n = data.length;
      await d.put('r/obj', Readable.from([data.subarray(0, 5000), data.subarray(5000)]));
      await d.put('r/empty', Buffer.alloc(0));
      const range = async (key: string, start: number, end: number) => readAll(await d.getRange(key, start, end));
      const within: [number, number][] = [
        [0, 1],
        [0, 4096],
        [1 << 20, (1 << 20) + 100_000],
        [12_345, 2 * 1024 * 1024 + 7],
        [n - 17, n],
        [0, n],
      ];
      for (const [start, end] of within)
        assert.deepEqual(await range('r/obj', start, end), data.subarray(start, end), `[${start}, ${end})`);
      // Past the end: what there is, then nothing.
      assert.deepEqual(await range('r/obj', n - 10, n + 1000), data.subarray(n - 10));
      assert.equal((await range('r/obj', n, n + 10)).length, 0);
      assert.equal((await range('r/obj', n + 100, n + 200)).length, 0);
      // Empty: start = end anywhere, and any range of an empty object.
      assert.equal((await range('r/obj', 500, 500)).length, 0);
      assert.equal((await range('r/empty', 0, 10)).length, 0);
      assert.equal((await range('r/empty', 0, 0)).length, 0);
      const missing = (e: unknown) => PgfleetError.is(e, 'RepoFileMissing');
      await assert.rejects(d.getRange('nope/x', 0, 10), missing);
      await assert.rejects(d.getRange('nope/x', 0, 0), missing);
      // A reader that stops early destroys the stream; the object reads on as before.
      const early = await d.getRange('r/obj', 0, n);
      for await (const chunk of early as AsyncIterable<Buffer>) {
        assert.ok(chunk.length > 0);
        break;
      }
      assert.deepEqual(await range('r/obj', 7, 9), data.subarray(7, 9));
    });

    it('reports a missing object with RepoFileMissing and stat undefined', async () => {
      const d = await make();
      assert.equal(await d.stat('nope/x'), undefined);
      await assert.rejects(d.get('nope/x'), (e: unknown) => PgfleetError.is(e, 'RepoFileMissing'));
    });

    it('lists by prefix in key order, recursively, and only complete objects', async () => {
      const d = await make();
      for (const k of ['c/wal/2', 'c/wal/1', 'c/wal/sub/3', 'c/walx/4', 'c/other']) await d.put(k, Buffer.from(k));
      assert.deepEqual(await collect(d.list('c/wal/')), ['c/wal/1', 'c/wal/2', 'c/wal/sub/3']);
      assert.deepEqual(await collect(d.list('c/wal')), ['c/wal/1', 'c/wal/2', 'c/wal/sub/3', 'c/walx/4']);
      assert.deepEqual(await collect(d.list('c/wal/1')), ['c/wal/1']);
      assert.deepEqual(await collect(d.list('zzz/')), []);
      // Without sizes, where the driver offers it: the same keys in the same order.
      if (d.listKeys) {
        const keys = async (prefix: string) => {
          const out: string[] = [];
          for await (const batch of d.listKeys!(prefix)) out.push(...batch);
          return out;
        };
        for (const prefix of ['c/wal/', 'c/wal', 'c/wal/1', 'zzz/'])
          assert.deepEqual(await keys(prefix), await collect(d.list(prefix)), prefix);
      }
    });

    it('a failed upload leaves nothing behind and the old object intact', async () => {
      const d = await make();
      await d.put('x/obj', Buffer.from('old'));
      const failing = new Readable({
        read() {
          this.push(Buffer.alloc(64 * 1024));
          this.destroy(new Error('source broke'));
        },
      });
      await assert.rejects(d.put('x/obj', failing));
      await assert.rejects(
        d.put(
          'x/new',
          new Readable({
            read() {
              this.destroy(new Error('boom'));
            },
          }),
        ),
      );
      assert.equal((await readSmall(d, 'x/obj')).toString(), 'old');
      assert.deepEqual(await collect(d.list('x/')), ['x/obj']);
    });

    it('overwrites atomically and deletes in batches, ignoring missing keys', async () => {
      const d = await make();
      await d.put('y/1', Buffer.from('one'));
      await d.put('y/1', Buffer.from('uno'));
      await d.put('y/2', Buffer.from('two'));
      assert.equal((await readSmall(d, 'y/1')).toString(), 'uno');
      await d.delete(['y/1', 'y/2', 'y/missing']);
      assert.deepEqual(await collect(d.list('y/')), []);
    });

    it('deletes everything under a prefix, and only that', async () => {
      const d = await make();
      for (const k of [
        'p/b/L1/backup.manifest',
        'p/b/L1/pg_data/base/1/1',
        'p/b/L1/pg_chunks/f/0000',
        'p/b/L10/x',
        'p/c',
      ])
        await d.put(k, Buffer.from(k));
      await d.deletePrefix('p/b/L1/');
      assert.deepEqual(await collect(d.list('p/')), ['p/b/L10/x', 'p/c']);
      await d.deletePrefix('p/b/L1/'); // nothing left: a no-op
      await d.deletePrefix('nothing/here/');
      // Writes under a deleted prefix work again.
      await d.put('p/b/L1/pg_data/base/1/1', Buffer.from('again'));
      assert.equal((await readSmall(d, 'p/b/L1/pg_data/base/1/1')).toString(), 'again');
      await assert.rejects(d.deletePrefix('p/b'), (e: unknown) => PgfleetError.is(e, 'InvalidArgument'));
      await assert.rejects(d.deletePrefix('../'));
    });

    if (capabilities.localFiles)
      it('with local files, a writer commits atomically and the key is read from its file', async () => {
        const d = await make();
        const local = d.localFiles!;
        const w = await local.openWriter('lf/obj');
        await w.write(Buffer.from('hello '));
        assert.deepEqual(await collect(d.list('lf/')), [], 'invisible before commit');
        await w.write(Buffer.from('world'));
        await w.commit();
        assert.equal((await readSmall(d, 'lf/obj')).toString(), 'hello world');
        assert.equal((await readFile(local.filePath('lf/obj'))).toString(), 'hello world');
        const dropped = await local.openWriter('lf/dropped');
        await dropped.write(Buffer.from('x'));
        await dropped.abort();
        assert.deepEqual(await collect(d.list('lf/')), ['lf/obj']);
      });

    if (capabilities.localFiles)
      it("with local files, a cluster's files are 0600 and its directories 0700; a root object stays readable", async () => {
        const d = await make();
        const local = d.localFiles!;
        await d.put('shop/backup/L/pg_data/global/pg_authid', Buffer.from('secret'));
        const w = await local.openWriter('shop/wal/0000000100000000/seg');
        await w.write(Buffer.from('wal'));
        await w.commit();
        await d.put('pgfleet.json', Buffer.from('{}'));
        const mode = async (path: string) => (await stat(path)).mode & 0o777;
        for (const key of ['shop/backup/L/pg_data/global/pg_authid', 'shop/wal/0000000100000000/seg']) {
          assert.equal(await mode(local.filePath(key)), 0o600, key);
          // Every directory the write created, up to the cluster's own.
          for (let dir = dirname(local.filePath(key)); dir !== dirname(local.filePath('shop/x')); dir = dirname(dir))
            assert.equal(await mode(dir), 0o700, dir);
        }
        assert.equal(await mode(dirname(local.filePath('shop/x'))), 0o700, 'the cluster directory');
        // The format marker: readable by every agent user sharing the root, writable by none of them.
        const marker = await mode(local.filePath('pgfleet.json'));
        assert.equal(marker & 0o600, 0o600);
        assert.equal(marker & 0o022, 0);
      });

    if (capabilities.spec)
      it('its spec opens the same repository again', async () => {
        const d = await make();
        await d.put('sp/obj', Buffer.from('same'));
        const again = await openRepositoryDriver(d.spec!);
        try {
          assert.equal((await readSmall(again, 'sp/obj')).toString(), 'same');
        } finally {
          again.close?.();
        }
      });

    it('objects keep their bytes through the object I/O layer, by file and by stream, on every route', async () => {
      const r = new Repository(await make(), TEST_MANIFEST_KEYS);
      const dir = await mkdtemp(join(tmpdir(), 'pgfleet-objects-'));
      try {
        const data = Buffer.concat([randomBytes(300_000), Buffer.alloc(2 * 1024 * 1024 + 4096, 7)]);
        await writeFile(join(dir, 'src'), data);
        for (const codec of ['zstd', 'lz4', 'gzip', 'none'] as const) {
          const seen: number[] = [];
          // A range of the file (a chunk), inspected in the same pass.
          const range = { path: join(dir, 'src'), offset: 4096, length: 1024 * 1024 + 100 };
          const part = data.subarray(range.offset, range.offset + range.length);
          const s = await r.objects.storeFile(`o/${codec}/part`, range, codec, { inspect: (c) => seen.push(c.length) });
          assert.ok(s);
          assert.equal(s.size, part.length);
          assert.equal(s.sha256, sha(part));
          assert.equal(
            seen.reduce((a, b) => a + b, 0),
            part.length,
          );
          const m = await r.objects.measure(`o/${codec}/part`, codec, true, 16);
          assert.equal(m.storedBytes, s.storedSize);
          assert.equal(m.storedSha256, s.storedSha256);
          assert.equal(m.contentSha256, s.sha256);
          assert.deepEqual(m.head, part.subarray(0, 16));
          // Restored into a new file, and into a range of an existing one.
          const whole = join(dir, `whole-${codec}`);
          await r.objects.restoreFile(
            `o/${codec}/part`,
            codec,
            { sha256: s.sha256, size: s.size },
            { path: whole, mode: 0o600, mtimeMs: 1_000_000 },
          );
          assert.deepEqual(await readFile(whole), part);
          assert.equal((await stat(whole)).mtimeMs, 1_000_000);
          const sized = join(dir, `sized-${codec}`);
          await writeFile(sized, Buffer.alloc(range.offset + part.length));
          await r.objects.restoreFile(
            `o/${codec}/part`,
            codec,
            { sha256: s.sha256, size: s.size },
            { path: sized, mode: 0o600, offset: range.offset },
          );
          assert.deepEqual((await readFile(sized)).subarray(range.offset), part);
          await assert.rejects(
            r.objects.restoreFile(
              `o/${codec}/part`,
              codec,
              { sha256: sha(data), size: s.size },
              { path: whole, mode: 0o600 },
            ),
            (e: unknown) => PgfleetError.is(e, 'RepoChecksumMismatch'),
          );
          // The same content by stream is the same object.
          const streamed = await r.objects.storeStream(`o/${codec}/streamed`, Readable.from([part]), codec);
          assert.equal(streamed.sha256, s.sha256);
          // Its stored figures are the stored bytes' (codec none: the content's, hashed once).
          const sm = await r.objects.measure(`o/${codec}/streamed`, codec, false);
          assert.equal(sm.storedBytes, streamed.storedSize);
          assert.equal(sm.storedSha256, streamed.storedSha256);
          const out = sink();
          await r.objects.readStream(`o/${codec}/streamed`, codec, { sha256: s.sha256, size: s.size }, out);
          assert.deepEqual(out.data(), part);
        }
        assert.equal(await r.objects.storeFile('o/missing', { path: join(dir, 'nope'), offset: 0 }, 'zstd'), undefined);
      } finally {
        await rm(dir, { recursive: true, force: true });
      }
    });

    it('refuses keys that escape the repository', async () => {
      const d = await make();
      await assert.rejects(d.put('../evil', Buffer.from('x')));
      await assert.rejects(d.put('/abs', Buffer.from('x')));
    });

    it('WAL push through the repository is idempotent and never overwrites different content', async () => {
      const r = new Repository(await make(), TEST_MANIFEST_KEYS);
      await r.init();
      const seg = randomBytes(4096);
      const name = '000000010000000000000003';
      assert.equal(await r.pushWal('c1', name, sha(seg), () => Readable.from([seg]), 'zstd'), 'stored');
      assert.equal(await r.pushWal('c1', name, sha(seg), () => Readable.from([seg]), 'zstd'), 'exists');
      const other = randomBytes(4096);
      await assert.rejects(
        r.pushWal('c1', name, sha(other), () => Readable.from([other]), 'zstd'),
        (e: unknown) => PgfleetError.is(e, 'WalConflict'),
      );
      const out = sink();
      await r.fetchWal('c1', name, out);
      assert.deepEqual(out.data(), seg);
      await assert.rejects(r.fetchWal('c1', '000000010000000000000004', sink()), (e: unknown) =>
        PgfleetError.is(e, 'WalNotInRepository'),
      );
      const names: string[] = [];
      for await (const w of r.listWal('c1')) names.push(w.name);
      assert.deepEqual(names, [name]);
    });

    it('lists one level of the key tree: the objects directly under a prefix and the levels below it', async () => {
      const d = await make();
      for (const key of ['lv/a.txt', 'lv/b/1', 'lv/b/2/deep', 'lv/c/x', 'lv/ca', 'lvz/other', 'lv.txt'])
        await d.put(key, Buffer.from(key));
      const level = await d.listLevel('lv/');
      assert.deepEqual(level.objects, [
        { key: 'lv/a.txt', size: 8 },
        { key: 'lv/ca', size: 5 },
      ]);
      assert.deepEqual(level.levels, ['b', 'c']);
      assert.deepEqual((await d.listLevel('lv/b/')).levels, ['2']);
      assert.deepEqual(
        (await d.listLevel('lv/b/')).objects.map((o) => o.key),
        ['lv/b/1'],
      );
      const root = await d.listLevel('');
      assert.ok(root.levels.includes('lv') && root.levels.includes('lvz'), `root levels ${root.levels.join(',')}`);
      assert.ok(root.objects.some((o) => o.key === 'lv.txt'));
      assert.deepEqual(await d.listLevel('nothing/here/'), { objects: [], levels: [] });
      await assert.rejects(d.listLevel('lv'), (e: unknown) => PgfleetError.is(e, 'InvalidArgument'));
    });

    it("an encrypted WAL directory's data key object goes with its last segment, never before, and comes back for its writer", async () => {
      const d = await make();
      const keys = fixedKeys({ c3: randomBytes(32) });
      const archiver = new Repository(d, TEST_MANIFEST_KEYS, keys);
      const push = async (name: string) => {
        const seg = randomBytes(8192);
        assert.equal(await archiver.pushWal('c3', name, sha(seg), () => Readable.from([seg]), 'zstd'), 'stored');
        return seg;
      };
      for (const name of ['000000010000000000000001', '000000010000000000000002', '000000010000000100000001'])
        await push(name);
      const keyObjects = async (dir: string) =>
        (await collect(d.list(`c3/wal/${dir}/`))).filter((k) => k.includes('/dek-'));
      const expire = new Repository(d, TEST_MANIFEST_KEYS, keys);
      const [first, second] = (await archiver.findWal('c3', '000000010000000000000001')).concat(
        await archiver.findWal('c3', '000000010000000000000002'),
      );
      // One of two segments goes: the directory keeps its key.
      assert.equal(await expire.deleteWal([first!]), 0);
      assert.equal((await keyObjects('0000000100000000')).length, 1);
      // The last one: its key object goes with it; the next directory keeps its own.
      assert.equal(await expire.deleteWal([second!]), 1);
      assert.deepEqual(await keyObjects('0000000100000000'), []);
      assert.equal((await keyObjects('0000000100000001')).length, 1);
      // An archiver that took the key before stores the next segment there: the key object is back.
      const late = await push('000000010000000000000003');
      assert.equal((await keyObjects('0000000100000000')).length, 1);
      const out = sink();
      await new Repository(d, TEST_MANIFEST_KEYS, keys).fetchWal('c3', '000000010000000000000003', out);
      assert.deepEqual(out.data(), late);
    });

    it('a WAL file that changed after it was hashed is refused and nothing is stored under its checksum', async () => {
      // The driver as the repository sees it, recording every put that committed and every delete.
      const d = await make();
      const committed: string[] = [];
      const deleted: string[] = [];
      const r = new Repository(
        {
          kind: d.kind,
          location: d.location,
          put: async (key, body, options) => {
            await d.put(key, body, options);
            committed.push(key);
          },
          get: (key) => d.get(key),
          getRange: (key, start, end) => d.getRange(key, start, end),
          stat: (key) => d.stat(key),
          list: (prefix) => d.list(prefix),
          listLevel: (prefix) => d.listLevel(prefix),
          delete: async (keys) => {
            deleted.push(...keys);
            await d.delete(keys);
          },
          deletePrefix: async (prefix) => {
            deleted.push(prefix);
            await d.deletePrefix(prefix);
          },
        },
        TEST_MANIFEST_KEYS,
      );
      const seg = randomBytes(256 * 1024);
      const changed = Buffer.from(seg);
      changed[seg.length - 1]! ^= 1; // the last byte: the upload is all but done when the change shows
      const name = '000000010000000000000005';
      for (const codec of ['zstd', 'gzip', 'none'] as const) {
        await assert.rejects(
          r.pushWal('c2', name, sha(seg), () => Readable.from([changed]), codec),
          (e: unknown) =>
            PgfleetError.is(e, 'WalFileInvalid') && e.message.includes('changed while it was being archived'),
        );
      }
      assert.deepEqual(committed, [], 'no upload was committed, not even for a moment');
      assert.deepEqual(deleted, [], 'nothing was deleted (it could be a correct copy stored meanwhile)');
      assert.deepEqual(await collect(d.list('c2/')), []);
      assert.deepEqual(await r.findWal('c2', name), []);
      // The file as hashed is archived afterwards as usual.
      assert.equal(await r.pushWal('c2', name, sha(seg), () => Readable.from([seg]), 'zstd'), 'stored');
      const out = sink();
      await r.fetchWal('c2', name, out);
      assert.deepEqual(out.data(), seg);
    });
  });
}
