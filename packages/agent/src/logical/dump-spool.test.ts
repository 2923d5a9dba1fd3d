import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { silentLogger } from '@pgfleet/core';
import { spoolName, sweepDumpSpools } from './dump.js';

describe('sweepDumpSpools', () => {
  it("removes the dump and restore-dump spools of this cluster's dead agents only", async () => {
    const scratch = await mkdtemp(join(tmpdir(), 'dump-spool-sweep-'));
    try {
      // A pid whose process has exited (an agent killed with -9 mid-dump leaves exactly this).
      const dead = spawnSync(process.execPath, ['-e', '']).pid!;
      const job = '0b9e3f1c-6a4d-4f7e-9c1a-2b3c4d5e6f70';
      const leftover = async (name: string) => {
        await mkdir(join(scratch, name, '16384'), { recursive: true });
        await writeFile(join(scratch, name, '16384', 'toc.dat'), 'x');
      };
      await leftover(`pgfleet-dump-shop-${dead}-job-${job}`); // ours, dead: goes
      await leftover(`pgfleet-restore-dump-shop-${dead}-job-${job}`); // ours, dead: goes
      await leftover(`pgfleet-dump-shop-2-${dead}-job-${job}`); // cluster shop-2's, dead: stays
      await leftover(`pgfleet-dump-shop-${process.ppid}-job-${job}`); // ours, alive: stays
      await leftover(spoolName('dump', 'shop', job)); // this process's running dump: stays
      await leftover(`pgfleet-drill-${job}`); // a drill's directory: not a spool
      const removed = await sweepDumpSpools(scratch, 'shop', silentLogger());
      assert.deepEqual(removed.sort(), [
        join(scratch, `pgfleet-dump-shop-${dead}-job-${job}`),
        join(scratch, `pgfleet-restore-dump-shop-${dead}-job-${job}`),
      ]);
      assert.deepEqual(
        (await readdir(scratch)).sort(),
        [
          `pgfleet-dump-shop-2-${dead}-job-${job}`,
          `pgfleet-dump-shop-${process.ppid}-job-${job}`,
          spoolName('dump', 'shop', job),
          `pgfleet-drill-${job}`,
        ].sort(),
      );
      // A scratch area that does not exist yet is nothing to sweep.
      assert.deepEqual(await sweepDumpSpools(join(scratch, 'none'), 'shop', silentLogger()), []);
    } finally {
      await rm(scratch, { recursive: true, force: true });
    }
  });
});
