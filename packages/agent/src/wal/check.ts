/**
 * `pgfleet check`: proves that WAL archiving works end to end before a backup needs it, like
 * pgBackRest's and Barman's `check`. A cluster whose archive_command is '/bin/true' looks healthy
 * in pg_stat_archiver (PostgreSQL counts exit status 0 as archived); without this check the first
 * sign is a backup failing after its WAL wait, and no backup taken until then can be restored.
 *
 * Settings (one query and a statfs): wal_level, archive_mode, archive_command (archive-command.ts),
 * max_wal_senders, data checksums, free space under pg_wal; each repository is proven writable by
 * this process (a probe object written and removed). The WAL proof then creates a restore point
 * (so the current segment holds a record: pg_switch_wal() on a segment with nothing in it switches
 * nothing), switches the segment and waits until exactly that segment is in every repository.
 * The proof runs only when no setting failed: a command that cannot deliver WAL would only make it
 * wait for its timeout, and the first backup must fail fast instead.
 *
 * The agent runs it as a job (CheckJob), before the first backup of a cluster (with the WAL
 * proof), and at start-up (settings only: no WAL switch on every restart).
 */
import { statfs } from 'node:fs/promises';
import { join } from 'node:path';
import { archiverStats, connectPg, type ArchiverStats, type PgConnectionOptions } from '@pgfleet/pg';
import { PgfleetError, sleep } from '@pgfleet/core';
import type { ConfigLoader } from '@pgfleet/core/command-line';
import type { Repository } from '@pgfleet/storage';
import { judgeArchiveCommand, type CheckVerdictName } from './archive-command.js';

type PgClient = Awaited<ReturnType<typeof connectPg>>;

export interface CheckItemOutcome {
  /** wal_level, archive_mode, archive_command, max_wal_senders, data_checksums, pg_wal_space, repository, wal_archived, controller. */
  name: string;
  verdict: CheckVerdictName;
  message: string;
}

export interface CheckOutcome {
  items: CheckItemOutcome[];
  /** No item failed (warnings allowed). */
  ok: boolean;
  /** The segment the WAL proof switched ('' when the proof did not switch one). */
  walSegment: string;
  /** How long that segment took to reach every repository (0 when it did not). */
  walSeconds: number;
}

export interface ArchiveCheckOptions {
  cluster: string;
  pgdata: string;
  pg: PgConnectionOptions;
  /** Every repository of the cluster (a mirror for two); absent: repositories are not checked. */
  repo?: Repository;
  /** The agent streams WAL over a replication slot (--stream): it needs a WAL sender. */
  streaming: boolean;
  /** Reads archive_command's --config file. */
  loadConfig: ConfigLoader;
  /** Switch a segment and wait for it in every repository; absent: settings only. */
  walProof?: { timeoutMs: number; restorePoint: string };
  /** Whether the controller answered, judged by the caller (a job reached the agent: it did). */
  controller?: CheckItemOutcome;
  signal?: AbortSignal;
  /** What the check is doing now (job progress). */
  progress?: (message: string) => void;
}

/** A check with a failing item: ArchiveCheckFailed naming each failing check, with every item kept for the job's result. */
export class ArchiveCheckFailure extends PgfleetError {
  constructor(
    readonly cluster: string,
    readonly outcome: CheckOutcome,
  ) {
    const failing = outcome.items.filter((i) => i.verdict === 'fail');
    super(
      'ArchiveCheckFailed',
      `WAL archiving of cluster ${cluster} does not work: ${failing.map((i) => `${i.name}: ${i.message}`).join('; ')}`,
    );
  }
}

/** pg_wal's filesystem is low on space below this fraction of its size or below LOW_SPACE_BYTES. */
const LOW_SPACE_FRACTION = 0.1;
const LOW_SPACE_BYTES = 1 << 30;

/** Archive settings as one query reads them (archive_library exists from PostgreSQL 15 on). */
interface ArchiveSettings {
  wal_level: string;
  archive_mode: string;
  archive_command: string;
  archive_library: string | null;
  max_wal_senders: number;
  data_checksums: string;
  in_recovery: boolean;
}

async function readSettings(client: PgClient): Promise<ArchiveSettings> {
  const r = await client.query<ArchiveSettings>(`
    SELECT current_setting('wal_level') AS wal_level,
           current_setting('archive_mode') AS archive_mode,
           current_setting('archive_command') AS archive_command,
           current_setting('archive_library', true) AS archive_library,
           current_setting('max_wal_senders')::int AS max_wal_senders,
           current_setting('data_checksums') AS data_checksums,
           pg_is_in_recovery() AS in_recovery`);
  return r.rows[0]!;
}

/** archive_command (and archive_library, which replaces it when set) judged for this cluster. */
function judgeArchiving(
  s: ArchiveSettings,
  o: Pick<ArchiveCheckOptions, 'cluster' | 'pgdata' | 'loadConfig'>,
): CheckItemOutcome & { viaPgfleet: boolean } {
  if (s.archive_library) {
    return {
      name: 'archive_command',
      verdict: 'fail',
      viaPgfleet: false,
      message: `archive_library = '${s.archive_library}' is set: PostgreSQL archives through that module and ignores archive_command; set archive_library = '' and archive_command = 'pgfleet-agent wal-push %p --config FILE', then reload PostgreSQL`,
    };
  }
  return { name: 'archive_command', ...judgeArchiveCommand(s.archive_command, o) };
}

/** What the heartbeat reports (Heartbeat.archive_setup): the settings and whether WAL goes through pgfleet. */
export interface ArchiveSetupReport {
  archiveMode: string;
  archiveCommand: string;
  viaPgfleet: boolean;
  problem: string;
}

export async function readArchiveSetup(
  client: PgClient,
  o: Pick<ArchiveCheckOptions, 'cluster' | 'pgdata' | 'loadConfig'>,
): Promise<ArchiveSetupReport> {
  const s = await readSettings(client);
  const command = judgeArchiving(s, o);
  const modeOff = s.archive_mode === 'off';
  return {
    archiveMode: s.archive_mode,
    archiveCommand: s.archive_command,
    viaPgfleet: !modeOff && command.viaPgfleet,
    problem: modeOff ? 'archive_mode is off' : command.verdict === 'ok' ? '' : command.message,
  };
}

/** Runs the checks (see the module header); never throws for what it checks, only reports. */
export async function runArchiveCheck(o: ArchiveCheckOptions): Promise<CheckOutcome> {
  const items: CheckItemOutcome[] = [];
  const failed = () => items.some((i) => i.verdict === 'fail');
  let client: PgClient | undefined;
  let walSegment = '';
  let walSeconds = 0;
  try {
    try {
      client = await connectPg(o.pg);
    } catch (err) {
      items.push({
        name: 'postgresql',
        verdict: 'fail',
        message: `${(err as Error).message}: nothing else can be checked; start PostgreSQL or fix --pg-host/--pg-port/--pg-user`,
      });
    }
    let settings: ArchiveSettings | undefined;
    if (client) {
      o.progress?.('reading archive settings');
      settings = await readSettings(client);
      items.push(...settingsItems(settings, o));
      items.push(await walSpaceItem(o.pgdata));
    }
    if (o.repo) {
      o.progress?.('writing a probe object to every repository');
      items.push(await repositoryItem(o.repo, o.cluster));
    }
    if (o.walProof && client && settings) {
      o.signal?.throwIfAborted();
      if (failed()) {
        const which = [...new Set(items.filter((i) => i.verdict === 'fail').map((i) => i.name))].join(', ');
        items.push({
          name: 'wal_archived',
          verdict: 'fail',
          message: `not tried: the failing check(s) above (${which}) keep WAL from reaching the repository; fix them and check again`,
        });
      } else {
        const proof = await walProof(client, settings, o, o.walProof);
        items.push(proof.item);
        walSegment = proof.segment;
        walSeconds = proof.seconds;
      }
    }
    if (o.controller) items.push(o.controller);
    return { items, ok: !failed(), walSegment, walSeconds };
  } finally {
    await client?.end().catch(() => {});
  }
}

function settingsItems(s: ArchiveSettings, o: ArchiveCheckOptions): CheckItemOutcome[] {
  const items: CheckItemOutcome[] = [];
  items.push(
    s.wal_level === 'replica' || s.wal_level === 'logical'
      ? { name: 'wal_level', verdict: 'ok', message: `wal_level = ${s.wal_level}` }
      : {
          name: 'wal_level',
          verdict: 'fail',
          message: `wal_level = ${s.wal_level}: WAL lacks what archive recovery needs (and archive_mode cannot be on); set wal_level = replica and restart PostgreSQL`,
        },
  );
  if (s.archive_mode === 'off') {
    items.push({
      name: 'archive_mode',
      verdict: 'fail',
      message:
        'archive_mode = off: PostgreSQL archives no WAL, so no backup can be restored; set archive_mode = on and restart PostgreSQL (a reload is not enough)',
    });
  } else if (s.archive_mode === 'on' && s.in_recovery) {
    items.push({
      name: 'archive_mode',
      verdict: 'warn',
      message:
        'archive_mode = on on a standby: it archives nothing until promoted (the primary archives); use archive_mode = always to archive here too',
    });
  } else {
    items.push({ name: 'archive_mode', verdict: 'ok', message: `archive_mode = ${s.archive_mode}` });
  }
  const { viaPgfleet: _, ...command } = judgeArchiving(s, o);
  items.push(command);
  const senders = s.max_wal_senders;
  if (o.streaming && senders === 0) {
    items.push({
      name: 'max_wal_senders',
      verdict: 'fail',
      message:
        'max_wal_senders = 0, but this agent streams WAL (--stream) over a replication connection; set max_wal_senders = 10 and restart PostgreSQL',
    });
  } else if (o.streaming && senders < 2) {
    items.push({
      name: 'max_wal_senders',
      verdict: 'warn',
      message: `max_wal_senders = ${senders}: this agent's WAL stream takes it all, so after a dropped connection it cannot reconnect until the old sender times out, and pg_basebackup or a standby cannot connect; set max_wal_senders = 10 and restart PostgreSQL`,
    });
  } else if (senders === 0) {
    items.push({
      name: 'max_wal_senders',
      verdict: 'warn',
      message:
        'max_wal_senders = 0: no replication connections (standbys, pg_basebackup, pgfleet-agent --stream); set max_wal_senders = 10 and restart PostgreSQL before you need them',
    });
  } else {
    items.push({
      name: 'max_wal_senders',
      verdict: 'ok',
      message: `max_wal_senders = ${senders}${o.streaming ? ' (this agent streams WAL over one)' : ''}`,
    });
  }
  items.push(
    s.data_checksums === 'on'
      ? {
          name: 'data_checksums',
          verdict: 'ok',
          message: 'data checksums on: damaged pages are found while they are backed up',
        }
      : {
          name: 'data_checksums',
          verdict: 'warn',
          message:
            'data checksums off: a page damaged on disk is backed up as found, unnoticed; enable them with pg_checksums --enable while PostgreSQL is stopped',
        },
  );
  return items;
}

/** Free space of pg_wal's filesystem (statfs follows a symlinked pg_wal): archiving that fails fills it. */
async function walSpaceItem(pgdata: string): Promise<CheckItemOutcome> {
  const dir = join(pgdata, 'pg_wal');
  let fs;
  try {
    fs = await statfs(dir, { bigint: true });
  } catch (err) {
    return {
      name: 'pg_wal_space',
      verdict: 'warn',
      message: `cannot measure the free space under ${dir}: ${(err as Error).message}`,
    };
  }
  const free = Number(fs.bavail * fs.bsize);
  const total = Number(fs.blocks * fs.bsize);
  const gib = (n: number) => `${(n / (1 << 30)).toFixed(1)} GiB`;
  const figures = `${gib(free)} free of ${gib(total)} (${total > 0 ? Math.round((free / total) * 100) : 0}%) under ${dir}`;
  if (free < LOW_SPACE_BYTES || free < total * LOW_SPACE_FRACTION) {
    return {
      name: 'pg_wal_space',
      verdict: 'warn',
      message: `${figures}: while archiving fails, WAL piles up there and PostgreSQL stops when it is full; free space or move pg_wal to a larger filesystem`,
    };
  }
  return { name: 'pg_wal_space', verdict: 'ok', message: figures };
}

async function repositoryItem(repo: Repository, cluster: string): Promise<CheckItemOutcome> {
  const probes = await repo.probeWritable(cluster);
  const bad = probes.filter((p) => p.error);
  if (bad.length === 0)
    return {
      name: 'repository',
      verdict: 'ok',
      message: `writable by this agent: ${probes.map((p) => p.location).join(', ')}`,
    };
  const who = typeof process.getuid === 'function' ? ` (uid ${process.getuid()})` : '';
  return {
    name: 'repository',
    verdict: 'fail',
    message: `${bad.map((p) => `cannot write to ${p.location}: ${p.error!.message}`).join('; ')}: wal-push and backups fail there; make it writable by the agent's OS user${who} and reachable from this host`,
  };
}

/**
 * The WAL proof: a restore point puts a record into the current segment, pg_switch_wal() closes
 * it, and the archiver must bring exactly that segment into every repository within the timeout.
 */
async function walProof(
  client: PgClient,
  s: ArchiveSettings,
  o: ArchiveCheckOptions,
  proof: { timeoutMs: number; restorePoint: string },
): Promise<{ item: CheckItemOutcome; segment: string; seconds: number }> {
  if (s.in_recovery) {
    return {
      item: {
        name: 'wal_archived',
        verdict: 'warn',
        message: 'not tried: this server is a standby, where WAL cannot be switched; run the check on the primary',
      },
      segment: '',
      seconds: 0,
    };
  }
  const before = await archiverStats(client);
  // pg_walfile_name of the record's end LSN names the segment holding it (a boundary LSN counts to the segment before).
  const segment = (
    await client.query<{ seg: string }>('SELECT pg_walfile_name(pg_create_restore_point($1)) AS seg', [
      proof.restorePoint,
    ])
  ).rows[0]!.seg;
  await client.query('SELECT pg_switch_wal()');
  const started = Date.now();
  const seconds = () => (Date.now() - started) / 1000;
  const deadline = started + proof.timeoutMs;
  o.progress?.(`waiting for WAL segment ${segment} in every repository`);
  let pollMs = 20;
  for (;;) {
    const state = await o.repo!.walArchivedIn(o.cluster, segment);
    const missing = state.filter((m) => !m.archived).map((m) => m.location);
    if (missing.length === 0) {
      return {
        item: {
          name: 'wal_archived',
          verdict: 'ok',
          message: `segment ${segment} reached ${state.map((m) => m.location).join(', ')} ${seconds().toFixed(1)} s after pg_switch_wal()`,
        },
        segment,
        seconds: seconds(),
      };
    }
    o.signal?.throwIfAborted();
    if (Date.now() > deadline) {
      const after = await archiverStats(client);
      const where = state.length > 1 ? ` (missing in ${missing.join(', ')})` : '';
      return {
        item: {
          name: 'wal_archived',
          verdict: 'fail',
          message: `segment ${segment} not archived within ${Math.round(proof.timeoutMs / 1000)} s${where}: ${describeArchiver(before, after)}; archive_command = '${s.archive_command}'; the PostgreSQL log has the archiver's error`,
        },
        segment,
        seconds: 0,
      };
    }
    await sleep(pollMs);
    pollMs = Math.min(250, Math.round(pollMs * 1.5));
  }
}

function describeArchiver(before: ArchiverStats, after: ArchiverStats): string {
  const failures = after.failedCount - before.failedCount;
  return [
    `pg_stat_archiver last_failed_wal=${after.lastFailedWal || 'none'}`,
    `last_failed_time=${after.lastFailedTime ? after.lastFailedTime.toISOString() : 'never'}`,
    `failed_count=${after.failedCount} (${failures} during the check)`,
    `last_archived_wal=${after.lastArchivedWal || 'none'}`,
  ].join(', ');
}
