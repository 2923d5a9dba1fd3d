/**
 * Agent identity and admin access, end to end with real processes: `pgfleet-controller ca init`
 * and `enroll-token`, a controller run with --tls-dir, an agent that enrolls on its first start
 * and connects over mutual TLS, agents that must be refused (reused token, no certificate, a
 * certificate from another CA), and the CLI with viewer, operator and no tokens.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { copyFile, chmod, mkdir, readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { chownToPostgres, makeTempDir } from '@pgfleet/testkit';
import { createAgentCsr, createCertificateAuthority, signAgentCsr } from '@pgfleet/rpc/pki';
import { ErrorCodes } from '@pgfleet/core';
import {
  AGENT_BIN,
  CLI_BIN,
  CONTROLLER_BIN,
  agentRunArgs,
  runNode,
  startFleet,
  waitFor,
  type Fleet,
  type RunResult,
} from './harness.js';

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
      agentRunArgs(fleet.controllerAddress, CLUSTER, fleet.pg, [
        '--agent-id',
        agentId,
        '--socket',
        join(dir, `${agentId}.sock`),
        ...extra,
      ]),
      { asPg: true, timeoutMs: 120_000 },
    );

  /** `pgfleet clusters` as [name, agent connected] pairs. */
  const clustersConnected = async (): Promise<[string, boolean | undefined][]> =>
    (
      JSON.parse((await fleet.cli('clusters', '--output', 'json')).stdout) as {
        name: string;
        agentConnected?: boolean;
      }[]
    ).map((c) => [c.name, c.agentConnected]);

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

  /** A secret in a file only the postgres user (the agent's) can read, as an operator would leave it. */
  const secretFile = async (name: string, secret: string): Promise<string> => {
    const path = join(dir, name);
    await writeFile(path, `${secret}\n`, { mode: 0o600 });
    await chownToPostgres(path);
    return path;
  };

  it('a secret given as a flag is refused (PGF-1021) without echoing it, naming the environment variable and the file option', async () => {
    const flagged = await agentOnce('flagged', [
      '--tls-dir',
      join(dir, 'flagged-tls'),
      '--enroll-token',
      'pgfe_seen-in-ps',
    ]);
    assert.equal(flagged.code, 2, flagged.stderr);
    assert.match(flagged.stderr, new RegExp(`${ErrorCodes.SecretOnCommandLine.code} --enroll-token is a secret`));
    assert.match(flagged.stderr, /PGFLEET_ENROLL_TOKEN, --enroll-token-file/);
    assert.ok(!flagged.stderr.includes('pgfe_seen-in-ps'));
    const cli = await cliWithout(['clusters', '--token', 'pgfa_seen-in-ps']);
    assert.equal(cli.code, 2, cli.stderr);
    assert.match(cli.stderr, /PGFLEET_TOKEN, --token-file/);
    assert.ok(!cli.stderr.includes('pgfa_seen-in-ps'));
  });

  it('an agent enrolls with a one-time token on first start and connects over mutual TLS', async () => {
    enrollToken = await controllerCmd('enroll-token', CLUSTER, '--catalog', join(dir, 'catalog.db'), '--ttl', '10m');
    assert.match(enrollToken, /^pgfe_/);
    const tlsDir = join(dir, 'agent-tls');
    const tokenFile = await secretFile('enroll.token', enrollToken);
    const agent = await fleet.startAgent(['--tls-dir', tlsDir, '--enroll-token-file', tokenFile, '--ca-cert', caCert]);
    assert.match(await agent.log(), /enrolled with the controller/);
    for (const f of ['agent.key', 'agent.crt']) assert.equal((await stat(join(tlsDir, f))).mode & 0o777, 0o600, f);
    assert.deepEqual(await clustersConnected(), [[CLUSTER, true]]);
  });

  it('the enrollment token cannot be used a second time', async () => {
    const r = await agentOnce('second', [
      '--tls-dir',
      join(dir, 'second-tls'),
      '--enroll-token-file',
      join(dir, 'enroll.token'),
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
    assert.deepEqual(await clustersConnected(), [[CLUSTER, true]]);
  });

  it('an operator token runs a backup', async () => {
    const r = await cliWithout(['backup', CLUSTER, '--wait'], { PGFLEET_TOKEN: tokens.operator! });
    assert.equal(r.code, 0, `${r.stderr}\n${await fleet.logs()}`);
  });

  it('a viewer token lists backups but cannot start a restore (PGF-8002)', async () => {
    const list = await cliWithout(['backups', CLUSTER, '--output', 'json'], { PGFLEET_TOKEN: tokens.viewer! });
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
    const wrong = await cliWithout(['backups', CLUSTER], { PGFLEET_TOKEN: 'pgfa_not-a-real-token' });
    assert.equal(wrong.code, 7);
    assert.match(wrong.stderr, /PGF-8001 the bearer token is not known/);
  });

  it("no secret of the test is in any process's command line, any log, the catalog or the events", async () => {
    // A long-running CLI (events --follow) with its token, alive while the command lines are read.
    const follower = spawn(process.execPath, [CLI_BIN, 'events', '--follow'], {
      env: {
        ...process.env,
        PGFLEET_CONTROLLER: fleet.controllerAddress,
        PGFLEET_CA_CERT: caCert,
        PGFLEET_TOKEN: tokens.viewer!,
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let followed = '';
    follower.stdout.on('data', (d: Buffer) => (followed += d.toString()));
    follower.stderr.on('data', (d: Buffer) => (followed += d.toString()));
    try {
      await waitFor('events --follow to print', async () => followed.length > 0);
      const secrets = { ...tokens, enroll: enrollToken };
      const commandLines: string[] = [];
      for (const pid of await readdir('/proc')) {
        if (!/^\d+$/.test(pid)) continue;
        const cmdline = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
        if (cmdline) commandLines.push(cmdline.replaceAll('\0', ' '));
      }
      assert.ok(
        commandLines.some((c) => c.includes(AGENT_BIN) && c.includes(' run ')),
        'the agent daemon was seen',
      );
      assert.ok(
        commandLines.some((c) => c.includes(CLI_BIN) && c.includes('--follow')),
        'the CLI was seen',
      );
      const logs = await fleet.logs();
      // SQLite keeps recent writes in its -wal file: both are the catalog.
      const catalog = Buffer.concat(
        await Promise.all(
          ['catalog.db', 'catalog.db-wal'].map((f) => readFile(join(dir, f)).catch(() => Buffer.alloc(0))),
        ),
      );
      const events = await cliWithout(['events', '--output', 'json'], { PGFLEET_TOKEN: tokens.viewer! });
      assert.equal(events.code, 0, events.stderr);
      for (const [name, secret] of Object.entries(secrets)) {
        assert.ok(!commandLines.some((c) => c.includes(secret)), `the ${name} token is in a command line`);
        assert.ok(!logs.includes(secret), `the ${name} token is in a log`);
        assert.ok(!catalog.includes(secret), `the ${name} token is in the catalog`);
        assert.ok(!events.stdout.includes(secret) && !followed.includes(secret), `the ${name} token is in the events`);
      }
    } finally {
      follower.kill('SIGTERM');
    }
  });
});
