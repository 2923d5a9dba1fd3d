/**
 * Agent identity and admin access, end to end with real processes: `pgfleet-controller ca init`
 * and `enroll-token`, a controller run with --tls-dir, an agent that enrolls on its first start
 * and connects over mutual TLS, agents that must be refused (reused token, no certificate, a
 * certificate from another CA), and the CLI with viewer, operator and no tokens.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { copyFile, chmod, mkdir, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { chownToPostgres, makeTempDir } from '@pgfleet/testkit';
import { createAgentCsr, createCertificateAuthority, signAgentCsr } from '@pgfleet/rpc/pki';
import { AGENT_BIN, CLI_BIN, CONTROLLER_BIN, runNode, startFleet, type Fleet, type RunResult } from './harness.js';

const CLUSTER = 'vault';

describe('mutual TLS agents and admin tokens', { timeout: 600_000 }, () => {
  let fleet: Fleet;
  let dir: string;
  let caCert: string;
  const tokens: Record<string, string> = {};

  const controllerCmd = async (...args: string[]): Promise<string> => {
    const r = await runNode(CONTROLLER_BIN, args, { timeoutMs: 120_000 });
    assert.equal(r.code, 0, `pgfleet-controller ${args.join(' ')}: ${r.stderr}`);
    return r.stdout.trim();
  };

  /** `pgfleet-agent run` for this cluster that is expected to exit (refused), as the postgres user. */
  const agentOnce = (agentId: string, extra: string[]): Promise<RunResult> =>
    runNode(
      AGENT_BIN,
      [
        'run',
        '--controller',
        fleet.controllerAddress,
        '--cluster',
        CLUSTER,
        '--agent-id',
        agentId,
        '--pgdata',
        fleet.pg.dataDir,
        '--pg-host',
        '127.0.0.1',
        '--pg-port',
        String(fleet.pg.port),
        '--socket',
        join(dir, `${agentId}.sock`),
        ...extra,
      ],
      { asPg: true, timeoutMs: 120_000 },
    );

  /** The CLI with the CA but without PGFLEET_TOKEN (the fleet's default env carries the admin token). */
  const cliWithout = (args: string[], env: Record<string, string> = {}) =>
    runNode(CLI_BIN, args, {
      env: { PGFLEET_CONTROLLER: fleet.controllerAddress, PGFLEET_CA_CERT: caCert, ...env },
      timeoutMs: 120_000,
    });

  before(async () => {
    dir = await makeTempDir('security');
    const catalog = join(dir, 'catalog.db');
    await controllerCmd('ca', 'init', '--dir', join(dir, 'tls'));
    // The controller's TLS directory is its own (0700); agents and admins get a copy of ca.crt.
    caCert = join(dir, 'ca.crt');
    await copyFile(join(dir, 'tls', 'ca.crt'), caCert);
    await chmod(caCert, 0o644);
    for (const role of ['viewer', 'operator', 'admin'])
      tokens[role] = await controllerCmd(
        'token',
        'create',
        '--catalog',
        catalog,
        '--role',
        role,
        '--name',
        `e2e-${role}`,
      );
    fleet = await startFleet({
      dir,
      cluster: CLUSTER,
      startAgent: false,
      controllerArgs: ['--tls-dir', join(dir, 'tls')],
      cliEnv: { PGFLEET_TOKEN: tokens.admin!, PGFLEET_CA_CERT: caCert },
    });
    await fleet.pg.query('CREATE TABLE secrets AS SELECT g AS id FROM generate_series(1, 100) g');
  });

  after(async () => {
    await fleet?.stop();
  });

  let enrollToken = '';

  it('an agent enrolls with a one-time token on first start and connects over mutual TLS', async () => {
    enrollToken = await controllerCmd('enroll-token', CLUSTER, '--catalog', join(dir, 'catalog.db'), '--ttl', '10m');
    assert.match(enrollToken, /^pgfe_/);
    const tlsDir = join(dir, 'agent-tls');
    const agent = await fleet.startAgent(['--tls-dir', tlsDir, '--enroll-token', enrollToken, '--ca-cert', caCert]);
    assert.match(await agent.log(), /enrolled with the controller/);
    for (const f of ['agent.key', 'agent.crt']) assert.equal((await stat(join(tlsDir, f))).mode & 0o777, 0o600, f);
    const clusters = JSON.parse((await fleet.cli('clusters', '--output', 'json')).stdout) as {
      name: string;
      agentConnected?: boolean;
    }[];
    assert.deepEqual(
      clusters.map((c) => [c.name, c.agentConnected]),
      [[CLUSTER, true]],
    );
  });

  it('the enrollment token cannot be used a second time', async () => {
    const r = await agentOnce('second', [
      '--tls-dir',
      join(dir, 'second-tls'),
      '--enroll-token',
      enrollToken,
      '--ca-cert',
      caCert,
    ]);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /PGF-8003 the enrollment token was already used by agent/);
  });

  it('an agent without a certificate is refused with PGF-8001', async () => {
    const r = await agentOnce('bare', ['--ca-cert', caCert]);
    assert.notEqual(r.code, 0, r.stderr);
    assert.match(r.stderr, /PGF-8001 agents must present a client certificate/);
  });

  it('an agent with a certificate from another CA is refused with PGF-8001', async () => {
    const rogueCa = await createCertificateAuthority({ commonName: 'another fleet' });
    const { csrPem, keyPem } = await createAgentCsr({ agentId: 'rogue', cluster: CLUSTER });
    const certPem = await signAgentCsr(rogueCa, csrPem, { agentId: 'rogue', cluster: CLUSTER });
    const rogueDir = join(dir, 'rogue-tls');
    await mkdir(rogueDir, { mode: 0o700 });
    await writeFile(join(rogueDir, 'agent.key'), keyPem, { mode: 0o600 });
    await writeFile(join(rogueDir, 'agent.crt'), certPem, { mode: 0o600 });
    await chownToPostgres(rogueDir, { recursive: true });
    const r = await agentOnce('rogue', ['--tls-dir', rogueDir, '--ca-cert', caCert]);
    assert.notEqual(r.code, 0, r.stderr);
    assert.match(r.stderr, /PGF-8001/);
    // The enrolled agent is still the only one the controller knows.
    const clusters = JSON.parse((await fleet.cli('clusters', '--output', 'json')).stdout) as {
      name: string;
      agentConnected?: boolean;
    }[];
    assert.deepEqual(
      clusters.map((c) => [c.name, c.agentConnected]),
      [[CLUSTER, true]],
    );
  });

  it('an operator token runs a backup', async () => {
    const r = await cliWithout(['backup', CLUSTER, '--wait'], { PGFLEET_TOKEN: tokens.operator! });
    assert.equal(r.code, 0, `${r.stderr}\n${await fleet.logs()}`);
  });

  it('a viewer token lists backups but cannot start a restore (PGF-8002)', async () => {
    const list = await cliWithout(['backups', CLUSTER, '--output', 'json', '--token', tokens.viewer!]);
    assert.equal(list.code, 0, list.stderr);
    assert.equal((JSON.parse(list.stdout) as unknown[]).length, 1);
    const tokenFile = join(dir, 'viewer.token');
    await writeFile(tokenFile, `${tokens.viewer}\n`, { mode: 0o600 });
    const restore = await cliWithout([
      'restore',
      CLUSTER,
      '--to',
      join(dir, 'restored'),
      '--target',
      'latest',
      '--token-file',
      tokenFile,
    ]);
    assert.notEqual(restore.code, 0);
    assert.match(restore.stderr, /PGF-8002 .*role viewer/);
  });

  it('no token, or a wrong one, is PGF-8001 with a non-zero exit', async () => {
    const none = await cliWithout(['clusters']);
    assert.equal(none.code, 7, none.stderr);
    assert.match(none.stderr, /PGF-8001/);
    const wrong = await cliWithout(['backups', CLUSTER, '--token', 'pgfa_not-a-real-token']);
    assert.equal(wrong.code, 7);
    assert.match(wrong.stderr, /PGF-8001 the bearer token is not known/);
  });
});
