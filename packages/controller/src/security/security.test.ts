// Integration: the controller with --tls-dir on port 0 (temp SQLite catalog), real TLS clients:
// admin tokens and roles, enrollment (single use, expiry, cluster), agents with and without
// certificates. Also --require-auth without TLS, and the identity commands on a catalog.
import { strict as assert } from 'node:assert';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { ErrorCodes, PgfleetError } from '@pgfleet/core';
import { SqliteCatalogStore } from '@pgfleet/catalog';
import { bearerMetadata, clientTlsCredentials, createClient } from '@pgfleet/rpc';
import { createAgentCsr, createCertificateAuthority, signAgentCsr } from '@pgfleet/rpc/pki';
import { AdminService, EnrollmentService } from '@pgfleet/proto';
import { ENROLLMENT_TOKEN_PREFIX, hashToken, newToken } from './access.js';
import { caCommand, enrollTokenCommand, tokenCommand } from './commands.js';
import { startController, type RunningController } from '../server.js';
import { FakeAgent, closeFakeAgents } from '../testing/fake-agent.js';
import { rejectsWith } from '../testing/assertions.js';
import { captureIo, prepareSecuredController } from '../testing/secured-controller.js';

describe('controller with --tls-dir', () => {
  let dir: string;
  let controller: RunningController;
  let caPem: string;
  const tokens: Record<string, string> = {};
  let address: string;

  const admin = (token?: string) =>
    createClient(AdminService, address, {
      credentials: clientTlsCredentials({ caPem }),
      defaultDeadlineMs: 5000,
      ...(token ? { metadata: bearerMetadata(token) } : {}),
    });
  const enrollment = () =>
    createClient(EnrollmentService, address, { credentials: clientTlsCredentials({ caPem }), defaultDeadlineMs: 5000 });

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'pgfleet-security-it-'));
    const secured = await prepareSecuredController(dir, ['viewer', 'operator', 'admin']);
    caPem = secured.caPem;
    const catalog = secured.catalogPath;
    Object.assign(tokens, secured.tokens);
    controller = await startController({
      listen: '127.0.0.1:0',
      catalogPath: catalog,
      repoPath: '/srv/repo',
      heartbeatIntervalSeconds: 2,
      tlsDir: join(dir, 'tls'),
    });
    address = `localhost:${controller.port}`;
  });

  after(async () => {
    closeFakeAgents();
    await controller?.close(100);
    rmSync(dir, { recursive: true, force: true });
  });

  async function enrollToken(cluster: string, ttl = '1h'): Promise<string> {
    const io = captureIo();
    await enrollTokenCommand(cluster, { catalog: join(dir, 'catalog.db'), ttl }, io);
    return io.stdout.trim();
  }

  async function enrolledAgent(agentId: string, cluster: string): Promise<{ certPem: string; keyPem: string }> {
    const { csrPem, keyPem } = await createAgentCsr({ agentId, cluster });
    const c = enrollment();
    try {
      const res = await c.enroll({ token: await enrollToken(cluster), agentId, cluster, csrPem });
      assert.equal(res.caCertPem, caPem);
      return { certPem: res.certPem, keyPem };
    } finally {
      c.close();
    }
  }

  test('admin calls: no token or an unknown one is PGF-8001, the role decides the rest (PGF-8002)', async () => {
    const none = admin();
    const e = await rejectsWith(none.listClusters({}), 'Unauthenticated');
    assert.equal(e.code, ErrorCodes.Unauthenticated.code);
    await rejectsWith(admin('pgfa_bogus').listClusters({}), 'Unauthenticated');

    const viewer = admin(tokens.viewer);
    await viewer.listClusters({});
    await viewer.getPolicy({ cluster: '' });
    const denied = await rejectsWith(viewer.startRestore({ cluster: 'main', targetDir: '/x' }), 'PermissionDenied');
    assert.match(denied.message, /viewer.*StartRestore needs operator/);
    await rejectsWith(viewer.startBackup({ cluster: 'main' }), 'PermissionDenied');

    // Past the role check the handler runs (and finds no such cluster).
    const operator = admin(tokens.operator);
    await rejectsWith(operator.startBackup({ cluster: 'main' }), 'UnknownCluster');
    await rejectsWith(operator.setPolicy({ fleet: true, settings: {} }), 'PermissionDenied');
    await admin(tokens.admin).setPolicy({ fleet: true, settings: {} });
  });

  test('a revoked token stops working at once', async () => {
    const catalog = join(dir, 'catalog.db');
    const io = captureIo();
    await tokenCommand(['create'], { catalog, role: 'viewer', name: 'short-lived' }, io);
    const token = io.stdout.trim();
    await admin(token).listClusters({});
    await tokenCommand(['revoke', 'short-lived'], { catalog }, captureIo());
    await rejectsWith(admin(token).listClusters({}), 'Unauthenticated');
  });

  test('enrollment: the token is single-use, for its cluster only, and a bad request does not burn it', async () => {
    const { csrPem } = await createAgentCsr({ agentId: 'db1', cluster: 'main' });
    const token = await enrollToken('main');
    const c = enrollment();
    try {
      await rejectsWith(c.enroll({ token, agentId: 'db1', cluster: 'main', csrPem: 'garbage' }), 'InvalidArgument');
      await rejectsWith(
        c.enroll({ token: 'pgfe_unknown', agentId: 'db1', cluster: 'main', csrPem }),
        'EnrollmentFailed',
      );
      const res = await c.enroll({ token, agentId: 'db1', cluster: 'main', csrPem });
      assert.match(res.certPem, /BEGIN CERTIFICATE/);
      const again = await rejectsWith(c.enroll({ token, agentId: 'db9', cluster: 'main', csrPem }), 'EnrollmentFailed');
      assert.equal(again.code, ErrorCodes.EnrollmentFailed.code);
      assert.match(again.message, /already used by agent 'db1'/);
      // The token is checked before the request is even parsed: nothing is signed for a spent or unknown one.
      const spentGarbage = await rejectsWith(
        c.enroll({ token, agentId: 'db9', cluster: 'main', csrPem: 'garbage' }),
        'EnrollmentFailed',
      );
      assert.match(spentGarbage.message, /already used/);
      await rejectsWith(
        c.enroll({ token: 'pgfe_unknown', agentId: 'db1', cluster: 'main', csrPem: 'garbage' }),
        'EnrollmentFailed',
      );

      const forPayments = await enrollToken('payments');
      const wrong = await rejectsWith(
        c.enroll({ token: forPayments, agentId: 'db1', cluster: 'main', csrPem }),
        'EnrollmentFailed',
      );
      assert.match(wrong.message, /issued for cluster 'payments'/);
    } finally {
      c.close();
    }
  });

  test('enrollment: an expired token is refused', async () => {
    const store = await SqliteCatalogStore.open(join(dir, 'catalog.db'));
    const token = newToken(ENROLLMENT_TOKEN_PREFIX);
    await store.createEnrollmentToken(
      { tokenHash: hashToken(token), cluster: 'main', expiresAt: Date.now() - 1 },
      Date.now() - 3_600_000,
    );
    await store.close();
    const { csrPem } = await createAgentCsr({ agentId: 'db1', cluster: 'main' });
    const c = enrollment();
    try {
      const e = await rejectsWith(c.enroll({ token, agentId: 'db1', cluster: 'main', csrPem }), 'EnrollmentFailed');
      assert.match(e.message, /expired/);
    } finally {
      c.close();
    }
  });

  test('an enrolled agent connects; its certificate binds it to its cluster and agent id', async () => {
    const cert = await enrolledAgent('db1', 'main');
    const creds = () => ({ credentials: clientTlsCredentials({ caPem, ...cert }) });
    const agent = new FakeAgent(address, creds());
    agent.hello({ agentId: 'db1', cluster: 'main' });
    assert.equal((await agent.receive()).msg.case, 'welcome');
    const clusters = await admin(tokens.viewer).listClusters({});
    assert.deepEqual(
      clusters.clusters.map((c) => [c.name, c.agentConnected]),
      [['main', true]],
    );

    const other = new FakeAgent(address, creds());
    other.hello({ agentId: 'db1', cluster: 'payments' });
    const e = await other.ended();
    assert.ok(PgfleetError.is(e, 'PermissionDenied'), String(e));
    const impostor = new FakeAgent(address, creds());
    impostor.hello({ agentId: 'db2', cluster: 'main' });
    assert.ok(PgfleetError.is(await impostor.ended(), 'PermissionDenied'));
  });

  test('agents without a certificate, or with one from another CA, are refused with PGF-8001', async () => {
    const bare = new FakeAgent(address, { credentials: clientTlsCredentials({ caPem }) });
    bare.hello({ agentId: 'db3', cluster: 'main' });
    const e = await bare.ended();
    assert.ok(PgfleetError.is(e, 'Unauthenticated'), String(e));
    assert.equal((e as PgfleetError).code, ErrorCodes.Unauthenticated.code);

    const otherCa = await createCertificateAuthority({ commonName: 'rogue' });
    const { csrPem, keyPem } = await createAgentCsr({ agentId: 'db3', cluster: 'main' });
    const certPem = await signAgentCsr(otherCa, csrPem, { agentId: 'db3', cluster: 'main' });
    const rogue = new FakeAgent(address, { credentials: clientTlsCredentials({ caPem, certPem, keyPem }) });
    rogue.hello({ agentId: 'db3', cluster: 'main' });
    assert.ok(PgfleetError.is(await rogue.ended(), 'Unauthenticated'));
    assert.equal(
      await controller.context.store.getAgent({ cluster: 'main', agentId: 'db3' }),
      undefined,
      'nothing recorded about a refused agent',
    );
  });

  test('plain-text clients cannot talk to a TLS controller', async () => {
    const plain = createClient(AdminService, address, {
      defaultDeadlineMs: 2000,
      metadata: bearerMetadata(tokens.admin!),
    });
    await rejectsWith(plain.listClusters({}), 'ControllerUnreachable');
    plain.close();
  });
});

describe('controller with --require-auth and without TLS', () => {
  let dir: string;
  let controller: RunningController;
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'pgfleet-require-auth-'));
    controller = await startController({
      listen: '127.0.0.1:0',
      catalogPath: join(dir, 'catalog.db'),
      repoPath: '/srv/repo',
      heartbeatIntervalSeconds: 2,
      insecure: true,
      requireAuth: true,
    });
  });
  after(async () => {
    closeFakeAgents();
    await controller?.close(100);
    rmSync(dir, { recursive: true, force: true });
  });

  test('admin calls need a token; agents connect as before; enrollment needs --tls-dir', async () => {
    await rejectsWith(
      createClient(AdminService, controller.address, { defaultDeadlineMs: 5000 }).listClusters({}),
      'Unauthenticated',
    );
    const io = captureIo();
    await tokenCommand(['create'], { catalog: join(dir, 'catalog.db'), role: 'viewer', name: 'v' }, io);
    await createClient(AdminService, controller.address, {
      defaultDeadlineMs: 5000,
      metadata: bearerMetadata(io.stdout.trim()),
    }).listClusters({});
    const agent = new FakeAgent(controller.address);
    agent.hello();
    assert.equal((await agent.receive()).msg.case, 'welcome');
    const e = await rejectsWith(
      createClient(EnrollmentService, controller.address, { defaultDeadlineMs: 5000 }).enroll({
        token: 'x',
        agentId: 'a',
        cluster: 'c',
        csrPem: 'x',
      }),
      'EnrollmentFailed',
    );
    assert.match(e.message, /without --tls-dir/);
  });
});

describe('identity commands', () => {
  test('ca init writes the CA and server certificate, keys 0600, and keeps the CA when run again', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'pgfleet-ca-init-'));
    try {
      const tls = join(dir, 'tls');
      const io = captureIo();
      assert.equal(await caCommand('init', { dir: tls, hostname: 'localhost, 127.0.0.1' }, io), 0);
      assert.match(io.stderr, /created the fleet CA/);
      for (const f of ['ca.key', 'server.key']) assert.equal(statSync(join(tls, f)).mode & 0o777, 0o600, f);
      assert.equal(statSync(tls).mode & 0o777, 0o700);
      const ca = readFileSync(join(tls, 'ca.crt'), 'utf8');
      const server = readFileSync(join(tls, 'server.crt'), 'utf8');
      const io2 = captureIo();
      await caCommand('init', { dir: tls, hostname: 'ctl.example' }, io2);
      assert.match(io2.stderr, /kept the existing fleet CA/);
      assert.equal(readFileSync(join(tls, 'ca.crt'), 'utf8'), ca);
      assert.notEqual(readFileSync(join(tls, 'server.crt'), 'utf8'), server);
      await rejectsWith(caCommand('rotate', { dir: tls }, captureIo()), 'InvalidArgument');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('tokens are printed once on stdout and stored only as hashes', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'pgfleet-token-cmd-'));
    try {
      const catalog = join(dir, 'catalog.db');
      const a = captureIo();
      await tokenCommand(['create'], { catalog, role: 'operator', name: 'ci' }, a);
      const e = captureIo(1_000_000);
      await enrollTokenCommand('main', { catalog, ttl: '30m' }, e);
      const adminToken = a.stdout.trim();
      const enrollToken = e.stdout.trim();
      assert.match(adminToken, /^pgfa_/);
      assert.match(enrollToken, /^pgfe_/);
      assert.ok(!a.stderr.includes(adminToken) && !e.stderr.includes(enrollToken));
      await rejectsWith(
        tokenCommand(['create'], { catalog, role: 'operator', name: 'ci' }, captureIo()),
        'InvalidArgument',
      );
      await rejectsWith(tokenCommand(['create'], { catalog, name: 'x' }, captureIo()), 'InvalidArgument');

      const store = await SqliteCatalogStore.open(catalog);
      try {
        const [t] = await store.listAdminTokens();
        assert.equal(t?.tokenHash, hashToken(adminToken));
        const [et] = await store.listEnrollmentTokens();
        assert.deepEqual(
          [et?.tokenHash, et?.cluster, et?.expiresAt],
          [hashToken(enrollToken), 'main', 1_000_000 + 1_800_000],
        );
      } finally {
        await store.close();
      }
      // Neither token appears anywhere in the catalog file.
      const raw = readFileSync(catalog);
      assert.equal(raw.includes(adminToken), false);
      assert.equal(raw.includes(enrollToken), false);

      const list = captureIo();
      await tokenCommand(['list'], { catalog, output: 'json' }, list);
      assert.deepEqual(
        (JSON.parse(list.stdout) as { name: string; role: string }[]).map((t) => [t.name, t.role]),
        [['ci', 'operator']],
      );
      await rejectsWith(tokenCommand(['revoke', 'nobody'], { catalog }, captureIo()), 'InvalidArgument');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
