/**
 * The per-thread pools of the block I/O path (object-io.ts) after a job: what backups and
 * restores pooled is freed by releasePooledMemory (the agent calls it when a job's copy pool
 * closes, issue 19), and the next job fills them again and still restores what was stored.
 * Each test file runs in its own process, so the pools here hold only this file's work.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PosixDriver } from './posix-driver.js';
import { Repository } from './repository.js';
import { fixedKeys } from './key-source.js';
import { pooledMemory, releasePooledMemory } from './object-io.js';
import type { Codec } from './codec-names.js';

const dirs: string[] = [];
after(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

/** Stores and restores `files` (3 MiB of half-compressible bytes each) through `repo`, a few at a time as a copy thread does; checks every restored file. */
async function roundTrip(repo: Repository, dir: string, codec: Codec, files: number, tag: string): Promise<void> {
  const content = Buffer.concat([randomBytes(3 << 19), Buffer.alloc(3 << 19, 7)]);
  const src = join(dir, `src-${tag}`);
  await writeFile(src, content);
  const stored = await Promise.all(
    Array.from({ length: files }, async (_, i) => {
      const key = repo.backupFileKey('c', `L${tag}`, `base/1/${i}`, codec);
      return { key, ...(await repo.objects.storeFile(key, { path: src, offset: 0 }, codec))! };
    }),
  );
  await Promise.all(
    stored.map(async (s, i) => {
      const dest = join(dir, `dest-${tag}-${i}`);
      await repo.objects.restoreFile(
        s.key,
        codec,
        { sha256: s.sha256, size: s.size, storedSha256: s.storedSha256 },
        { path: dest, mode: 0o600, exclusive: true },
      );
      assert.equal(
        createHash('sha256')
          .update(await readFile(dest))
          .digest('hex'),
        createHash('sha256').update(content).digest('hex'),
      );
    }),
  );
}

test('a job leaves buffers and codec contexts pooled; releasing frees them all, and the next job works and pools again', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'pgfleet-pools-'));
  dirs.push(dir);
  const encrypted = new Repository(new PosixDriver(join(dir, 'enc')), undefined, fixedKeys({ c: randomBytes(32) }));
  const plain = new Repository(new PosixDriver(join(dir, 'plain')));

  await roundTrip(encrypted, dir, 'zstd', 3, 'a');
  await roundTrip(plain, dir, 'lz4', 2, 'b');
  const held = pooledMemory();
  assert.ok(held.buffers > 0, `buffers pooled after a job: ${JSON.stringify(held)}`);
  assert.ok(held.alignedBuffers > 0, `restore buffers pooled: ${JSON.stringify(held)}`);
  assert.ok(held.encoders > 0 && held.decoders > 0, `codec contexts pooled: ${JSON.stringify(held)}`);
  assert.ok(held.bytes >= (held.buffers + held.alignedBuffers) << 20, `bytes: ${JSON.stringify(held)}`);

  assert.deepEqual(releasePooledMemory(), held, 'release reports what the pools held');
  assert.deepEqual(pooledMemory(), { buffers: 0, alignedBuffers: 0, encoders: 0, decoders: 0, bytes: 0 });
  assert.deepEqual(releasePooledMemory(), { buffers: 0, alignedBuffers: 0, encoders: 0, decoders: 0, bytes: 0 });

  // The next job, on fresh contexts and buffers: the same content back, and the pools fill again.
  await roundTrip(encrypted, dir, 'zstd', 3, 'c');
  const again = pooledMemory();
  assert.ok(again.buffers > 0 && again.encoders > 0 && again.decoders > 0, JSON.stringify(again));
});
