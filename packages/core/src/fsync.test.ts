import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fsyncPath } from './fsync.js';

test('fsyncPath syncs a file and a directory, and fails on a missing path', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'pgfleet-fsync-'));
  try {
    await writeFile(join(dir, 'f'), 'data');
    await fsyncPath(join(dir, 'f'));
    await fsyncPath(dir);
    await assert.rejects(fsyncPath(join(dir, 'missing')), { code: 'ENOENT' });
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
