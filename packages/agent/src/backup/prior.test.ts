import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { ErrorCodes } from '@pgfleet/core';
import { BLCKSZ, lsnHalves, pageChecksum } from '@pgfleet/pg';
import type { BackupManifest, ManifestFile } from '@pgfleet/storage';
import { choosePriorBackup, decideFile, MTIME_GUARD_MS } from './prior.js';
import { describePageErrors } from './backup.js';
import { PageChecksumStage, recheckPages } from '../pgdata/page-verify.js';

const prior = (over: Partial<ManifestFile> = {}): ManifestFile => ({
  path: 'base/5/16384',
  size: 8192,
  mtimeMs: 1_000_000,
  mode: 0o600,
  sha256: 'a'.repeat(64),
  storedSize: 100,
  storedSha256: 'b'.repeat(64),
  codec: 'zstd',
  backup: '20260101-000000F',
  ...over,
});

test('unchanged = same size and mtime, well before the prior backup started', () => {
  const ctx = { priorStartMs: 1_000_000 + 60_000, nowMs: 1_000_000 + 120_000, checksumDelta: false };
  assert.equal(decideFile({ size: 8192, mtimeMs: 1_000_000 }, prior(), ctx), 'reference');
  assert.equal(decideFile({ size: 8192, mtimeMs: 1_000_000 }, undefined, ctx), 'copy', 'new file');
  assert.equal(decideFile({ size: 16384, mtimeMs: 1_000_000 }, prior(), ctx), 'copy', 'grown');
  assert.equal(decideFile({ size: 8192, mtimeMs: 1_000_001 }, prior(), ctx), 'copy', 'touched');
});

test('same-second guard: an mtime close to or after the prior backup start, or in the future, is copied again', () => {
  const start = 5_000_000;
  const ctx = { priorStartMs: start, nowMs: start + 600_000, checksumDelta: false };
  // Written in the same clock tick as the prior copy could have been written again after it, with the same mtime.
  for (const mtimeMs of [start - MTIME_GUARD_MS, start - 1500, start - 1, start, start + 1000]) {
    assert.equal(
      decideFile({ size: 8192, mtimeMs }, prior({ mtimeMs }), ctx),
      'copy',
      `mtime ${mtimeMs - start} ms from the prior start`,
    );
  }
  assert.equal(
    decideFile(
      { size: 8192, mtimeMs: start - MTIME_GUARD_MS - 1 },
      prior({ mtimeMs: start - MTIME_GUARD_MS - 1 }),
      ctx,
    ),
    'reference',
  );
  // A clock that went backwards: an mtime after "now" proves nothing.
  const skewed = { priorStartMs: start, nowMs: start - 60_000, checksumDelta: false };
  assert.equal(decideFile({ size: 8192, mtimeMs: start - 30_000 }, prior({ mtimeMs: start - 30_000 }), skewed), 'copy');
});

test('checksum mode compares content whenever the size matches, whatever the mtime says', () => {
  const ctx = { priorStartMs: 10_000_000, nowMs: 20_000_000, checksumDelta: true };
  assert.equal(decideFile({ size: 8192, mtimeMs: 1_000_000 }, prior(), ctx), 'compare-checksum');
  assert.equal(decideFile({ size: 8192, mtimeMs: 9_999_999 }, prior(), ctx), 'compare-checksum');
  assert.equal(decideFile({ size: 1, mtimeMs: 1_000_000 }, prior(), ctx), 'copy');
});

test('a diff builds on the last full, an incr on the last backup, both of the same system and timeline', () => {
  const m = (label: string, type: BackupManifest['type'], stop: string, over: Partial<BackupManifest> = {}) =>
    ({
      label,
      type,
      stopTime: stop,
      systemIdentifier: '42',
      pgVersionNum: 160000,
      timeline: 1,
      ...over,
    }) as BackupManifest;
  const sys = { systemIdentifier: '42', pgVersionNum: 160000, timeline: 1 };
  const list = [
    m('F1', 'full', '2026-01-01T00:00:00Z'),
    m('I1', 'incr', '2026-01-01T01:00:00Z'),
    m('F2', 'full', '2026-01-01T02:00:00Z'),
    m('D1', 'diff', '2026-01-01T03:00:00Z'),
    m('X', 'full', '2026-01-01T04:00:00Z', { timeline: 2 }),
    m('Y', 'full', '2026-01-01T05:00:00Z', { systemIdentifier: '43' }),
  ];
  // Given in the wrong order on purpose: ordering is by stop time, never by label or position.
  const shuffled = [list[3]!, list[0]!, list[5]!, list[2]!, list[1]!, list[4]!];
  assert.equal(choosePriorBackup(shuffled, 'diff', sys)?.label, 'F2');
  assert.equal(choosePriorBackup(shuffled, 'incr', sys)?.label, 'D1');
  assert.equal(choosePriorBackup(shuffled, 'incr', { ...sys, timeline: 2 })?.label, 'X');
  assert.equal(choosePriorBackup(shuffled, 'diff', { ...sys, timeline: 3 }), undefined);
  assert.equal(choosePriorBackup([list[1]!], 'diff', sys), undefined, 'no full: the diff becomes a full');
  assert.equal(choosePriorBackup(shuffled, 'full', sys), undefined);
});

/** Relation pages with valid checksums for blocks firstBlock.. (pd_upper set, pd_lsn = lsn). */
function relationPages(count: number, firstBlock: number, lsn = 0x100n): Buffer {
  const buf = Buffer.alloc(count * BLCKSZ);
  for (let i = 0; i < count; i++) {
    const page = buf.subarray(i * BLCKSZ, (i + 1) * BLCKSZ);
    page.writeUInt32LE(Number(lsn >> 32n), 0);
    page.writeUInt32LE(Number(lsn & 0xffffffffn), 4);
    page.writeUInt16LE(40, 12); // pd_lower
    page.writeUInt16LE(8000, 14); // pd_upper
    for (let b = 8000; b < BLCKSZ; b++) page[b] = (b * 31 + i) & 0xff;
    page.writeUInt16LE(pageChecksum(page, firstBlock + i), 8);
  }
  return buf;
}

test('the page-check stage finds bad pages whatever the read chunking, and passes bytes through unchanged', async () => {
  const first = 3 * 131072; // segment 3 of a relation
  const data = relationPages(6, first);
  data[2 * BLCKSZ + 8100]! ^= 0x01; // one flipped bit in block first+2
  data.fill(0, 4 * BLCKSZ, 5 * BLCKSZ); // a new (all-zero) page is fine
  for (const chunkSize of [BLCKSZ * 6, 1000, 8191, 12288, 3]) {
    const chunks: Buffer[] = [];
    for (let o = 0; o < data.length; o += chunkSize) chunks.push(Buffer.from(data.subarray(o, o + chunkSize)));
    const stage = new PageChecksumStage(first, lsnHalves(0x1000n));
    const out: Buffer[] = [];
    await pipeline(Readable.from(chunks), stage, async (source: AsyncIterable<Buffer>) => {
      for await (const c of source) out.push(c);
    });
    assert.deepEqual(stage.suspects, [2], `chunks of ${chunkSize}`);
    assert.ok(Buffer.concat(out).equals(data));
  }
  // Pages written after the backup started are left to WAL replay.
  const late = new PageChecksumStage(first, lsnHalves(0x100n));
  await pipeline(Readable.from([data]), late, async (source: AsyncIterable<Buffer>) => {
    for await (const _ of source);
  });
  assert.deepEqual(late.suspects, []);
});

test('suspect pages are re-read once: a torn read that is fine on disk is no error, real damage is', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'pgfleet-pages-'));
  try {
    const file = join(dir, '16384');
    const data = relationPages(4, 0);
    data[3 * BLCKSZ + 8050]! ^= 0xff;
    await writeFile(file, data);
    // Blocks 1 and 3 looked bad during the stream; on disk only 3 is.
    assert.deepEqual(await recheckPages(file, [1, 3], 0, lsnHalves(0x1000n)), [3]);
    assert.deepEqual(await recheckPages(join(dir, 'gone'), [1], 0, lsnHalves(0x1000n)), []);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('page errors are summarised with file and block, bounded', () => {
  assert.equal(
    describePageErrors([{ path: 'base/5/16384', blocks: [1, 7] }]),
    `${ErrorCodes.PageChecksumMismatch.code} page checksum errors: base/5/16384 block(s) 1, 7`,
  );
  const many = Array.from({ length: 12 }, (_, i) => ({
    path: `base/5/${i}`,
    blocks: Array.from({ length: 25 }, (_, b) => b),
  }));
  const text = describePageErrors(many);
  assert.match(text, /and 5 more; /);
  assert.match(text, /and 2 more file\(s\)$/);
});
