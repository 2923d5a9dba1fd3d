// Cross-process: the compiled `pgfleet` CLI (packages/cli, spawned by path, never imported)
// against this package's controller in-process and a fake agent. Checks what a user sees:
// exit codes, PGF codes on stderr, parseable JSON, progress lines and results of --wait.
import { strict as assert } from 'node:assert';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { timestampFromMs } from '@bufbuild/protobuf/wkt';
import { ErrorCodes } from '@pgfleet/core';
import { BackupType, JobState } from '@pgfleet/proto';
import { startController, type RunningController } from './server.js';
import { FakeAgent, SYSID, closeFakeAgents, waitFor, withTimeout } from './testing/fake-agent.js';
import { CLI_BIN, runScript, type ScriptRun } from './testing/run-script.js';

const CLI = CLI_BIN;
const pgfleet = (args: string[], env: NodeJS.ProcessEnv = {}) =>
  runScript(CLI, args, { PGFLEET_INSECURE: 'true', ...env });

/** `pgfleet` whose output can be watched while it runs (e.g. to act once a progress line is out). */
function pgfleetWatched(args: string[]): { run: Promise<ScriptRun>; output: () => string } {
  const child = spawn(process.execPath, [CLI, ...args], {
    env: { PATH: process.env.PATH, PGFLEET_INSECURE: 'true' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const run = new Promise<ScriptRun>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
  return { run, output: () => stdout + stderr };
}

/** A port nothing listens on (bound once, then released). */
async function deadPort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const port = (srv.address() as { port: number }).port;
  await new Promise<void>((r) => srv.close(() => r()));
  return port;
}

let dir: string;
let controller: RunningController;
let agent: FakeAgent;
let ctl: string[];
const backupStop = Date.now() - 60_000;

before(async () => {
  assert.ok(existsSync(CLI), `${CLI} is missing: build packages/cli first (npx tsc -b in packages/cli)`);
  dir = mkdtempSync(join(tmpdir(), 'pgfleet-cli-it-'));
  controller = await startController({
    listen: '127.0.0.1:0',
    insecure: true,
    catalogPath: join(dir, 'catalog.db'),
    repoPath: '/srv/repo',
    reportedBackupCheck: 'facts',
    heartbeatIntervalSeconds: 5,
  });
  ctl = ['--controller', controller.address];
  agent = new FakeAgent(controller.address);
  agent.hello();
  assert.equal((await agent.receive()).msg.case, 'welcome');
});

after(async () => {
  closeFakeAgents();
  await controller?.close(100);
  rmSync(dir, { recursive: true, force: true });
});

describe('pgfleet CLI against a controller', () => {
  test('an unreachable controller is PGF-7001 naming the address', async () => {
    const address = `127.0.0.1:${await deadPort()}`;
    const r = await pgfleet(['clusters', '--controller', address, '--timeout', '5']);
    assert.notEqual(r.code, 0);
    assert.equal(r.code, 5);
    assert.match(r.stderr, /PGF-7001/);
    assert.ok(r.stderr.includes(address), r.stderr);
    assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
  });

  test('an unknown cluster is PGF-2001 (exit 3)', async () => {
    const r = await pgfleet(['backups', 'nope', ...ctl]);
    assert.equal(r.code, 3);
    assert.match(r.stderr, /^PGF-2001 cluster 'nope'/);
    assert.match(r.stderr, /hint: /);
  });

  test('invalid target flags are PGF-6003 before any connection', async () => {
    const offline = ['--controller', `127.0.0.1:${await deadPort()}`];
    for (const flags of [
      [],
      ['--target-time', '2026-01-01T00:00:00Z', '--target-lsn', '0/1'],
      ['--target-time', 'last tuesday'],
      ['--target-lsn', 'xyz'],
    ]) {
      const r = await pgfleet(['restore', 'main', '--to', '/restore', ...flags, ...offline]);
      assert.equal(r.code, 2, `${flags.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, /PGF-6003/);
    }
    const relative = await pgfleet(['restore', 'main', '--to', 'restore', '--target', 'latest', ...offline]);
    assert.match(relative.stderr, /PGF-1001 .*absolute/);
    const badChoice = await pgfleet(['restore', 'main', '--to', '/r', '--target', 'soon', ...offline]);
    assert.match(badChoice.stderr, /PGF-1002 .*immediate, latest/);
  });

  test('usage errors and help', async () => {
    const unknown = await pgfleet(['frobnicate']);
    assert.equal(unknown.code, 2);
    assert.match(unknown.stderr, /PGF-1003/);
    const help = await pgfleet(['restore', '--help']);
    assert.equal(help.code, 0);
    assert.match(help.stdout, /--target-time/);
    assert.match(help.stdout, /PGFLEET_CONTROLLER/);
  });

  test('backup --wait prints progress on stderr and the backup at the end', async () => {
    const { run, output } = pgfleetWatched(['backup', 'main', '--wait', ...ctl]);
    const job = await agent.receiveJob();
    assert.equal(job.kind.case, 'backup');
    const mb = 1024n ** 2n;
    const gb = 1024n * mb;
    agent.stream.send({
      msg: {
        case: 'progress',
        value: {
          jobId: job.jobId,
          phase: 'copy',
          bytesDone: 126n * mb,
          bytesTotal: 300n * mb,
          filesDone: 120,
          filesTotal: 900,
        },
      },
    });
    // WatchJob keeps only a job's newest state: the result goes once the CLI has shown the progress.
    await waitFor('the progress line', async () => (/backup 42% /.test(output()) ? true : undefined), 120_000).catch(
      (e: Error) => assert.fail(`${e.message}; pgfleet wrote:\n${output()}`),
    );
    agent.succeed(job.jobId, {
      case: 'backup',
      value: {
        label: '20260301-120000F',
        type: BackupType.FULL,
        startLsn: '0/2000028',
        stopLsn: '0/2000138',
        startTime: timestampFromMs(backupStop - 10_000),
        stopTime: timestampFromMs(backupStop),
        timeline: 1,
        systemIdentifier: SYSID,
        pgVersion: 170002,
        sizeBytes: 3n * gb,
        storedBytes: gb,
        fileCount: 900,
        walStart: '000000010000000000000002',
        walStop: '000000010000000000000002',
      },
    });
    const r = await withTimeout(run, 120_000, 'pgfleet backup --wait');
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /backup 42% 126 MB\/300 MB files 120\/900 \(copy\)/);
    assert.match(r.stdout, /backup 20260301-120000F \(full\) of cluster main/);
    assert.match(r.stdout, /LSN 0\/2000028 \.\. 0\/2000138/);
  });

  test('backups --output json parses; the table lists the backup; env sets the controller', async () => {
    const r = await pgfleet(['backups', 'main', '--output', 'json', ...ctl]);
    assert.equal(r.code, 0, r.stderr);
    const list = JSON.parse(r.stdout) as { label: string; stopLsn: string; sizeBytes: number }[];
    assert.deepEqual(
      list.map((b) => [b.label, b.stopLsn, b.sizeBytes]),
      [['20260301-120000F', '0/2000138', 3 * 1024 ** 3]],
    );

    const table = await pgfleet(['backups', 'main'], { PGFLEET_CONTROLLER: controller.address });
    assert.equal(table.code, 0, table.stderr);
    assert.match(table.stdout, /^LABEL\s+TYPE/);
    assert.match(table.stdout, /20260301-120000F\s+full/);

    const clusters = await pgfleet(['clusters', ...ctl]);
    assert.match(clusters.stdout, /main\s+170002\s+agent-1\s+yes/);
    const cj = JSON.parse((await pgfleet(['clusters', '--output', 'json', ...ctl])).stdout) as {
      name: string;
      lastBackup: { label: string };
    }[];
    assert.equal(cj[0]?.lastBackup.label, '20260301-120000F');
  });

  test('restore --wait with a PostgreSQL-format time picks the backup and says how to recover', async () => {
    const target = new Date(backupStop + 30_000).toISOString().replace('T', ' ').replace('Z', '+00');
    const run = pgfleet([
      'restore',
      'main',
      '--to',
      '/var/lib/pg/restore',
      '--target-time',
      target,
      '--target-action',
      'promote',
      '--wait',
      ...ctl,
    ]);
    const job = await agent.receiveJob();
    assert.equal(job.kind.case, 'restore');
    if (job.kind.case !== 'restore') return;
    assert.equal(job.kind.value.backupLabel, '20260301-120000F');
    agent.succeed(job.jobId, {
      case: 'restore',
      value: { backupLabel: '20260301-120000F', targetDir: '/var/lib/pg/restore', bytes: 1000n, fileCount: 9 },
    });
    const r = await withTimeout(run, 120_000, 'pgfleet restore --wait');
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /restored backup 20260301-120000F into \/var\/lib\/pg\/restore/);
    assert.match(r.stdout, /start PostgreSQL on it to recover to the target/);
  });

  test('a target before the oldest backup is PGF-6001', async () => {
    const r = await pgfleet([
      'restore',
      'main',
      '--to',
      '/r',
      '--target-time',
      new Date(backupStop - 3_600_000).toISOString(),
      ...ctl,
    ]);
    assert.equal(r.code, 4);
    assert.match(r.stderr, /PGF-6001/);
  });

  test('a failed job exits with the code of its error; jobs and job show it', async () => {
    const run = pgfleet(['backup', 'main', '--type', 'incr', '--wait', ...ctl]);
    const job = await agent.receiveJob();
    assert.equal(job.kind.case === 'backup' && job.kind.value.type, BackupType.INCR);
    agent.stream.send({
      msg: {
        case: 'result',
        value: {
          jobId: job.jobId,
          state: JobState.FAILED,
          error: {
            code: ErrorCodes.WalArchiveTimeout.code,
            message: 'WAL segment 000000010000000000000009 was not archived within 60 s',
          },
        },
      },
    });
    const r = await withTimeout(run, 120_000, 'pgfleet backup --wait (failing)');
    assert.equal(r.code, 5);
    assert.match(r.stderr, /PGF-4006 backup job .* failed: WAL segment 000000010000000000000009/);
    assert.match(r.stderr, /hint: Check archive_command/);

    const shown = await pgfleet(['job', job.jobId, ...ctl]);
    assert.equal(shown.code, 0, shown.stderr);
    assert.match(shown.stdout, /state:\s+failed/);
    assert.match(shown.stdout, /error:\s+PGF-4006/);
    const listed = JSON.parse((await pgfleet(['jobs', '--cluster', 'main', '--output', 'json', ...ctl])).stdout) as {
      id: string;
      state: string;
    }[];
    assert.deepEqual(listed[0], { ...listed[0], id: job.jobId, state: 'failed' });
    const missing = await pgfleet(['job', 'no-such-job', ...ctl]);
    assert.equal(missing.code, 3);
    assert.match(missing.stderr, /PGF-2002/);
  });

  test('job <id> --wait follows a running job to its end; on a failed job it exits with its code', async () => {
    // Options before the command, as a user types them.
    const started = await pgfleet([...ctl, '--output', 'json', 'backup', 'main']);
    assert.equal(started.code, 0, started.stderr);
    const { id } = JSON.parse(started.stdout) as { id: string };
    const job = await agent.receiveJob();
    assert.equal(job.jobId, id);
    const { run, output } = pgfleetWatched(['job', id, '--wait', ...ctl]);
    agent.stream.send({
      msg: { case: 'progress', value: { jobId: id, phase: 'copy', bytesDone: 5n, bytesTotal: 10n } },
    });
    await waitFor('the progress line', async () => (/backup 50% /.test(output()) ? true : undefined), 120_000).catch(
      (e: Error) => assert.fail(`${e.message}; pgfleet wrote:\n${output()}`),
    );
    agent.succeed(id, {
      case: 'backup',
      value: {
        label: '20260301-130000F',
        type: BackupType.FULL,
        startLsn: '0/3000028',
        stopLsn: '0/3000138',
        startTime: timestampFromMs(backupStop - 5_000),
        stopTime: timestampFromMs(backupStop),
        timeline: 1,
        systemIdentifier: SYSID,
        pgVersion: 170002,
        sizeBytes: 10n,
        storedBytes: 10n,
        fileCount: 1,
        walStart: '000000010000000000000003',
        walStop: '000000010000000000000003',
      },
    });
    const r = await withTimeout(run, 120_000, 'pgfleet job --wait');
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /state:\s+succeeded/);
    assert.match(r.stdout, /backup 20260301-130000F \(full\) of cluster main/);

    const failedId = (
      JSON.parse((await pgfleet(['jobs', '--cluster', 'main', '--output', 'json', ...ctl])).stdout) as {
        id: string;
        state: string;
      }[]
    ).find((j) => j.state === 'failed')!.id;
    const failed = await pgfleet(['job', failedId, '--wait', ...ctl]);
    assert.equal(failed.code, 5);
    assert.match(failed.stderr, /PGF-4006 backup job .* failed/);
  });

  test('backup without --wait prints the job and returns; an agent-less cluster is PGF-2004', async () => {
    const r = await pgfleet(['backup', 'main', '--output', 'json', ...ctl]);
    assert.equal(r.code, 0, r.stderr);
    const job = JSON.parse(r.stdout) as { id: string; state: string };
    assert.equal(job.state, 'dispatched');
    assert.equal((await agent.receiveJob()).jobId, job.id);
    agent.stream.cancel();
    const none = await (async () => {
      for (let i = 0; i < 50; i++) {
        const x = await pgfleet(['backup', 'main', ...ctl]);
        if (x.code !== 0) return x;
      }
      return undefined;
    })();
    assert.ok(none);
    assert.equal(none.code, 4);
    assert.match(none.stderr, /PGF-2004/);
  });
});
