/**
 * The throwaway PostgreSQL of a restore drill: started with pg_ctl (as the agent's own OS user)
 * on a restored data directory, reachable only through a unix socket in a 0700 directory, never
 * archiving, and stopped with an immediate shutdown when the drill ends (a fast, clean one when
 * the drill keeps its directory for a DBA to inspect).
 *
 * The restored postgresql.conf is the source's, so everything that could reach outside the scratch
 * directory, or strain the host it shares, is overridden in postgresql.auto.conf (read last; see
 * drillServerSettings). Settings recovery checks against the source (max_connections,
 * max_worker_processes, max_wal_senders, max_prepared_transactions, max_locks_per_transaction)
 * are left as they are, so that hot standby can open during recovery.
 *
 * It also owns the scratch area's housekeeping: each drill directory names the agent process that
 * made it (DRILL_OWNER_FILE), so that a directory left behind by an agent that died mid-drill
 * (SIGKILL, power loss) is found at the next start or drill, its postmaster stopped and the
 * directory removed (cleanDrillLeftovers). A directory a drill was asked to keep carries a marker
 * (DRILL_KEPT_FILE) and is never taken for a leftover: a DBA removes it (docs/drills.md).
 */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { open, readdir, readFile, readlink, realpath, rm, stat, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { PgfleetError, processAlive, sleep, type Logger } from '@pgfleet/core';
import { connectPg, serverLogExcerpt, type ServerLogExcerpt } from '@pgfleet/pg';
import type { PgClient } from './capture.js';
import { RestoreTree } from '../restore/confined-path.js';

const run = promisify(execFile);

/** A TCP port nobody listens on: the socket's name (.s.PGSQL.<port>) and PostgreSQL's shared memory key derive from it. */
export function freeTcpPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as { port: number }).port;
      srv.close(() => resolve(port));
    });
  });
}

const confString = (v: string): string => `'${v.replace(/\\/g, '\\\\').replace(/'/g, "''")}'`;

export interface ScratchOptions {
  pgdata: string;
  /** Directory (0700) of pg_hba.conf, pg_ident.conf and the server log (postgres.log), and of the unix socket unless socketDir says otherwise. */
  runDir: string;
  /** Directory (0700) of the unix socket when runDir's path is too long for one (107 bytes). */
  socketDir?: string;
  binDir: string;
  /** PostgreSQL major version of the restored data directory. */
  major: number;
  /** Role to connect as until promoted (the source's agent role: the restored cluster has the same roles). */
  user: string;
  jobId: string;
}

export interface Promoted {
  /** ms from start to the first accepted connection (consistent) and to promotion. */
  consistentMs: number;
  promotedMs: number;
  recoveredLsn: string;
  recoveredTime: Date | undefined;
}

/**
 * Settings recovery insists are at least the source's (with hot_standby = on): never overridden,
 * the copy keeps the values of the source's configuration.
 */
export const RECOVERY_CHECKED_SETTINGS = [
  'max_connections',
  'max_worker_processes',
  'max_wal_senders',
  'max_prepared_transactions',
  'max_locks_per_transaction',
] as const;

/**
 * What the drill writes over the source's configuration, in order. Each group says why; none of
 * RECOVERY_CHECKED_SETTINGS is among them, and shared_preload_libraries stays (extensions in the
 * copy may need their libraries).
 */
export function drillServerSettings(o: {
  port: number;
  socketDir: string;
  hbaFile: string;
  identFile: string;
  externalPidFile: string;
  major: number;
  jobId: string;
}): [string, string][] {
  const from = (major: number, s: [string, string][]): [string, string][] => (o.major >= major ? s : []);
  const before = (major: number, s: [string, string][]): [string, string][] => (o.major < major ? s : []);
  return [
    // Reachable only through the drill's own socket (the copy holds production data).
    ['port', String(o.port)],
    ['listen_addresses', ''],
    ['unix_socket_directories', o.socketDir],
    ['unix_socket_group', ''],
    ['unix_socket_permissions', '0700'],
    ['hba_file', o.hbaFile],
    ['ident_file', o.identFile],
    ['ssl', 'off'],
    // Never archive: a promoted copy starts a new timeline that must not reach the source's repository.
    ['archive_mode', 'off'],
    ['archive_command', ''],
    ...from(15, [['archive_library', '']]),
    // Commands of the source that recovery or promotion would run on this host.
    ['recovery_end_command', ''],
    ['archive_cleanup_command', ''],
    // A trigger file the source's failover tooling may create would promote the copy early.
    ...before(16, [['promote_trigger_file', '']]),
    // No primary to follow, no standby to wait for (writes would hang), no slots to synchronize.
    ['primary_conninfo', ''],
    ['primary_slot_name', ''],
    ['synchronous_standby_names', ''],
    ...from(17, [['sync_replication_slots', 'off']]),
    ['hot_standby', 'on'],
    // Enabled subscriptions would start apply workers after promotion, which connect to the real
    // publisher and consume its slots: no logical replication launcher, no worker.
    ['max_logical_replication_workers', '0'],
    ['max_sync_workers_per_subscription', '0'],
    ...from(16, [['max_parallel_apply_workers_per_subscription', '0']]),
    // pg_cron 1.6+ launches no job (a harmless placeholder when pg_cron is not loaded; older
    // pg_cron versions have no such switch, see docs/drills.md).
    ['cron.launch_active_jobs', 'off'],
    // The copy shares the host (maybe the production one): small memory, no huge pages, no
    // preallocated dynamic shared memory, few parallel workers, WAL kept within the default bounds.
    ['shared_buffers', '128MB'],
    ['huge_pages', 'off'],
    ['wal_buffers', '-1'],
    ...from(14, [['min_dynamic_shared_memory', '0']]),
    ['max_parallel_workers', '2'],
    ['max_wal_size', '1GB'],
    ['min_wal_size', '80MB'],
    ...from(13, [['wal_keep_size', '0']]),
    // A throwaway copy: no background vacuum competing with amcheck or changing what is counted.
    ['autovacuum', 'off'],
    // The drill's own sessions must not be cut short by the source's timeouts or turned read-only.
    ['default_transaction_read_only', 'off'],
    ['statement_timeout', '0'],
    ['lock_timeout', '0'],
    ['idle_in_transaction_session_timeout', '0'],
    ...from(17, [['transaction_timeout', '0']]),
    // One log, on stderr into the drill's directory; 'restored log file' lines (LOG) tell which
    // WAL segment recovery stopped at; no statement logging of the checks. Its lines are read
    // when the drill fails (serverLogExcerpt): English severities and messages whatever the
    // source's lc_messages, and a known line prefix.
    ['logging_collector', 'off'],
    ['log_destination', 'stderr'],
    ['lc_messages', 'C'],
    ['log_line_prefix', '%m [%p] '],
    ['log_min_messages', 'warning'],
    ['log_statement', 'none'],
    ['log_min_duration_statement', '-1'],
    ['log_connections', 'off'],
    ['log_disconnections', 'off'],
    // The source's external pid file (Debian: /var/run/postgresql/<major>-main.pid) must not be
    // overwritten; '' is not "none" to PostgreSQL (it tries to write "" and logs an error), so the
    // copy gets one of its own in the drill's directory.
    ['external_pid_file', o.externalPidFile],
    ['cluster_name', `pgfleet-drill-${o.jobId.slice(0, 8)}`],
  ];
}

/** The server log's name in the drill directory (runDir). */
export const DRILL_LOG_FILE = 'postgres.log';
/** How much of the end of a long server log is read for its excerpt: recovery logs a line per WAL segment restored. */
const LOG_READ_BYTES = 4 * 2 ** 20;

export class ScratchPostgres {
  readonly logFile: string;
  private readonly socketDir: string;
  private port = 0;
  private started = false;
  private user: string;

  constructor(private readonly o: ScratchOptions) {
    this.logFile = join(o.runDir, DRILL_LOG_FILE);
    this.socketDir = o.socketDir ?? o.runDir;
    this.user = o.user;
  }

  /** Writes the drill's settings over the source's (see the header). */
  async configure(): Promise<void> {
    this.port = await freeTcpPort();
    const hba = join(this.o.runDir, 'pg_hba.conf');
    const ident = join(this.o.runDir, 'pg_ident.conf');
    // Trust is safe here: the only way in is the socket in a directory only the agent's user can enter.
    await writeFile(hba, 'local all all trust\n', { mode: 0o600 });
    await writeFile(ident, '', { mode: 0o600 });
    // The restored directory's files are written like the restore's own: never through a link.
    const pgdata = new RestoreTree(this.o.pgdata);
    // Debian keeps postgresql.conf in /etc: the data directory then has none, and postgres insists on one.
    await pgdata.appendFile('postgresql.conf', '');
    const settings = drillServerSettings({
      port: this.port,
      socketDir: this.socketDir,
      hbaFile: hba,
      identFile: ident,
      externalPidFile: join(this.o.runDir, 'postmaster.external.pid'),
      major: this.o.major,
      jobId: this.o.jobId,
    });
    const lines = [
      '',
      `# pgfleet drill ${this.o.jobId}: a throwaway copy that never archives and listens only on its own socket`,
      ...settings.map(([k, v]) => `${k} = ${confString(v)}`),
    ];
    await pgdata.appendFile('postgresql.auto.conf', `${lines.join('\n')}\n`);
  }

  async start(): Promise<void> {
    try {
      // -W: do not wait; recovery may take long, and waitPromoted watches it closely.
      await run(join(this.o.binDir, 'pg_ctl'), ['-D', this.o.pgdata, '-l', this.logFile, '-W', 'start'], {
        cwd: this.o.runDir,
        timeout: 60_000,
      });
      this.started = true;
    } catch (err) {
      throw new PgfleetError(
        'DrillFailed',
        `pg_ctl start failed: ${(err as { stderr?: string }).stderr?.trim() || (err as Error).message}`,
        { cause: err },
      );
    }
  }

  connect(database: string): Promise<PgClient> {
    return connectPg({
      host: this.socketDir,
      port: this.port,
      user: this.user,
      database,
      applicationName: 'pgfleet-drill',
    });
  }

  /** How libpq clients (pg_dump) reach it: its socket directory, port and the role connect() uses. */
  libpqTarget(): { host: string; port: number; user: string } {
    return { host: this.socketDir, port: this.port, user: this.user };
  }

  private postmasterPid(): Promise<number | undefined> {
    return postmasterPid(this.o.pgdata);
  }

  /**
   * Polls until the server accepts connections (consistent, hot standby) and then leaves recovery
   * (promoted). Fails when the postmaster exits or never writes its pid, or when recovery pauses;
   * the server's own words (e.g. "FATAL: recovery ended before configured recovery target was
   * reached") are in its log, which the caller reads (logExcerpt).
   */
  async waitPromoted(signal: AbortSignal | undefined, onConsistent: () => void): Promise<Promoted> {
    const t0 = Date.now();
    let consistentMs: number | undefined;
    let sawPid = false;
    for (;;) {
      signal?.throwIfAborted();
      const pid = await this.postmasterPid();
      if (pid !== undefined) sawPid = true;
      if (sawPid && (pid === undefined || !processAlive(pid)))
        throw new PgfleetError('DrillFailed', `the drill's PostgreSQL exited during recovery`);
      if (!sawPid && Date.now() - t0 > 30_000)
        throw new PgfleetError('DrillFailed', `the drill's PostgreSQL did not start within 30 s (no postmaster.pid)`);
      let c: PgClient | undefined;
      try {
        c = await this.connect('postgres').catch(() => undefined);
        if (c) {
          if (consistentMs === undefined) {
            consistentMs = Date.now() - t0;
            onConsistent();
          }
          const r = (
            await c.query<{ rec: boolean; paused: boolean; lsn: string | null; t: Date | null }>(
              'SELECT pg_is_in_recovery() AS rec, CASE WHEN pg_is_in_recovery() THEN pg_is_wal_replay_paused() ELSE false END AS paused, pg_last_wal_replay_lsn()::text AS lsn, pg_last_xact_replay_timestamp() AS t',
            )
          ).rows[0]!;
          if (!r.rec) {
            // Checks run as the copy's bootstrap superuser (CREATE EXTENSION amcheck needs one): the socket trusts every role.
            this.user =
              (await c.query<{ n: string }>('SELECT rolname AS n FROM pg_roles WHERE oid = 10')).rows[0]?.n ??
              this.user;
            return {
              consistentMs,
              promotedMs: Date.now() - t0,
              recoveredLsn: r.lsn ?? '',
              recoveredTime: r.t ? new Date(r.t) : undefined,
            };
          }
          if (r.paused)
            throw new PgfleetError('DrillFailed', `recovery paused instead of promoting (at ${r.lsn ?? '?'})`);
        }
      } finally {
        await c?.end().catch(() => {});
      }
      await sleep(100);
    }
  }

  /** What the server log says went wrong (its problem lines and tail, bounded; see serverLogExcerpt). */
  async logExcerpt(): Promise<ServerLogExcerpt> {
    return serverLogExcerpt(await this.log(LOG_READ_BYTES));
  }

  /** The server log ('' before the server wrote one); at most its last `maxBytes` when given. */
  async log(maxBytes?: number): Promise<string> {
    if (maxBytes === undefined) return readFile(this.logFile, 'utf8').catch(() => '');
    const f = await open(this.logFile, 'r').catch(() => undefined);
    if (!f) return '';
    try {
      const size = (await f.stat()).size;
      const n = Math.min(size, maxBytes);
      const buf = Buffer.alloc(n);
      await f.read(buf, 0, n, size - n);
      // A cut at the start may fall inside a line: drop that partial line.
      const text = buf.toString('utf8');
      return n < size ? text.slice(text.indexOf('\n') + 1) : text;
    } finally {
      await f.close();
    }
  }

  /** WAL segments recovery took from the archive, in order (from the "restored log file" lines). */
  async restoredSegments(): Promise<string[]> {
    return [...(await this.log()).matchAll(/restored log file "([0-9A-F]{24})" from archive/g)].map((m) => m[1]!);
  }

  /**
   * Stops the server: an immediate shutdown when the copy is thrown away; a fast (clean) one when
   * it is kept, so that the data directory can be started again for inspection without crash
   * recovery (immediate after 60 s). SIGKILL when pg_ctl cannot stop it.
   */
  async stop(mode: 'immediate' | 'fast' = 'immediate'): Promise<void> {
    if (!this.started) return;
    this.started = false;
    const pid = await this.postmasterPid();
    const pgCtlStop = (m: string, seconds: number) =>
      run(join(this.o.binDir, 'pg_ctl'), ['-D', this.o.pgdata, '-m', m, '-w', '-t', String(seconds), 'stop'], {
        timeout: (seconds + 15) * 1000,
      }).then(
        () => true,
        () => false,
      );
    if (mode === 'fast' && (await pgCtlStop('fast', 60))) return;
    await pgCtlStop('immediate', 30);
    if (pid !== undefined && processAlive(pid)) await terminate(pid, 'SIGKILL', 5_000);
  }
}

function postmasterPid(pgdata: string): Promise<number | undefined> {
  return readFile(join(pgdata, 'postmaster.pid'), 'utf8').then(
    (t) => {
      const pid = Number(t.split('\n')[0]);
      return Number.isInteger(pid) && pid > 0 ? pid : undefined;
    },
    () => undefined,
  );
}

/** Sends `signal` and waits up to `waitMs` for the process to be gone; true when it is. */
async function terminate(pid: number, signal: NodeJS.Signals, waitMs: number): Promise<boolean> {
  try {
    process.kill(pid, signal);
  } catch {
    // gone meanwhile
  }
  for (const deadline = Date.now() + waitMs; processAlive(pid) && Date.now() < deadline;) await sleep(100);
  return !processAlive(pid);
}

/** Prefix of every drill directory in the scratch area: pgfleet-drill-<job id>. */
export const DRILL_DIR_PREFIX = 'pgfleet-drill-';
/** In each drill directory: which agent process made it, as JSON (DrillOwner). */
export const DRILL_OWNER_FILE = 'owner.json';
/**
 * In a drill directory kept for inspection (`pgfleet drill --keep`): the job and when, as JSON.
 * cleanDrillLeftovers never removes a directory holding it; removing the file hands the
 * directory back to that cleanup.
 */
export const DRILL_KEPT_FILE = 'kept.json';
/** A drill directory without an owner file younger than this is being created: not a leftover. */
const UNOWNED_GRACE_MS = 60_000;

interface DrillOwner {
  pid: number;
  /** The process's start time (/proc/<pid>/stat field 22), so a recycled pid is not taken for the owner. */
  start?: string;
  /** The socket directory outside the drill directory (when the drill directory's path is too long for a socket). */
  socketDir?: string;
}

/** Start time of a process in clock ticks since boot (Linux); undefined elsewhere or when it is gone. */
export async function processStart(pid: number): Promise<string | undefined> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => undefined);
  // Field 2 (comm) is parenthesised and may hold spaces: count the fields after its closing parenthesis.
  return stat?.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
}

/** Marks `drillDir` as kept for a DBA (see DRILL_KEPT_FILE). */
export async function markDrillKept(drillDir: string, jobId: string): Promise<void> {
  const note = {
    jobId,
    keptAt: new Date().toISOString(),
    remove: `rm -rf ${drillDir} (or delete this file: the agent then removes the directory at its next start or drill)`,
  };
  await writeFile(join(drillDir, DRILL_KEPT_FILE), `${JSON.stringify(note, null, 2)}\n`, { mode: 0o600 });
}

/** Marks `drillDir` as this process's (see cleanDrillLeftovers). */
export async function writeDrillOwner(drillDir: string, socketDir: string | undefined): Promise<void> {
  const start = await processStart(process.pid);
  const owner: DrillOwner = { pid: process.pid, ...(start ? { start } : {}), ...(socketDir ? { socketDir } : {}) };
  await writeFile(join(drillDir, DRILL_OWNER_FILE), JSON.stringify(owner), { mode: 0o600 });
}

async function readDrillOwner(drillDir: string): Promise<DrillOwner | undefined> {
  try {
    const o = JSON.parse(await readFile(join(drillDir, DRILL_OWNER_FILE), 'utf8')) as DrillOwner;
    return Number.isInteger(o.pid) ? o : undefined;
  } catch {
    return undefined;
  }
}

/** True when the process that wrote `owner` still runs (and is not a later process given the same pid). */
async function ownerRunning(owner: DrillOwner): Promise<boolean> {
  if (!processAlive(owner.pid)) return false;
  return owner.start === undefined || (await processStart(owner.pid)) === owner.start;
}

/**
 * Stops a postmaster still running on `pgdata` with an immediate shutdown (SIGQUIT, what
 * `pg_ctl stop -m immediate` sends; SIGKILL after 10 s). Only a process that is PostgreSQL and
 * runs in that very directory (the postmaster's working directory is its data directory) is
 * signalled: a stale postmaster.pid may name a pid that now belongs to something else. Returns the
 * pid stopped. Linux (/proc) only: elsewhere nothing is signalled.
 */
export async function stopLeftoverPostmaster(pgdata: string): Promise<number | undefined> {
  const pid = await postmasterPid(pgdata);
  if (pid === undefined || !processAlive(pid)) return undefined;
  const comm = (await readFile(`/proc/${pid}/comm`, 'utf8').catch(() => '')).trim();
  if (comm !== 'postgres' && comm !== 'postmaster') return undefined;
  const [cwd, dir] = await Promise.all([
    readlink(`/proc/${pid}/cwd`).catch(() => undefined),
    realpath(pgdata).catch(() => undefined),
  ]);
  if (cwd === undefined || cwd !== dir) return undefined;
  if (!(await terminate(pid, 'SIGQUIT', 10_000))) await terminate(pid, 'SIGKILL', 5_000);
  return pid;
}

/**
 * Removes the drill directories in `scratchRoot` that no running drill owns: made by an agent
 * process that is gone (killed mid-drill), or by this one for a drill that is no longer in
 * `active` (its own cleanup failed). A postmaster still running from one is stopped first (see
 * stopLeftoverPostmaster), then the directory and its outside socket directory are removed.
 * Directories of drills another live agent runs in the same scratch area, and directories kept
 * for inspection (DRILL_KEPT_FILE), are left alone.
 */
export async function cleanDrillLeftovers(
  scratchRoot: string,
  o: { log: Logger; active: ReadonlySet<string> },
): Promise<string[]> {
  const removed: string[] = [];
  const entries = await readdir(scratchRoot, { withFileTypes: true }).catch(() => []);
  for (const e of entries) {
    if (!e.isDirectory() || !e.name.startsWith(DRILL_DIR_PREFIX)) continue;
    const dir = join(scratchRoot, e.name);
    if (o.active.has(dir)) continue;
    if (existsSync(join(dir, DRILL_KEPT_FILE))) {
      // Said every time: a kept copy holds production data and a cluster's worth of disk.
      o.log.info(
        { dir },
        `drill directory kept for inspection (pgfleet drill --keep) left alone: remove it when done (docs/drills.md)`,
      );
      continue;
    }
    const owner = await readDrillOwner(dir);
    if (owner) {
      if (owner.pid !== process.pid && (await ownerRunning(owner))) continue;
    } else {
      const age = Date.now() - ((await stat(dir).catch(() => undefined))?.mtimeMs ?? 0);
      if (age < UNOWNED_GRACE_MS) continue;
    }
    const postmaster = await stopLeftoverPostmaster(join(dir, 'data'));
    // wal-prefetch children of the dead drill may still be writing into its pg_wal.
    await waitForProcessesUsing(dir, 10_000);
    try {
      await rm(dir, { recursive: true, force: true, maxRetries: 3 });
      if (owner?.socketDir) await rm(owner.socketDir, { recursive: true, force: true });
      removed.push(dir);
      o.log.info(
        { dir, ...(owner ? { ownerPid: owner.pid } : {}), ...(postmaster ? { postmasterStopped: postmaster } : {}) },
        'removed a drill directory left behind by an earlier drill',
      );
    } catch (err) {
      o.log.warn(
        { dir, err: (err as Error).message },
        'could not remove a drill directory left behind by an earlier drill',
      );
    }
  }
  return removed;
}

/**
 * Waits (at most `timeoutMs`) until no process names `dir` on its command line: the detached
 * wal-prefetch processes restore_command starts write into the copy's pg_wal and would recreate
 * it after the drill removed it. Linux /proc only; elsewhere it returns at once.
 */
export async function waitForProcessesUsing(dir: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    let busy = false;
    for (const pid of await readdir('/proc').catch(() => [] as string[])) {
      if (!/^\d+$/.test(pid) || Number(pid) === process.pid) continue;
      const cmdline = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
      if (cmdline.includes(dir)) {
        busy = true;
        break;
      }
    }
    if (!busy || Date.now() > deadline) return;
    await sleep(100);
  }
}
