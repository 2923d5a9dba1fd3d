import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { silentLogger } from '@pgfleet/core';
import { EntrySpool, sweepEntrySpools } from './entry-spool.js';

describe('sweepEntrySpools', () => {
  it("removes the spools of this cluster's dead agents only", async () => {
    const parent = await mkdtemp(join(tmpdir(), 'spool-sweep-'));
    try {
      // A pid whose process has exited (a backup killed with -9 leaves exactly this).
      const dead = spawnSync(process.execPath, ['-e', '']).pid!;
      assert.ok(dead > 0);
      const leftover = async (name: string) => {
        await mkdir(join(parent, name));
        await writeFile(join(parent, name, 'entries.jsonl'), '{"path":"base/1/1"}\n');
      };
      await leftover(`pgfleet-entries-shop-${dead}-aB3xYz`); // ours, dead: goes
      await leftover(`pgfleet-entries-shop-2-${dead}-Qw1eR2`); // cluster shop-2's, dead: stays
      await leftover(`pgfleet-entries-shop-${process.ppid}-Kk9kK9`); // ours, alive: stays
      await leftover(`pgfleet-entries-Zz0zZ0`); // an older agent's, owner unknown: stays
      await leftover('unrelated-dir');
      // The live spool of a backup running in this process: stays.
      const live = await EntrySpool.create('20261207T000000F', 'shop', parent);

      const removed = await sweepEntrySpools('shop', silentLogger(), parent);

      assert.deepEqual(removed, [join(parent, `pgfleet-entries-shop-${dead}-aB3xYz`)]);
      const left = (await readdir(parent)).sort();
      const liveName = left.find((n) => n.startsWith(`pgfleet-entries-shop-${process.pid}-`));
      assert.ok(liveName, `the running backup's spool is kept (${left.join(', ')})`);
      assert.deepEqual(
        left,
        [
          `pgfleet-entries-shop-${process.ppid}-Kk9kK9`,
          `pgfleet-entries-shop-2-${dead}-Qw1eR2`,
          liveName,
          'pgfleet-entries-Zz0zZ0',
          'unrelated-dir',
        ].sort(),
      );
      await live.close();
      assert.equal((await readdir(parent)).includes(liveName), false);
    } finally {
      await rm(parent, { recursive: true, force: true });
    }
  });
});
