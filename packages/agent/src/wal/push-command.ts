/**
 * `pgfleet-agent wal-push %p`, the full command behind the fast path (wal-push-fast.ts), which
 * runs when that one cannot settle a segment: help, unusual arguments, no daemon at the default
 * socket, a daemon serving another cluster. It parses the command line (still no pino, zod, yaml,
 * gRPC or protobuf on the way to a daemon), tries the socket the config file names, and when no
 * daemon takes the file it archives it itself, as before the daemon existed (same validation,
 * same repository writes), so archiving never depends on the daemon being up.
 */
import { dirname, resolve } from 'node:path';
import { helpText, parseCommandLineWith, resolveSettings, type ParsedCommand } from '@pgfleet/core/command-line';
import { PgfleetError } from '@pgfleet/core/errors';
import {
  AGENT_PROGRAM,
  defaultSocketPath,
  repositoriesFromSettings,
  repositoryIdentity,
  type AgentCommandSettings,
} from '../options.js';
import { DAEMON_TIMEOUT_MS } from './push-fast.js';
import { NoDaemonError, PROTOCOL_VERSION_WITHOUT_ARGS, requestDaemon, type DaemonReply } from './socket.js';

function fail(e: PgfleetError): number {
  process.stderr.write(`pgfleet-agent: ${e.format()}\n`);
  return e.exitCode;
}

/** The daemon's answer, or undefined when this process must archive the file itself. */
async function viaDaemon(
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
        v: PROTOCOL_VERSION_WITHOUT_ARGS,
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

export async function walPushCommand(argv: string[]): Promise<number> {
  let parsed: ParsedCommand;
  try {
    // Flags and environment only: the config file is read below if the daemon is not there.
    parsed = parseCommandLineWith(AGENT_PROGRAM, argv, process.env, null);
  } catch (err) {
    if (err instanceof PgfleetError) return fail(err);
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
    let reply = await viaDaemon(first, path, flags);
    let full: ParsedCommand | undefined;
    if (!reply) {
      // No daemon at the default place: the config file may name another socket, and is needed anyway to push directly.
      const core = await import('@pgfleet/core');
      full = core.parseCommandLine(AGENT_PROGRAM, argv);
      const configured = resolveSettings(AGENT_PROGRAM, 'wal-push', full.options);
      if (configured.socket && configured.socket !== first)
        reply = await viaDaemon(configured.socket, path, configured);
    }
    if (reply) {
      if (reply.ok) return 0;
      return fail(PgfleetError.fromCode(reply.code, reply.message, reply.hint));
    }
    const { pushDirectly } = await import('./push-direct.js');
    return await pushDirectly(path, full!);
  } catch (err) {
    if (err instanceof PgfleetError) return fail(err);
    throw err;
  }
}
