// Rendering helpers of the CLI.
import { strict as assert } from 'node:assert';
import { test } from 'node:test';
import { formatBytes, formatProgress, formatTable, formatTime } from './format.js';

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
});

test('table columns are aligned, no trailing blanks', () => {
  assert.equal(formatTable(['NAME', 'X'], [['a', '1'], ['long-name', '']]), 'NAME       X\na          1\nlong-name');
});

test('progress line', () => {
  const gb = 1024n ** 3n;
  assert.equal(
    formatProgress('backup', { phase: 'copy', bytesDone: (12n * gb) / 10n, bytesTotal: (29n * gb) / 10n, filesDone: 120, filesTotal: 900, message: '' }),
    'backup 41% 1.2 GB/2.9 GB files 120/900 (copy)',
  );
  assert.equal(formatProgress('restore', { phase: '', bytesDone: 0n, bytesTotal: 0n, filesDone: 0, filesTotal: 0, message: 'starting' }), 'restore starting');
});
