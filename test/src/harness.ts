/**
 * Starts a whole pgfleet on one machine for end-to-end scenarios, every part a separate OS
 * process like in production: a real PostgreSQL whose archive_command is `pgfleet-agent
 * wal-push`, `pgfleet-controller run` (SQLite catalog), `pgfleet-agent run` (as the postgres OS
 * user when the tests run as root), and the `pgfleet` CLI for every action.
 *
 * The repository is a directory (`posix`, named by the controller with --repo-path), an S3
 * bucket on a real S3-compatible server (`s3`: fauxqs from testkit, named by the controller with
 * --repo, credentials in the agent's config file), or both as two repositories of the cluster
 * (`both`: the controller names none, the agent's config file has --repo and --repo2).
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { chmod, readFile, writeFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { fixedKeys, openRepository, parseRepositoryUrl, secretManifestKeys, type Repository } from '@pgfleet/storage';
import {
  chownToPostgres,
  freePort,
  isPortListening,
  makeTempDir,
  pgEnvForChild,
  removeDir,
  startPostgres,
  startS3,
  type PgInstance,
  type PgInstanceOptions,
  type S3Server,
} from '@pgfleet/testkit';
import { sleep } from '@pgfleet/core';
import { AdminService, JobState } from '@pgfleet/proto';
import { createClient, type Client } from '@pgfleet/rpc';

export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
export const AGENT_BIN = join(REPO_ROOT, 'packages/agent/dist/bin.js');
export const CONTROLLER_BIN = join(REPO_ROOT, 'packages/controller/dist/bin.js');
export const CLI_BIN = join(REPO_ROOT, 'packages/cli/dist/bin.js');

/** What a lab fleet (no --tls-dir) passes to the controller and its agents: clear text is never a default. */
export const INSECURE_ARGS = ['--insecure'];
/** The same choice for a CLI run (the environment keeps call sites short). */
export const INSECURE_ENV = { PGFLEET_INSECURE: 'true' };

/** A job as `pgfleet job|jobs|backup --output json` prints it (the fields tests read). */
export interface JobJson {
  id: string;
  state: string;
  error?: { code: string; message: string };
  progress?: { phase: string };
  backup?: { label: string };
}

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs a command to completion (as the postgres user when `asPg`), never throwing on exit codes. */
export function runNode(
  script: string,
  args: string[],
  opts: { asPg?: boolean; timeoutMs?: number; env?: NodeJS.ProcessEnv } = {},
): Promise<RunResult> {
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

/** An agent's options naming its PostgreSQL (data directory and local TCP address). */
export function agentPgArgs(db: PgInstance): string[] {
  return ['--pgdata', db.dataDir, '--pg-host', '127.0.0.1', '--pg-port', String(db.port)];
}

export interface Daemon {
  child: ChildProcess;
  logFile: string;
  stop(): Promise<void>;
  log(): Promise<string>;
}

export function startDaemon(
  script: string,
  args: string[],
  logFile: string,
  opts: { asPg?: boolean; env?: Record<string, string> } = {},
): Daemon {
  const out = createWriteStream(logFile);
  const child = spawn(process.execPath, [script, ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
    ...(opts.asPg ? pgEnvForChild() : {}),
    ...(opts.env ? { env: { ...process.env, ...opts.env } } : {}),
  });
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

/**
 * `pgfleet-agent run` for an agent of `cluster` on PostgreSQL `db`, connecting to `controllerAddress`;
 * repository, socket and the rest are in `extraArgs`.
 */
export function agentRunArgs(
  controllerAddress: string,
  cluster: string,
  db: PgInstance,
  extraArgs: string[],
): string[] {
  return ['run', '--controller', controllerAddress, '--cluster', cluster, ...agentPgArgs(db), ...extraArgs];
}

/** Asserts a command was refused: a non-zero exit and stderr matching `message` (its error code, a phrase). */
export function assertRefused(r: RunResult, message: RegExp): void {
  assert.notEqual(r.code, 0, `expected a refusal, got exit 0:\n${r.stdout}`);
  assert.match(r.stderr, message);
}

/** `pgfleet restore` of the fleet's cluster into `<fleet dir>/<into>`, with `args` (target, --wait...). */
export function restoreUnder(fleet: Fleet, into: string, ...args: string[]): Promise<RunResult> {
  return fleet.cli('restore', fleet.cluster, '--to', join(fleet.dir, into), ...args);
}

/**
 * Controller flags for a fleet watched from outside: events to the NATS server at `natsUrl`,
 * health evaluated every second against an RPO threshold, /metrics on `metricsPort`.
 */
export function watchedControllerArgs(natsUrl: string, metricsPort: number, rpoThresholdSeconds: number): string[] {
  return [
    '--nats-url',
    natsUrl,
    '--rpo-threshold',
    String(rpoThresholdSeconds),
    '--health-interval',
    '1',
    '--metrics-listen',
    `127.0.0.1:${metricsPort}`,
  ];
}

/**
 * Polls `fn` until it returns a value. The deadline only bounds a hang: it is generous so that a
 * loaded machine never reaches it, and no test should rely on it passing quickly.
 */
export async function waitFor<T>(
  what: string,
  fn: () => Promise<T | undefined | false>,
  timeoutMs = 120_000,
  intervalMs = 250,
): Promise<T> {
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

/** Where backups and WAL go: a directory, an S3 bucket, or both as the cluster's two repositories. */
export type RepositoryKind = 'posix' | 's3' | 'both';

export interface Fleet {
  cluster: string;
  dir: string;
  /** The posix repository (kinds posix and both). */
  repoDir: string;
  repositoryKind: RepositoryKind;
  /** The repositories' URLs, in restore preference order. */
  repoUrls: string[];
  /** The repository as the agent sees it (a mirror for `both`), opened in the test process to inspect it. */
  repo: Repository;
  /** Each repository on its own (one for posix and s3, two for both). */
  repoMembers: Repository[];
  /** The S3 server (kinds s3 and both). */
  s3: S3Server | undefined;
  /** Shell-ready wal-push/wal-fetch options naming the cluster and its repositories (plus the config file holding S3 credentials, and the key file when encrypted). */
  walArgs: string;
  /** The encryption key file (FleetOptions.encryptionKey). */
  keyFile: string | undefined;
  /** The cluster key file of the fleet's cluster (agents' --cluster-key-file, in walArgs too): written before PostgreSQL archives. */
  clusterKeyFile: string;
  controllerAddress: string;
  /** Every controller's address (FleetOptions.controllers), the first being controllerAddress; agents are given them all. */
  controllerAddresses: string[];
  /** The --controller list of agents started from now on (default controllerAddresses): the first that answers holds them. */
  agentControllers: string[];
  pg: PgInstance;
  controller: Daemon;
  /** Every controller (FleetOptions.controllers), the first being `controller`. */
  controllers: Daemon[];
  agent: Daemon | undefined;
  cli(...args: string[]): Promise<RunResult>;
  /**
   * The first controller's admin API from the test process, for polls while a test waits on the
   * controller (a job's state, what the catalog lists): a `pgfleet` process per poll costs ~0.3 s
   * of CPU, which on the suite's 2 cores a wait of a minute at 2 polls a second turns into a
   * core's worth. What a user checks stays a `cli` call. Undefined for a fleet whose controller
   * asks for TLS or tokens (--tls-dir, a prepared dir, cliEnv): those poll with the CLI.
   */
  admin: AdminClient | undefined;
  /**
   * Starts the cluster's agent (on `db`, default the fleet's PostgreSQL, e.g. a promoted standby
   * after a failover) and waits until it is connected. `bin`: another build's agent (a bench
   * comparing builds on one fleet), default AGENT_BIN.
   */
  startAgent(extraArgs?: string[], db?: PgInstance, bin?: string): Promise<Daemon>;
  /** Clusters added with addCluster: same controller and repository, each its own PostgreSQL and agent. */
  members: FleetMember[];
  /**
   * Another host of this fleet's cluster (HA): an agent with its own --agent-id against another
   * PostgreSQL of the same system (e.g. a standby from startStandby). Resolves once the controller
   * lists it as a connected host of the cluster.
   */
  startHostAgent(db: PgInstance, agentId: string, extraArgs?: string[]): Promise<Daemon>;
  /** Agents started with startHostAgent (stopped with the fleet). */
  hostAgents: { agentId: string; agent: Daemon }[];
  /** Starts another cluster (PostgreSQL archiving with wal-push) and its agent, and waits until it is connected. */
  addCluster(name: string, opts?: { pg?: PgInstanceOptions }): Promise<FleetMember>;
  /** Stops the controller and starts a new one on the same address and catalog. */
  restartController(): Promise<void>;
  /** True when the controller lists the cluster's agent as connected. */
  agentConnected(): Promise<boolean>;
  /** Forces a segment switch and waits until that segment is archived. */
  switchAndArchive(): Promise<void>;
  stop(): Promise<void>;
  logs(): Promise<string>;
}

/** An in-process client of a fleet controller's AdminService (Fleet.admin). */
export type AdminClient = Client<typeof AdminService> & { close(): void };

/**
 * An admin API client of a plain lab controller (--insecure, no tokens) at `address`, for polls
 * (see Fleet.admin); the caller closes it.
 */
export function adminAt(address: string): AdminClient {
  return createClient(AdminService, address, { defaultDeadlineMs: 30_000 });
}

/** A job's state as `pgfleet job --output json` names it (succeeded, failed...). */
export function jobStateName(state: JobState): string {
  return (JobState[state] ?? String(state)).toLowerCase();
}

export interface FleetMember {
  cluster: string;
  pg: PgInstance;
  agent: Daemon;
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
  /** The repository kind; default posix. */
  repository?: RepositoryKind;
  /** Encrypt the cluster's repository with this key: a 0600 key file (owned by postgres) given to the agent and to wal-push/wal-fetch. */
  encryptionKey?: Buffer;
  /** The controllers' catalog (a PostgreSQL URL); default a SQLite file in the fleet's directory. */
  catalog?: string;
  /** How many controllers share the catalog (needs a PostgreSQL `catalog` above 1); agents get every address. Default 1. */
  controllers?: number;
  /** More environment for the controller of index i (0 is `controller`), e.g. a kill point (PGFLEET_TEST_KILL_AT). */
  controllerEnv?: (index: number) => Record<string, string> | undefined;
}

/** The kinds every repository-dependent scenario runs on (`PGFLEET_E2E_REPOS=posix` narrows it). */
export const REPOSITORY_KINDS: ('posix' | 's3')[] = (process.env.PGFLEET_E2E_REPOS ?? 'posix,s3')
  .split(',')
  .filter((k): k is 'posix' | 's3' => k === 'posix' || k === 's3');

const BUCKET = 'pgfleet';

export async function startFleet(opts: FleetOptions = {}): Promise<Fleet> {
  const cluster = opts.cluster ?? 'main';
  const dir = opts.dir ?? (await makeTempDir('e2e'));
  const repoDir = join(dir, 'repo');
  const kind = opts.repository ?? 'posix';
  const archive = opts.archive ?? true;
  const s3 = kind === 'posix' ? undefined : await startS3();
  let agentRepoArgs = ['--repo-path', repoDir];
  let controllerRepoArgs = ['--repo-path', repoDir];
  let walArgs = `--cluster ${cluster} --repo-path "${repoDir}"`;
  const repoUrls = [repoDir];
  if (s3) {
    await s3.createBucket(BUCKET);
    const bucketUrl = `s3://${BUCKET}/${cluster}?endpoint=${s3.endpoint}&path-style=true`;
    // One config file for the daemon, archive_command and restore_command, like a real install;
    // it holds the credentials, so only the postgres user may read it.
    const config = join(dir, 'agent.yaml');
    const repos = kind === 's3' ? { repo: bucketUrl } : { repo: repoDir, repo2: bucketUrl };
    await writeFile(
      config,
      `${Object.entries({ ...repos, 's3-access-key-id': s3.accessKeyId, 's3-secret-access-key': s3.secretAccessKey })
        .map(([k, v]) => `${k}: "${v}"`)
        .join('\n')}\n`,
      { mode: 0o600 },
    );
    await chownToPostgres(config);
    await chmod(config, 0o600);
    agentRepoArgs = ['--config', config];
    // s3: the controller names the bucket in every job; both: it names none and the agent uses its own two.
    controllerRepoArgs = kind === 's3' ? ['--repo', bucketUrl] : [];
    walArgs = `--cluster ${cluster} --config "${config}"`;
    repoUrls.splice(0, 1, ...(kind === 's3' ? [bucketUrl] : [repoDir, bucketUrl]));
  }
  const keyFile = opts.encryptionKey ? join(dir, `${cluster}.key`) : undefined;
  if (keyFile) {
    await writeFile(keyFile, `${opts.encryptionKey!.toString('base64')}\n`, { mode: 0o600 });
    await chownToPostgres(keyFile);
    agentRepoArgs = [...agentRepoArgs, '--encryption-key-file', keyFile];
    walArgs = `${walArgs} --encryption-key-file "${keyFile}"`;
  }
  // The controller's manifest secret, made here so the test reads manifests and WAL names with the same keys.
  const manifestSecretFile = join(dir, 'manifest.secret');
  const manifestSecret = await testManifestSecret(manifestSecretFile);
  const manifestKeys = secretManifestKeys(manifestSecret);
  // Each cluster's key file, as its agent keeps it after the controller's Welcome; written up front
  // so that PostgreSQL's first archive_command (before any agent connected) and wal-push run
  // directly by tests find it. The daemons rewrite it only if a Welcome brought another key.
  const clusterKeyFile = (name: string) => join(dir, `${name}.cluster.key`);
  const writeClusterKey = async (name: string) => {
    await writeFile(clusterKeyFile(name), `${manifestKeys.keyFor(name)!.toString('hex')}\n`, { mode: 0o600 });
    await chownToPostgres(clusterKeyFile(name));
  };
  await writeClusterKey(cluster);
  walArgs = `${walArgs} --cluster-key-file "${clusterKeyFile(cluster)}"`;
  const keys = opts.encryptionKey ? fixedKeys({ [cluster]: opts.encryptionKey }) : undefined;
  const credentials = s3 ? { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey } : undefined;
  // Without --tls-dir the fleet is a lab one: the controller, its agents and the CLI each say --insecure.
  const insecure = !(opts.controllerArgs ?? []).includes('--tls-dir');
  // Another cluster's wal-push options: the same repositories under its own name.
  const walArgsOf = (name: string): string =>
    walArgs
      .replace(`--cluster ${cluster} `, `--cluster ${name} `)
      .replace(clusterKeyFile(cluster), clusterKeyFile(name));
  const spawnAgent = (name: string, db: PgInstance, extraArgs: string[], bin = AGENT_BIN): Daemon =>
    startDaemon(
      bin,
      agentRunArgs(fleet.agentControllers.join(','), name, db, [
        ...agentRepoArgs,
        '--cluster-key-file',
        clusterKeyFile(name),
        '--archive-timeout',
        '60',
        ...(insecure ? INSECURE_ARGS : []),
        ...extraArgs,
      ]),
      join(dir, `agent-${name}-${Date.now()}.log`),
      { asPg: true },
    );
  /** Whether the controller lists `name`'s agent as connected (admin API for a plain fleet, else `pgfleet clusters`). */
  const clusterAgentConnected = async (name: string): Promise<boolean> => {
    if (fleet.admin) {
      try {
        const clusters = [];
        let pageToken = '';
        do {
          const r = await fleet.admin.listClusters({ pageToken });
          clusters.push(...r.clusters);
          pageToken = r.nextPageToken;
        } while (pageToken);
        return clusters.some((c) => c.name === name && c.agentConnected);
      } catch {
        return false; // a controller not (yet, or no longer) answering, as a failed CLI run
      }
    }
    const r = await fleet.cli('clusters', '--output', 'json');
    if (r.code !== 0) return false;
    const list = JSON.parse(r.stdout) as { name: string; agentConnected?: boolean }[];
    return list.some((c) => c.name === name && c.agentConnected === true);
  };
  const connectedAgent = async (name: string, agent: Daemon): Promise<void> => {
    await waitFor(
      `agent of ${name} to connect`,
      async () => {
        if (agent.child.exitCode !== null)
          throw new Error(`agent exited with ${agent.child.exitCode}: ${await agent.log()}`);
        if (!(await agentSaysConnected(agent))) return false;
        return clusterAgentConnected(name);
      },
      120_000,
      100,
    );
  };
  const repo = (
    await openRepository(
      repoUrls.map((u) => parseRepositoryUrl(u)),
      credentials,
      keys,
    )
  ).withManifestKeys(manifestKeys);
  const repoMembers =
    repoUrls.length === 1
      ? [repo]
      : await Promise.all(
          repoUrls.map(async (u) =>
            (await openRepository([parseRepositoryUrl(u)], credentials, keys)).withManifestKeys(manifestKeys),
          ),
        );
  // PostgreSQL starts while the controllers do (neither needs the other to start).
  const pgStarting = startPostgres({
    ...(archive ? { archiveCommand: agentCommand(`wal-push "%p" ${walArgs}`) } : {}),
    ...opts.pg,
  });
  pgStarting.catch(() => {}); // awaited below, once the controllers are spawned
  const controllerAddresses: string[] = [];
  for (let i = 0; i < (opts.controllers ?? 1); i++) controllerAddresses.push(`127.0.0.1:${await freePort()}`);
  const controllerAddress = controllerAddresses[0]!;
  // Each controller's /metrics on a free port unless the test names one: the default (7430) is
  // taken by any other controller on the host, and a taken port fails the start (PGF-1104).
  const ownMetrics = !(opts.controllerArgs ?? []).includes('--metrics-listen');
  const metricsAddresses: string[] = [];
  if (ownMetrics)
    for (let i = 0; i < controllerAddresses.length; i++) metricsAddresses.push(`127.0.0.1:${await freePort()}`);
  const controllerArgs = [
    'run',
    '--listen',
    controllerAddress,
    '--catalog',
    opts.catalog ?? join(dir, 'catalog.db'),
    ...controllerRepoArgs,
    '--heartbeat-interval',
    '1',
    '--job-reclaim-grace',
    '5',
    '--manifest-secret',
    manifestSecretFile,
    // The controller reads each reported backup's manifest: an encrypted cluster's key, S3 credentials from its environment.
    ...(keyFile ? ['--encryption-key-file', keyFile] : []),
    ...(insecure ? INSECURE_ARGS : []),
    ...(ownMetrics ? ['--metrics-listen', metricsAddresses[0]!] : []),
    ...(opts.controllerArgs ?? []),
  ];
  const controllerEnv = credentials
    ? { AWS_ACCESS_KEY_ID: credentials.accessKeyId, AWS_SECRET_ACCESS_KEY: credentials.secretAccessKey }
    : undefined;
  const envOf = (index: number): { env?: Record<string, string> } => {
    const env = { ...controllerEnv, ...opts.controllerEnv?.(index) };
    return Object.keys(env).length > 0 ? { env } : {};
  };
  let controller = startDaemon(CONTROLLER_BIN, controllerArgs, join(dir, 'controller.log'), envOf(0));
  // The other controllers of a shared catalog: the same arguments on their own addresses.
  const controllers = [
    controller,
    ...controllerAddresses.slice(1).map((address, i) =>
      startDaemon(
        CONTROLLER_BIN,
        controllerArgs.map((a) =>
          a === controllerAddress ? address : ownMetrics && a === metricsAddresses[0] ? metricsAddresses[i + 1]! : a,
        ),
        join(dir, `controller-${i + 2}.log`),
        envOf(i + 1),
      ),
    ),
  ];
  let pg: PgInstance;
  try {
    pg = await pgStarting;
  } catch (err) {
    for (const c of controllers) await c.stop();
    await s3?.stop();
    throw err;
  }
  // A plain lab fleet's admin API, for polls (Fleet.admin); the channel connects on its first call.
  const admin = insecure && !opts.dir && !opts.cliEnv ? adminAt(controllerAddress) : undefined;
  const fleet: Fleet = {
    admin,
    cluster,
    dir,
    repoDir,
    repositoryKind: kind,
    repoUrls,
    repo,
    repoMembers,
    s3,
    walArgs,
    keyFile,
    clusterKeyFile: clusterKeyFile(cluster),
    controllerAddress,
    controllerAddresses,
    agentControllers: controllerAddresses,
    pg,
    controller,
    controllers,
    agent: undefined,
    // The controller address goes by environment (PGFLEET_CONTROLLER) to keep call sites short.
    cli: (...args: string[]) =>
      runNode(CLI_BIN, args, {
        env: { PGFLEET_CONTROLLER: controllerAddress, ...(insecure ? INSECURE_ENV : {}), ...opts.cliEnv },
      }),
    async startAgent(extraArgs: string[] = [], db: PgInstance = pg, bin?: string) {
      const agent = spawnAgent(cluster, db, extraArgs, bin);
      fleet.agent = agent;
      await connectedAgent(cluster, agent);
      return agent;
    },
    members: [],
    hostAgents: [],
    async startHostAgent(db: PgInstance, agentId: string, extraArgs: string[] = []) {
      const agent = spawnAgent(cluster, db, ['--agent-id', agentId, ...extraArgs]);
      fleet.hostAgents.push({ agentId, agent });
      await waitFor(
        `agent ${agentId} of ${cluster} to connect`,
        async () => {
          if (agent.child.exitCode !== null)
            throw new Error(`agent ${agentId} exited with ${agent.child.exitCode}: ${await agent.log()}`);
          if (!(await agentSaysConnected(agent))) return false;
          const r = await fleet.cli('clusters', '--output', 'json');
          const list =
            r.code === 0
              ? (JSON.parse(r.stdout) as { name: string; hosts?: { agentId: string; connected?: boolean }[] }[])
              : [];
          return (
            list.find((c) => c.name === cluster)?.hosts?.some((h) => h.agentId === agentId && h.connected === true) ??
            false
          );
        },
        120_000,
        100,
      );
      return agent;
    },
    async addCluster(name: string, more: { pg?: PgInstanceOptions } = {}) {
      await writeClusterKey(name);
      const db = await startPostgres({
        ...(archive ? { archiveCommand: agentCommand(`wal-push "%p" ${walArgsOf(name)}`) } : {}),
        ...more.pg,
      });
      const member: FleetMember = { cluster: name, pg: db, agent: spawnAgent(name, db, []) };
      fleet.members.push(member);
      await connectedAgent(name, member.agent);
      return member;
    },
    agentConnected: () => clusterAgentConnected(cluster),
    async restartController() {
      await controller.stop();
      controller = startDaemon(CONTROLLER_BIN, controllerArgs, join(dir, `controller-${Date.now()}.log`), envOf(0));
      fleet.controller = controller;
      controllers[0] = controller;
      await waitFor(
        'restarted controller to listen',
        async () => (await controllerListening(controllerAddress)) && (await fleet.cli('clusters')).code === 0,
        120_000,
        100,
      );
    },
    async switchAndArchive() {
      const [row] = await pg.query<{ f: string }>(`SELECT pg_walfile_name(pg_switch_wal()) AS f`);
      await waitFor(`WAL ${row!.f} to be archived`, async () => {
        const [a] = await pg.query<{ w: string | null }>('SELECT last_archived_wal AS w FROM pg_stat_archiver');
        return a!.w !== null && a!.w >= row!.f;
      });
    },
    async stop() {
      // Agents, then controllers, then servers: each group stopped at once, in the order they depend on each other.
      await Promise.all([
        fleet.agent?.stop(),
        ...fleet.hostAgents.map((h) => h.agent.stop()),
        ...fleet.members.map((m) => m.agent.stop()),
      ]);
      await Promise.all([fleet.controller.stop(), ...controllers.slice(1).map((c) => c.stop())]);
      await Promise.all([pg.stop(), ...fleet.members.map((m) => m.pg.stop())]);
      for (const r of new Set([repo, ...repoMembers])) r.close();
      fleet.admin?.close();
      await s3?.stop();
      await removeDir(dir);
    },
    async logs() {
      const members = await Promise.all(
        fleet.members.map(async (m) => `\n--- agent of ${m.cluster}\n${await m.agent.log()}`),
      );
      const hosts = await Promise.all(
        fleet.hostAgents.map(async (h) => `\n--- agent ${h.agentId}\n${await h.agent.log()}`),
      );
      const others = await Promise.all(
        controllers.slice(1).map(async (c, i) => `\n--- controller ${i + 2}\n${await c.log()}`),
      );
      return `--- controller\n${await fleet.controller.log()}${others.join('')}\n--- agent\n${(await fleet.agent?.log()) ?? ''}${hosts.join('')}${members.join('')}\n--- postgres\n${await pg.log()}`;
    },
  };
  await waitFor(
    'controller to listen',
    async () => {
      if (controller.child.exitCode !== null)
        throw new Error(`controller exited with ${controller.child.exitCode}: ${await controller.log()}`);
      return (await controllerListening(controllerAddress)) && (await fleet.cli('clusters')).code === 0;
    },
    120_000,
    100,
  );
  if (opts.startAgent ?? true) await fleet.startAgent();
  return fleet;
}

/**
 * The cheap first half of a wait for a starting agent: its own log line, read from its file. The
 * controller's view (the CLI) is asked only after it, instead of starting a CLI process every
 * poll while the agent starts.
 */
async function agentSaysConnected(agent: Daemon): Promise<boolean> {
  return (await agent.log()).includes('connected to controller');
}

/** The cheap first half of a wait for a starting controller: its port accepts connections (no CLI process started). */
function controllerListening(address: string): Promise<boolean> {
  return isPortListening(Number(address.slice(address.lastIndexOf(':') + 1)));
}

/** The manifest secret of a test fleet's controller: the file's, or a new one (0600, as the controller makes it). */
export async function testManifestSecret(path: string): Promise<Buffer> {
  const existing = await readFile(path, 'utf8').catch(() => undefined);
  if (existing) return Buffer.from(existing.trim(), 'hex');
  const secret = randomBytes(32);
  await writeFile(path, `${secret.toString('hex')}\n`, { mode: 0o600 });
  return secret;
}
