/**
 * Restore drills on the controller's side (docs/drills.md): StartDrill, ListDrills, the drill
 * schedule of each cluster's policy, and the hand-over from a source capture to the drill.
 *
 * A drill is one job of kind 'drill' whatever it takes, so `pgfleet drill --wait` follows one id:
 * - on the cluster's own agent (the default) the agent counts the source's rows, creates the
 *   restore point and drills in one job;
 * - on another agent (`--on AGENT`, e.g. a spare host) the drill job waits queued while a
 *   'capture' job on the cluster's agent counts the rows and creates the restore point; when it
 *   succeeds the drill job is sent with those counts, when it fails (or its agent goes away) the
 *   drill job fails with the capture's reason and stage 'capture';
 * - with a target (time, LSN, name, xid, immediate, latest) nothing is captured and counts are
 *   not compared: the target is not a point the source was counted at.
 * The job's result holds the agent's DrillResult as protobuf JSON (convert.ts), on failure too;
 * status.ts reads the last and last good drill from it.
 */
import { create, type MessageInitShape } from '@bufbuild/protobuf';
import { ErrorCodes, PgfleetError, asPgfleetError, newJobId, type Logger } from '@pgfleet/core';
import type { JobRecord } from '@pgfleet/catalog';
import {
  DrillResultSchema,
  type JobInfoSchema,
  type ListDrillsRequest,
  type ListDrillsResponseSchema,
  type RecoveryTarget,
  type SourceCounts,
  type StartDrillRequest,
} from '@pgfleet/proto';
import type { AgentSession } from '../agents/sessions.js';
import { eventsCommitted, publishJobs, type ControllerContext } from '../context.js';
import { jobInfoFromRecord, pitrTargetFromProto, recoveryTargetJson, resultJson } from '../wire.js';
import { clusterAgent, dispatch, liveTimeline, requireCluster } from '../jobs/dispatch.js';
import { jobEvents } from '../jobs/events.js';
import { chooseBackup } from '../restore/pitr.js';
import { dueRuns } from '../schedule/schedule.js';

type JobInfoInit = MessageInitShape<typeof JobInfoSchema>;

/** What a drill job records (job params). */
interface DrillParams {
  backupLabel: string;
  target?: unknown;
  /** The scheduler's fire time for a scheduled drill. */
  scheduledAt?: string;
  /** The capture job that must succeed before this drill is sent (drill on another agent). */
  captureJobId?: string;
  /** Keep the scratch directory for inspection (`pgfleet drill --keep`). */
  keep?: boolean;
}

interface CaptureParams {
  drillJobId: string;
  restorePoint: string;
}

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
}

export function drillRequestFromProto(req: StartDrillRequest): DrillRequest {
  return {
    cluster: req.cluster,
    ...(req.backupLabel ? { backupLabel: req.backupLabel } : {}),
    ...(req.target?.target.case ? { target: req.target } : {}),
    ...(req.agentId ? { agentId: req.agentId } : {}),
    ...(req.keep ? { keep: true } : {}),
  };
}

/** Records and dispatches a drill (and, for a drill on another agent, its source capture first). */
export async function startDrillJob(ctx: ControllerContext, req: DrillRequest): Promise<JobInfoInit> {
  await requireCluster(ctx, req.cluster);
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
  let session: AgentSession = own;
  if (req.agentId) {
    const chosen = ctx.sessions.get(req.agentId);
    if (!chosen) throw new PgfleetError('AgentNotConnected', `agent '${req.agentId}' is not connected`);
    session = chosen;
  }
  const drillId = newJobId();
  const needsCapture = !req.target && session.agentId !== own.agentId;
  const captureId = needsCapture ? newJobId() : undefined;
  const params: DrillParams = {
    backupLabel,
    ...(req.target ? { target: recoveryTargetJson(req.target) } : {}),
    ...(req.scheduledAt ? { scheduledAt: req.scheduledAt } : {}),
    ...(captureId ? { captureJobId: captureId } : {}),
    ...(req.keep ? { keep: true } : {}),
  };
  const drill = await ctx.store.createJob(
    { id: drillId, cluster: req.cluster, kind: 'drill', agentId: session.agentId, params },
    ctx.now(),
  );
  if (!captureId) {
    return dispatch(ctx, session, drill, {
      case: 'drill',
      value: {
        cluster: req.cluster,
        backupLabel,
        ...(req.target ? { target: req.target } : {}),
        keep: req.keep === true,
        currentTimeline: await liveTimeline(ctx, req.cluster),
      },
    });
  }
  const restorePoint = drillRestorePoint(drillId);
  const capture = await ctx.store.createJob(
    {
      id: captureId,
      cluster: req.cluster,
      kind: 'capture',
      agentId: own.agentId,
      params: { drillJobId: drillId, restorePoint } satisfies CaptureParams,
    },
    ctx.now(),
  );
  try {
    await dispatch(ctx, own, capture, { case: 'capture', value: { cluster: req.cluster, restorePoint } });
  } catch (err) {
    await failDrill(ctx, drill, {
      code: asPgfleetError(err).code,
      message: `the source capture could not be sent: ${asPgfleetError(err).message}`,
    });
    throw err;
  }
  ctx.logger.info(
    { jobId: drillId, captureJobId: captureId, cluster: req.cluster, agentId: session.agentId },
    'drill waits for its source capture',
  );
  return jobInfoFromRecord(drill);
}

/** Fails a drill that never reached its agent's stages, with stage 'capture' and the reason. */
async function failDrill(
  ctx: ControllerContext,
  drill: JobRecord,
  error: { code: string; message: string },
  source?: SourceCounts,
): Promise<void> {
  const result = create(DrillResultSchema, {
    backupLabel: ((drill.params ?? {}) as DrillParams).backupLabel ?? '',
    stage: 'capture',
    reasons: [error.message],
    ...(source ? { source } : {}),
  });
  const now = ctx.now();
  const { job, changed } = await ctx.store.transitionJob(
    drill.id,
    'failed',
    { error, result: resultJson({ drill: result }), events: jobEvents(drill, 'failed', { error, drill: result }, now) },
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
export async function captureFinished(
  ctx: ControllerContext,
  capture: JobRecord,
  counts: SourceCounts | undefined,
): Promise<void> {
  const { drillJobId } = (capture.params ?? {}) as Partial<CaptureParams>;
  const drill = drillJobId ? await ctx.store.getJob(drillJobId) : undefined;
  if (!drill || drill.state !== 'queued') return;
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
  const session = ctx.sessions.get(drill.agentId);
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
  const p = (drill.params ?? {}) as DrillParams;
  try {
    await dispatch(ctx, session, drill, {
      case: 'drill',
      value: {
        cluster: drill.cluster,
        backupLabel: p.backupLabel ?? '',
        source: counts,
        keep: p.keep === true,
        currentTimeline: await liveTimeline(ctx, drill.cluster),
      },
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

/** Jobs the store failed in bulk (an agent went away): the drills waiting for those captures fail too. */
export async function capturesFailed(ctx: ControllerContext, jobs: readonly JobRecord[]): Promise<void> {
  for (const job of jobs) if (job.kind === 'capture') await captureFinished(ctx, job, undefined);
}

/** ListDrills: drill jobs, newest first, with their DrillResult (failed ones too). */
export async function listDrills(
  ctx: ControllerContext,
  req: ListDrillsRequest,
): Promise<MessageInitShape<typeof ListDrillsResponseSchema>> {
  if (req.cluster) await requireCluster(ctx, req.cluster);
  const jobs = await ctx.store.listJobs({
    ...(req.cluster ? { cluster: req.cluster } : {}),
    kind: 'drill',
    limit: req.limit || 50,
  });
  return {
    drills: jobs.map((j) => {
      const info = jobInfoFromRecord(j);
      return {
        jobId: j.id,
        cluster: j.cluster,
        agentId: j.agentId,
        state: info.state,
        startedAt: info.startedAt,
        finishedAt: info.finishedAt,
        scheduled: ((j.params ?? {}) as DrillParams).scheduledAt !== undefined,
        result: info.drill,
        error: info.error,
      };
    }),
  };
}

export interface DrillSchedule {
  cluster: string;
  cron: string;
  spreadMinutes: number;
}

/**
 * Starts the drills the clusters' drill schedules make due at `now` (called by the scheduler's
 * tick, on the leader only). Like backups: at most one run per fire time (a run missed while the
 * agent was away runs once, not once per missed time), recorded in schedule_runs as 'drill' once
 * the job is out. A cluster whose drill (or capture) is still running is left for a later tick.
 */
export async function startDueDrills(
  ctx: ControllerContext,
  schedules: readonly DrillSchedule[],
  now: number,
  log: Logger,
): Promise<Array<{ cluster: string; jobId: string; scheduledAt: Date }>> {
  if (schedules.length === 0) return [];
  const busy = new Set(
    (await ctx.store.listActiveJobs()).filter((j) => j.kind === 'drill' || j.kind === 'capture').map((j) => j.cluster),
  );
  const lastRuns = new Map(
    (await ctx.store.listScheduleRuns()).filter((r) => r.type === 'drill').map((r) => [r.cluster, r.lastRun]),
  );
  const started: Array<{ cluster: string; jobId: string; scheduledAt: Date }> = [];
  for (const s of schedules) {
    if (busy.has(s.cluster)) continue;
    const last = lastRuns.get(s.cluster);
    let run;
    try {
      [run] = dueRuns(
        { cluster: s.cluster, type: 'drill', cron: s.cron, spreadMinutes: s.spreadMinutes },
        last === undefined ? undefined : new Date(last),
        new Date(now),
      );
    } catch (err) {
      log.debug(
        { cluster: s.cluster, code: asPgfleetError(err).code },
        `drill schedule not evaluated: ${asPgfleetError(err).message}`,
      );
      continue;
    }
    if (!run) continue;
    try {
      const job = await startDrillJob(ctx, { cluster: s.cluster, scheduledAt: run.scheduledAt.toISOString() });
      await ctx.store.recordScheduleRuns([{ cluster: s.cluster, type: 'drill', lastRun: run.scheduledAt.getTime() }]);
      started.push({ cluster: s.cluster, jobId: job.id ?? '', scheduledAt: run.scheduledAt });
      log.info(
        { cluster: s.cluster, scheduledAt: run.scheduledAt.toISOString(), jobId: job.id },
        'scheduled drill started',
      );
    } catch (err) {
      const e = asPgfleetError(err);
      log.warn({ cluster: s.cluster, code: e.code }, `scheduled drill not started: ${e.message}`);
      // An agent that went away gets the run when it is back; anything else (no backup yet) waits for the next fire time.
      if (e.errorName !== 'AgentNotConnected' && e.errorName !== 'AgentDisconnected') {
        await ctx.store.recordScheduleRuns([{ cluster: s.cluster, type: 'drill', lastRun: run.scheduledAt.getTime() }]);
      }
    }
  }
  return started;
}
