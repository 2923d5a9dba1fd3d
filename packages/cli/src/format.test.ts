// Rendering helpers of the CLI.
import { strict as assert } from 'node:assert';
import { test } from 'node:test';
import { create } from '@bufbuild/protobuf';
import { JobProgressSchema } from '@pgfleet/proto';
import { formatAge, formatBytes, formatProgress, formatTable, formatTime } from './format.js';
import { ProgressView } from './progress-view.js';

test('bytes', () => {
  assert.equal(formatBytes(0), '0 B');
  assert.equal(formatBytes(1023), '1023 B');
  assert.equal(formatBytes(1536), '1.5 KB');
  assert.equal(formatBytes(1288490189n), '1.2 GB');
  assert.equal(formatBytes(300 * 1024 * 1024), '300 MB');
});

test('time', () => {
  assert.equal(formatTime(Date.parse('2026-03-01T12:00:00.123Z')), '2026-03-01 12:00:00Z');
  assert.equal(formatTime(undefined), '-');
  assert.equal(formatTime(Date.parse('1999-12-31T23:59:59Z')), '1999-12-31 23:59:59Z');
  assert.equal(formatTime(Date.parse('+010000-01-02T03:04:05Z')), '+010000-01-02 03:04:05Z');
});

test('table columns are aligned, no trailing blanks', () => {
  assert.equal(
    formatTable(
      ['NAME', 'X'],
      [
        ['a', '1'],
        ['long-name', ''],
      ],
    ),
    'NAME       X\na          1\nlong-name',
  );
  // A blank middle cell keeps its column; a row with fewer cells ends early.
  assert.equal(
    formatTable(
      ['A', 'B', 'C'],
      [
        ['x', '', 'z'],
        ['yy', 'b'],
      ],
    ),
    'A   B  C\nx      z\nyy  b',
  );
});

test('progress line', () => {
  const gb = 1024n ** 3n;
  assert.equal(
    formatProgress('backup', {
      phase: 'copy',
      bytesDone: (12n * gb) / 10n,
      bytesTotal: (29n * gb) / 10n,
      filesDone: 120,
      filesTotal: 900,
      message: '',
    }),
    'backup 41% 1.2 GB/2.9 GB files 120/900 (copy)',
  );
  assert.equal(
    formatProgress('restore', {
      phase: '',
      bytesDone: 0n,
      bytesTotal: 0n,
      filesDone: 0,
      filesTotal: 0,
      message: 'starting',
    }),
    'restore starting',
  );
  assert.equal(
    formatProgress('backup', {
      phase: 'copy',
      bytesDone: gb,
      bytesTotal: 2n * gb,
      filesDone: 1,
      filesTotal: 2,
      message: '',
      bytesPerSecond: 200 * 1024 ** 2,
      etaSeconds: 65,
    }),
    'backup 50% 1.0 GB/2.0 GB files 1/2 200 MB/s ETA 1m05s (copy)',
  );
});

test('--wait without a terminal: one line per change, with rate and ETA', () => {
  const lines: string[] = [];
  const view = new ProgressView('backup', false, (l) => lines.push(l));
  const p = create(JobProgressSchema, {
    phase: 'copy',
    bytesDone: 100n,
    bytesTotal: 400n,
    bytesPerSecond: 100,
    etaSeconds: 3,
  });
  view.update(p);
  view.update(p);
  view.update(create(JobProgressSchema, { phase: 'wait-wal', message: 'waiting for 1 WAL segment(s)' }));
  view.stop();
  assert.deepEqual(lines, [
    'backup 25% 100 B/400 B 100 B/s ETA 3s (copy)',
    'backup (wait-wal) waiting for 1 WAL segment(s)',
  ]);
});

test('ages: two units at most, never negative', () => {
  assert.deepEqual([0, 42.9, 310, 3600 + 5 * 60, 2 * 86_400 + 4 * 3600 + 59, -5].map(formatAge), [
    '0s',
    '42s',
    '5m10s',
    '1h05m',
    '2d04h',
    '0s',
  ]);
});
