/**
 * The agent daemon: one long-lived Connect stream to the controller. It says Hello (identity,
 * cluster, system identifier), sends heartbeats with pg_stat_archiver figures, runs the jobs it
 * is sent and streams their progress and results back. When the controller goes away it
 * reconnects with capped exponential backoff and jitter; jobs keep running meanwhile and their
 * results are delivered after the reconnect (jobs are idempotent by id).
 */
import { hostname } from 'node:os';
import { timestampFromDate } from '@bufbuild/protobuf/wkt';
import { asPgfleetError, ErrorCodes, PgfleetError, sleep, type Logger } from '@pgfleet/core';
import { archiverStats, connectPg, Lsn, serverPosition, switchWalIfIn, type ServerPosition } from '@pgfleet/pg';
import { AgentService, JobState, ServerRole, repositoryMessage, type Job } from '@pgfleet/proto';
import { createClient, type ClientBidiStream, type ClientOptions } from '@pgfleet/rpc/client';
import type { MessageInitShape } from '@bufbuild/protobuf';
import type { ConnectRequestSchema } from '@pgfleet/proto';
import { keyResolver, openRepository, repositoryUrl, type Repository, type RepositorySpec } from '@pgfleet/storage';
import { agentCredentials } from './security/identity.js';
import { controllerAddresses, reconnectDelayMs } from './controllers.js';
import { ClusterKey, removeJobClusterKeyFile } from './security/cluster-key.js';
import { readArchiveSetup, runArchiveCheck, type ArchiveSetupReport, type CheckItemOutcome } from './wal/check.js';
import { cleanScratchArea } from './drill/drill.js';
import { sweepEntrySpools } from './backup/entry-spool.js';
import { sweepDumpSpools } from './logical/dump.js';
import { removeAbandonedDumps } from './logical/abandoned-dumps.js';
import type { AgentSettings } from './options.js';
import { readPgdataFacts, type PgdataFacts } from './pgdata/pgdata.js';
import type { Progress } from './progress.js';
import { archiveCheckBase } from './jobs/check.js';
import { jobRepositories, walFetchArgs } from './jobs/context.js';
import { withJobManifestKey } from './jobs/manifest-key.js';
import type { JobContext } from './jobs/job-kind.js';
import { failureResult, runJob } from './jobs/registry.js';
import { AGENT_VERSION } from './version.js';
import { RateLimiter } from './copy/rate-limit.js';
import { WalHealthCollector, type WalHealthInit } from './wal/health.js';
import { WalServices } from './wal/services.js';

type Outgoing = MessageInitShape<typeof ConnectRequestSchema>;

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

/** How many received job ids an agent remembers to refuse a copy of a job (AgentDaemon.received). */
const RECEIVED_KEPT = 1000;

/** How long the start-up check waits for the controller's Welcome before saying it has not answered. */
const STARTUP_CONTROLLER_WAIT_MS = 15_000;

/**
 * How often the daemon sweeps its cluster's abandoned dumps (logical/abandoned-dumps.ts) besides at
 * its start: a lease of another host takes 10 minutes to go stale, and nothing else may come.
 */
const ABANDONED_DUMPS_SWEEP_MS = 3_600_000;

/**
 * Job kinds whose success goes out without a heartbeat first (AgentDaemon.beatNow): their results
 * carry no server position for the controller to check against the cluster's heartbeats.
 */
const RESULT_WITHOUT_BEAT: ReadonlySet<string | undefined> = new Set(['dump', 'restoreDump']);

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
  /**
   * The ids of the last RECEIVED_KEPT jobs this process was sent, oldest first: a job sent again
   * (a controller that died between sending it and recording the send, a message left in the
   * catalog and delivered late) is never run twice.
   */
  private readonly received = new Set<string>();
  private heartbeatTimer: NodeJS.Timeout | undefined;
  /** The periodic sweep of abandoned dumps (sweepAbandonedDumps) and the sweep under way, one at a time. */
  private abandonedDumpsTimer: NodeJS.Timeout | undefined;
  private abandonedDumpsSweep: Promise<void> = Promise.resolve();
  private stopped = false;
  /** Kinds of job running that run one at a time on this agent (JobContext.exclusive). */
  private readonly exclusive = new Set<string>();
  private facts!: PgdataFacts;
  private wal: WalServices | undefined;
  private walHealth: WalHealthCollector | undefined;
  private credentials: ClientOptions['credentials'];
  /** The key of this agent's cluster for WAL names: from the key file, then from every Welcome. */
  private readonly clusterKey: ClusterKey;

  /** --controller as a list (controllers.ts); `controllerIndex` is the one tried or held now. */
  private readonly controllers: readonly string[];
  private controllerIndex = 0;

  /** --max-rate: one bucket for every backup and restore this agent runs, whichever job and thread copies. */
  private readonly rateLimit: RateLimiter | undefined;

  constructor(
    private readonly s: AgentSettings,
    private readonly log: Logger,
  ) {
    this.clusterKey = new ClusterKey(s.cluster, s.clusterKeyFile);
    this.controllers = controllerAddresses(s.controller);
    this.rateLimit = s.maxRateBytes ? RateLimiter.create(s.maxRateBytes) : undefined;
  }

  async start(): Promise<void> {
    // Identity first (enrolling if needed): an agent the controller will not accept should fail before it does anything else.
    this.credentials = await agentCredentials(this.s, this.log, () => this.stopped);
    this.facts = await readPgdataFacts(this.s.pgdata);
    // A drill killed with an earlier agent process (SIGKILL, power loss) left its copy, maybe its server running.
    await cleanScratchArea(this.s.scratchDir, this.log.child({ component: 'drill' }));
    // And a backup killed with it left its manifest spool (entry-spool.ts): only this cluster's, only dead processes'.
    await sweepEntrySpools(this.s.cluster, this.log.child({ component: 'backup' }));
    // And a dump or restore-dump killed with it left its pg_dump spool (logical/dump.ts), under the scratch area.
    await sweepDumpSpools(this.s.scratchDir, this.s.cluster, this.log.child({ component: 'dump' }));
    // And what such a dump had stored in the repository (logical/abandoned-dumps.ts): swept in the
    // background now and every ABANDONED_DUMPS_SWEEP_MS, not only by the cluster's next dump or
    // expire job, which may never come.
    this.sweepAbandonedDumps();
    this.abandonedDumpsTimer = setInterval(() => this.sweepAbandonedDumps(), ABANDONED_DUMPS_SWEEP_MS);
    this.abandonedDumpsTimer.unref();
    if (!(await this.clusterKey.load()))
      this.log.warn(
        { code: ErrorCodes.WalKeyMissing.code, file: this.s.clusterKeyFile },
        'no cluster key yet: WAL archiving waits for the controller to welcome this agent (PostgreSQL keeps the WAL and retries)',
      );
    void this.startupCheck();
    // WAL is archived under the cluster's key from the file or the last Welcome, whatever job runs.
    this.wal = await WalServices.start(
      this.s,
      this.facts,
      this.s.repositories.length > 0
        ? (await this.openRepository(this.s.repositories)).withManifestKeys(this.clusterKey)
        : undefined,
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
    let failures = 0;
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
      if (Date.now() - connectedAt > 30_000) failures = 0;
      const backoff = reconnectDelayMs(failures, this.controllers.length);
      failures++;
      // The controller that failed may be dead: the next one of the list is tried first.
      this.controllerIndex = (this.controllerIndex + 1) % this.controllers.length;
      this.log.info({ retryInMs: Math.round(backoff), controller: this.controller }, 'reconnecting to controller');
      await sleep(backoff);
    }
  }

  /** Stops and aborts every job; resolves once they have settled (a drill stops its server and removes its copy first). */
  stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.abandonedDumpsTimer);
    for (const c of this.running.values()) c.abort();
    this.stream?.cancel();
    void this.wal?.stop();
    return Promise.all(this.settling).then(() => undefined);
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
        ? { name: 'controller', verdict: 'ok', message: `the controller at ${this.controller} answered` }
        : {
            name: 'controller',
            verdict: 'warn',
            message: `the controller at ${this.controllers.join(', or ')} has not answered within ${STARTUP_CONTROLLER_WAIT_MS / 1000} s: no jobs run until it does (WAL archiving goes on); check --controller and that pgfleet-controller runs`,
          };
      const out = await runArchiveCheck({ ...archiveCheckBase(this.s), ...(repo ? { repo } : {}), controller });
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

  /** The controller address this agent holds its stream to, or tries next. */
  private get controller(): string {
    return this.controllers[this.controllerIndex]!;
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
    const client = createClient(AgentService, this.controller, {
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
            ...(this.s.repositories[0] ? { repository: repositoryMessage(this.s.repositories[0]) } : {}),
            repositories: this.s.repositories.map(repositoryMessage),
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
              { controller: this.controller, version: msg.msg.value.controllerVersion },
              'connected to controller',
            );
            this.welcomed();
            void this.keepClusterKey(msg.msg.value.clusterKey);
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

  /**
   * One heartbeat now. A job's success goes out right after one (but RESULT_WITHOUT_BEAT's): the controller accepts a reported
   * backup only up to the position the cluster's heartbeats reached (backup-admission.ts), and the
   * beat taken after pg_backup_stop is at or past its stop LSN.
   */
  private beatNow: (() => Promise<void>) | undefined;

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
    this.beatNow = beat;
    void beat();
    this.heartbeatTimer = setInterval(() => void beat(), intervalSec * 1000);
  }

  /** The last archive setup problem logged: a change is logged once, not every beat. */
  private archiveProblem = '';

  /** Heartbeat.archive_setup; undefined when it cannot be read (an extra: never fails the beat). */
  private async archiveSetup(c: Awaited<ReturnType<typeof connectPg>>): Promise<ArchiveSetupReport | undefined> {
    try {
      const setup = await readArchiveSetup(c, archiveCheckBase(this.s));
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
    if (this.received.has(job.jobId)) {
      this.refuseCopy(job);
      return;
    }
    this.received.add(job.jobId);
    if (this.received.size > RECEIVED_KEPT) this.received.delete(this.received.values().next().value!);
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
      .then(async (result) => {
        // A logical dump's or restore-dump's result goes at once: it reports no server position,
        // and the beat (a connection and its queries) would sit on the job's path (docs/logical.md, "Dump").
        if (!RESULT_WITHOUT_BEAT.has(job.kind.case)) await this.beatNow?.().catch(() => undefined); // a beat that fails must not fail the job
        this.send({ msg: { case: 'result', value: { jobId: job.jobId, state: JobState.SUCCEEDED, result } } });
      })
      .catch((err: unknown) => {
        const e =
          abort.signal.aborted && !(err instanceof PgfleetError)
            ? new PgfleetError('JobCancelled', 'job cancelled')
            : asPgfleetError(err);
        log.error(
          { code: e.code, err: e.message, ...(e.errorName === 'Internal' ? { stack: (err as Error)?.stack } : {}) },
          'job failed',
        );
        // A drill that ran but did not pass still reports what it found (stage, reasons, figures), a failed check its items.
        const failed = failureResult(err);
        const result = failed ? { result: failed } : {};
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

  /**
   * A job this process was sent before: not run again. Still running, its result follows as
   * usual; finished, its result is sent again (the controller applies a result once); finished so
   * long ago that the result is gone, it is answered with a failure saying so (a job already
   * recorded as ended keeps its outcome: the controller refuses the move).
   */
  private refuseCopy(job: Job): void {
    const log = this.log.child({ jobId: job.jobId, job: job.kind.case });
    if (this.running.has(job.jobId)) {
      log.warn('a job sent again while it runs here is not run twice');
      return;
    }
    const done = this.recentResults.findLast((r) => r.jobId === job.jobId);
    log.warn(
      { resultKept: done !== undefined },
      'a job sent again after it ran here is not run twice: its result goes again',
    );
    const msg: Outgoing = done?.msg ?? {
      msg: {
        case: 'result',
        value: {
          jobId: job.jobId,
          state: JobState.FAILED,
          error: {
            code: ErrorCodes.JobStateConflict.code,
            message: `job ${job.jobId} was already run by this agent; a copy sent again is not run twice`,
          },
        },
      },
    };
    try {
      this.stream?.send(msg);
    } catch (err) {
      // A broken stream: a kept result goes again after the next Welcome.
      log.debug({ err: (err as Error).message }, 'result not sent: the stream is gone');
    }
  }

  /** Keeps the cluster key a Welcome brought (in memory and in the key file); a controller without one sends none. */
  private async keepClusterKey(key: Uint8Array): Promise<void> {
    if (key.length === 0) return;
    try {
      if (await this.clusterKey.received(key))
        this.log.info({ file: this.s.clusterKeyFile }, 'cluster key received from the controller and stored');
    } catch (err) {
      // Kept in memory all the same: only wal-push without a daemon, and restarts, need the file.
      this.log.error(
        { code: asPgfleetError(err).code, file: this.s.clusterKeyFile, err: (err as Error).message },
        'the cluster key could not be stored in its file',
      );
    }
  }

  /**
   * Removes this cluster's abandoned dumps from the agent's repositories (logical/abandoned-dumps.ts:
   * only labels without dump.json whose lease no longer holds them), after any sweep still running.
   * A failure is logged; the next round tries again.
   */
  private sweepAbandonedDumps(): void {
    if (this.stopped || this.s.repositories.length === 0) return;
    const log = this.log.child({ component: 'dump' });
    this.abandonedDumpsSweep = this.abandonedDumpsSweep.then(async () => {
      try {
        const repo = await this.openRepository(this.s.repositories);
        if (!this.stopped) await removeAbandonedDumps({ repo, cluster: this.s.cluster, log });
      } catch (err) {
        log.warn({ err }, 'could not sweep the files of dumps whose agent died; tried again later');
      }
    });
  }

  /** Opened repositories by their URLs: one S3 client per configuration, not one per job. */
  private readonly repositories = new Map<string, Promise<Repository>>();

  private openRepository(specs: readonly RepositorySpec[]): Promise<Repository> {
    const id = specs.map(repositoryUrl).join(' ');
    let repo = this.repositories.get(id);
    if (!repo) {
      // This cluster's key only: an agent never holds another cluster's key.
      const keys = this.s.encryption ? keyResolver(this.s.encryption, this.s.cluster) : undefined;
      repo = openRepository(specs, this.s.s3Credentials, keys);
      repo.catch(() => this.repositories.delete(id));
      this.repositories.set(id, repo);
    }
    return repo;
  }

  /** JobContext.liveTimeline: this cluster's primary's timeline read now when it is newer than `given`. */
  private async liveTimeline(cluster: string, given: number): Promise<number> {
    if (cluster !== this.s.cluster) return given;
    try {
      const c = await connectPg(this.s.pg);
      try {
        const p = await serverPosition(c);
        return p.inRecovery ? given : Math.max(given, p.timeline);
      } finally {
        await c.end();
      }
    } catch {
      return given; // the server is down: the controller's word is all there is
    }
  }

  /** Opens the job's repositories and runs it by its kind's module (jobs/registry.ts). */
  private async runJob(job: Job, signal: AbortSignal, log: Logger, progress: (p: Progress) => void) {
    const specs = jobRepositories(this.s, job, log);
    const repo = withJobManifestKey(await this.openRepository(specs), job);
    const ctx: JobContext = {
      job,
      settings: this.s,
      repo,
      walFetchArgs: () => walFetchArgs(this.s, specs, log, job),
      exclusive: (key) => {
        if (this.exclusive.has(key)) return undefined;
        this.exclusive.add(key);
        return () => this.exclusive.delete(key);
      },
      liveTimeline: (cluster, given) => this.liveTimeline(cluster, given),
      requestWalSwitch: (lsn) => this.send({ msg: { case: 'walSwitch', value: { jobId: job.jobId, lsn } } }),
      ...(this.rateLimit ? { rateLimit: this.rateLimit } : {}),
      log,
      progress,
      signal,
      stopping: () => this.stopped,
    };
    try {
      return await runJob(job, ctx);
    } finally {
      // A drill of another cluster wrote that cluster's key for its restore_command: gone with the job.
      if (job.kind.case === 'drill') {
        const own = { file: this.s.clusterKeyFile, cluster: this.s.cluster };
        await removeJobClusterKeyFile(own, job.manifestCluster, job.jobId).then(
          (file) => file && log.info({ file }, "the drilled cluster's key file is removed"),
          (err: unknown) =>
            log.warn({ err: (err as Error).message }, "the drilled cluster's key file could not be removed"),
        );
      }
    }
  }
}
