// Integration: the web console's server on a controller with --tls-dir (port 0, temp SQLite
// catalog): HTTPS with the controller's certificate, the page served to anyone, every API call
// behind the admin API's own token and role check, and answers as protobuf JSON. The browser
// side is test/src/console.test.ts.
import { strict as assert } from 'node:assert';
import { mkdtempSync, rmSync } from 'node:fs';
import { request } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { ErrorCodes } from '@pgfleet/core';
import { prepareSecuredController } from '../testing/secured-controller.js';
import { startController, type RunningController } from '../server.js';

interface Reply {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

describe('web console over HTTPS', () => {
  let dir: string;
  let controller: RunningController;
  let caPem: string;
  const tokens: Record<string, string> = {};

  /** A request trusting only the fleet CA (so the console must present the controller's certificate). */
  const call = (method: string, path: string, body?: object, token?: string): Promise<Reply> =>
    new Promise((resolve, reject) => {
      const req = request(
        {
          host: 'localhost',
          port: controller.console!.port,
          path,
          method,
          ca: caPem,
          headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
        },
        (res) => {
          let text = '';
          res.on('data', (d: Buffer) => (text += d.toString('utf8')));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: text }));
        },
      );
      req.on('error', reject);
      req.end(body ? JSON.stringify(body) : undefined);
    });

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'pgfleet-console-it-'));
    const secured = await prepareSecuredController(dir, ['viewer', 'operator']);
    caPem = secured.caPem;
    Object.assign(tokens, secured.tokens);
    controller = await startController({
      listen: '127.0.0.1:0',
      catalogPath: secured.catalogPath,
      repoPath: '/srv/repo',
      heartbeatIntervalSeconds: 2,
      tlsDir: secured.tlsDir,
      consoleListen: '127.0.0.1:0',
    });
  });

  after(async () => {
    await controller?.close(100);
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test('the page is served over TLS with a strict CSP; it holds no data', async () => {
    assert.match(controller.console!.url, /^https:\/\/127\.0\.0\.1:\d+\/$/);
    const page = await call('GET', '/');
    assert.equal(page.status, 200);
    assert.match(page.body, /<script type="module" src="app.js">/);
    assert.match(String(page.headers['content-security-policy']), /default-src 'self'/);
    assert.equal(page.headers['x-frame-options'], 'DENY');
    const script = await call('GET', '/app.js');
    assert.equal(script.status, 200);
    assert.match(String(script.headers['content-type']), /text\/javascript/);
  });

  test('API calls need a known token; the role decides; answers are protobuf JSON', async () => {
    const none = await call('POST', '/api/listClusters', {});
    assert.equal(none.status, 401);
    assert.equal((JSON.parse(none.body) as { code: string }).code, ErrorCodes.Unauthenticated.code);
    assert.equal((await call('POST', '/api/session', {}, 'pgfa_unknown')).status, 401);

    const session = JSON.parse((await call('POST', '/api/session', {}, tokens.viewer)).body) as {
      role: string;
      allowed: string[];
    };
    assert.equal(session.role, 'viewer');
    assert.ok(session.allowed.includes('listClusters'));
    assert.ok(!session.allowed.includes('startBackup'), 'a viewer starts nothing');
    const operator = JSON.parse((await call('POST', '/api/session', {}, tokens.operator)).body) as {
      allowed: string[];
    };
    assert.ok(operator.allowed.includes('startBackup') && operator.allowed.includes('startRestore'));

    const listed = await call('POST', '/api/listClusters', {}, tokens.viewer);
    assert.equal(listed.status, 200);
    assert.deepEqual(JSON.parse(listed.body), {});

    const denied = await call('POST', '/api/startBackup', { cluster: 'shop' }, tokens.viewer);
    assert.equal(denied.status, 403);
    assert.equal((JSON.parse(denied.body) as { code: string }).code, ErrorCodes.PermissionDenied.code);
    // The operator passes the role check and reaches the handler, which knows no such cluster.
    const unknown = await call('POST', '/api/startBackup', { cluster: 'shop' }, tokens.operator);
    assert.equal(unknown.status, 404);
    assert.equal((JSON.parse(unknown.body) as { code: string }).code, ErrorCodes.UnknownCluster.code);
  });

  test('what the console does not use is not there, and bad requests say why', async () => {
    const token = tokens.operator;
    const createToken = await call('POST', '/api/createToken', { name: 'x', role: 'admin' }, token);
    assert.equal(createToken.status, 404);
    assert.equal((JSON.parse(createToken.body) as { code: string }).code, ErrorCodes.ConsoleUnknownCall.code);
    assert.equal((await call('GET', '/api/listClusters', undefined, token)).status, 404);
    assert.equal((await call('GET', '/etc/passwd')).status, 404);
    const bad = await call('POST', '/api/listBackups', { cluster: 7, nope: true }, token);
    assert.equal(bad.status, 400);
    assert.equal((JSON.parse(bad.body) as { code: string }).code, ErrorCodes.InvalidArgument.code);
  });

  test('a console port that is taken fails the start with PGF-7100', async () => {
    await assert.rejects(
      startController({
        listen: '127.0.0.1:0',
        catalogPath: join(dir, 'other.db'),
        repoPath: '/srv/repo',
        heartbeatIntervalSeconds: 2,
        insecure: true,
        consoleListen: `127.0.0.1:${controller.console!.port}`,
      }),
      (err: Error & { code?: string }) => err.code === ErrorCodes.ConsoleListenFailed.code,
    );
  });
});
