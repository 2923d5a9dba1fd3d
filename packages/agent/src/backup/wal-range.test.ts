// The WAL a backup waits for: every segment from its start to the one holding the last byte it
// needs. A stop LSN on a segment boundary (a standby's minRecoveryPoint after replaying a WAL
// switch) needs nothing of the next segment, which may not even be written yet.
import { strict as assert } from 'node:assert';
import { test } from 'node:test';
import { Lsn, WalSegmentName } from '@pgfleet/pg';
import { lastNeededLsn } from './backup.js';

const SEG = 16 * 1024 * 1024;
const range = (start: string, stop: string) =>
  WalSegmentName.range(1, Lsn.parse(start), lastNeededLsn(Lsn.parse(stop), SEG), SEG).map(String);

test('a stop LSN inside a segment needs that segment', () => {
  assert.deepEqual(range('0/2000028', '0/3000060'), ['000000010000000000000002', '000000010000000000000003']);
});

test('a stop LSN on a segment boundary ends with the segment before it', () => {
  assert.deepEqual(range('0/2000028', '0/4000000'), ['000000010000000000000002', '000000010000000000000003']);
  assert.deepEqual(range('0/FF000028', '1/0'), ['0000000100000000000000FF']);
});
