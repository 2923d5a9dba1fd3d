/**
 * The agent daemon: one long-lived Connect stream to the controller. It says Hello (identity,
 * cluster, system identifier), sends heartbeats with pg_stat_archiver figures, runs the jobs it
 * is sent and streams their progress and results back. When the controller goes away it
 * reconnects with capped exponential backoff and jitter; jobs keep running meanwhile and their
 * results are delivered after the reconnect (jobs are idempotent by id).
 */
import { hostname } from 'node:os';
import { timestampFromDate, timestampDate } from '@bufbuild/protobuf/wkt';
import { asPgfleetError, PgfleetError, type Logger } from '@pgfleet/core';
import { archiverStats, connectPg } from '@pgfleet/pg';
import { AgentService, BackupType, JobState, TargetAction, type Job } from '@pgfleet/proto';
import { createClient, type ClientBidiStream, type ClientOptions } from '@pgfleet/rpc';
import type { MessageInitShape } from '@bufbuild/protobuf';
import type { ConnectRequestSchema, JobResultSchema } from '@pgfleet/proto';
import { PosixDriver, Repository, type BackupManifest } from '@pgfleet/storage';
import { agentCredentials } from './agent-identity.js';
import { runBackup } from './backup.js';
import { runExpire } from './expire.js';
import { runVerify, type VerifyOutcome } from './verify.js';
import type { AgentSettings } from './options.js';
import { readPgdataFacts, type PgdataFacts } from './pgdata.js';
import type { Progress } from './progress.js';
import { runRestore, type TargetSpec } from './restore.js';
import { AGENT_VERSION } from './version.js';
import { WalServices } from './wal-services.js';

type Outgoing = MessageInitShape<typeof ConnectRequestSchema>;
type JobResultInit = MessageInitShape<typeof JobResultSchema>;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

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

export function verifyResultToProto(v: VerifyOutcome) {
  const type = (t: string | undefined) => (t === 'full' ? BackupType.FULL : t === 'diff' ? BackupType.DIFF : t === 'incr' ? BackupType.INCR : BackupType.UNSPECIFIED);
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
    problems: v.problems.map((p) => ({ kind: p.kind, label: p.label, path: p.path, key: p.key, message: p.message, timeline: p.timeline ?? 0, lsnFrom: p.lsnFrom ?? '', lsnTo: p.lsnTo ?? '', segments: p.segments ?? [] })),
    walSegmentsChecked: v.walSegmentsChecked,
    walNewest: v.walNewest,
    ok: v.ok,
  };
}

/** UTC timestamp in PostgreSQL's input format with microsecond precision (a JS Date would cut it to milliseconds, moving the target). */
export function pgTimestamp(seconds: bigint, nanos: number): string {
  const base = new Date(Number(seconds) * 1000).toISOString().slice(0, 19).replace('T', ' ');
  return `${base}.${String(Math.floor(nanos / 1000)).padStart(6, '0')}+00`;
}

export function targetFromProto(job: Job): { target: TargetSpec; action: 'promote' | 'pause' | 'shutdown'; inclusive?: boolean } {
  if (job.kind.case !== 'restore') throw new Error('not a restore job');
  const t = job.kind.value.target;
  const action = t?.action === TargetAction.PAUSE ? 'pause' : t?.action === TargetAction.SHUTDOWN ? 'shutdown' : 'promote';
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
  /** Results waiting for a connected stream. */
  private readonly pending: Outgoing[] = [];
  private heartbeatTimer: NodeJS.Timeout | undefined;
  private stopped = false;
  private facts!: PgdataFacts;
  private wal: WalServices | undefined;
  private credentials: ClientOptions['credentials'];

  constructor(private readonly s: AgentSettings, private readonly log: Logger) {}

  async start(): Promise<void> {
    // Identity first (enrolling if needed): an agent the controller will not accept should fail before it does anything else.
    this.credentials = await agentCredentials(this.s, this.log, () => this.stopped);
    this.facts = await readPgdataFacts(this.s.pgdata);
    await this.checkArchiving();
    this.wal = await WalServices.start(this.s, this.facts, this.log);
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
          this.stop();
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

  stop(): void {
    this.stopped = true;
    for (const c of this.running.values()) c.abort();
    this.stream?.cancel();
    void this.wal?.stop();
  }

  /** Warn early (the backup itself refuses): an agent on a cluster without archiving protects nothing. */
  private async checkArchiving(): Promise<void> {
    try {
      const c = await connectPg(this.s.pg);
      try {
        const mode = (await c.query(`SELECT current_setting('archive_mode') AS m`)).rows[0].m;
        if (mode === 'off') this.log.error({ code: 'PGF-3002' }, 'archive_mode is off: backups will be refused until WAL archiving is enabled');
      } finally {
        await c.end();
      }
    } catch (err) {
      this.log.warn({ err: (err as Error).message }, 'PostgreSQL not reachable at start; will keep trying');
    }
  }

  private send(msg: Outgoing): void {
    if (this.stream) this.stream.send(msg);
    else if (msg.msg?.case === 'result') this.pending.push(msg);
  }

  private async session(): Promise<void> {
    const client = createClient(AgentService, this.s.controller, { unavailableError: 'ControllerUnreachable', ...(this.credentials ? { credentials: this.credentials } : {}) });
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
            ...(this.s.repoPath ? { repository: { kind: { case: 'posix', value: { path: this.s.repoPath } } } } : {}),
            runningJobIds: [...this.running.keys()],
          },
        },
      });
      for await (const msg of stream) {
        switch (msg.msg.case) {
          case 'welcome': {
            this.stream = stream as never;
            this.log.info({ controller: this.s.controller, version: msg.msg.value.controllerVersion }, 'connected to controller');
            for (const p of this.pending.splice(0)) stream.send(p);
            this.startHeartbeats(Math.max(1, msg.msg.value.heartbeatIntervalSeconds || 5));
            break;
          }
          case 'job':
            this.startJob(msg.msg.value);
            break;
          case 'cancel':
            this.running.get(msg.msg.value.jobId)?.abort();
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
      let pgUp = false;
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
          currentLsn = (await c.query('SELECT pg_current_wal_lsn()::text AS l')).rows[0].l;
          pgUp = true;
        } finally {
          await c.end();
        }
      } catch {
        pgUp = false;
      }
      this.send({ msg: { case: 'heartbeat', value: { time: timestampFromDate(new Date()), pgUp, currentLsn, streamedLsn: this.wal?.streamedLsn ?? '', ...(archiver ? { archiver } : {}) } } });
    };
    void beat();
    this.heartbeatTimer = setInterval(() => void beat(), intervalSec * 1000);
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
      this.send({ msg: { case: 'progress', value: { jobId: job.jobId, phase: p.phase, bytesDone: BigInt(p.bytesDone), bytesTotal: BigInt(p.bytesTotal), filesDone: p.filesDone, filesTotal: p.filesTotal, message: p.message ?? '' } } });
    void this.runJob(job, abort.signal, log, progress)
      .then((result) => this.send({ msg: { case: 'result', value: { jobId: job.jobId, state: JobState.SUCCEEDED, result } } }))
      .catch((err: unknown) => {
        const e = abort.signal.aborted && !(err instanceof PgfleetError) ? new PgfleetError('JobCancelled', 'job cancelled') : asPgfleetError(err);
        log.error({ code: e.code, err: e.message, ...(e.errorName === 'Internal' ? { stack: (err as Error)?.stack } : {}) }, 'job failed');
        this.send({ msg: { case: 'result', value: { jobId: job.jobId, state: e.errorName === 'JobCancelled' ? JobState.CANCELLED : JobState.FAILED, error: { code: e.code, message: e.message, hint: e.hint } } } });
      })
      .finally(() => this.running.delete(job.jobId));
  }

  private repoFor(job: Job): { repo: Repository; path: string } {
    const path = job.repository?.kind.case === 'posix' ? job.repository.kind.value.path : this.s.repoPath;
    if (!path) throw new PgfleetError('InvalidConfig', 'no repository: the controller sent none and --repo-path is not set');
    return { repo: new Repository(new PosixDriver(path)), path };
  }

  private async runJob(job: Job, signal: AbortSignal, log: Logger, progress: (p: Progress) => void): Promise<JobResultInit['result']> {
    const { repo, path } = this.repoFor(job);
    if (job.kind.case === 'backup') {
      const t = job.kind.value.type;
      const type = t === BackupType.DIFF ? 'diff' : t === BackupType.INCR ? 'incr' : 'full';
      const manifest = await runBackup({ cluster: this.s.cluster, pgdata: this.s.pgdata, pg: this.s.pg, repo, codec: this.s.compress, type, checksumDelta: this.s.checksumDelta === true, workers: this.s.workers, archiveTimeoutMs: this.s.archiveTimeoutSec * 1000, log, progress, signal });
      return { case: 'backup', value: manifestToBackupInfo(manifest, job.jobId) };
    }
    if (job.kind.case === 'restore') {
      const r = job.kind.value;
      const { target, action, inclusive } = targetFromProto(job);
      const out = await runRestore({
        cluster: r.cluster || this.s.cluster,
        repo,
        repoPath: path,
        ...(r.backupLabel ? { backupLabel: r.backupLabel } : {}),
        targetDir: r.targetDir,
        delta: r.delta,
        target,
        action,
        ...(inclusive !== undefined ? { inclusive } : {}),
        workers: this.s.workers,
        ...(this.s.pgBinDir ? { pgBinDir: this.s.pgBinDir } : {}),
        log,
        progress,
        signal,
      });
      return { case: 'restore', value: { backupLabel: out.manifest.label, targetDir: r.targetDir, bytes: BigInt(out.bytes), fileCount: out.manifest.files.length } };
    }
    if (job.kind.case === 'expire') {
      const e = job.kind.value;
      const out = await runExpire({ cluster: e.cluster || this.s.cluster, repo, labels: e.labels, walKeepFrom: e.walKeepFrom, keepRanges: e.keepRanges, dryRun: e.dryRun, log, progress, signal });
      return { case: 'expire', value: { ...out, backupBytesDeleted: BigInt(out.backupBytesDeleted), walBytesDeleted: BigInt(out.walBytesDeleted) } };
    }
    if (job.kind.case === 'verify') {
      const out = await runVerify({ cluster: this.s.cluster, repo, full: job.kind.value.full, concurrency: Math.max(2, this.s.workers), log, progress, signal });
      return { case: 'verify', value: verifyResultToProto(out) };
    }
    throw new PgfleetError('InvalidArgument', `unknown job kind ${String(job.kind.case)}`);
  }
}
