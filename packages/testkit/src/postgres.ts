/**
 * Launcher for a real PostgreSQL server per test.
 *
 * Integration and e2e tests need the genuine article (WAL archiving, checksums, recovery), not a
 * mock: this starts a private cluster on a free port on 127.0.0.1 with its socket, log and
 * (by default) data dir in temp dirs, never touching a system PostgreSQL on 5432. A new data dir is
 * a copy of one initdb'd template (initdb-template.ts). It can also start an existing data dir,
 * e.g. one our restore just produced, and wait for it to promote.
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { appendFile, chmod, mkdir, readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import pg from 'pg';
import { pidMatches, registerExitCleanup, removeDirSync, terminateSync, writeOwnerMarker } from './cleanup.js';
import { chownToPostgres, makeTempDir, pgOsUser, removeDir, runAsPostgres, tail } from './os-user.js';
import { freePort } from './ports.js';
import { createDataDir } from './initdb-template.js';
import { sleep } from '@pgfleet/core/async';

export interface PgInstanceOptions {
  /** sets archive_mode=on + archive_command */
  archiveCommand?: string;
  restoreCommand?: string;
  /** extra postgresql.conf lines (name -> value; values are quoted for you) */
  settings?: Record<string, string>;
  /** extra initdb arguments for a new data dir (e.g. ['--wal-segsize', '1']) */
  initdbArgs?: string[];
  /** start an EXISTING data dir (e.g. restored one) instead of initdb; port/unix_socket_directories/listen are overridden on the command line and nothing is initdb'd */
  dataDir?: string;
  /** stop() leaves dataDir (default: remove only dirs the launcher created) */
  keepDataDir?: boolean;
  /** for restored dirs: after start, wait until pg_is_in_recovery() is false (promoted) */
  waitForRecovery?: boolean;
  /** default 60 s; applies to pg_ctl start and to waitForRecovery */
  startTimeoutMs?: number;
}

export interface PgInstance {
  port: number;
  host: '127.0.0.1';
  user: 'postgres';
  database: 'postgres';
  dataDir: string;
  socketDir: string;
  logFile: string;
  binDir: string;
  /** postgres://postgres@127.0.0.1:PORT/postgres */
  connectionString: string;
  /** PGHOST/PGPORT/PGUSER/PGDATABASE for child processes (psql, our agent) */
  env: { PGHOST: string; PGPORT: string; PGUSER: string; PGDATABASE: string };
  /** one short-lived connection per call; returns the rows of the (last) statement */
  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- a test reads the columns its own SQL selects; naming the row type is optional
  query<T = any>(sql: string, params?: unknown[]): Promise<T[]>;
  /** pg_ctl stop -m fast, then remove dirs it created (unless keepDataDir); idempotent */
  stop(): Promise<void>;
  /** pg_ctl stop -m fast + start with the same settings and port */
  restart(): Promise<void>;
  /** server log text, for assertions and debugging (still available after stop()) */
  log(): Promise<string>;
}

const DEFAULT_START_TIMEOUT_MS = 60_000;

/** Bin dir of the newest installed PostgreSQL major (/usr/lib/postgresql/N/bin); PGFLEET_PG_BIN overrides. */
export function pgBinDir(): string {
  const override = process.env.PGFLEET_PG_BIN;
  if (override) {
    if (!existsSync(path.join(override, 'postgres'))) {
      throw new Error(`PGFLEET_PG_BIN=${override} does not contain a 'postgres' binary`);
    }
    return override;
  }
  const root = '/usr/lib/postgresql';
  let majors: number[] = [];
  try {
    majors = readdirSync(root)
      .filter((d) => /^\d+(\.\d+)?$/.test(d) && existsSync(path.join(root, d, 'bin', 'postgres')))
      .map(Number)
      .sort((a, b) => b - a);
  } catch {
    // no Debian-style install
  }
  const newest = majors[0];
  if (newest === undefined) {
    throw new Error(
      `no PostgreSQL server binaries found under ${root}/*/bin; install postgresql or set PGFLEET_PG_BIN to the dir holding initdb/pg_ctl/postgres`,
    );
  }
  return path.join(root, String(newest), 'bin');
}

/** postgresql.conf literal: always single-quoted, quotes doubled (valid for every GUC type). */
function confValue(v: string): string {
  return `'${v.replace(/\\/g, '\\\\').replace(/'/g, "''")}'`;
}

/** POSIX shell single-quoting: pg_ctl hands the -o string to /bin/sh. */
function shellQuote(v: string): string {
  return `'${v.replace(/'/g, `'\\''`)}'`;
}

function readPostmasterPid(dataDir: string): number | undefined {
  try {
    const first = readFileSync(path.join(dataDir, 'postmaster.pid'), 'utf8').split('\n')[0];
    const pid = Number(first);
    return Number.isInteger(pid) && pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}

async function readLog(logFile: string): Promise<string> {
  return readFile(logFile, 'utf8').catch(() => '');
}

export async function startPostgres(opts: PgInstanceOptions = {}): Promise<PgInstance> {
  const binDir = pgBinDir();
  const bin = (name: string) => path.join(binDir, name);
  const startTimeoutMs = opts.startTimeoutMs ?? DEFAULT_START_TIMEOUT_MS;

  // runDir holds what only this launch needs (socket, log); it is always removed by stop().
  const runDir = await makeTempDir('pg-run');
  const socketDir = path.join(runDir, 'socket');
  await mkdir(socketDir, { mode: 0o700 });
  await chownToPostgres(socketDir);
  const logFile = path.join(runDir, 'postgres.log');

  const createdDataDir = opts.dataDir === undefined;
  const dataDir = createdDataDir ? path.join(await makeTempDir('pg-data'), 'data') : path.resolve(opts.dataDir!);
  const removeDataDir = createdDataDir && !opts.keepDataDir;

  if (!createdDataDir) {
    const problem = !existsSync(path.join(dataDir, 'PG_VERSION'))
      ? 'is not a PostgreSQL data dir (no PG_VERSION)'
      : (() => {
          const pid = readPostmasterPid(dataDir);
          return pid !== undefined && pidMatches(pid, dataDir)
            ? `is in use by a running postmaster (pid ${pid})`
            : undefined;
        })();
    if (problem) {
      await removeDir(runDir);
      throw new Error(`startPostgres: ${dataDir} ${problem}`);
    }
  }

  let port = await freePort();
  let postmasterPid: number | undefined;
  // Registered before initdb/pg_ctl run, so even a process exiting mid-start leaves nothing behind.
  let unregister: (() => void) | undefined = registerExitCleanup(() => {
    const pid = postmasterPid ?? readPostmasterPid(dataDir);
    if (pid !== undefined && pidMatches(pid, dataDir)) terminateSync(pid, 'SIGQUIT');
    if (process.env.PGFLEET_KEEP_TMP === '1') return;
    removeDirSync(runDir);
    if (removeDataDir) removeDirSync(path.dirname(dataDir));
  });
  writeOwnerMarker(runDir, {
    pidFile: path.join(dataDir, 'postmaster.pid'),
    cmdlineMustInclude: dataDir,
    signal: 'SIGQUIT',
    dirs: removeDataDir ? [path.dirname(dataDir)] : [],
  });
  let logAtStop: string | undefined;
  const connectionString = () => `postgres://postgres@127.0.0.1:${port}/postgres`;

  const failWith = async (what: string, cause?: unknown): Promise<never> => {
    const log = await readLog(logFile);
    await forceStop();
    await cleanupDirs();
    const causeMsg = cause instanceof Error ? `: ${cause.message}` : '';
    throw new Error(`startPostgres: ${what}${causeMsg}\n--- server log tail (${logFile}) ---\n${tail(log)}`, {
      cause,
    });
  };

  const forceStop = async () => {
    const pid = postmasterPid ?? readPostmasterPid(dataDir);
    if (pid !== undefined && pidMatches(pid, dataDir)) terminateSync(pid, 'SIGQUIT');
    postmasterPid = undefined;
  };

  const cleanupDirs = async () => {
    unregister?.();
    unregister = undefined;
    await removeDir(runDir);
    if (removeDataDir) await removeDir(path.dirname(dataDir));
  };

  // ---- prepare the data dir ----
  if (createdDataDir) {
    try {
      // A copy of the machine's initdb'd template (one per set of extra initdb arguments) with a
      // system identifier of its own, made by the postgres user: `data` (mode 0700) inside our
      // postgres-owned temp dir.
      await createDataDir(binDir, dataDir, runDir, opts.initdbArgs ?? []);
    } catch (err) {
      await cleanupDirs();
      throw new Error(`startPostgres: initdb (or the copy of its template) failed: ${(err as Error).message}`, {
        cause: err,
      });
    }
    const lines = [
      '',
      '# ---- added by @pgfleet/testkit ----',
      `port = ${port}`,
      `listen_addresses = '127.0.0.1'`,
      `unix_socket_directories = ${confValue(socketDir)}`,
      'wal_level = replica',
      'max_wal_senders = 4',
      // A test server outlives no crash of the machine, only of its processes (which fsync does
      // not guard against): syncing every commit and checkpoint only made each test wait for the disk.
      'fsync = off',
      'logging_collector = off',
    ];
    if (opts.archiveCommand !== undefined) {
      lines.push('archive_mode = on', `archive_command = ${confValue(opts.archiveCommand)}`);
    }
    if (opts.restoreCommand !== undefined) lines.push(`restore_command = ${confValue(opts.restoreCommand)}`);
    for (const [k, v] of Object.entries(opts.settings ?? {})) lines.push(`${k} = ${confValue(v)}`);
    await appendFile(path.join(dataDir, 'postgresql.conf'), lines.join('\n') + '\n');
  } else {
    // A restored dir may have been written by root; postgres insists on owning a 0700/0750 data dir.
    const u = pgOsUser();
    if (u && (await stat(dataDir)).uid !== u.uid) await chownToPostgres(dataDir, { recursive: true });
    const mode = (await stat(dataDir)).mode & 0o777;
    if (mode !== 0o700 && mode !== 0o750) await chmod(dataDir, 0o700);
  }

  /** -o for an existing data dir: command-line GUCs win over its postgresql(.auto).conf. */
  const commandLineOptions = (): string[] => {
    if (createdDataDir) return [];
    const gucs: [string, string][] = [
      ['listen_addresses', '127.0.0.1'],
      ['unix_socket_directories', socketDir],
    ];
    if (opts.archiveCommand !== undefined) gucs.push(['archive_mode', 'on'], ['archive_command', opts.archiveCommand]);
    if (opts.restoreCommand !== undefined) gucs.push(['restore_command', opts.restoreCommand]);
    for (const [k, v] of Object.entries(opts.settings ?? {})) gucs.push([k, v]);
    const o = [`-p ${port}`, ...gucs.map(([k, v]) => `-c ${shellQuote(`${k}=${v}`)}`)].join(' ');
    return ['-o', o];
  };

  const connect = async (timeoutMs: number): Promise<void> => {
    const deadline = Date.now() + timeoutMs;
    let lastErr: unknown;
    while (Date.now() < deadline) {
      const c = new pg.Client({ connectionString: connectionString(), connectionTimeoutMillis: 5000 });
      c.on('error', () => {});
      try {
        await c.connect();
        await c.query('select 1');
        await c.end();
        return;
      } catch (err) {
        lastErr = err;
        await c.end().catch(() => {});
        await sleep(100);
      }
    }
    throw new Error(`no connection to ${connectionString()} within ${timeoutMs} ms`, { cause: lastErr });
  };

  const pgCtlStart = async (): Promise<void> => {
    const t = Math.max(1, Math.ceil(startTimeoutMs / 1000));
    await runAsPostgres(
      bin('pg_ctl'),
      ['-D', dataDir, '-l', logFile, '-w', '-t', String(t), ...commandLineOptions(), 'start'],
      {
        cwd: runDir,
        timeoutMs: startTimeoutMs + 15_000,
      },
    );
    postmasterPid = readPostmasterPid(dataDir);
    await connect(startTimeoutMs);
  };

  const pgCtlStop = async (): Promise<void> => {
    try {
      await runAsPostgres(bin('pg_ctl'), ['-D', dataDir, '-m', 'fast', '-w', '-t', '60', 'stop'], {
        cwd: runDir,
        timeoutMs: 75_000,
      });
    } catch {
      // not running any more, or did not stop in time: make sure it is gone
    }
    await forceStop();
  };

  // ---- start (retry with a new port if someone grabbed ours in the meantime) ----
  for (let attempt = 1; ; attempt++) {
    const logBefore = (await readLog(logFile)).length;
    try {
      await pgCtlStart();
      break;
    } catch (err) {
      const newLog = (await readLog(logFile)).slice(logBefore);
      const portTaken = /could not bind|Address already in use|could not create any TCP\/IP sockets/.test(newLog);
      if (!portTaken || attempt >= 3) await failWith('server did not start', err);
      await forceStop();
      port = await freePort();
      if (createdDataDir) await appendFile(path.join(dataDir, 'postgresql.conf'), `port = ${port}\n`);
    }
  }

  if (opts.waitForRecovery) {
    const deadline = Date.now() + startTimeoutMs;
    for (;;) {
      let inRecovery: boolean | undefined;
      try {
        const c = new pg.Client({ connectionString: connectionString(), connectionTimeoutMillis: 5000 });
        c.on('error', () => {});
        await c.connect();
        try {
          inRecovery = (await c.query('select pg_is_in_recovery() as r')).rows[0]?.r as boolean;
        } finally {
          await c.end().catch(() => {});
        }
      } catch {
        // server may be between recovery end and accepting connections; keep polling
      }
      if (inRecovery === false) break;
      if (Date.now() > deadline) {
        await failWith(
          `still in recovery after ${startTimeoutMs} ms (waitForRecovery). If a recovery target was set, ` +
            `recovery_target_action defaults to 'pause'; set settings.recovery_target_action='promote'`,
        );
      }
      await sleep(200);
    }
  }

  let stopping: Promise<void> | undefined;
  const instance: PgInstance = {
    get port() {
      return port;
    },
    host: '127.0.0.1',
    user: 'postgres',
    database: 'postgres',
    dataDir,
    socketDir,
    logFile,
    binDir,
    get connectionString() {
      return connectionString();
    },
    get env() {
      return { PGHOST: '127.0.0.1', PGPORT: String(port), PGUSER: 'postgres', PGDATABASE: 'postgres' };
    },
    // eslint-disable-next-line @typescript-eslint/no-explicit-any -- as in PgInstance.query
    async query<T = any>(sql: string, params?: unknown[]): Promise<T[]> {
      const c = new pg.Client({ connectionString: connectionString(), connectionTimeoutMillis: 10_000 });
      c.on('error', () => {}); // a dying server must not crash the test process; query() rejects anyway
      await c.connect();
      try {
        // A multi-statement query resolves to one result per statement (pg's types know only one).
        const res = (await c.query(sql, params)) as pg.QueryResult | pg.QueryResult[];
        const last = Array.isArray(res) ? res[res.length - 1] : res;
        return (last?.rows ?? []) as T[];
      } finally {
        await c.end().catch(() => {});
      }
    },
    stop() {
      stopping ??= (async () => {
        await pgCtlStop();
        logAtStop = await readLog(logFile);
        await cleanupDirs();
      })();
      return stopping;
    },
    async restart() {
      if (stopping) throw new Error('PgInstance.restart: instance was stopped');
      await pgCtlStop();
      try {
        await pgCtlStart();
      } catch (err) {
        throw new Error(
          `PgInstance.restart: server did not start again: ${(err as Error).message}\n--- server log tail (${logFile}) ---\n${tail(await readLog(logFile))}`,
          { cause: err },
        );
      }
    },
    async log() {
      return logAtStop ?? readLog(logFile);
    },
  };
  return instance;
}
