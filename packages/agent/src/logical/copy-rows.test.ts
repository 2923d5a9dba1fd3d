import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { CopyRowCounter, CopyRowTap, countCopyRows, tableDataEntries } from './copy-rows.js';

/**
 * What pg_dump 15 wrote into 3351.dat.gz for a text column holding E'a\nb\\c', E'x\r\ny', NULL
 * and '' (read with zcat): one line per row, escapes inside, the terminator and blank lines after.
 */
const WEIRD = Buffer.from('a\\nb\\\\c\nx\\r\\ny\n\\N\n\n\\.\n\n\n', 'latin1');

function countInChunks(data: Buffer, size: number): number | undefined {
  const c = new CopyRowCounter();
  for (let i = 0; i < data.length; i += size) c.push(data.subarray(i, i + size));
  return c.rows;
}

describe('CopyRowCounter', () => {
  it('counts one row per line before \\. whatever the values hold (escaped newlines, backslashes, NULL, empty strings)', () => {
    for (const size of [1, 2, 3, 7, WEIRD.length]) assert.equal(countInChunks(WEIRD, size), 4, `chunks of ${size}`);
  });

  it('an empty table is just the terminator: 0 rows', () => {
    assert.equal(countInChunks(Buffer.from('\\.\n\n\n'), 1), 0);
  });

  it('a data line that only starts like the terminator is a row (a backslash in data is doubled)', () => {
    assert.equal(countInChunks(Buffer.from('\\\\.\n\\.x\n\\.\n'), 2), 2);
  });

  it('data without the terminator is not COPY data as pg_dump writes it: no count', () => {
    assert.equal(countInChunks(Buffer.from('1\n2\n'), 3), undefined);
  });
});

describe('countCopyRows', () => {
  it('reads .dat.gz (pg_dump -Fd default) and .dat files; other compressions are not counted', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'pgfleet-copy-rows-'));
    try {
      const rows = Buffer.concat([
        Buffer.from(Array.from({ length: 100_000 }, (_, i) => `${i}\tv${i}\\n\n`).join('')),
        Buffer.from('\\.\n\n'),
      ]);
      await writeFile(join(dir, '10.dat.gz'), gzipSync(rows));
      await writeFile(join(dir, '11.dat'), WEIRD);
      await writeFile(join(dir, '12.dat.lz4'), 'x');
      assert.equal(await countCopyRows(join(dir, '10.dat.gz')), 100_000);
      assert.equal(await countCopyRows(join(dir, '11.dat')), 4);
      assert.equal(await countCopyRows(join(dir, '12.dat.lz4')), undefined);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('CopyRowTap', () => {
  const copy = Buffer.concat([
    Buffer.from(Array.from({ length: 20_000 }, (_, i) => `${i}\tv${i}\n`).join('')),
    Buffer.from('\\.\n\n\n'),
  ]);
  const feed = async (tap: CopyRowTap, data: Buffer, size: number) => {
    for (let i = 0; i < data.length; i += size) await tap.push(data.subarray(i, i + size));
    return tap.end();
  };

  it('counts gzip and plain COPY data pushed in chunks of any size', async () => {
    const gz = gzipSync(copy);
    for (const size of [1000, 61, gz.length]) assert.equal(await feed(new CopyRowTap(true), gz, size), 20_000);
    assert.equal(await feed(new CopyRowTap(false), copy, 333), 20_000);
  });

  it('gzip cut short (a file read before pg_dump closed it) rejects; plain data without \\. has no count', async () => {
    const gz = gzipSync(copy);
    await assert.rejects(feed(new CopyRowTap(true), gz.subarray(0, gz.length - 4), 512));
    // An empty file (created, nothing written yet): no count either way.
    assert.equal(await feed(new CopyRowTap(true), Buffer.alloc(0), 1).catch(() => undefined), undefined);
    assert.equal(await feed(new CopyRowTap(false), copy.subarray(0, 1000), 100), undefined);
  });
});

describe('tableDataEntries', () => {
  it("maps each TABLE DATA entry's table oid to its dump id (names with spaces are never parsed)", () => {
    const list = [
      ';',
      '; Archive created at 2026-12-07 04:00:00 UTC',
      '215; 1259 16389 TABLE public e postgres',
      '3208; 0 0 TABLE ATTACH public p1 postgres',
      '3352; 0 16389 TABLE DATA public e postgres',
      '3351; 0 16384 TABLE DATA public we ird postgres',
      '3400; 0 16400 MATERIALIZED VIEW DATA public mv postgres',
    ].join('\n');
    assert.deepEqual(
      [...tableDataEntries(list)],
      [
        ['16389', '3352'],
        ['16384', '3351'],
      ],
    );
  });
});
