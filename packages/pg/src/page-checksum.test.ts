import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { startPostgres } from '@pgfleet/testkit';
import {
  BLCKSZ,
  int32View,
  lsnHalves,
  pageChecksum,
  relationSegmentNumber,
  storedPageChecksum,
  verifyPageAt,
} from './page-checksum.js';

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

test('page checksum equals pd_checksum of real pages written by PostgreSQL', { timeout: 120_000 }, async () => {
  const pg = await startPostgres();
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
  } finally {
    await pg.stop();
  }
});
