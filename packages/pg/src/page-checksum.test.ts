import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomFillSync } from 'node:crypto';
import { open, readFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { removeDir, runAsPostgres, startPostgres } from '@pgfleet/testkit';
import {
  BLCKSZ,
  int32View,
  lsnHalves,
  pageChecksum,
  pageChecksumAt,
  relationSegmentNumber,
  storedPageChecksum,
  verifyPageAt,
  verifyPages,
} from './page-checksum.js';
import { simdPageChecksums } from './page-checksum-simd.js';

test('relation files and their segment numbers; other PGDATA files have no page checksums', () => {
  assert.equal(relationSegmentNumber('base/5/16384'), 0);
  assert.equal(relationSegmentNumber('base/5/16384.3'), 3);
  assert.equal(relationSegmentNumber('base/5/16384_fsm'), 0);
  assert.equal(relationSegmentNumber('base/5/16384_vm.1'), 1);
  assert.equal(relationSegmentNumber('global/1262'), 0);
  assert.equal(relationSegmentNumber('pg_tblspc/16400/PG_16_202307071/5/16401.2'), 2);
  for (const other of [
    'global/pg_control',
    'global/pg_filenode.map',
    'base/5/PG_VERSION',
    'base/5/pg_internal.init',
    'pg_xact/0000',
    'base/5/t3_16384',
    'PG_VERSION',
    'base/5/16384.tmp',
  ]) {
    assert.equal(relationSegmentNumber(other), undefined, other);
  }
});

test("page checksums equal pd_checksum and pg_checksums' own on real pages", { timeout: 120_000 }, async () => {
  const pg = await startPostgres({ keepDataDir: true });
  try {
    await pg.query('CREATE TABLE t (id int, note text)');
    // Enough rows for several pages, so blocks > 0 prove the block number is mixed in.
    await pg.query(`INSERT INTO t SELECT g, repeat('x', g % 200) FROM generate_series(1, 5000) g`);
    await pg.query('CHECKPOINT');
    const [row] = await pg.query<{ path: string; checksums: string }>(
      `SELECT pg_relation_filepath('t') AS path, current_setting('data_checksums') AS checksums`,
    );
    assert.equal(row!.checksums, 'on', 'testkit initdb uses --data-checksums');
    const file = await readFile(join(pg.dataDir, row!.path));
    const pages = file.length / BLCKSZ;
    assert.ok(pages >= 4, `expected several pages, got ${pages}`);
    const words = int32View(file);
    const noLsnSkip = lsnHalves(0xffffffffffffffffn);
    for (let b = 0; b < pages; b++) {
      const page = file.subarray(b * BLCKSZ, (b + 1) * BLCKSZ);
      assert.equal(pageChecksum(page, b), storedPageChecksum(page), `block ${b}`);
      assert.equal(verifyPageAt(words, b * (BLCKSZ / 4), b, noLsnSkip), 'valid');
    }
    // The block number is part of the checksum: page 1 read as block 2 fails.
    assert.notEqual(
      pageChecksum(file.subarray(BLCKSZ, 2 * BLCKSZ), 2),
      storedPageChecksum(file.subarray(BLCKSZ, 2 * BLCKSZ)),
    );

    // A flipped byte in the tuple area is caught; the same page is not judged when its LSN is past the backup start.
    const damaged = Buffer.from(file.subarray(BLCKSZ, 2 * BLCKSZ));
    damaged[5000] = damaged[5000]! ^ 0xff;
    const dw = int32View(damaged);
    assert.equal(verifyPageAt(dw, 0, 1, noLsnSkip), 'invalid');
    const pageLsn = (BigInt(damaged.readUInt32LE(0)) << 32n) | BigInt(damaged.readUInt32LE(4));
    assert.equal(verifyPageAt(dw, 0, 1, lsnHalves(pageLsn)), 'after-start');
    assert.equal(verifyPageAt(dw, 0, 1, lsnHalves(pageLsn + 1n)), 'invalid');

    // All-zero pages are new and valid; a "new" page with garbage is not.
    const zero = new Int32Array(BLCKSZ / 4);
    assert.equal(verifyPageAt(zero, 0, 7, noLsnSkip), 'new');
    zero[100] = 1;
    assert.equal(verifyPageAt(zero, 0, 7, noLsnSkip), 'invalid');

    // Unaligned input is handled (copied once), with the same result.
    const unaligned = Buffer.alloc(BLCKSZ + 1).subarray(1);
    file.copy(unaligned, 0, 0, BLCKSZ);
    assert.equal(pageChecksum(unaligned, 0), storedPageChecksum(file));

    // The batch (WebAssembly) verdicts on the same pages, then on pages damaged on disk.
    const clean: number[] = [];
    verifyPages(words, 0, pages, 0, noLsnSkip, (i) => clean.push(i));
    assert.deepEqual(clean, [], 'every page PostgreSQL wrote verifies');
    await pg.stop();
    const relFile = join(pg.dataDir, row!.path);
    // One flipped byte in the tuple area of a few pages, as storage corruption would leave them.
    const damagedBlocks = [1, pages >> 1, pages - 1];
    const fh = await open(relFile, 'r+');
    for (const b of damagedBlocks) {
      const at = b * BLCKSZ + 6000;
      await fh.write(Buffer.from([file[at]! ^ 0x5a]), 0, 1, at);
    }
    await fh.close();
    const after = await readFile(relFile);
    const found: number[] = [];
    verifyPages(int32View(after), 0, pages, 0, noLsnSkip, (i) => found.push(i));
    assert.deepEqual(found, damagedBlocks);

    // pg_checksums (stopped cluster) names each damaged block with the checksum it calculated.
    const err = await runAsPostgres(join(pg.binDir, 'pg_checksums'), ['--check', '-D', pg.dataDir]).then(
      () => assert.fail('pg_checksums passed a damaged relation'),
      (e: unknown) => e as Error & { stderr: string },
    );
    const calculated = new Map<number, number>();
    for (const m of err.stderr.matchAll(/block (\d+): calculated checksum ([0-9A-F]+) but block contains/g))
      calculated.set(Number(m[1]), parseInt(m[2]!, 16));
    assert.deepEqual(
      [...calculated.keys()].sort((x, y) => x - y),
      damagedBlocks,
      err.stderr,
    );
    const ours = new Map<number, number>();
    simdPageChecksums(after, pages, 0, (i, sum) => ours.set(i, sum));
    for (const b of damagedBlocks) {
      assert.equal(ours.get(b), calculated.get(b), `block ${b}: WebAssembly`);
      assert.equal(
        pageChecksum(after.subarray(b * BLCKSZ, (b + 1) * BLCKSZ), b),
        calculated.get(b),
        `block ${b}: JavaScript`,
      );
    }
  } finally {
    await pg.stop();
    await removeDir(dirname(pg.dataDir)); // keepDataDir: pg_checksums needs the cluster stopped
  }
});

test('the WebAssembly batch computes the checksums of the JavaScript loop, at any block number', () => {
  // Random words hit every lane and bit; 300 pages span several batches of 128.
  const bytes = randomFillSync(Buffer.alloc(300 * BLCKSZ));
  const words = int32View(bytes);
  for (const first of [0, 131072 * 7 + 5, 0xffffff00]) {
    const seen: number[] = [];
    assert.ok(
      simdPageChecksums(bytes, 300, first, (i, sum) => (seen[i] = sum)),
      'Node 24 has WebAssembly SIMD',
    );
    for (let i = 0; i < 300; i++)
      assert.equal(seen[i], pageChecksumAt(words, i * (BLCKSZ / 4), first + i), `page ${i}`);
  }
});
