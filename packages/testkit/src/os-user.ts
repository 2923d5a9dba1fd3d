/**
 * Running things as the `postgres` OS user, and temp dirs it can use.
 *
 * The test machine runs tests as root, but initdb, postgres and pg_ctl refuse to run as root.
 * So when we are root, server binaries (and anything that must write into a data dir or an
 * archive dir, such as our agent invoked by archive_command) run with the uid/gid of the
 * `postgres` user, and the temp dirs they use are chowned to it. When not root, everything
 * simply runs as the current user.
 */
import { spawn, type SpawnOptions } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { chown, lchown, mkdtemp, readdir, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';

export interface OsUser {
  uid: number;
  gid: number;
}

let cachedUser: OsUser | undefined | null = null;

function lookupPasswd(name: string): OsUser | undefined {
  const passwd = readFileSync('/etc/passwd', 'utf8');
  for (const line of passwd.split('\n')) {
    const f = line.split(':');
    if (f[0] === name && f[2] !== undefined && f[3] !== undefined) {
      return { uid: Number(f[2]), gid: Number(f[3]) };
    }
  }
  return undefined;
}

/** uid/gid of the `postgres` OS user when running as root, else undefined: server binaries (initdb, postgres, pg_ctl) refuse root. */
export function pgOsUser(): { uid: number; gid: number } | undefined {
  if (cachedUser !== null) return cachedUser;
  if (process.getuid?.() !== 0) {
    cachedUser = undefined;
    return cachedUser;
  }
  const user = lookupPasswd('postgres');
  if (!user) {
    throw new Error(
      'testkit: running as root but there is no `postgres` OS user; PostgreSQL server binaries refuse to run as root. ' +
        'Create the user (e.g. install the postgresql package) or run the tests as a non-root user.',
    );
  }
  cachedUser = user;
  return cachedUser;
}

/** spawn options so a child process (e.g. our agent) runs as the postgres user when root */
export function pgEnvForChild(): { uid?: number; gid?: number } {
  const u = pgOsUser();
  return u ? { uid: u.uid, gid: u.gid } : {};
}

/** Gives a path to the postgres user when we are root (no-op otherwise). */
export async function chownToPostgres(p: string, opts: { recursive?: boolean } = {}): Promise<void> {
  const u = pgOsUser();
  if (!u) return;
  await lchown(p, u.uid, u.gid);
  if (!opts.recursive) return;
  const entries = await readdir(p, { withFileTypes: true }).catch(() => []);
  for (const e of entries) {
    const child = path.join(p, e.name);
    if (e.isDirectory()) await chownToPostgres(child, opts);
    else await lchown(child, u.uid, u.gid);
  }
}

/** mkdtemp under os.tmpdir() (prefix 'pgfleet-'), chowned to the postgres user when root so the postgres user (archive_command!) can write there. */
export async function makeTempDir(prefix: string): Promise<string> {
  const safe = prefix.replace(/[^A-Za-z0-9_.-]/g, '_');
  const dir = await mkdtemp(path.join(os.tmpdir(), `pgfleet-${safe}${safe.endsWith('-') || safe === '' ? '' : '-'}`));
  const u = pgOsUser();
  if (u) await chown(dir, u.uid, u.gid);
  return dir;
}

/** Removes a dir tree unless PGFLEET_KEEP_TMP=1 (handy when debugging a failing test). */
export async function removeDir(dir: string): Promise<void> {
  if (process.env.PGFLEET_KEEP_TMP === '1') return;
  await rm(dir, { recursive: true, force: true, maxRetries: 3 });
}

export interface RunOptions {
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  /** kill the command (SIGKILL) after this long; default 120 s */
  timeoutMs?: number;
  /** written to the command's stdin */
  input?: string | Buffer;
}

export interface RunError extends Error {
  code?: number | null;
  signal?: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Runs a command to completion; resolves its output, rejects with stderr in the message on failure. */
export function run(
  cmd: string,
  args: string[],
  opts: RunOptions & Pick<SpawnOptions, 'uid' | 'gid'> = {},
): Promise<{ stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, {
      cwd: opts.cwd ?? os.tmpdir(),
      env: opts.env ?? process.env,
      stdio: ['pipe', 'pipe', 'pipe'],
      ...(opts.uid !== undefined ? { uid: opts.uid } : {}),
      ...(opts.gid !== undefined ? { gid: opts.gid } : {}),
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 120_000);
    child.once('error', (e) => {
      clearTimeout(timer);
      reject(Object.assign(new Error(`${cmd}: ${e.message}`, { cause: e }), { stdout: '', stderr: '' }));
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      const stdout = Buffer.concat(out).toString('utf8');
      const stderr = Buffer.concat(err).toString('utf8');
      if (code === 0) return resolve({ stdout, stderr });
      const how = signal ? `was killed by ${signal}` : `exited with code ${code}`;
      const e = new Error(
        `${[cmd, ...args].join(' ')} ${how}${stderr.trim() ? `:\n${stderr.trim()}` : stdout.trim() ? `:\n${stdout.trim()}` : ''}`,
      ) as RunError;
      e.code = code;
      e.signal = signal;
      e.stdout = stdout;
      e.stderr = stderr;
      reject(e);
    });
    child.stdin.on('error', () => {}); // command may exit without reading its input
    child.stdin.end(opts.input ?? '');
  });
}

/** execFile-like helper that runs as the postgres user when root; throws with stderr on failure. */
export function runAsPostgres(
  cmd: string,
  args: string[],
  opts: RunOptions = {},
): Promise<{ stdout: string; stderr: string }> {
  return run(cmd, args, { ...opts, ...pgEnvForChild() });
}

/** Last `lines` lines of a text, for error messages. */
export function tail(text: string, lines = 30): string {
  const all = text.trimEnd().split('\n');
  return all.slice(-lines).join('\n');
}
