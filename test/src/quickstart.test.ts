/** The README's quickstart must keep working: it starts every part, takes a backup and lists it. */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { REPO_ROOT, runNode } from './harness.js';

describe('quickstart', { timeout: 240_000 }, () => {
  it('starts PostgreSQL, controller and agent, backs up and shows the backup', async () => {
    const r = await runNode(join(REPO_ROOT, 'scripts/quickstart.mjs'), ['--once'], { timeoutMs: 200_000 });
    assert.equal(r.code, 0, `${r.stdout}\n${r.stderr}`);
    assert.match(r.stdout, /pgfleet backups demo/);
    assert.match(r.stdout, /\d{8}-\d{6}F/, 'the backup label is listed');
  });
});
