/**
 * `pgfleet-agent wal-push %p`: archive_command's one client. It hands the segment to the local
 * agent daemon over its unix socket (socket.ts, served by archive-server.ts) and waits for the
 * durable ack; when no daemon takes the file it archives it itself (archive.ts: same validation,
 * same repository writes), so archiving never depends on the daemon being up.
 *
 * It runs once per WAL segment and a Node process start is most of its cost, so the way to the
 * daemon loads only the socket protocol, core's argument parser (`@pgfleet/core/command-line`,
 * without YAML or zod) and the agent's option table (options.ts, itself light): no pino, zod,
 * yaml, gRPC, protobuf or storage drivers, which only the direct push loads (see
 * push-client.test.ts, which checks that module graph). The config file is read only when no
 * daemon answered at the socket the command line names: it may name another socket, and pushing
 * directly needs its repositories anyway.
 */
import { dirname, resolve } from 'node:path';
import {
  helpText,
  missingOption,
  parseCommandLineWith,
  resolveSettings,
  type ParsedCommand,
} from '@pgfleet/core/command-line';
import type { LogFormat } from '@pgfleet/core';
import { PgfleetError } from '@pgfleet/core/errors';
import {
  AGENT_PROGRAM,
  repositoriesFromSettings,
  repositoryIdentity,
  s3CredentialsFromSettings,
  keySourceFromSettings,
  type AgentCommandSettings,
} from '../options.js';
import { defaultSocketPath, NoDaemonError, PROTOCOL_VERSION, requestDaemon, type DaemonReply } from './socket.js';

/** Long enough for a slow object store; archive_command has no timeout of its own. */
export const DAEMON_TIMEOUT_MS = 10 * 60_000;

function report(e: PgfleetError): number {
  process.stderr.write(`pgfleet-agent: ${e.format()}\n`);
  return e.exitCode;
}

/** The daemon's answer, or undefined when this process must archive the file itself. */
async function askDaemon(
  socket: string,
  path: string,
  settings: AgentCommandSettings<'wal-push'>,
): Promise<DaemonReply | undefined> {
  const { cluster } = settings;
  // The repositories this archive_command names (canonical URLs), when it names any.
  const specs = repositoriesFromSettings(settings);
  const repoPath = specs.length > 0 ? repositoryIdentity(specs) : undefined;
  try {
    const reply = await requestDaemon(
      socket,
      {
        v: PROTOCOL_VERSION,
        op: 'wal-push',
        path,
        ...(cluster ? { cluster } : {}),
        ...(repoPath ? { repoPath } : {}),
      },
      DAEMON_TIMEOUT_MS,
    );
    if (!reply.ok && reply.direct) {
      process.stderr.write(`pgfleet-agent: ${reply.message}\n`);
      return undefined;
    }
    return reply;
  } catch (err) {
    if (err instanceof NoDaemonError) {
      if (err.reason === 'EPERM') process.stderr.write(`pgfleet-agent: ${err.message}\n`);
      return undefined;
    }
    throw new PgfleetError('WalDaemonFailed', (err as Error).message, { cause: err });
  }
}

/** wal-push without a daemon: this process archives the file itself (the only path that loads pino and storage). */
async function pushDirectly(path: string, parsed: ParsedCommand): Promise<number> {
  const [{ createLogger }, { clusterManifestKeys, keyResolver, openRepository }, { walPush }, clusterKeys] =
    await Promise.all([
      import('@pgfleet/core'),
      import('@pgfleet/storage'),
      import('./archive.js'),
      import('../security/cluster-key.js'),
    ]);
  const settings = resolveSettings(AGENT_PROGRAM, 'wal-push', parsed.options, ['cluster']);
  const format = parsed.options['log-format'] as LogFormat | undefined;
  const log = createLogger({ level: settings.logLevel, ...(format ? { format } : {}) }).child({
    component: 'wal-push',
  });
  const specs = repositoriesFromSettings(settings);
  // Without a daemon there is nowhere else to archive to: the repository must be configured here.
  if (specs.length === 0) throw missingOption(AGENT_PROGRAM, 'repo');
  // WAL names carry a MAC under the cluster's key, which the daemon keeps in its key file: without
  // it nothing is archived (WalKeyMissing), and PostgreSQL keeps the file and retries.
  const keyFile = clusterKeys.clusterKeyFileOf(settings, dirname(dirname(path)));
  const clusterKey = await clusterKeys.requireClusterKeyFile(keyFile, settings.cluster);
  const source = keySourceFromSettings(settings);
  const keys = source ? keyResolver(source, settings.cluster) : undefined;
  const repo = (await openRepository(specs, s3CredentialsFromSettings(settings), keys)).withManifestKeys(
    clusterManifestKeys(settings.cluster, clusterKey),
  );
  try {
    await walPush(path, { cluster: settings.cluster, repo, compress: settings.compress, log });
  } finally {
    repo.close();
  }
  return 0;
}

/**
 * Runs `wal-push` (`argv` starts with the command name) and resolves with the exit code
 * PostgreSQL sees: 0 only once the segment is durably stored, by the daemon or by this process.
 */
export async function walPushCommand(argv: readonly string[]): Promise<number> {
  let parsed: ParsedCommand;
  try {
    // Flags and environment only: the config file is read below if no daemon is there.
    parsed = parseCommandLineWith(AGENT_PROGRAM, argv, process.env, null);
  } catch (err) {
    if (err instanceof PgfleetError) return report(err);
    throw err;
  }
  if (parsed.help) {
    process.stdout.write(`${helpText(AGENT_PROGRAM, parsed.command)}\n`);
    return 0;
  }
  // %p is pg_wal/<name> relative to PGDATA, PostgreSQL's working directory (already a real path).
  const path = resolve(parsed.positionals[0]!);
  const flags = resolveSettings(AGENT_PROGRAM, 'wal-push', parsed.options);
  const first = flags.socket ?? defaultSocketPath(dirname(dirname(path)));
  try {
    let reply = await askDaemon(first, path, flags);
    let full: ParsedCommand | undefined;
    if (!reply) {
      // No daemon at that socket: the config file may name another, and is needed anyway to push directly.
      const core = await import('@pgfleet/core');
      full = core.parseCommandLine(AGENT_PROGRAM, [...argv]);
      const configured = resolveSettings(AGENT_PROGRAM, 'wal-push', full.options);
      if (configured.socket && configured.socket !== first)
        reply = await askDaemon(configured.socket, path, configured);
    }
    if (reply) {
      if (reply.ok) return 0;
      return report(PgfleetError.fromCode(reply.code, reply.message, reply.hint));
    }
    return await pushDirectly(path, full!);
  } catch (err) {
    if (err instanceof PgfleetError) return report(err);
    throw err;
  }
}
