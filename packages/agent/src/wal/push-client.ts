/**
 * `pgfleet-agent wal-push %p`: archive_command's one client. It hands the segment to the local
 * agent daemon over its unix socket (socket.ts, served by archive-server.ts) and waits for the
 * durable ack; when no daemon takes the file it archives it itself (push-direct.ts, then
 * archive.ts: same validation, same repository writes), so archiving never depends on the daemon
 * being up.
 *
 * It runs once per WAL segment and a Node process start is most of its cost, so the way to the
 * daemon loads only the socket protocol, core's argument parser (`@pgfleet/core/command-line`,
 * without YAML or zod) and the agent's option table (options.ts, itself light): no pino, zod,
 * yaml, gRPC, protobuf or storage drivers, which only the direct push loads (see
 * push-client.test.ts, which checks that module graph). The config file is read only when no
 * daemon answered at the socket the command line names: it may name another socket, and pushing
 * directly needs its repositories anyway. The build also bundles this module and what it imports
 * into one CommonJS file (push-main.ts, dist/wal/push-main.cjs), which bin.js runs: see there for
 * why and for the figures.
 */
import { dirname, resolve } from 'node:path';
import { helpText, parseCommandLineWith, resolveSettings, type ParsedCommand } from '@pgfleet/core/command-line';
import { PgfleetError } from '@pgfleet/core/errors';
import { AGENT_PROGRAM } from '../options.js';
import { askDaemon, report } from './push-request.js';
import { defaultSocketPath, type DaemonReply } from './socket.js';

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
  let reply: DaemonReply | undefined;
  try {
    reply = await askDaemon(first, path, flags);
  } catch (err) {
    if (err instanceof PgfleetError) return report(err);
    throw err;
  }
  if (!reply) {
    // No daemon at that socket: the rest (config file, another socket, archiving here) is the
    // slow path, in its own module so the way to the daemon never loads it.
    const { pushWithoutDaemon } = await import('./push-direct.js');
    return pushWithoutDaemon(argv, path, first);
  }
  if (reply.ok) return 0;
  return report(PgfleetError.fromCode(reply.code, reply.message, reply.hint));
}
