import assert from 'node:assert/strict';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import type { ManifestFile } from '@pgfleet/storage';
import { leaseChain } from './lease.js';
import { decideFile } from './prior.js';
import { pathFingerprint, PriorEntries } from './prior-entries.js';

const file = (path: string, i: number, over: Partial<ManifestFile> = {}): ManifestFile => ({
  path,
  size: 8192 * (i % 7),
  mtimeMs: 1_700_000_000_000 + i * 1000 + 0.5,
  mode: 0o600,
  sha256: (i % 16).toString(16).repeat(64),
  storedSize: 100 + i,
  storedSha256: 'b'.repeat(64),
  codec: 'zstd',
  backup: '20261201T000000F',
  ...over,
});

async function* slowly<T>(items: readonly T[]): AsyncGenerator<T> {
  for (const x of items) yield await Promise.resolve(x);
}

/** Paths whose order differs between JavaScript's string comparison (UTF-16 units) and byte order (UTF-8). */
const TRICKY = [
  'base/5/\uFF61', // EF BD A1 in UTF-8; U+FF61 in UTF-16
  'base/5/\u{1F600}', // F0 9F 98 80 in UTF-8 (after the above); D83D DE00 in UTF-16 (before it)
  'base/5/\uE000',
  'base/5/é',
  'base/5/e\u0301', // the same letter decomposed: another path
  'a.b',
  'a/b', // '/' (0x2F) sorts after '.' (0x2E): a directory's files after its sibling "a.b"
  'a-b/c',
  'pg_tblspc/16389/PG_15_202209061/5/16390',
  'pg_tblspc/16390/PG_15_202209061/5/16390',
  'line\nbreak "quoted" \\',
];

describe('PriorEntries', () => {
  it('finds every entry by path, whatever its bytes, and reads it back as it was', async () => {
    const parent = await mkdtemp(join(tmpdir(), 'prior-entries-'));
    try {
      const entries = [
        ...TRICKY.map((p, i) => file(p, i, i === 3 ? { pageChecksumErrors: [1, 7] } : {})),
        ...Array.from({ length: 3000 }, (_, i) => file(`base/5/${16384 + i}${i % 2 ? '_fsm' : ''}`, 100 + i)),
      ];
      // A size hint below the count: the index grows as the entries come.
      const prior = await PriorEntries.build(slowly(entries), 'shop', 10, parent);
      try {
        assert.equal(prior.count, entries.length);
        for (const e of entries) {
          const facts = prior.find(e.path);
          assert.ok(facts, `${JSON.stringify(e.path)} found`);
          assert.deepEqual([facts.size, facts.mtimeMs], [e.size, e.mtimeMs]);
          assert.deepEqual(await prior.entry(facts, e.path), e);
        }
        for (const missing of ['base/5/\uFF62', 'a', 'a/b/', 'base/5/16384/', '', 'pg_tblspc/16389'])
          assert.equal(prior.find(missing), undefined, `${JSON.stringify(missing)} is not in the prior backup`);
      } finally {
        await prior.close();
      }
      assert.deepEqual(await readdir(parent), [], 'close removes its directory');
    } finally {
      await rm(parent, { recursive: true, force: true });
    }
  });

  it('an entry read back for another path (a shared fingerprint) is not taken: the file is copied, never referenced wrongly', async () => {
    const parent = await mkdtemp(join(tmpdir(), 'prior-entries-'));
    try {
      const prior = await PriorEntries.build([file('base/5/1', 1), file('base/5/2', 2)], 'shop', 2, parent);
      try {
        const facts = prior.find('base/5/1')!;
        assert.equal(await prior.entry(facts, 'base/5/2'), undefined);
        assert.equal((await prior.entry(facts, 'base/5/1'))!.path, 'base/5/1');
      } finally {
        await prior.close();
      }
    } finally {
      await rm(parent, { recursive: true, force: true });
    }
  });

  it('an empty prior backup finds nothing', async () => {
    const parent = await mkdtemp(join(tmpdir(), 'prior-entries-'));
    try {
      const prior = await PriorEntries.build([], 'shop', 0, parent);
      assert.equal(prior.count, 0);
      assert.equal(prior.find('base/5/1'), undefined);
      await prior.close();
    } finally {
      await rm(parent, { recursive: true, force: true });
    }
  });

  it('decides from the index alone as from the entry', async () => {
    const parent = await mkdtemp(join(tmpdir(), 'prior-entries-'));
    try {
      const e = file('base/5/16384', 3, { mtimeMs: 1_000_000 });
      const prior = await PriorEntries.build([e], 'shop', 1, parent);
      const ctx = { priorStartMs: 1_000_000 + 60_000, nowMs: 1_000_000 + 120_000, checksumDelta: false };
      for (const now of [
        { size: e.size, mtimeMs: 1_000_000 },
        { size: e.size + 1, mtimeMs: 1_000_000 },
        { size: e.size, mtimeMs: 1_000_001 },
      ])
        assert.equal(decideFile(now, prior.find(e.path), ctx), decideFile(now, e, ctx));
      await prior.close();
    } finally {
      await rm(parent, { recursive: true, force: true });
    }
  });

  it('fingerprints are 16 bytes of the UTF-8 path: composed and decomposed letters differ', () => {
    assert.equal(pathFingerprint('base/5/é').length, 16);
    assert.notDeepEqual(pathFingerprint('base/5/é'), pathFingerprint('base/5/e\u0301'));
    assert.deepEqual(pathFingerprint('a/b'), pathFingerprint('a/b'));
  });
});

describe('leaseChain of a streamed prior', () => {
  it('names the prior, its own prior and the backups its entries read, as from the whole manifest', () => {
    const head = { label: 'I2', priorLabel: 'I1' };
    assert.deepEqual(leaseChain({ head, readsFrom: ['F1', 'I1'] }).sort(), ['F1', 'I1', 'I2']);
  });
});
