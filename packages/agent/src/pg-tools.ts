/**
 * Running PostgreSQL's client programs (pg_dump, pg_restore, psql, pg_dumpall) as children of the
 * agent: their libpq environment, the end of their stderr for error messages, their exit code.
 * Shared by recover-table and the logical backups.
 */
import { spawn, type ChildProcess } from 'node:child_process';

/** libpq's environment for a child: only the connection given (a stray PGSERVICE or PGOPTIONS in the agent's must not steer it). */
export function libpqEnv(
  t: {
    host?: string;
    port?: number;
    user?: string;
    database?: string;
    password?: string;
  },
  applicationName: string,
): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('PG')) env[k] = v;
  if (t.host) env.PGHOST = t.host;
  if (t.port) env.PGPORT = String(t.port);
  if (t.user) env.PGUSER = t.user;
  if (t.database) env.PGDATABASE = t.database;
  if (t.password) env.PGPASSWORD = t.password;
  env.PGAPPNAME = applicationName;
  env.PGCONNECT_TIMEOUT = '10';
  return env;
}

/** Keeps the last `max` bytes a stream wrote (a child's stderr, for the error message). */
export function tail(stream: NodeJS.ReadableStream | null, max = 4000): () => string {
  let text = '';
  stream?.on('data', (d: Buffer) => {
    text = (text + d.toString()).slice(-max);
  });
  return () => text.trim();
}

/** The child's exit code once it closed (-1: it could not start or was killed by a signal). */
export function exitCode(child: ChildProcess): Promise<number> {
  return new Promise((resolve) => {
    child.once('error', () => resolve(-1));
    child.once('close', (code) => resolve(code ?? -1));
  });
}

/**
 * Runs a client program to its end (stdout ignored): its exit code and the end of its stderr.
 * `onSpawn` gets the child's pid once it runs (the dump watches pg_dump's open files by it).
 */
export async function runClientProgram(
  path: string,
  args: readonly string[],
  env: NodeJS.ProcessEnv,
  signal: AbortSignal,
  onSpawn?: (pid: number) => void,
): Promise<{ code: number; stderr: string }> {
  const child = spawn(path, args, { env, stdio: ['ignore', 'ignore', 'pipe'], signal });
  if (onSpawn) child.once('spawn', () => onSpawn(child.pid!));
  const err = tail(child.stderr);
  const code = await exitCode(child);
  signal.throwIfAborted();
  return { code, stderr: err() || 'no message' };
}
