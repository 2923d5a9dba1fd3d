import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { tableDataEntries } from './toc-entries.js';

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
