// Backup labels have one-second resolution: a second backup started within the same second must
// not reuse the first one's directory (its manifest would replace the first backup's).
import { strict as assert } from 'node:assert';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { ErrorCodes, backupLabel, PgfleetError } from '@pgfleet/core';
import { PosixDriver, Repository } from '@pgfleet/storage';
import { freeLabel } from './backup.js';
import { TEST_MANIFEST_KEYS } from '../testing/repository-fixtures.js';

const root = mkdtempSync(join(tmpdir(), 'pgfleet-label-'));
after(() => rmSync(root, { recursive: true, force: true }));
const repo = new Repository(new PosixDriver(root), TEST_MANIFEST_KEYS);

test('a label already holding files (even of an unfinished backup) is skipped: the next second is used', async () => {
  const now = new Date();
  const taken = backupLabel(now, 'full');
  await repo.driver.put(`c1/backup/${taken}/pg_data/PG_VERSION.none`, Buffer.from('15\n'));
  const { label, startTime } = await freeLabel(repo, 'c1', 'full');
  assert.notEqual(label, taken);
  assert.ok(label > taken, `${label} comes after ${taken}`);
  assert.equal(label, backupLabel(startTime, 'full'));
});

test('labels taken for several seconds ahead (a clock gone back): refused with PGF-3011, nothing overwritten', async () => {
  const base = Date.now();
  for (let s = 0; s < 8; s++)
    await repo.driver.put(
      `c2/backup/${backupLabel(new Date(base + s * 1000), 'incr')}/backup.manifest`,
      Buffer.from('{}'),
    );
  await assert.rejects(
    freeLabel(repo, 'c2', 'incr'),
    (e: unknown) =>
      e instanceof PgfleetError && e.code === ErrorCodes.BackupLabelInUse.code && /already used/.test(e.message),
  );
});
