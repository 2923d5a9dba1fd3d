import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after } from 'node:test';
import { PosixDriver } from './posix-driver.js';
import { repositoryDriverSuite } from './driver-suite.js';

const dirs: string[] = [];
after(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

repositoryDriverSuite('posix', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'pgfleet-posix-'));
  dirs.push(dir);
  return new PosixDriver(dir);
});
