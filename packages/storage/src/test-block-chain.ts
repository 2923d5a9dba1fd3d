/**
 * What the storage package's block-map tests share (block-assembly.test.ts, block-delta.test.ts):
 * a repository in a temp dir (or on a given driver, an S3 bucket), page-like blocks, per-block
 * checksums of a file, an object stored as a backup stores changed blocks, and the check of a
 * PgfleetError. Not exported from the package.
 */
import { strict as assert } from 'node:assert';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after } from 'node:test';
import { ErrorCodes, PgfleetError, type ErrorName } from '@pgfleet/core';
import { BLOCK_SUM_BYTES, blockCount, MAP_BLOCK_BYTES as B, sumBlock } from './block-map.js';
import type { Codec } from './codec-names.js';
import type { RepositoryDriver } from './driver.js';
import { TEST_MANIFEST_KEYS } from './driver-suite.js';
import { fixedKeys } from './key-source.js';
import type { AssemblyPart } from './object-io.js';
import { PosixDriver } from './posix-driver.js';
import { Repository } from './repository.js';

/** The relation file every test chain is a version of. */
export const REL = 'base/5/16384';

export const sha256 = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

const dirs: string[] = [];
after(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

/**
 * A repository for cluster 'c' (encrypted with a fresh key when asked) and a temp dir for
 * rebuilt files: on `driver` when given, else a posix repository in the temp dir.
 */
export async function testRepository(
  encrypted: boolean,
  driver?: RepositoryDriver,
): Promise<{ r: Repository; dir: string }> {
  const dir = await mkdtemp(join(tmpdir(), 'pgfleet-blocks-'));
  dirs.push(dir);
  const r = new Repository(
    driver ?? new PosixDriver(join(dir, 'repo')),
    TEST_MANIFEST_KEYS,
    encrypted ? fixedKeys({ c: randomBytes(32) }) : undefined,
  );
  return { r, dir };
}

/** A page-like block: mostly one byte value, 512 random bytes (compressible, distinct). */
export function page(seed: number): Buffer {
  const b = Buffer.alloc(B, seed & 0xff);
  randomBytes(512).copy(b, (seed * 97) % (B - 512));
  return b;
}

/** The per-block checksums of a file, as its block map holds them. */
export function sumsOf(file: Buffer): Uint8Array {
  const n = blockCount(file.length);
  const sums = new Uint8Array(n * BLOCK_SUM_BYTES);
  for (let b = 0; b < n; b++) sumBlock(file.subarray(b * B, Math.min(file.length, (b + 1) * B)), sums, b);
  return sums;
}

/**
 * Stores `content` as one object, produced in odd-sized reads like a backup's (frames of
 * `frameBytes` where the driver writes the block form, 1 MiB when absent).
 */
export async function storeContent(
  r: Repository,
  key: string,
  content: Buffer,
  codec: Codec,
  frameBytes?: number,
): Promise<AssemblyPart> {
  let at = 0;
  const s = await r.objects.storeProduced(
    key,
    {
      read: (buf: Buffer) => {
        const n = content.copy(buf, 0, at, Math.min(content.length, at + 3 * B));
        at += n;
        return n;
      },
      close: async () => {},
    },
    codec,
    frameBytes !== undefined ? { frameBytes } : {},
  );
  return { key, codec, size: s.size, sha256: s.sha256 };
}

/** `p` fails with the PgfleetError `name` and a message naming `mentions`. */
export async function rejectsWith(p: Promise<unknown>, name: ErrorName, mentions: string | RegExp): Promise<void> {
  await assert.rejects(p, (err: unknown) => {
    assert.ok(err instanceof PgfleetError, `expected ${name}, got ${String(err)}`);
    assert.equal(err.code, ErrorCodes[name].code, `${name} expected, got ${err.errorName}: ${err.message}`);
    if (typeof mentions === 'string')
      assert.ok(err.message.includes(mentions), `'${err.message}' should name ${mentions}`);
    else assert.match(err.message, mentions);
    return true;
  });
}
