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

type TestControllerConfig = Partial<Parameters<typeof startController>[0]>;

export interface TestController {
  readonly controller: RunningController;
  readonly admin: ReturnType<typeof createClient<typeof AdminService>>;
  /**
   * Closes the controller, its admin client and the fake agents' channels (their streams ended
   * with it), then starts a controller on the same catalog with `config` over the file's own:
   * a restart as an operator does one.
   */
  restart(config?: TestControllerConfig): Promise<void>;
}

/** Registers before/after hooks; read `controller` and `admin` inside tests. */
export function useTestController(
  name: string,
  config: TestControllerConfig = {},
  options: StartOptions = {},
): TestController {
  let dir = '';
  let controller: RunningController | undefined;
  let admin: TestController['admin'] | undefined;
  const start = async (overrides: TestControllerConfig = {}): Promise<void> => {
    controller = await startController(
      {
        listen: '127.0.0.1:0',
        insecure: true,
        catalogPath: join(dir, 'catalog.db'),
        repoPath: '/srv/repo',
        // Nothing is at /srv/repo: reported backups are checked on their facts (backup-admission.ts).
        reportedBackupCheck: 'facts',
        heartbeatIntervalSeconds: 5,
        jobReclaimGraceSeconds: 1,
        ...config,
        ...overrides,
      },
      options,
    );
    admin = createClient(AdminService, controller.address, { defaultDeadlineMs: 5000 });
  };
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), `pgfleet-${name}-it-`));
    await start();
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
    async restart(overrides) {
      await controller?.close(100);
      admin?.close();
      closeFakeAgents();
      await start(overrides);
    },
  };
}
