import assert from 'node:assert/strict';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import type { PgdataEntry } from '../pgdata/walk.js';
import { ListingSpool, SIZE_CLASSES, sizeClass } from './listing-spool.js';

const entry = (path: string, size: number, i = 0): PgdataEntry => ({
  path,
  size,
  mtimeMs: 1_700_000_000_000 + i + 0.25,
  mode: 0o600,
});

describe('ListingSpool', () => {
  it('puts each size in the class of the largest bound it reaches', () => {
    assert.equal(sizeClass(0), SIZE_CLASSES.length - 1);
    assert.equal(sizeClass(64 << 20), 0);
    assert.equal(sizeClass((64 << 20) - 1), 1);
    assert.equal(sizeClass(1 << 30), 0);
    for (let c = 0; c < SIZE_CLASSES.length - 1; c++) {
      assert.equal(sizeClass(SIZE_CLASSES[c]!), c);
      assert.equal(sizeClass(SIZE_CLASSES[c]! - 1), c + 1);
    }
  });

  it('gives back every file, largest class first and in the order added within a class, paths as they were', async () => {
    const parent = await mkdtemp(join(tmpdir(), 'listing-spool-'));
    try {
      const spool = await ListingSpool.create('shop', parent);
      // Paths JSON must escape, and ones whose UTF-16 and UTF-8 orders differ.
      const added = [
        entry('base/5/1', 10, 1),
        entry('base/5/16384', 1 << 30, 2),
        entry('pg_tblspc/16389/PG_15_202209061/5/16390', 200 << 10, 3),
        entry('base/5/line\nbreak "quoted" \\ back', 10, 4),
        entry('base/5/\u{1F600}', 3 << 20, 5),
        entry('base/5/\uFF61', 3 << 20, 6),
        entry('base/5/empty', 0, 7),
        entry('global/1262', 8192, 8),
      ];
      // Enough small files that each class is written in several flushes.
      for (let i = 0; i < 5000; i++) added.push(entry(`base/5/${100000 + i}`, i % 3000, 100 + i));
      for (const f of added) spool.add(f);
      assert.equal(spool.count, added.length);
      assert.equal(
        spool.bytes,
        added.reduce((s, f) => s + f.size, 0),
      );
      const got: PgdataEntry[] = [];
      for await (const f of spool.files()) got.push(f);
      const expected = SIZE_CLASSES.flatMap((_, c) => added.filter((f) => sizeClass(f.size) === c));
      assert.deepEqual(got, expected);
      // Roughly largest first: no file comes after one of a lower size class.
      for (let i = 1; i < got.length; i++) assert.ok(sizeClass(got[i]!.size) >= sizeClass(got[i - 1]!.size));
      await spool.close();
      assert.deepEqual(await readdir(parent), [], 'close removes its directory');
    } finally {
      await rm(parent, { recursive: true, force: true });
    }
  });

  it('an empty listing gives nothing back', async () => {
    const parent = await mkdtemp(join(tmpdir(), 'listing-spool-'));
    try {
      const spool = await ListingSpool.create('shop', parent);
      const got: PgdataEntry[] = [];
      for await (const f of spool.files()) got.push(f);
      assert.deepEqual(got, []);
      await spool.close();
    } finally {
      await rm(parent, { recursive: true, force: true });
    }
  });
});
