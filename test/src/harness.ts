/**
 * Starts a whole pgfleet on one machine for end-to-end scenarios, every part a separate OS
 * process like in production: a real PostgreSQL whose archive_command is `pgfleet-agent
 * wal-push`, `pgfleet-controller run` (SQLite catalog, posix repository), `pgfleet-agent run` (as
 * the postgres OS user when the tests run as root), and the `pgfleet` CLI for every action.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { freePort, makeTempDir, pgEnvForChild, removeDir, startPostgres, type PgInstance, type PgInstanceOptions } from '@pgfleet/testkit';

export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
export const AGENT_BIN = join(REPO_ROOT, 'packages/agent/dist/bin.js');
export const CONTROLLER_BIN = join(REPO_ROOT, 'packages/controller/dist/bin.js');
export const CLI_BIN = join(REPO_ROOT, 'packages/cli/dist/bin.js');

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs a command to completion (as the postgres user when `asPg`), never throwing on exit codes. */
export function runNode(script: string, args: string[], opts: { asPg?: boolean; timeoutMs?: number; env?: NodeJS.ProcessEnv } = {}): Promise<RunResult> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(process.execPath, [script, ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, ...opts.env },
      ...(opts.asPg ? pgEnvForChild() : {}),
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 180_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolvePromise({ code: code ?? -1, stdout, stderr });
    });
  });
}

/** A shell-safe archive_command/restore_command running this checkout's agent. */
export function agentCommand(args: string): string {
  return `"${process.execPath}" "${AGENT_BIN}" ${args}`;
}

export interface Daemon {
  child: ChildProcess;
  logFile: string;
  stop(): Promise<void>;
  log(): Promise<string>;
}

export function startDaemon(script: string, args: string[], logFile: string, opts: { asPg?: boolean } = {}): Daemon {
  const out = createWriteStream(logFile);
  const child = spawn(process.execPath, [script, ...args], { stdio: ['ignore', 'pipe', 'pipe'], ...(opts.asPg ? pgEnvForChild() : {}) });
  child.stdout!.pipe(out, { end: false });
  child.stderr!.pipe(out, { end: false });
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  const kill = () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  };
  process.once('exit', kill);
  return {
    child,
    logFile,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        const t = setTimeout(kill, 5000);
        await exited;
        clearTimeout(t);
      }
      process.removeListener('exit', kill);
    },
    log: () => readFile(logFile, 'utf8').catch(() => ''),
  };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export async function waitFor<T>(what: string, fn: () => Promise<T | undefined | false>, timeoutMs = 60_000, intervalMs = 250): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastErr: unknown;
  while (Date.now() < deadline) {
    try {
      const v = await fn();
      if (v !== undefined && v !== false) return v;
    } catch (err) {
      lastErr = err;
    }
    await sleep(intervalMs);
  }
  throw new Error(`timed out waiting for ${what}${lastErr ? `: ${(lastErr as Error).message}` : ''}`);
}

export interface Fleet {
  cluster: string;
  dir: string;
  repoDir: string;
  controllerAddress: string;
  pg: PgInstance;
  controller: Daemon;
  agent: Daemon | undefined;
  cli(...args: string[]): Promise<RunResult>;
  startAgent(extraArgs?: string[]): Promise<Daemon>;
  /** Stops the controller and starts a new one on the same address and catalog. */
  restartController(): Promise<void>;
  /** True when the controller lists the cluster's agent as connected. */
  agentConnected(): Promise<boolean>;
  /** Forces a segment switch and waits until that segment is archived. */
  switchAndArchive(): Promise<void>;
  stop(): Promise<void>;
  logs(): Promise<string>;
}

export interface FleetOptions {
  cluster?: string;
  archive?: boolean;
  pg?: PgInstanceOptions;
  startAgent?: boolean;
  /** Extra arguments for `pgfleet-controller run` (e.g. --schedule-interval 1). */
  controllerArgs?: string[];
  /** A directory prepared beforehand (e.g. with `ca init` and tokens in its catalog.db) instead of a new one. */
  dir?: string;
  /** Extra environment of every `fleet.cli` run (e.g. PGFLEET_TOKEN, PGFLEET_CA_CERT). */
  cliEnv?: Record<string, string>;
}

export async function startFleet(opts: FleetOptions = {}): Promise<Fleet> {
  const cluster = opts.cluster ?? 'main';
  const dir = opts.dir ?? (await makeTempDir('e2e'));
  const repoDir = join(dir, 'repo');
  const archive = opts.archive ?? true;
  const pg = await startPostgres({
    ...(archive ? { archiveCommand: agentCommand(`wal-push "%p" --cluster ${cluster} --repo-path "${repoDir}"`) } : {}),
    ...opts.pg,
  });
  const port = await freePort();
  const controllerAddress = `127.0.0.1:${port}`;
  const controllerArgs = ['run', '--listen', controllerAddress, '--catalog', join(dir, 'catalog.db'), '--repo-path', repoDir, '--heartbeat-interval', '1', ...(opts.controllerArgs ?? [])];
  let controller = startDaemon(CONTROLLER_BIN, controllerArgs, join(dir, 'controller.log'));
  const fleet: Fleet = {
    cluster,
    dir,
    repoDir,
    controllerAddress,
    pg,
    controller,
    agent: undefined,
    // The controller address goes by environment (PGFLEET_CONTROLLER) to keep call sites short.
    cli: (...args: string[]) => runNode(CLI_BIN, args, { env: { PGFLEET_CONTROLLER: controllerAddress, ...opts.cliEnv } }),
    async startAgent(extraArgs: string[] = []) {
      const agent = startDaemon(
        AGENT_BIN,
        ['run', '--controller', controllerAddress, '--cluster', cluster, '--pgdata', pg.dataDir, '--pg-host', '127.0.0.1', '--pg-port', String(pg.port), '--repo-path', repoDir, '--archive-timeout', '60', ...extraArgs],
        join(dir, `agent-${Date.now()}.log`),
        { asPg: true },
      );
      fleet.agent = agent;
      await waitFor(`agent of ${cluster} to connect`, async () => {
        if (agent.child.exitCode !== null) throw new Error(`agent exited with ${agent.child.exitCode}: ${await agent.log()}`);
        return fleet.agentConnected();
      });
      return agent;
    },
    async agentConnected() {
      const r = await fleet.cli('clusters', '--output', 'json');
      if (r.code !== 0) return false;
      const list = JSON.parse(r.stdout) as { name: string; agentConnected?: boolean }[];
      return list.some((c) => c.name === cluster && c.agentConnected === true);
    },
    async restartController() {
      await controller.stop();
      controller = startDaemon(CONTROLLER_BIN, controllerArgs, join(dir, `controller-${Date.now()}.log`));
      fleet.controller = controller;
      await waitFor('restarted controller to listen', async () => (await fleet.cli('clusters')).code === 0);
    },
    async switchAndArchive() {
      const [row] = await pg.query<{ f: string }>(`SELECT pg_walfile_name(pg_switch_wal()) AS f`);
      await waitFor(`WAL ${row!.f} to be archived`, async () => {
        const [a] = await pg.query<{ w: string | null }>('SELECT last_archived_wal AS w FROM pg_stat_archiver');
        return a!.w !== null && a!.w >= row!.f;
      });
    },
    async stop() {
      await fleet.agent?.stop();
      await fleet.controller.stop();
      await pg.stop();
      await removeDir(dir);
    },
    async logs() {
      return `--- controller\n${await fleet.controller.log()}\n--- agent\n${(await fleet.agent?.log()) ?? ''}\n--- postgres\n${await pg.log()}`;
    },
  };
  await waitFor('controller to listen', async () => {
    if (controller.child.exitCode !== null) throw new Error(`controller exited with ${controller.child.exitCode}: ${await controller.log()}`);
    return (await fleet.cli('clusters')).code === 0;
  });
  if (opts.startAgent ?? true) await fleet.startAgent();
  return fleet;
}
