import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { appendFile, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { gzipSync } from 'node:zlib';
import { silentLogger } from '@pgfleet/core';
import type { StoredFile } from '@pgfleet/storage';
import { SpoolDrain } from './spool-drain.js';

/** COPY text of `rows` rows as pg_dump writes it: lines, the terminator, blank lines. */
function copyData(rows: number): Buffer {
  return Buffer.from(`${Array.from({ length: rows }, (_, i) => `${i}\tname ${i}\n`).join('')}\\.\n\n\n`);
}

/** A store that keeps what it read in memory, like the repository: nothing kept when its source fails. */
class MemoryStore {
  readonly objects = new Map<string, Buffer>();
  readonly failed: string[] = [];
  failWith: Error | undefined;
  readonly store = async (name: string, content: Readable): Promise<StoredFile> => {
    const chunks: Buffer[] = [];
    try {
      for await (const c of content) chunks.push(c as Buffer);
      if (this.failWith) throw this.failWith;
    } catch (err) {
      this.failed.push(name);
      throw err;
    }
    const data = Buffer.concat(chunks);
    this.objects.set(name, data);
    const sha256 = createHash('sha256').update(data).digest('hex');
    return { size: data.length, sha256, storedSize: data.length, storedSha256: sha256 };
  };
}

/** A probe whose answer the test sets: the names pg_dump "has open", or undefined (cannot tell). */
class FakeProbe {
  open: Set<string> | undefined = new Set();
  readonly probe = async () => this.open;
}

async function withSpool(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'pgfleet-spool-drain-'));
  try {
    await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** Runs drain rounds (as the dump's timer does) until `done` holds; bounded so a bug fails instead of hanging. */
async function roundsUntil(drain: SpoolDrain, what: string, done: () => Promise<boolean> | boolean): Promise<void> {
  for (let i = 0; i < 500; i++) {
    if (await done()) return;
    await drain.tick();
    await new Promise((r) => setImmediate(r));
  }
  assert.fail(`${what}: not reached after 500 rounds`);
}

const inSpool = async (dir: string, name: string) => (await readdir(dir)).includes(name);

describe('SpoolDrain', () => {
  it('stores a closed table file while another is still written, the open one only once closed, and empties the spool of both', async () => {
    await withSpool(async (dir) => {
      const mem = new MemoryStore();
      const probe = new FakeProbe();
      const drain = new SpoolDrain({ dir, probe: probe.probe, limit: 4, store: mem.store, log: silentLogger() });
      const closed = gzipSync(copyData(5000));
      const growing = gzipSync(copyData(30_000));
      await writeFile(join(dir, '3001.dat.gz'), closed);
      await writeFile(join(dir, '3002.dat.gz'), growing.subarray(0, 1000));
      await writeFile(join(dir, 'toc.dat'), 'toc');
      await writeFile(join(dir, 'blob_16400.dat'), 'large object bytes');
      probe.open = new Set(['3001.dat.gz', '3002.dat.gz']);
      await roundsUntil(drain, '3001 seen open', () => drain.seenOpen.has('3001.dat.gz'));
      probe.open = new Set(['3002.dat.gz']);
      await roundsUntil(drain, '3001 stored', async () => !(await inSpool(dir, '3001.dat.gz')));
      assert.deepEqual(mem.objects.get('3001.dat.gz'), closed, 'stored byte for byte');
      // Still open: read as far as it goes, never finished.
      for (let i = 0; i < 5; i++) await drain.tick();
      assert.ok(!mem.objects.has('3002.dat.gz'));
      await appendFile(join(dir, '3002.dat.gz'), growing.subarray(1000, 5000));
      for (let i = 0; i < 5; i++) await drain.tick();
      assert.ok(!mem.objects.has('3002.dat.gz'));
      await appendFile(join(dir, '3002.dat.gz'), growing.subarray(5000));
      probe.open = new Set();
      await roundsUntil(drain, '3002 stored', async () => !(await inSpool(dir, '3002.dat.gz')));
      drain.pgDumpEnded();
      const early = await drain.finish();
      assert.deepEqual(mem.objects.get('3002.dat.gz'), growing);
      assert.deepEqual([...early.keys()].sort(), ['3001.dat.gz', '3002.dat.gz']);
      assert.equal(early.get('3002.dat.gz')!.sha256, createHash('sha256').update(growing).digest('hex'));
      assert.equal(drain.bytesStored, closed.length + growing.length);
      // Not table data: left to the store after pg_dump, toc.dat last.
      assert.deepEqual((await readdir(dir)).sort(), ['blob_16400.dat', 'toc.dat']);
      assert.deepEqual([...mem.objects.keys()].sort(), ['3001.dat.gz', '3002.dat.gz']);
    });
  });

  it('a file no probe saw open (perhaps the instant inside open(2)) is left in the spool, nothing stored', async () => {
    await withSpool(async (dir) => {
      const mem = new MemoryStore();
      const probe = new FakeProbe();
      const drain = new SpoolDrain({ dir, probe: probe.probe, limit: 4, store: mem.store, log: silentLogger() });
      const data = gzipSync(copyData(1000));
      // Just created (empty), a gzip cut short, plain COPY text without its terminator: listed and
      // "not open" from the first probe on, which is also what a probe inside pg_dump's open(2) sees.
      await writeFile(join(dir, '4001.dat.gz'), '');
      await writeFile(join(dir, '4002.dat.gz'), data.subarray(0, data.length - 8));
      await writeFile(join(dir, '4003.dat'), '1\tone\n2\ttwo\n');
      await roundsUntil(drain, 'all three given up', () => mem.failed.length === 3);
      drain.pgDumpEnded();
      assert.equal((await drain.finish()).size, 0);
      assert.equal(mem.objects.size, 0, 'no object kept for a write given up');
      assert.deepEqual((await readdir(dir)).sort(), ['4001.dat.gz', '4002.dat.gz', '4003.dat']);
    });
  });

  it('without a probe answer (no /proc) nothing is taken as closed until pg_dump has ended; then every follower finishes', async () => {
    await withSpool(async (dir) => {
      const mem = new MemoryStore();
      const probe = new FakeProbe();
      probe.open = undefined;
      const drain = new SpoolDrain({ dir, probe: probe.probe, limit: 4, store: mem.store, log: silentLogger() });
      const data = gzipSync(copyData(2000));
      await writeFile(join(dir, '5001.dat.gz'), data);
      await writeFile(join(dir, '5002.dat'), copyData(7));
      for (let i = 0; i < 10; i++) await drain.tick();
      assert.equal(mem.objects.size, 0);
      drain.pgDumpEnded();
      const early = await drain.finish();
      assert.deepEqual([...early.keys()].sort(), ['5001.dat.gz', '5002.dat']);
      assert.deepEqual(mem.objects.get('5001.dat.gz'), data);
      assert.deepEqual(await readdir(dir), []);
    });
  });

  it('at most `limit` files are followed at once; the others wait for a place or the store after pg_dump', async () => {
    await withSpool(async (dir) => {
      const mem = new MemoryStore();
      const probe = new FakeProbe();
      const drain = new SpoolDrain({ dir, probe: probe.probe, limit: 1, store: mem.store, log: silentLogger() });
      const names = ['6001.dat.gz', '6002.dat.gz', '6003.dat.gz'];
      for (const n of names) await writeFile(join(dir, n), gzipSync(copyData(10)));
      probe.open = new Set(names);
      for (let i = 0; i < 5; i++) await drain.tick();
      assert.equal(drain.seenOpen.size <= 1, true, 'one follower at a time');
      // Each closed once seen open (pg_dump has at most --jobs files open; the limit leaves places).
      for (const n of names) {
        await roundsUntil(drain, `${n} seen open`, () => drain.seenOpen.has(n));
        probe.open.delete(n);
        await roundsUntil(drain, `${n} stored`, async () => !(await inSpool(dir, n)));
      }
      drain.pgDumpEnded();
      assert.equal((await drain.finish()).size, 3);
    });
  });

  it('stop (pg_dump failed, the job cancelled) ends every follower before it returns: nothing is stored after it', async () => {
    await withSpool(async (dir) => {
      const mem = new MemoryStore();
      const probe = new FakeProbe();
      const drain = new SpoolDrain({ dir, probe: probe.probe, limit: 4, store: mem.store, log: silentLogger() });
      const data = gzipSync(copyData(3000));
      await writeFile(join(dir, '7001.dat.gz'), data.subarray(0, 100));
      probe.open = new Set(['7001.dat.gz']);
      for (let i = 0; i < 3; i++) {
        await drain.tick();
        await new Promise((r) => setImmediate(r));
      }
      await drain.stop(new Error('pg_dump failed'));
      assert.deepEqual(mem.failed, ['7001.dat.gz']);
      await appendFile(join(dir, '7001.dat.gz'), data.subarray(100));
      probe.open = new Set();
      await drain.tick();
      assert.equal(mem.objects.size, 0);
      assert.deepEqual(await readdir(dir), ['7001.dat.gz']);
    });
  });

  it("a store's failure fails finish (the dump), after every follower ended", async () => {
    await withSpool(async (dir) => {
      const mem = new MemoryStore();
      mem.failWith = new Error('repository refused');
      const probe = new FakeProbe();
      const drain = new SpoolDrain({ dir, probe: probe.probe, limit: 4, store: mem.store, log: silentLogger() });
      await writeFile(join(dir, '8001.dat.gz'), gzipSync(copyData(10)));
      probe.open = new Set(['8001.dat.gz']);
      await roundsUntil(drain, '8001 seen open', () => drain.seenOpen.has('8001.dat.gz'));
      probe.open = new Set();
      await roundsUntil(drain, 'the store failed', () => mem.failed.length === 1);
      drain.pgDumpEnded();
      await assert.rejects(drain.finish(), /repository refused/);
      assert.deepEqual(await readdir(dir), ['8001.dat.gz'], 'left in the spool');
    });
  });
});
