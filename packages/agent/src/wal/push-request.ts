/**
 * One wal-push request to the local agent daemon, as the client sends it (push-client.ts) and
 * again from the slow path when the config file names another socket (push-direct.ts): the
 * request built from the command's settings, the daemon's reply or "archive it yourself".
 */
import { PgfleetError } from '@pgfleet/core/errors';
import { repositoriesFromSettings, repositoryIdentity, type AgentCommandSettings } from '../options.js';
import { NoDaemonError, PROTOCOL_VERSION, requestDaemon, type DaemonReply } from './socket.js';

/** Long enough for a slow object store; archive_command has no timeout of its own. */
export const DAEMON_TIMEOUT_MS = 10 * 60_000;

/** Writes the error as every pgfleet-agent command does and returns its exit code. */
export function report(e: PgfleetError): number {
  process.stderr.write(`pgfleet-agent: ${e.format()}\n`);
  return e.exitCode;
}

/** The daemon's answer, or undefined when this process must archive the file itself. */
export async function askDaemon(
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
