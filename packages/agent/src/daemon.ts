/**
 * The agent daemon: one long-lived Connect stream to the controller. It says Hello (identity,
 * cluster, system identifier), sends heartbeats with pg_stat_archiver figures, runs the jobs it
 * is sent and streams their progress and results back. When the controller goes away it
 * reconnects with capped exponential backoff and jitter; jobs keep running meanwhile and their
 * results are delivered after the reconnect (jobs are idempotent by id).
 */
import { hostname } from 'node:os';
import { timestampFromDate, timestampDate } from '@bufbuild/protobuf/wkt';
import { asPgfleetError, ErrorCodes, loadConfigFile, PgfleetError, sleep, type Logger } from '@pgfleet/core';
import { archiverStats, connectPg, Lsn, serverPosition, switchWalIfIn, type ServerPosition } from '@pgfleet/pg';
import {
  AgentService,
  BackupType,
  CheckVerdict,
  JobState,
  RestoreArchive,
  ServerRole,
  TargetAction,
  type Job,
  type RecoveryTarget,
} from '@pgfleet/proto';
import { createClient, type ClientBidiStream, type ClientOptions } from '@pgfleet/rpc/client';
import type { MessageInitShape } from '@bufbuild/protobuf';
import type { ConnectRequestSchema, JobResultSchema } from '@pgfleet/proto';
import {
  openRepository,
  repositoryUrl,
  type BackupManifest,
  type Repository,
  type RepositorySpec,
} from '@pgfleet/storage';
import { agentCredentials } from './security/identity.js';
import {
  ArchiveCheckFailure,
  readArchiveSetup,
  runArchiveCheck,
  type ArchiveCheckOptions,
  type ArchiveSetupReport,
  type CheckItemOutcome,
  type CheckOutcome,
} from './wal/check.js';
import { runBackup } from './backup/backup.js';
import { cleanScratchArea, DrillFailure, runDrill } from './drill/drill.js';
import { captureSourceCounts } from './drill/capture.js';
import { runExpire } from './retention/expire.js';
import { runVerify, type VerifyOutcome } from './verify/verify.js';
import { repositoryArgs, type AgentSettings } from './options.js';
import { readPgdataFacts, type PgdataFacts } from './pgdata/pgdata.js';
import type { Progress } from './jobs/progress.js';
import { runRestore, type TargetSpec } from './restore/restore.js';
import { AGENT_VERSION } from './version.js';
import { WalHealthCollector, type WalHealthInit } from './wal/health.js';
import { WalServices } from './wal/services.js';

type Outgoing = MessageInitShape<typeof ConnectRequestSchema>;
type JobResultInit = MessageInitShape<typeof JobResultSchema>;

export function manifestToBackupInfo(m: BackupManifest, jobId: string) {
  return {
    label: m.label,
    cluster: m.cluster,
    type: m.type === 'full' ? BackupType.FULL : m.type === 'diff' ? BackupType.DIFF : BackupType.INCR,
    startLsn: m.startLsn,
    stopLsn: m.stopLsn,
    startTime: timestampFromDate(new Date(m.startTime)),
    stopTime: timestampFromDate(new Date(m.stopTime)),
    timeline: m.timeline,
    systemIdentifier: m.systemIdentifier,
    pgVersion: m.pgVersionNum,
    sizeBytes: BigInt(m.sizeBytes),
    storedBytes: BigInt(m.storedBytes),
    fileCount: m.files.length,
    walStart: m.walStart,
    walStop: m.walStop,
    jobId,
    priorLabel: m.priorLabel ?? '',
  };
}

/** Heartbeat.role and .replay from the server's position (nothing known when PostgreSQL is down). */
export function heartbeatRole(p: ServerPosition | undefined) {
  if (!p) return { role: ServerRole.UNSPECIFIED };
  if (!p.inRecovery) return { role: ServerRole.PRIMARY, timeline: p.timeline };
  return {
    role: ServerRole.STANDBY,
    replay: {
      receiveLsn: p.receiveLsn,
      replayLsn: p.replayLsn,
      receiveReplayBytes: BigInt(p.receiveReplayBytes),
      ...(p.lastReplayTime ? { lastReplayTime: timestampFromDate(p.lastReplayTime) } : {}),
      replayLagSeconds: p.replayLagSeconds,
    },
  };
}

export function verifyResultToProto(v: VerifyOutcome) {
  const type = (t: string | undefined) =>
    t === 'full'
      ? BackupType.FULL
      : t === 'diff'
        ? BackupType.DIFF
        : t === 'incr'
          ? BackupType.INCR
          : BackupType.UNSPECIFIED;
  return {
    full: v.full,
    backups: v.backups.map((b) => ({
      label: b.label,
      type: type(b.type),
      restorable: b.restorable,
      fromLsn: b.fromLsn,
      ...(b.fromTime && !Number.isNaN(b.fromTime.getTime()) ? { fromTime: timestampFromDate(b.fromTime) } : {}),
      toLsn: b.toLsn,
      toTimeline: b.toTimeline,
      reasons: b.reasons,
      filesChecked: b.filesChecked,
      bytesChecked: BigInt(b.bytesChecked),
    })),
    problems: v.problems.map((p) => ({
      kind: p.kind,
      label: p.label,
      path: p.path,
      key: p.key,
      message: p.message,
      timeline: p.timeline ?? 0,
      lsnFrom: p.lsnFrom ?? '',
      lsnTo: p.lsnTo ?? '',
      segments: p.segments ?? [],
    })),
    walSegmentsChecked: v.walSegmentsChecked,
    walNewest: v.walNewest,
    ok: v.ok,
    timelines: v.timelines.map((t) => ({
      timeline: t.timeline,
      parent: t.parent,
      switchLsn: t.switchLsn,
      ...(t.startedAt ? { startedAt: timestampFromDate(t.startedAt) } : {}),
      newestSegment: t.newestSegment,
      onLiveLineage: t.onLiveLineage,
      liveKnown: t.liveKnown,
    })),
  };
}

const VERDICTS = { ok: CheckVerdict.OK, warn: CheckVerdict.WARN, fail: CheckVerdict.FAIL } as const;

export function checkResultToProto(c: CheckOutcome) {
  return {
    items: c.items.map((i) => ({ name: i.name, verdict: VERDICTS[i.verdict], message: i.message })),
    ok: c.ok,
    walSegment: c.walSegment,
    walSeconds: c.walSeconds,
  };
}

/** How long `pgfleet check` waits for its WAL segment when the job names no timeout. */
const DEFAULT_CHECK_TIMEOUT_MS = 60_000;
/** How long the start-up check waits for the controller's Welcome before saying it has not answered. */
const STARTUP_CONTROLLER_WAIT_MS = 15_000;

/** UTC timestamp in PostgreSQL's input format with microsecond precision (a JS Date would cut it to milliseconds, moving the target). */
export function pgTimestamp(seconds: bigint, nanos: number): string {
  const base = new Date(Number(seconds) * 1000).toISOString().slice(0, 19).replace('T', ' ');
  return `${base}.${String(Math.floor(nanos / 1000)).padStart(6, '0')}+00`;
}

export function targetFromProto(job: Job): {
  target: TargetSpec;
  action: 'promote' | 'pause' | 'shutdown';
  inclusive?: boolean;
} {
  if (job.kind.case !== 'restore') throw new PgfleetError('Internal', 'not a restore job');
  return recoveryTargetSpec(job.kind.value.target);
}

/** A RecoveryTarget message as the restore code reads it (restore and drill jobs). */
export function recoveryTargetSpec(t: RecoveryTarget | undefined): {
  target: TargetSpec;
  action: 'promote' | 'pause' | 'shutdown';
  inclusive?: boolean;
} {
  const action =
    t?.action === TargetAction.PAUSE ? 'pause' : t?.action === TargetAction.SHUTDOWN ? 'shutdown' : 'promote';
  const inclusive = t?.inclusive;
  const v = t?.target;
  let target: TargetSpec;
  switch (v?.case) {
    case 'time':
      target = { kind: 'time', time: timestampDate(v.value), pgTime: pgTimestamp(v.value.seconds, v.value.nanos) };
      break;
    case 'lsn':
      target = { kind: 'lsn', lsn: v.value };
      break;
    case 'name':
      target = { kind: 'name', name: v.value };
      break;
    case 'xid':
      target = { kind: 'xid', xid: v.value };
      break;
    case 'immediate':
      target = { kind: 'immediate' };
      break;
    default:
      target = { kind: 'latest' };
  }
  return { target, action, ...(inclusive !== undefined ? { inclusive } : {}) };
}

export class AgentDaemon {
  private stream: ClientBidiStream<unknown, typeof ConnectRequestSchema> | undefined;
  private readonly running = new Map<string, AbortController>();
  /** Each running job's promise, settled once the job has cleaned up and its result is sent (stop() awaits them). */
  private readonly settling = new Set<Promise<void>>();
  /**
   * Results of the last jobs, sent again after every Welcome: a stream can die silently (the
   * network drops, keepalive notices later), and what was written into it is then lost. The
   * controller applies a result once and ignores repeats, so resending is safe.
   */
  private readonly recentResults: { msg: Outgoing; jobId: string; at: number }[] = [];
  private heartbeatTimer: NodeJS.Timeout | undefined;
  private stopped = false;
  /** A backup job is running (one at a time: labels, the WAL wait and cleanup assume it). */
  private backupRunning = false;
  private facts!: PgdataFacts;
  private wal: WalServices | undefined;
  private walHealth: WalHealthCollector | undefined;
  private credentials: ClientOptions['credentials'];

  constructor(
    private readonly s: AgentSettings,
    private readonly log: Logger,
  ) {}

  async start(): Promise<void> {
    // Identity first (enrolling if needed): an agent the controller will not accept should fail before it does anything else.
    this.credentials = await agentCredentials(this.s, this.log, () => this.stopped);
    this.facts = await readPgdataFacts(this.s.pgdata);
    // A drill killed with an earlier agent process (SIGKILL, power loss) left its copy, maybe its server running.
    await cleanScratchArea(this.s.scratchDir, this.log.child({ component: 'drill' }));
    void this.startupCheck();
    this.wal = await WalServices.start(
      this.s,
      this.facts,
      this.s.repositories.length > 0 ? await this.openRepository(this.s.repositories) : undefined,
      this.log,
    );
    const wal = this.wal;
    this.walHealth = new WalHealthCollector({
      cluster: this.s.cluster,
      pgdata: this.s.pgdata,
      log: this.log.child({ component: 'wal-health' }),
      stream: () => wal.streamer,
      archived: wal.archived,
    });
    let attempt = 0;
    while (!this.stopped) {
      const connectedAt = Date.now();
      try {
        await this.session();
      } catch (err) {
        const e = asPgfleetError(err);
        // Refused for who we are (no, foreign or mismatched certificate): retrying cannot help.
        if (e.errorName === 'Unauthenticated' || e.errorName === 'PermissionDenied') {
          this.log.error({ code: e.code, err: e.message }, 'the controller refused this agent');
          void this.stop();
          throw e;
        }
        this.log.warn({ code: e.code, err: e.message }, 'controller connection lost');
      }
      this.stopHeartbeats();
      if (this.stopped) break;
      if (Date.now() - connectedAt > 30_000) attempt = 0;
      const backoff = Math.min(30_000, 500 * 2 ** attempt) * (0.5 + Math.random() / 2);
      attempt++;
      this.log.info({ retryInMs: Math.round(backoff) }, 'reconnecting to controller');
      await sleep(backoff);
    }
  }

  /** Stops and aborts every job; resolves once they have settled (a drill stops its server and removes its copy first). */
  stop(): Promise<void> {
    this.stopped = true;
    for (const c of this.running.values()) c.abort();
    this.stream?.cancel();
    void this.wal?.stop();
    return Promise.all(this.settling).then(() => undefined);
  }

  /** What every archive check of this agent shares (cluster, PostgreSQL, how to read archive_command's --config). */
  private checkBase(): Pick<ArchiveCheckOptions, 'cluster' | 'pgdata' | 'pg' | 'streaming' | 'loadConfig'> {
    return {
      cluster: this.s.cluster,
      pgdata: this.s.pgdata,
      pg: this.s.pg,
      streaming: this.s.stream,
      loadConfig: loadConfigFile,
    };
  }

  /** Resolves on the first Welcome of this process (the controller answered). */
  private welcomed!: () => void;
  private readonly firstWelcome = new Promise<void>((r) => (this.welcomed = r));

  /**
   * Warn early (a backup refuses or fails later): the settings checks of `pgfleet check` at every
   * start, without the WAL proof (no segment switch on each restart), plus whether the controller
   * answered. Every finding that is not ok is a warning in the log; the daemon runs on regardless.
   */
  private async startupCheck(): Promise<void> {
    const log = this.log.child({ component: 'check' });
    try {
      const repo =
        this.s.repositories.length > 0
          ? await this.openRepository(this.s.repositories).catch(() => undefined)
          : undefined;
      const answered = await Promise.race([
        this.firstWelcome.then(() => true),
        sleep(STARTUP_CONTROLLER_WAIT_MS).then(() => false),
      ]);
      if (this.stopped) return;
      const controller: CheckItemOutcome = answered
        ? { name: 'controller', verdict: 'ok', message: `the controller at ${this.s.controller} answered` }
        : {
            name: 'controller',
            verdict: 'warn',
            message: `the controller at ${this.s.controller} has not answered within ${STARTUP_CONTROLLER_WAIT_MS / 1000} s: no jobs run until it does (WAL archiving goes on); check --controller and that pgfleet-controller runs`,
          };
      const out = await runArchiveCheck({ ...this.checkBase(), ...(repo ? { repo } : {}), controller });
      for (const i of out.items) {
        if (i.verdict === 'ok') log.debug({ check: i.name }, i.message);
        else
          log.warn(
            {
              check: i.name,
              verdict: i.verdict,
              ...(i.verdict === 'fail' ? { code: ErrorCodes.ArchiveCheckFailed.code } : {}),
            },
            `${i.name}: ${i.message}`,
          );
      }
      const count = (v: string) => out.items.filter((i) => i.verdict === v).length;
      log.info(
        { ok: count('ok'), warnings: count('warn'), failures: count('fail') },
        out.ok
          ? 'start-up check passed (pgfleet check <cluster> also proves a WAL segment reaches the repository)'
          : 'start-up check found problems: WAL archiving does not work as it is',
      );
    } catch (err) {
      log.warn({ err: (err as Error).message }, 'start-up check could not run');
    }
  }

  private send(msg: Outgoing): void {
    if (msg.msg?.case === 'result') {
      const now = Date.now();
      this.recentResults.push({ msg, jobId: msg.msg.value.jobId ?? '', at: now });
      // Kept for 15 minutes, at most 50: long enough for any reconnect, bounded whatever happens.
      while (this.recentResults.length > 50 || (this.recentResults[0] && now - this.recentResults[0].at > 15 * 60_000))
        this.recentResults.shift();
    }
    try {
      this.stream?.send(msg);
    } catch (err) {
      // A broken stream: the session loop notices and reconnects; results go again after Welcome.
      this.log.debug({ err: (err as Error).message, msg: msg.msg?.case }, 'message not sent: the stream is gone');
    }
  }

  private async session(): Promise<void> {
    const client = createClient(AgentService, this.s.controller, {
      unavailableError: 'ControllerUnreachable',
      ...(this.credentials ? { credentials: this.credentials } : {}),
    });
    const stream = client.connect();
    try {
      stream.send({
        msg: {
          case: 'hello',
          value: {
            agentId: this.s.agentId,
            cluster: this.s.cluster,
            hostname: hostname(),
            agentVersion: AGENT_VERSION,
            pgVersion: this.facts.majorVersion * 10000,
            systemIdentifier: this.facts.systemIdentifier,
            pgdata: this.s.pgdata,
            // A spec is the Repository oneof's value (repository-url.ts): `{ kind: spec }` is the message.
            ...(this.s.repositories[0] ? { repository: { kind: this.s.repositories[0] } } : {}),
            repositories: this.s.repositories.map((kind) => ({ kind })),
            // Recently finished jobs count too: their results follow right after the Welcome.
            runningJobIds: [...new Set([...this.running.keys(), ...this.recentResults.map((r) => r.jobId)])],
          },
        },
      });
      for await (const msg of stream) {
        switch (msg.msg.case) {
          case 'welcome': {
            this.stream = stream as never;
            this.log.info(
              { controller: this.s.controller, version: msg.msg.value.controllerVersion },
              'connected to controller',
            );
            this.welcomed();
            for (const r of this.recentResults) stream.send(r.msg);
            this.startHeartbeats(Math.max(1, msg.msg.value.heartbeatIntervalSeconds || 5));
            break;
          }
          case 'job':
            this.startJob(msg.msg.value);
            break;
          case 'cancel':
            this.running.get(msg.msg.value.jobId)?.abort();
            break;
          case 'walSwitch':
            void this.switchWalFor(msg.msg.value.jobId, msg.msg.value.lsn);
            break;
          default:
            break;
        }
      }
    } finally {
      this.stream = undefined;
      client.close();
    }
  }

  private startHeartbeats(intervalSec: number): void {
    this.stopHeartbeats();
    const beat = async () => {
      let archiver;
      let currentLsn = '';
      let pgUp: boolean;
      let wal: WalHealthInit | undefined;
      let archiveSetup: ArchiveSetupReport | undefined;
      let position: ServerPosition | undefined;
      try {
        const c = await connectPg(this.s.pg);
        try {
          const a = await archiverStats(c);
          archiver = {
            archivedCount: BigInt(a.archivedCount),
            lastArchivedWal: a.lastArchivedWal,
            failedCount: BigInt(a.failedCount),
            lastFailedWal: a.lastFailedWal,
            ...(a.lastArchivedTime ? { lastArchivedTime: timestampFromDate(a.lastArchivedTime) } : {}),
            ...(a.lastFailedTime ? { lastFailedTime: timestampFromDate(a.lastFailedTime) } : {}),
          };
          position = await serverPosition(c);
          currentLsn = position.lsn;
          pgUp = true;
          wal = await this.walHealth?.collect(c, currentLsn);
          archiveSetup = await this.archiveSetup(c);
        } finally {
          await c.end();
        }
      } catch {
        pgUp = false;
      }
      this.send({
        msg: {
          case: 'heartbeat',
          value: {
            time: timestampFromDate(new Date()),
            pgUp,
            currentLsn,
            streamedLsn: this.wal?.streamedLsn ?? '',
            ...(archiver ? { archiver } : {}),
            ...(wal ? { wal } : {}),
            ...(archiveSetup ? { archiveSetup } : {}),
            ...heartbeatRole(position),
          },
        },
      });
    };
    void beat();
    this.heartbeatTimer = setInterval(() => void beat(), intervalSec * 1000);
  }

  /** The last archive setup problem logged: a change is logged once, not every beat. */
  private archiveProblem = '';

  /** Heartbeat.archive_setup; undefined when it cannot be read (an extra: never fails the beat). */
  private async archiveSetup(c: Awaited<ReturnType<typeof connectPg>>): Promise<ArchiveSetupReport | undefined> {
    try {
      const setup = await readArchiveSetup(c, this.checkBase());
      if (setup.problem !== this.archiveProblem) {
        if (setup.problem)
          this.log.child({ component: 'check' }).warn(
            {
              code: setup.viaPgfleet ? undefined : ErrorCodes.ArchiveCheckFailed.code,
              archiveCommand: setup.archiveCommand,
            },
            setup.problem,
          );
        else if (this.archiveProblem)
          this.log
            .child({ component: 'check' })
            .info({ archiveCommand: setup.archiveCommand }, 'archive_command goes through pgfleet again');
        this.archiveProblem = setup.problem;
      }
      return setup;
    } catch (err) {
      this.log.debug({ err: (err as Error).message }, 'archive setup not read');
      return undefined;
    }
  }

  /**
   * A standby's backup waits for the segment holding its stop LSN (agent.proto WalSwitch): switch
   * WAL if this primary is still writing that segment. A later segment means it is complete and
   * on its way to the archive already; a standby (or a server that is down) cannot help.
   */
  private async switchWalFor(jobId: string, lsn: string): Promise<void> {
    const log = this.log.child({ component: 'wal-switch', jobId, lsn });
    try {
      const c = await connectPg(this.s.pg);
      try {
        const switched = await switchWalIfIn(c, Lsn.parse(lsn));
        log.info(
          { switched },
          switched ? 'WAL switched for a standby backup' : 'WAL switch not needed: the segment is complete',
        );
      } finally {
        await c.end();
      }
    } catch (err) {
      log.warn(
        { code: asPgfleetError(err).code, err: asPgfleetError(err).message },
        'WAL switch for a standby backup failed',
      );
    }
  }

  private stopHeartbeats(): void {
    if (this.heartbeatTimer) clearInterval(this.heartbeatTimer);
    this.heartbeatTimer = undefined;
  }

  private startJob(job: Job): void {
    if (this.running.has(job.jobId)) return; // redelivered after a reconnect: already running
    const abort = new AbortController();
    this.running.set(job.jobId, abort);
    const log = this.log.child({ jobId: job.jobId, job: job.kind.case });
    const progress = (p: Progress) =>
      this.send({
        msg: {
          case: 'progress',
          value: {
            jobId: job.jobId,
            phase: p.phase,
            bytesDone: BigInt(p.bytesDone),
            bytesTotal: BigInt(p.bytesTotal),
            filesDone: p.filesDone,
            filesTotal: p.filesTotal,
            message: p.message ?? '',
            bytesPerSecond: p.bytesPerSecond ?? 0,
            etaSeconds: p.etaSeconds ?? 0,
          },
        },
      });
    const settled: Promise<void> = this.runJob(job, abort.signal, log, progress)
      .then((result) =>
        this.send({ msg: { case: 'result', value: { jobId: job.jobId, state: JobState.SUCCEEDED, result } } }),
      )
      .catch((err: unknown) => {
        const e =
          abort.signal.aborted && !(err instanceof PgfleetError)
            ? new PgfleetError('JobCancelled', 'job cancelled')
            : asPgfleetError(err);
        log.error(
          { code: e.code, err: e.message, ...(e.errorName === 'Internal' ? { stack: (err as Error)?.stack } : {}) },
          'job failed',
        );
        // A drill that ran but did not pass still reports what it found (stage, reasons, figures).
        const result =
          err instanceof DrillFailure
            ? { result: { case: 'drill' as const, value: err.result } }
            : err instanceof ArchiveCheckFailure
              ? { result: { case: 'check' as const, value: checkResultToProto(err.outcome) } }
              : {};
        this.send({
          msg: {
            case: 'result',
            value: {
              jobId: job.jobId,
              state: e.errorName === 'JobCancelled' ? JobState.CANCELLED : JobState.FAILED,
              error: { code: e.code, message: e.message, hint: e.hint },
              ...result,
            },
          },
        });
      })
      .finally(() => {
        this.running.delete(job.jobId);
        this.settling.delete(settled);
      });
    this.settling.add(settled);
  }

  /** Opened repositories by their URLs: one S3 client per configuration, not one per job. */
  private readonly repositories = new Map<string, Promise<Repository>>();

  private openRepository(specs: readonly RepositorySpec[]): Promise<Repository> {
    const id = specs.map(repositoryUrl).join(' ');
    let repo = this.repositories.get(id);
    if (!repo) {
      repo = openRepository(specs, this.s.s3Credentials);
      repo.catch(() => this.repositories.delete(id));
      this.repositories.set(id, repo);
    }
    return repo;
  }

  /** The job's repositories (Job.repositories, else Job.repository), else the agent's own, in restore preference order. */
  private jobRepositories(job: Job, log: Logger): RepositorySpec[] {
    const named = (job.repositories.length > 0 ? job.repositories : job.repository ? [job.repository] : []).flatMap(
      (r) => (r.kind.case ? [r.kind as RepositorySpec] : []),
    );
    const specs = named.length > 0 ? named : this.s.repositories;
    const own = this.s.repositories.map(repositoryUrl).join(' ');
    if (named.length > 0 && own !== '' && named.map(repositoryUrl).join(' ') !== own) {
      // WAL goes where this agent's --repo says, backups where the controller says: a backup waits for WAL that never arrives there.
      log.warn(
        { controller: named.map(repositoryUrl), agent: this.s.repositories.map(repositoryUrl) },
        "the controller's repositories differ from this agent's --repo/--repo2: configure the same on both",
      );
    }
    if (specs.length === 0)
      throw new PgfleetError('InvalidConfig', 'no repository: the controller sent none and the agent has no --repo');
    // wal-fetch (restore_command) takes --repo and --repo2.
    if (specs.length > 2)
      throw new PgfleetError(
        'InvalidArgument',
        `the job names ${specs.length} repositories; a cluster has at most two`,
      );
    return specs;
  }

  /** What restore_command's wal-fetch needs to find the same repositories (credentials come from the config file or the environment, never the command line). */
  private walFetchArgs(specs: readonly RepositorySpec[], log: Logger): string[] {
    if (specs.some((s) => s.case === 's3') && this.s.s3Credentials && !this.s.configFile) {
      log.warn(
        "restore_command gets no S3 credentials (they came from flags or the environment, not --config): PostgreSQL's wal-fetch uses the AWS default chain of its own environment",
      );
    }
    const repos = repositoryArgs(specs);
    if (!this.s.configFile) return repos;
    // The config file is there for the credentials; empty values clear its repository keys (flags win over the file, key by key).
    return [...repos, '--repo-path', '', ...(specs.length < 2 ? ['--repo2', ''] : []), '--config', this.s.configFile];
  }

  /**
   * The full check with the WAL proof, for a check job or before a cluster's first backup: throws
   * ArchiveCheckFailure (with every item) when a check fails, returns the items otherwise.
   */
  private async runCheck(
    job: Job,
    repo: Repository,
    timeoutMs: number,
    signal: AbortSignal,
    log: Logger,
    progress?: (message: string) => void,
  ): Promise<CheckOutcome> {
    const out = await runArchiveCheck({
      ...this.checkBase(),
      repo,
      // A restore point named after the job: a recovery target the check leaves behind, like a drill's.
      walProof: { timeoutMs, restorePoint: `pgfleet-check-${job.jobId}` },
      // The job came over the controller's stream: it reaches this agent.
      controller: {
        name: 'controller',
        verdict: 'ok',
        message: `the controller at ${this.s.controller} sent this job`,
      },
      signal,
      ...(progress ? { progress } : {}),
    });
    for (const i of out.items)
      if (i.verdict !== 'ok') log.warn({ check: i.name, verdict: i.verdict }, `${i.name}: ${i.message}`);
    if (!out.ok) throw new ArchiveCheckFailure(this.s.cluster, out);
    return out;
  }

  private async runJob(
    job: Job,
    signal: AbortSignal,
    log: Logger,
    progress: (p: Progress) => void,
  ): Promise<JobResultInit['result']> {
    const specs = this.jobRepositories(job, log);
    const repo = await this.openRepository(specs);
    if (job.kind.case === 'backup') {
      const t = job.kind.value.type;
      const type = t === BackupType.DIFF ? 'diff' : t === BackupType.INCR ? 'incr' : 'full';
      // The controller starts one at a time; this holds for jobs it resent or a second controller too.
      if (this.backupRunning)
        throw new PgfleetError(
          'BackupInProgress',
          `a backup of cluster ${this.s.cluster} is already running on this agent`,
        );
      this.backupRunning = true;
      // The first backup of the cluster proves archiving end to end before it copies anything (see runBackup).
      const checkArchiving = () => this.runCheck(job, repo, this.s.archiveTimeoutSec * 1000, signal, log);
      const manifest = await runBackup({
        cluster: this.s.cluster,
        pgdata: this.s.pgdata,
        pg: this.s.pg,
        repo,
        codec: this.s.compress,
        type,
        checksumDelta: this.s.checksumDelta === true,
        workers: this.s.workers,
        archiveTimeoutMs: this.s.archiveTimeoutSec * 1000,
        checkArchiving,
        // On a standby: the controller forwards this to the primary's agent (agent.proto WalSwitch).
        requestWalSwitch: (lsn) =>
          this.send({ msg: { case: 'walSwitch', value: { jobId: job.jobId, lsn: lsn.toString() } } }),
        log,
        progress,
        signal,
      }).finally(() => {
        this.backupRunning = false;
      });
      return { case: 'backup', value: manifestToBackupInfo(manifest, job.jobId) };
    }
    if (job.kind.case === 'restore') {
      const r = job.kind.value;
      const { target, action, inclusive } = targetFromProto(job);
      const out = await runRestore({
        cluster: r.cluster || this.s.cluster,
        repo,
        walFetchArgs: this.walFetchArgs(specs, log),
        ...(r.backupLabel ? { backupLabel: r.backupLabel, labelIsHint: r.backupLabelIsHint } : {}),
        ...(r.currentTimeline ? { currentTimeline: r.currentTimeline } : {}),
        ...(r.targetTimeline ? { targetTimeline: r.targetTimeline } : {}),
        ...(r.archive === RestoreArchive.OFF
          ? { archive: 'off' as const }
          : r.archive === RestoreArchive.PRESERVE
            ? { archive: 'preserve' as const }
            : {}),
        targetDir: r.targetDir,
        delta: r.delta,
        ownPgdata: this.s.pgdata,
        ...(r.tablespaceDir ? { tablespaceDir: r.tablespaceDir } : {}),
        target,
        action,
        ...(inclusive !== undefined ? { inclusive } : {}),
        workers: this.s.workers,
        ...(this.s.pgBinDir ? { pgBinDir: this.s.pgBinDir } : {}),
        log,
        progress,
        signal,
      });
      return {
        case: 'restore',
        value: {
          backupLabel: out.manifest.label,
          targetDir: r.targetDir,
          bytes: BigInt(out.bytes),
          fileCount: out.manifest.files.length,
          timeline: out.timeline,
          archivePreserved: out.archivePreserved,
        },
      };
    }
    if (job.kind.case === 'expire') {
      const e = job.kind.value;
      const out = await runExpire({
        cluster: e.cluster || this.s.cluster,
        repo,
        labels: e.labels,
        walKeepFrom: e.walKeepFrom,
        keepRanges: e.keepRanges,
        dryRun: e.dryRun,
        log,
        progress,
        signal,
      });
      return {
        case: 'expire',
        value: {
          ...out,
          backupBytesDeleted: BigInt(out.backupBytesDeleted),
          walBytesDeleted: BigInt(out.walBytesDeleted),
        },
      };
    }
    if (job.kind.case === 'verify') {
      const out = await runVerify({
        cluster: this.s.cluster,
        repo,
        full: job.kind.value.full,
        currentTimeline: job.kind.value.currentTimeline,
        concurrency: Math.max(2, this.s.workers),
        log,
        progress,
        signal,
      });
      return { case: 'verify', value: verifyResultToProto(out) };
    }
    if (job.kind.case === 'check') {
      const timeoutMs =
        job.kind.value.timeoutSeconds > 0 ? job.kind.value.timeoutSeconds * 1000 : DEFAULT_CHECK_TIMEOUT_MS;
      const out = await this.runCheck(job, repo, timeoutMs, signal, log, (message) =>
        progress({ phase: 'check', bytesDone: 0, bytesTotal: 0, filesDone: 0, filesTotal: 0, message }),
      );
      return { case: 'check', value: checkResultToProto(out) };
    }
    if (job.kind.case === 'drill') {
      const d = job.kind.value;
      const target = d.target?.target.case ? recoveryTargetSpec(d.target) : undefined;
      const out = await runDrill({
        jobId: job.jobId,
        cluster: d.cluster || this.s.cluster,
        repo,
        walFetchArgs: this.walFetchArgs(specs, log),
        pg: this.s.pg,
        ...(d.backupLabel ? { backupLabel: d.backupLabel } : {}),
        ...(target
          ? {
              target: {
                spec: target.target,
                ...(target.inclusive !== undefined ? { inclusive: target.inclusive } : {}),
                proto: d.target!,
              },
            }
          : {}),
        ...(d.source ? { source: d.source } : {}),
        scratchDir: d.scratchDir || this.s.scratchDir,
        keep: d.keep,
        ...(d.currentTimeline ? { currentTimeline: d.currentTimeline } : {}),
        ...(this.s.pgBinDir ? { pgBinDir: this.s.pgBinDir } : {}),
        workers: this.s.workers,
        archiveTimeoutMs: this.s.archiveTimeoutSec * 1000,
        log,
        progress,
        signal,
      });
      return { case: 'drill', value: out };
    }
    if (job.kind.case === 'capture') {
      const c = job.kind.value;
      const out = await captureSourceCounts({
        cluster: c.cluster || this.s.cluster,
        pg: this.s.pg,
        repo,
        restorePoint: c.restorePoint,
        archiveTimeoutMs: this.s.archiveTimeoutSec * 1000,
        log,
        progress,
        signal,
      });
      return { case: 'capture', value: out };
    }
    throw new PgfleetError('InvalidArgument', `unknown job kind ${String(job.kind.case)}`);
  }
}
