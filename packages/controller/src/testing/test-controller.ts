/**
 * Test support: a real controller (port 0, temp SQLite catalog) started before a test file's tests
 * and closed after them, with an admin client, so integration tests need no set-up boilerplate of
 * their own. Not exported from the package.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before } from 'node:test';
import { createClient } from '@pgfleet/rpc';
import { AdminService } from '@pgfleet/proto';
import { startController, type RunningController, type StartOptions } from '../server.js';
import { closeFakeAgents } from './fake-agent.js';

export interface TestController {
  readonly controller: RunningController;
  readonly admin: ReturnType<typeof createClient<typeof AdminService>>;
}

/** Registers before/after hooks; read `controller` and `admin` inside tests. */
export function useTestController(
  name: string,
  config: Partial<Parameters<typeof startController>[0]> = {},
  options: StartOptions = {},
): TestController {
  let dir = '';
  let controller: RunningController | undefined;
  let admin: TestController['admin'] | undefined;
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), `pgfleet-${name}-it-`));
    controller = await startController(
      {
        listen: '127.0.0.1:0',
        insecure: true,
        catalogPath: join(dir, 'catalog.db'),
        repoPath: '/srv/repo',
        heartbeatIntervalSeconds: 5,
        jobReclaimGraceSeconds: 1,
        ...config,
      },
      options,
    );
    admin = createClient(AdminService, controller.address, { defaultDeadlineMs: 5000 });
  });
  after(async () => {
    closeFakeAgents();
    admin?.close();
    await controller?.close(100);
    if (dir) rmSync(dir, { recursive: true, force: true });
  });
  return {
    get controller() {
      return controller!;
    },
    get admin() {
      return admin!;
    },
  };
}
