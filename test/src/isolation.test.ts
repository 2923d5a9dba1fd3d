/**
 * Isolation between clusters, end to end (issue 13 part 3): a real controller with --tls-dir, a
 * real cluster `bank` (PostgreSQL, its enrolled agent, backups in a posix repository) and hosts
 * that attack it with certificates from the fleet's own CA:
 *  - an agent of cluster `shop` that picks bank's agent id is shop's own agent (an agent is its
 *    cluster and its id): its certificate does not speak for bank, it does not push bank's agent
 *    off its session, fail or receive its jobs, and an id taken in shop first stays free in bank;
 *  - `shop`'s own agent cannot report progress on, cancel, complete or ask a WAL switch for bank's
 *    job: bank's agent finishes it;
 *  - a compromised host of bank itself cannot plant a backup: the forged result of the issue
 *    (label `../../etc/fake-F`, stop LSN FF/FFFFFFFF, a stop time a year ahead, another system)
 *    and a plausible one whose manifest is not in the repository both fail with the refusal code,
 *    ListBackups is unchanged, and `--target latest` restores the real latest backup.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { copyFile, chmod, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { MessageInitShape } from '@bufbuild/protobuf';
import { timestampFromMs } from '@bufbuild/protobuf/wkt';
import { backupLabel, ErrorCodes, PgfleetError, sleep } from '@pgfleet/core';
import {
  AdminService,
  AgentService,
  BackupType,
  EnrollmentService,
  JobState,
  ServerRole,
  type BackupInfoSchema,
  type ConnectRequestSchema,
  type ConnectResponse,
} from '@pgfleet/proto';
import { bearerMetadata, clientTlsCredentials, createClient } from '@pgfleet/rpc';
import { chownToPostgres, makeTempDir } from '@pgfleet/testkit';
import { createAgentCsr, signAgentCsr } from '@pgfleet/rpc/pki';
import { runNode, CONTROLLER_BIN, startFleet, waitFor, type Fleet } from './harness.js';

const BANK = 'bank';
const BANK_AGENT = 'bank-db1';
const SHOP = 'shop';

/** A host speaking the agent protocol itself, with a certificate the fleet CA signed for (cluster, agent id). */
class HostileAgent {
  private readonly client;
  readonly stream;
  private readonly incoming: AsyncIterator<ConnectResponse>;

  constructor(address: string, credentials: ReturnType<typeof clientTlsCredentials>) {
    this.client = createClient(AgentService, address, { credentials, unavailableError: 'ControllerUnreachable' });
    this.stream = this.client.connect();
    this.incoming = this.stream[Symbol.asyncIterator]();
  }

  send(msg: MessageInitShape<typeof ConnectRequestSchema>['msg']): void {
    this.stream.send({ msg });
  }

  hello(cluster: string, agentId: string, systemIdentifier: string): void {
    this.send({
      case: 'hello',
      value: { agentId, cluster, hostname: 'evil.example', agentVersion: '0.1.0', pgVersion: 170000, systemIdentifier },
    });
  }

  /** The next message, or the error the stream ended with (a refusal). */
  async next(timeoutMs = 30_000): Promise<ConnectResponse | Error | undefined> {
    let timer: NodeJS.Timeout | undefined;
    try {
      const next = await Promise.race([
        this.incoming.next(),
        new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error('no message')), timeoutMs))),
      ]);
      return next.done ? undefined : next.value;
    } catch (err) {
      return err as Error;
    } finally {
      clearTimeout(timer);
    }
  }

  close(): void {
    this.stream.end();
    this.client.close();
  }
}

describe('isolation between clusters', { timeout: 900_000 }, () => {
  let fleet: Fleet;
  let dir: string;
  let ca: { certPem: string; keyPem: string };
  let bankSystem = '';
  const hostile: HostileAgent[] = [];

  let admin: ReturnType<typeof createClient<typeof AdminService>>;

  const backups = async () =>
    (await admin.listBackups({ cluster: BANK })).backups.map((b) => ({ label: b.label, stopLsn: b.stopLsn }));
  const job = async (id: string) => (await admin.getJob({ id })).job!;
  const startBackup = async (): Promise<string> => (await admin.startBackup({ cluster: BANK })).job!.id;
  const finished = (id: string) =>
    waitFor(`job ${id} to end`, async () => {
      const j = await job(id);
      return [JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED].includes(j.state) ? j : undefined;
    });

  /** A certificate of the fleet CA for (cluster, agent id), as enrollment would have issued it. */
  const hostileAgent = async (cluster: string, agentId: string): Promise<HostileAgent> => {
    const { csrPem, keyPem } = await createAgentCsr({ agentId, cluster });
    const certPem = await signAgentCsr(ca, csrPem, { agentId, cluster });
    const a = new HostileAgent(fleet.controllerAddress, clientTlsCredentials({ caPem: ca.certPem, certPem, keyPem }));
    hostile.push(a);
    return a;
  };

  before(async () => {
    dir = await makeTempDir('isolation');
    const controllerCmd = async (...args: string[]): Promise<string> => {
      const r = await runNode(CONTROLLER_BIN, args, { timeoutMs: 120_000 });
      assert.equal(r.code, 0, `pgfleet-controller ${args.join(' ')}: ${r.stderr}`);
      return r.stdout.trim();
    };
    await controllerCmd('ca', 'init', '--dir', join(dir, 'tls'));
    const caCert = join(dir, 'ca.crt');
    await copyFile(join(dir, 'tls', 'ca.crt'), caCert);
    await chmod(caCert, 0o644);
    ca = {
      certPem: await readFile(join(dir, 'tls', 'ca.crt'), 'utf8'),
      keyPem: await readFile(join(dir, 'tls', 'ca.key'), 'utf8'),
    };
    const catalog = join(dir, 'catalog.db');
    const adminToken = await controllerCmd('token', 'create', '--catalog', catalog, '--role', 'admin', '--name', 'e2e');
    fleet = await startFleet({
      dir,
      cluster: BANK,
      startAgent: false,
      controllerArgs: ['--tls-dir', join(dir, 'tls')],
      cliEnv: { PGFLEET_TOKEN: adminToken, PGFLEET_CA_CERT: caCert },
    });
    admin = createClient(AdminService, fleet.controllerAddress, {
      credentials: clientTlsCredentials({ caPem: ca.certPem }),
      metadata: bearerMetadata(adminToken),
      defaultDeadlineMs: 60_000,
    });
    const enroll = await controllerCmd('enroll-token', BANK, '--catalog', catalog, '--ttl', '10m');
    // Secrets never on a command line: the agent (the postgres OS user) reads it from a 0600 file.
    const tokenFile = join(dir, 'enroll.token');
    await writeFile(tokenFile, `${enroll}\n`, { mode: 0o600 });
    await chownToPostgres(tokenFile);
    await fleet.startAgent([
      '--agent-id',
      BANK_AGENT,
      '--tls-dir',
      join(dir, 'bank-tls'),
      '--enroll-token-file',
      tokenFile,
      '--ca-cert',
      caCert,
    ]);
    bankSystem = (
      await fleet.pg.query<{ id: string }>('SELECT system_identifier::text AS id FROM pg_control_system()')
    )[0]!.id;
    await fleet.pg.query('CREATE TABLE accounts AS SELECT g AS id FROM generate_series(1, 1000) g');
    const first = await finished(await startBackup());
    assert.equal(first.state, JobState.SUCCEEDED, first.error?.message);
  });

  after(async () => {
    for (const a of hostile) a.close();
    admin?.close();
    await fleet?.stop();
  });

  /** The hosts ListClusters shows for a cluster: [agent id, connected]. */
  const hosts = async (cluster: string): Promise<[string, boolean][]> => {
    const clusters = JSON.parse((await fleet.cli('clusters', '--output', 'json')).stdout) as {
      name: string;
      hosts?: { agentId: string; connected?: boolean }[];
    }[];
    return (clusters.find((c) => c.name === cluster)?.hosts ?? []).map((h) => [h.agentId, h.connected === true]);
  };

  it("enrollment for another cluster with bank's agent id signs a certificate for that cluster only", async () => {
    const token = (
      await runNode(CONTROLLER_BIN, ['enroll-token', SHOP, '--catalog', join(dir, 'catalog.db'), '--ttl', '10m'], {
        timeoutMs: 120_000,
      })
    ).stdout.trim();
    const { csrPem, keyPem } = await createAgentCsr({ agentId: BANK_AGENT, cluster: SHOP });
    const client = createClient(EnrollmentService, fleet.controllerAddress, {
      credentials: clientTlsCredentials({ caPem: ca.certPem }),
    });
    try {
      // An agent is (cluster, agent id): shop may have an agent of that id too.
      const { certPem } = await client.enroll({ token, agentId: BANK_AGENT, cluster: SHOP, csrPem });
      // Its certificate speaks for shop's agent only: as bank's agent it is refused.
      const asBank = new HostileAgent(
        fleet.controllerAddress,
        clientTlsCredentials({ caPem: ca.certPem, certPem, keyPem }),
      );
      hostile.push(asBank);
      asBank.hello(BANK, BANK_AGENT, bankSystem);
      const answer = await asBank.next();
      assert.ok(PgfleetError.is(answer, 'PermissionDenied'), `the certificate of shop got ${String(answer)}`);
    } finally {
      client.close();
    }
  });

  it("an agent of shop with bank's agent id is shop's own: bank's agent keeps its session, its jobs and its row", async () => {
    const running = await startBackup();
    const namesake = await hostileAgent(SHOP, BANK_AGENT);
    namesake.hello(SHOP, BANK_AGENT, '6000000000000000001');
    assert.equal(((await namesake.next()) as ConnectResponse).msg?.case, 'welcome');
    // Its Hello reconciled only its own jobs (shop's): bank's running backup finishes on bank's agent.
    const done = await finished(running);
    assert.equal(done.state, JobState.SUCCEEDED, done.error?.message);
    assert.deepEqual(await hosts(BANK), [[BANK_AGENT, true]]);
    assert.deepEqual(await hosts(SHOP), [[BANK_AGENT, true]]);
    // Its end disconnects shop's agent only.
    namesake.close();
    await waitFor('shop namesake disconnected', async () =>
      (await hosts(SHOP)).some(([, connected]) => !connected) ? true : undefined,
    );
    assert.deepEqual(await hosts(BANK), [[BANK_AGENT, true]]);
    const next = await finished(await startBackup());
    assert.equal(next.state, JobState.SUCCEEDED, next.error?.message);
  });

  it("an id shop's host took first does not keep bank's next agent out (no squatting)", async () => {
    const squatter = await hostileAgent(SHOP, 'bank-db2');
    squatter.hello(SHOP, 'bank-db2', '6000000000000000001');
    assert.equal(((await squatter.next()) as ConnectResponse).msg?.case, 'welcome');
    const second = await hostileAgent(BANK, 'bank-db2');
    second.hello(BANK, 'bank-db2', bankSystem);
    assert.equal(((await second.next()) as ConnectResponse).msg?.case, 'welcome');
    assert.deepEqual(await hosts(BANK), [
      [BANK_AGENT, true],
      ['bank-db2', true],
    ]);
    assert.ok((await hosts(SHOP)).some(([id, connected]) => id === 'bank-db2' && connected));
    second.close();
    squatter.close();
    await waitFor('bank-db2 disconnected', async () =>
      (await hosts(BANK)).some(([id, connected]) => id === 'bank-db2' && !connected) ? true : undefined,
    );
  });

  it("shop's own agent cannot report on, cancel or complete bank's job", async () => {
    const shop = await hostileAgent(SHOP, 'shop-db1');
    shop.hello(SHOP, 'shop-db1', '6000000000000000001');
    const welcome = await shop.next();
    assert.equal((welcome as ConnectResponse).msg?.case, 'welcome', String(welcome));
    const before = await backups();
    const target = await startBackup();
    // A well-formed label, so the result reaches the ownership check (a path is refused at the wire).
    const forged = forgedBackup('20260101-000000F', 'FF/FFFFFFFF', Date.now() + 365 * 86_400_000, '1');
    shop.send({ case: 'progress', value: { jobId: target, phase: 'copy', bytesDone: 1n, bytesTotal: 2n } });
    shop.send({ case: 'walSwitch', value: { jobId: target, lsn: '0/1000000' } });
    shop.send({ case: 'result', value: { jobId: target, state: JobState.CANCELLED } });
    shop.send({
      case: 'result',
      value: { jobId: target, state: JobState.SUCCEEDED, result: { case: 'backup', value: forged } },
    });
    const done = await finished(target);
    assert.equal(done.state, JobState.SUCCEEDED, done.error?.message);
    const after = await backups();
    assert.equal(after.length, before.length + 1);
    assert.ok(after.every((b) => /^\d{8}-\d{6}[FDI]$/.test(b.label) && b.stopLsn !== 'FF/FFFFFFFF'));
    // Each refusal was logged with the code and the job.
    const log = await readFile(join(dir, 'controller.log'), 'utf8');
    const refusals = log.split('\n').filter((l) => l.includes(target) && l.includes(ErrorCodes.JobNotOwned.code));
    assert.ok(refusals.length >= 4, `refusals logged: ${refusals.length}\n${refusals.join('\n')}`);
  });

  it("a compromised host of bank cannot plant a backup; --target latest restores bank's real latest", async () => {
    const real = await backups();
    const latest = real.at(-1)!;
    await fleet.agent!.stop();
    await waitFor('bank agent gone', async () => !(await fleet.agentConnected()));
    const rogue = await hostileAgent(BANK, 'bank-rogue');
    rogue.hello(BANK, 'bank-rogue', bankSystem);
    assert.equal(((await rogue.next()) as ConnectResponse).msg?.case, 'welcome');
    const position = (
      await fleet.pg.query<{ lsn: string; wal: string }>(
        'SELECT pg_current_wal_lsn()::text AS lsn, pg_walfile_name(pg_current_wal_lsn()) AS wal',
      )
    )[0]!;
    rogue.send({
      case: 'heartbeat',
      value: { pgUp: true, currentLsn: position.lsn, role: ServerRole.PRIMARY, timeline: 1 },
    });

    const now = Date.now();
    const yearAhead = now + 365 * 86_400_000;
    const succeed = (jobId: string, forged: MessageInitShape<typeof BackupInfoSchema>) =>
      rogue.send({
        case: 'result',
        value: { jobId, state: JobState.SUCCEEDED, result: { case: 'backup', value: forged } },
      });
    const dispatched = async (): Promise<string> => {
      const id = await startBackup();
      const sent = await rogue.next();
      assert.equal((sent as ConnectResponse).msg?.case, 'job', String(sent));
      return id;
    };
    const refused = async (id: string) => {
      const done = await finished(id);
      assert.equal(done.state, JobState.FAILED);
      assert.equal(done.error?.code, ErrorCodes.ReportedBackupRefused.code, done.error?.message);
    };

    // The issue's forgery: a path for a label is refused at the wire (the message is dropped, the
    // job still runs); the same lie under a well-formed label fails the job on every other count.
    const first = await dispatched();
    succeed(first, forgedBackup('../../etc/fake-F', 'FF/FFFFFFFF', yearAhead, '1'));
    await sleep(1500); // the controller has read and dropped it by now
    assert.equal((await job(first)).state, JobState.DISPATCHED, 'nothing of the dropped result was applied');
    const issue = forgedBackup(backupLabel(new Date(now), 'full'), 'FF/FFFFFFFF', yearAhead, '1');
    succeed(first, issue);
    await refused(first);
    const why = (await job(first)).error!.message;
    for (const part of [/system identifier 1 is not the cluster's/, /FF\/FFFFFFFF is beyond/, /in the future/])
      assert.match(why, part);

    // Plausible in every fact, but no such backup in the repository.
    const second = await dispatched();
    succeed(second, forgedBackup(backupLabel(new Date(now), 'full'), position.lsn, now, bankSystem, position.wal));
    await refused(second);
    assert.match((await job(second)).error!.message, /no manifest/);
    assert.deepEqual(await backups(), real, 'ListBackups unchanged');
    rogue.close();

    await fleet.startAgent([
      '--agent-id',
      BANK_AGENT,
      '--tls-dir',
      join(dir, 'bank-tls'),
      '--ca-cert',
      join(dir, 'ca.crt'),
    ]);
    const to = join(dir, 'restored');
    const r = await fleet.cli('restore', BANK, '--to', to, '--target', 'latest', '--wait');
    assert.equal(r.code, 0, `${r.stdout}\n${r.stderr}\n${await fleet.logs()}`);
    assert.match(await readFile(join(to, 'backup_label'), 'utf8'), new RegExp(`LABEL: ${latest.label}`));
  });

  /** A BackupInfo as an agent reports it. */
  function forgedBackup(
    label: string,
    stopLsn: string,
    stopTime: number,
    systemIdentifier: string,
    wal = '000000010000000000000002',
  ): MessageInitShape<typeof BackupInfoSchema> {
    return {
      label,
      cluster: BANK,
      type: BackupType.FULL,
      startLsn: '0/2000028',
      stopLsn,
      startTime: timestampFromMs(stopTime - 2000),
      stopTime: timestampFromMs(stopTime),
      timeline: 1,
      systemIdentifier,
      pgVersion: 170000,
      sizeBytes: 1n,
      storedBytes: 1n,
      fileCount: 1,
      walStart: wal,
      walStop: wal,
    };
  }
});
