/**
 * archive_command's fast path: `pgfleet-agent wal-push %p ...` runs once per WAL segment, and a
 * Node process start is most of its cost, so this module loads nothing but the socket protocol
 * (node builtins). It does not parse its command line: it finds the socket (--socket, or the
 * default beside PGDATA), sends its arguments and PGFLEET_* environment as they are, and the
 * daemon reads cluster and repositories from them with the option table. Anything it cannot
 * settle (help, flags before %p, no daemon, a daemon serving another cluster, an argument the
 * daemon rejects) goes to the full command (wal-push-command.ts), which parses, reports and
 * archives by itself when it must.
 */
import { dirname, resolve } from 'node:path';
import { defaultSocketPath, NoDaemonError, PROTOCOL_VERSION, requestDaemon } from './socket.js';

/** Long enough for a slow object store; archive_command has no timeout of its own. */
export const DAEMON_TIMEOUT_MS = 10 * 60_000;

/** The value of --name (`--name v` or `--name=v`), the last one given like util.parseArgs, up to `--`. */
function flagValue(args: readonly string[], name: string): string | undefined {
  let value: string | undefined;
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (a === '--') break;
    if (a === `--${name}`) value = args[++i];
    else if (a.startsWith(`--${name}=`)) value = a.slice(name.length + 3);
  }
  return value;
}

/** Environment the option table reads, without credentials (the daemon has its own). */
function optionEnvironment(env: NodeJS.ProcessEnv): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(env)) {
    if (v !== undefined && k.startsWith('PGFLEET_') && !/SECRET|PASSWORD|TOKEN|KEY/.test(k)) out[k] = v;
  }
  return out;
}

/**
 * The exit code when the daemon settled the request, undefined when the full command must run.
 * `argv` starts with 'wal-push'.
 */
export async function walPushFast(argv: readonly string[]): Promise<number | undefined> {
  const args = argv.slice(1);
  const first = args[0];
  if (first === undefined || first.startsWith('-') || args.includes('--help') || args.includes('-h')) return undefined;
  // %p is pg_wal/<name> relative to PGDATA, PostgreSQL's working directory (already a real path).
  const path = resolve(first);
  const socket = flagValue(args, 'socket') ?? (process.env.PGFLEET_SOCKET || defaultSocketPath(dirname(dirname(path))));
  let reply;
  try {
    reply = await requestDaemon(
      socket,
      { v: PROTOCOL_VERSION, op: 'wal-push', path, args, env: optionEnvironment(process.env) },
      DAEMON_TIMEOUT_MS,
    );
  } catch (err) {
    if (err instanceof NoDaemonError) return undefined;
    const { PgfleetError } = await import('@pgfleet/core/errors');
    const e = new PgfleetError('WalDaemonFailed', (err as Error).message, { cause: err });
    process.stderr.write(`pgfleet-agent: ${e.format()}\n`);
    return e.exitCode;
  }
  if (reply.ok) return 0;
  // direct: the daemon serves another cluster, or our arguments need the full parser's report;
  // PGF-1001: a daemon older than this protocol version (the full command speaks its version).
  if (reply.direct || reply.code === 'PGF-1001') return undefined;
  const { PgfleetError } = await import('@pgfleet/core/errors');
  const e = PgfleetError.fromCode(reply.code, reply.message, reply.hint);
  process.stderr.write(`pgfleet-agent: ${e.format()}\n`);
  return e.exitCode;
}
