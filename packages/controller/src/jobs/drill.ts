/**
 * Drill jobs on the controller (docs/drills.md): starting one, the hand-over from a source
 * capture to the drill, recording the DrillResult (on failure too), and the drill.completed/failed
 * events. A drill is one job of kind 'drill' whatever it takes, so `pgfleet drill --wait` follows
 * one id:
 * - on the cluster's own agent (the default) the agent counts the source's rows, creates the
 *   restore point and drills in one job;
 * - on another agent (`--on AGENT`, e.g. a spare host) the drill job waits queued while a
 *   'capture' job on the cluster's agent counts the rows and creates the restore point; when it
 *   succeeds the drill job is sent with those counts, when it fails (or its agent goes away) the
 *   drill job fails with the capture's reason and stage 'capture';
 * - with a target (time, LSN, name, xid, immediate, latest) nothing is captured and counts are
 *   not compared: the target is not a point the source was counted at.
 * - a dump drill (`--dump [LABEL]`, DrillJob.dump) restores a logical dump into a throwaway server on
 *   any agent of the cluster and compares its tables with the exact counts the dump recorded;
 *   nothing is captured (the dump's counts are the source's, taken in pg_dump's snapshot).
 * The job's result holds the agent's DrillResult as protobuf JSON (wire.ts), on failure too;
 * health/status.ts reads the last and last good drill from it. Listing and scheduling drills
 * is drill/drills.ts.
 */
import { create, type MessageInitShape } from '@bufbuild/protobuf';
import { ErrorCodes, PgfleetError, asPgfleetError, isDumpLabel, newJobId } from '@pgfleet/core';
import {
  DrillResultSchema,
  type DrillJob,
  type DrillJobSchema,
  type JobInfoSchema,
  type RecoveryTarget,
  type SourceCounts,
  type StartDrillRequest,
} from '@pgfleet/proto';
import type { LeadershipFence, ScheduleRunRecord } from '@pgfleet/catalog';
import type { AgentSession } from '../agents/sessions.js';
import { agentSession } from '../agents/peers.js';
import { eventsCommitted, publishJobs, type ControllerContext } from '../context.js';
import { chooseBackup } from '../restore/pitr.js';
import { jobInfoFromRecord, pitrTargetFromProto, recoveryTargetJson, resultJson } from '../wire.js';
import { clusterAgent, dispatch, liveTimeline, requireCluster, sentFromHere } from './dispatch.js';
import { findDump } from './dump.js';
import { errorDetail, jobDurationSeconds, outboxEvent } from './events.js';
import type { ControllerJobKind } from './job-kind.js';
import { jobOfKind, type DrillJobParams, type NewTypedJob, type TypedJob } from './params.js';

type JobInfoInit = MessageInitShape<typeof JobInfoSchema>;
/** The fields of a DrillJob sent to an agent, less those every drill sets alike (sendDrill). */
type DrillJobFields = Omit<
  Exclude<MessageInitShape<typeof DrillJobSchema>, DrillJob>,
  '$typeName' | 'cluster' | 'keep'
>;

export const drillJob: ControllerJobKind<'drill'> = {
  events(job, to, details, now) {
    if (to !== 'succeeded' && to !== 'failed' && to !== 'cancelled') return [];
    const p = job.params;
    const d = details.drill;
    const common = {
      jobId: job.id,
      backupLabel: d?.backupLabel || p.backupLabel,
      dumpLabel: d?.dumpLabel || (p.dumpLabel ?? ''),
      durationSeconds: jobDurationSeconds(job, now),
      agentId: job.agentId,
      scheduled: p.scheduledAt !== undefined,
    };
    if (to === 'succeeded' && d?.ok) {
      return [
        outboxEvent(
          job.cluster,
          {
            case: 'drillCompleted',
            value: {
              ...common,
              ...(d.target ? { target: d.target } : {}),
              recoveredLsn: d.recoveredLsn,
              ...(d.recoveredTime ? { recoveredTime: d.recoveredTime } : {}),
              restoredBytes: d.restoredBytes,
              rtoSeconds: d.rtoSeconds,
              restoreSeconds: d.restoreSeconds,
              recoverySeconds: d.recoverySeconds,
              relationsChecked: d.relationsChecked,
              tablesCompared: d.tablesCompared,
              countsEqual: d.countsEqual,
              keptDir: d.keptDir,
            },
          },
          now,
        ),
      ];
    }
    const error = details.error ?? {
      code: ErrorCodes.DrillFailed.code,
      message: d?.reasons.join('; ') || 'the drill did not pass',
    };
    // No result: the agent never reported one (not started, cancelled, or the agent went away).
    // Reasons are never empty: an agent's result without any (older agents) or none at all falls back to the job's error.
    const reasons = d?.reasons.filter((r) => r.trim() !== '') ?? [];
    return [
      outboxEvent(
        job.cluster,
        {
          case: 'drillFailed',
          value: {
            ...common,
            error: errorDetail(error),
            stage: d?.stage || (job.startedAt === null ? 'dispatch' : 'unknown'),
            reasons: reasons.length ? reasons : [error.message || `${error.code} without a message`],
            postgresLogProblems: d?.postgresLogProblems ?? [],
            keptDir: d?.keptDir ?? '',
          },
        },
        now,
      ),
    ];
  },

  succeeded(_job, result) {
    const drill = result.case === 'drill' ? result.value : undefined;
    return { result: resultJson({ drill }), details: drill ? { drill } : {} };
  },
};

/** The source capture for a drill on another agent: no events of its own; its end sends or fails its drill. */
export const captureJob: ControllerJobKind<'capture'> = {
  events: () => [],
  succeeded(_job, result) {
    return { result: resultJson({ capture: result.case === 'capture' ? result.value : undefined }), details: {} };
  },
  onFinished: (ctx, job, result) => captureFinished(ctx, job, result?.case === 'capture' ? result.value : undefined),
};

/** The restore point a drill recovers to; the agent uses the same name when it captures itself. */
export const drillRestorePoint = (drillJobId: string): string => `pgfleet-drill-${drillJobId}`;

export interface DrillRequest {
  cluster: string;
  backupLabel?: string;
  target?: RecoveryTarget;
  /** Run on this agent instead of the cluster's own. */
  agentId?: string;
  scheduledAt?: string;
  /** Keep the scratch directory for inspection (DrillJob.keep); never for scheduled drills. */
  keep?: boolean;
  /** A dump drill instead (DrillJob.dump): label '' = the newest dump (holding `database`); database '' = all of the dump's. */
  dump?: { label: string; database: string; jobs: number };
}

export function drillRequestFromProto(req: StartDrillRequest): DrillRequest {
  return {
    cluster: req.cluster,
    ...(req.backupLabel ? { backupLabel: req.backupLabel } : {}),
    ...(req.target?.target.case ? { target: req.target } : {}),
    ...(req.agentId ? { agentId: req.agentId } : {}),
    ...(req.keep ? { keep: true } : {}),
    ...(req.dump ? { dump: { label: req.dump.label, database: req.dump.database, jobs: req.dump.jobs } } : {}),
  };
}

/**
 * Where a drill runs and what it is told, before its job exists: a backup drill (backupDrillPlan)
 * or a dump drill (dumpDrillPlan). startDrillJob records and sends either the same way.
 */
interface DrillPlan {
  /** The agent that drills. */
  session: AgentSession;
  /** The job's params beyond what every drill carries (scheduledAt, keep, the capture). */
  params: Pick<DrillJobParams, 'backupLabel' | 'target' | 'dumpLabel' | 'database'>;
  /** The DrillJob sent to `session`, less cluster and keep. */
  job: DrillJobFields;
  /** A backup drill on another agent than the cluster's own: this one (the own) counts the source first. */
  captureOn?: AgentSession;
}

/**
 * Records and dispatches a drill (and, for a drill on another agent, its source capture first).
 * `fence`: a scheduled drill, created only while its scheduler still leads (a paused ex-leader
 * starts none), with the record of its fire time (`runs`) in the same transaction.
 */
export async function startDrillJob(
  ctx: ControllerContext,
  req: DrillRequest,
  fence?: LeadershipFence,
  runs?: readonly ScheduleRunRecord[],
): Promise<JobInfoInit> {
  await requireCluster(ctx, req.cluster);
  const plan = req.dump ? await dumpDrillPlan(ctx, req, req.dump) : await backupDrillPlan(ctx, req);
  const captureId = plan.captureOn ? newJobId() : undefined;
  const created: NewTypedJob<'drill'> = {
    id: newJobId(),
    cluster: req.cluster,
    kind: 'drill',
    agentId: plan.session.agentId,
    params: {
      ...plan.params,
      ...(req.scheduledAt ? { scheduledAt: req.scheduledAt } : {}),
      ...(captureId ? { captureJobId: captureId } : {}),
      ...(req.keep ? { keep: true } : {}),
    },
  };
  // A drill that waits for its source capture is sent by whichever controller records the
  // capture's end (captureFinished claims it then): until then nobody is its dispatcher.
  const drill = await createDrillJob(ctx, captureId ? created : sentFromHere(ctx, created), fence, runs);
  if (plan.captureOn && captureId) return startCapture(ctx, drill, plan.captureOn, captureId);
  return sendDrill(ctx, plan.session, drill, plan.job);
}

/** Sends the recorded drill to its agent: every kind of drill carries its cluster and --keep from the job. */
function sendDrill(
  ctx: ControllerContext,
  session: AgentSession,
  drill: TypedJob<'drill'>,
  job: DrillJobFields,
): Promise<JobInfoInit> {
  return dispatch(
    ctx,
    session,
    drill,
    { case: 'drill', value: { cluster: drill.cluster, keep: drill.params.keep === true, ...job } },
    drillJob,
  );
}

/** The agent `req.agentId` names (only the cluster's own), else `fallback`. */
async function drillAgent(
  ctx: ControllerContext,
  req: DrillRequest,
  fallback: () => Promise<AgentSession>,
): Promise<AgentSession> {
  if (!req.agentId) return fallback();
  // Only the cluster's own agents: another cluster's agent holds none of its repository rights.
  const chosen = await agentSession(ctx, req.cluster, req.agentId);
  if (!chosen)
    throw new PgfleetError('AgentNotConnected', `agent '${req.agentId}' of cluster '${req.cluster}' is not connected`);
  return chosen;
}

/** A physical drill: the backup (chosen by target, asked for, or the newest) and where it runs. */
async function backupDrillPlan(ctx: ControllerContext, req: DrillRequest): Promise<DrillPlan> {
  const backups = await ctx.store.listBackups(req.cluster);
  let backupLabel = req.backupLabel ?? '';
  if (req.target) {
    // Time and LSN targets are resolved here like restores; name and xid ones by the agent ('').
    backupLabel = chooseBackup(backups, pitrTargetFromProto(req.target), ctx.now(), backupLabel);
  } else {
    if (backups.length === 0) throw new PgfleetError('NoBackup', `cluster '${req.cluster}' has no backup to drill yet`);
    if (backupLabel && !backups.some((b) => b.label === backupLabel))
      throw new PgfleetError('UnknownBackup', `backup '${backupLabel}' does not exist for cluster '${req.cluster}'`);
  }
  // The cluster's own agent counts the source's rows and creates the restore point
  // (pg_create_restore_point and pg_switch_wal only work on the primary); a drill with a target
  // captures nothing and may run on any host.
  const own = await clusterAgent(ctx, req.cluster, req.target ? 'any' : 'primary');
  const session = await drillAgent(ctx, req, async () => own);
  return {
    session,
    params: { backupLabel, ...(req.target ? { target: recoveryTargetJson(req.target) } : {}) },
    job: {
      backupLabel,
      ...(req.target ? { target: req.target } : {}),
      currentTimeline: await liveTimeline(ctx, req.cluster),
    },
    ...(!req.target && session.agentId !== own.agentId ? { captureOn: own } : {}),
  };
}

/** A dump drill: the dump from the catalog's record (its files, checksums and exact row counts), on any agent of the cluster. */
async function dumpDrillPlan(
  ctx: ControllerContext,
  req: DrillRequest,
  want: NonNullable<DrillRequest['dump']>,
): Promise<DrillPlan> {
  if (want.label && !isDumpLabel(want.label))
    throw new PgfleetError('DumpInvalid', `'${want.label}' is not a dump label (like 20261207-010203-123L)`);
  if (want.jobs > 64) throw new PgfleetError('DumpInvalid', `--jobs ${want.jobs} is more than 64`);
  const dump = await findDump(ctx, req.cluster, want.label, want.database);
  const databases = want.database ? dump.databases.filter((x) => x.name === want.database) : dump.databases;
  return {
    // pg_restore into its own throwaway server: any agent of the cluster (or the one asked for) may run it.
    session: await drillAgent(ctx, req, () => clusterAgent(ctx, req.cluster, 'any')),
    params: { backupLabel: '', dumpLabel: dump.label, ...(want.database ? { database: want.database } : {}) },
    job: {
      dump: {
        cluster: req.cluster,
        label: dump.label,
        databases,
        codec: dump.codec,
        serverMajor: dump.serverMajor,
        jobs: want.jobs,
      },
    },
  };
}

/** Records a drill job; a scheduled one (`fence`) only while its scheduler leads and the cluster runs no drill. */
async function createDrillJob(
  ctx: ControllerContext,
  created: NewTypedJob<'drill'>,
  fence: LeadershipFence | undefined,
  /** A scheduled drill's fire time, recorded in the same transaction as the job. */
  runs?: readonly ScheduleRunRecord[],
): Promise<TypedJob<'drill'>> {
  return jobOfKind(
    'drill',
    fence || runs
      ? await ctx.store.createJobIfIdle(created.cluster, ['drill', 'capture'], created, ctx.now(), fence, runs)
      : await ctx.store.createJob(created, ctx.now()),
  );
}

/** The source capture of a drill on another agent, on the cluster's own (`own`); the drill waits queued for it. */
async function startCapture(
  ctx: ControllerContext,
  drill: TypedJob<'drill'>,
  own: AgentSession,
  captureId: string,
): Promise<JobInfoInit> {
  const restorePoint = drillRestorePoint(drill.id);
  const captureJobRecord: NewTypedJob<'capture'> = {
    id: captureId,
    cluster: drill.cluster,
    kind: 'capture',
    agentId: own.agentId,
    params: { drillJobId: drill.id, restorePoint },
  };
  const capture = jobOfKind('capture', await ctx.store.createJob(sentFromHere(ctx, captureJobRecord), ctx.now()));
  try {
    await dispatch(ctx, own, capture, { case: 'capture', value: { cluster: drill.cluster, restorePoint } }, captureJob);
  } catch (err) {
    await failDrill(ctx, drill, {
      code: asPgfleetError(err).code,
      message: `the source capture could not be sent: ${asPgfleetError(err).message}`,
    });
    throw err;
  }
  ctx.logger.info(
    { jobId: drill.id, captureJobId: captureId, cluster: drill.cluster, agentId: drill.agentId },
    'drill waits for its source capture',
  );
  return jobInfoFromRecord(drill);
}

/** Fails a drill that never reached its agent's stages, with stage 'capture' and the reason. */
async function failDrill(
  ctx: ControllerContext,
  drill: TypedJob<'drill'>,
  error: { code: string; message: string },
  source?: SourceCounts,
): Promise<void> {
  const result = create(DrillResultSchema, {
    backupLabel: drill.params.backupLabel,
    stage: 'capture',
    reasons: [error.message],
    ...(source ? { source } : {}),
  });
  const now = ctx.now();
  const { job, changed } = await ctx.store.transitionJob(
    drill.id,
    'failed',
    {
      error,
      result: resultJson({ drill: result }),
      events: drillJob.events(drill, 'failed', { error, drill: result }, now),
    },
    now,
  );
  if (!changed) return;
  eventsCommitted(ctx);
  publishJobs(ctx, [job]);
}

/**
 * A capture job ended: send its drill with the counts, or fail the drill with the capture's
 * reason. `counts` is the capture's SourceCounts when it succeeded.
 */
async function captureFinished(
  ctx: ControllerContext,
  capture: TypedJob<'capture'>,
  counts: SourceCounts | undefined,
): Promise<void> {
  const { drillJobId } = capture.params;
  const found = drillJobId ? await ctx.store.getJob(drillJobId) : undefined;
  if (!found || found.state !== 'queued' || found.kind !== 'drill') return;
  const drill = jobOfKind('drill', found);
  const log = ctx.logger.child({ jobId: drill.id, captureJobId: capture.id, cluster: drill.cluster });
  if (capture.state !== 'succeeded' || !counts) {
    const why = capture.error
      ? `${capture.error.code} ${capture.error.message}`
      : `it ended ${capture.state} without counts`;
    log.warn(`source capture failed: ${why}`);
    await failDrill(ctx, drill, {
      code: capture.error?.code || ErrorCodes.JobFailed.code,
      message: `the source capture (job ${capture.id}) failed: ${capture.error?.message || why}`,
    });
    return;
  }
  const session = await agentSession(ctx, drill.cluster, drill.agentId);
  if (!session) {
    await failDrill(
      ctx,
      drill,
      {
        code: ErrorCodes.AgentNotConnected.code,
        message: `agent ${drill.agentId} went away while the source was counted`,
      },
      counts,
    );
    return;
  }
  try {
    await sendDrill(ctx, session, drill, {
      backupLabel: drill.params.backupLabel,
      source: counts,
      currentTimeline: await liveTimeline(ctx, drill.cluster),
    });
    log.info({ restorePoint: counts.restorePoint, tables: counts.tables.length }, 'source counted: drill dispatched');
  } catch (err) {
    // dispatch() already failed the job when the stream was gone.
    log.warn(
      { code: asPgfleetError(err).code },
      `drill not dispatched after its capture: ${asPgfleetError(err).message}`,
    );
  }
}
