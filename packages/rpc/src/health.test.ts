// Health and reflection checked the way operators will: with `buf curl` against a real server.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import * as grpc from '@grpc/grpc-js';
import { createFileRegistry } from '@bufbuild/protobuf';
import { service as servedHealth } from 'grpc-health-check';
import { AdminService, AgentService } from '@pgfleet/proto';
import { addHealthAndReflection, addService, healthFileDescriptor, listen, type HealthStatus } from './index.js';
import { unimplementedService } from './unimplemented.js';

const run = promisify(execFile);
// dist/health.test.js -> repository root node_modules (buf comes from npm).
const BUF = fileURLToPath(new URL('../../../node_modules/.bin/buf', import.meta.url));

async function bufCurl(...args: string[]): Promise<string> {
  const { stdout } = await run(BUF, ['curl', '--protocol', 'grpc', '--http2-prior-knowledge', ...args], {
    timeout: 60_000, // bounds a hang only: a loaded machine may take seconds to start buf
  });
  return stdout;
}

describe('health and reflection', () => {
  const server = new grpc.Server();
  let base = '';
  let health: HealthStatus;

  before(async () => {
    const admin = unimplementedService(AdminService);
    const agent = unimplementedService(AgentService);
    addService(server, AdminService, admin);
    addService(server, AgentService, agent);
    health = addHealthAndReflection(server, [AgentService, AdminService]);
    base = `http://127.0.0.1:${await listen(server, '127.0.0.1:0')}`;
  });
  after(() => server.forceShutdown());

  it('describes exactly the health methods grpc-health-check serves, as a valid descriptor', () => {
    const registry = createFileRegistry(healthFileDescriptor, () => undefined);
    const health = registry.getService('grpc.health.v1.Health');
    assert.ok(health);
    const served = Object.values(servedHealth)
      .map((m) => m.path)
      .sort();
    assert.deepEqual(health.methods.map((m) => `/${health.typeName}/${m.name}`).sort(), served);
  });

  it('lists our services and health through reflection', async () => {
    const methods = (await bufCurl('--list-methods', base)).trim().split('\n');
    for (const m of [
      'pgfleet.v1.AdminService/ListBackups',
      'pgfleet.v1.AdminService/WatchJob',
      'pgfleet.v1.AgentService/Connect',
      'grpc.health.v1.Health/Check',
    ]) {
      assert.ok(methods.includes(m), `${m} missing from:\n${methods.join('\n')}`);
    }
  });

  it('answers health checks, per service and for the whole server', async () => {
    const whole = JSON.parse(await bufCurl('-d', '{}', `${base}/grpc.health.v1.Health/Check`)) as { status: string };
    assert.equal(whole.status, 'SERVING');
    health.setStatus('pgfleet.v1.AdminService', 'NOT_SERVING');
    const admin = JSON.parse(
      await bufCurl('-d', '{"service":"pgfleet.v1.AdminService"}', `${base}/grpc.health.v1.Health/Check`),
    ) as { status: string };
    assert.equal(admin.status, 'NOT_SERVING');
  });
});
