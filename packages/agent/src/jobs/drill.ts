/**
 * The drill job (DrillJob): runDrill (runDumpDrill for DrillJob.dump) into a scratch directory, reported as DrillResult; a drill
 * that ran but did not pass reports its DrillResult with the failure. The capture job
 * (CaptureSourceJob) counts the source's rows for a drill on another agent.
 */
import { captureSourceCounts } from '../drill/capture.js';
import { DrillFailure, runDrill } from '../drill/drill.js';
import { runDumpDrill } from '../drill/dump-drill.js';
import { liveTimelineOption, type AgentJobKind, type JobContext } from './job-kind.js';
import { recoveryTargetSpec } from './recovery-target.js';

/** What every job restoring into the scratch area takes from the agent (drills, recover-table). */
export async function scratchJobOptions(ctx: JobContext) {
  const s = ctx.settings;
  return {
    jobId: ctx.job.jobId,
    repo: ctx.repo,
    walFetchArgs: await ctx.walFetchArgs(),
    pg: s.pg,
    ...(s.pgBinDir ? { pgBinDir: s.pgBinDir } : {}),
    workers: s.workers,
    ...(ctx.rateLimit ? { rateLimit: ctx.rateLimit } : {}),
    archiveTimeoutMs: s.archiveTimeoutSec * 1000,
    log: ctx.log,
    progress: ctx.progress,
    signal: ctx.signal,
  };
}

export const drillJob: AgentJobKind<'drill'> = {
  async run(d, ctx) {
    const s = ctx.settings;
    if (d.dump) {
      const out = await runDumpDrill({
        ...(await scratchJobOptions(ctx)),
        cluster: d.dump.cluster || d.cluster || s.cluster,
        scratchDir: d.scratchDir || s.scratchDir,
        keep: d.keep,
        dump: d.dump,
      });
      return { case: 'drill', value: out };
    }
    const target = d.target?.target.case ? recoveryTargetSpec(d.target) : undefined;
    const out = await runDrill({
      ...(await scratchJobOptions(ctx)),
      cluster: d.cluster || s.cluster,
      ...(d.backupLabel ? { backupLabel: d.backupLabel } : {}),
      ...(target && d.target
        ? {
            target: {
              spec: target.target,
              ...(target.inclusive !== undefined ? { inclusive: target.inclusive } : {}),
              proto: d.target,
            },
          }
        : {}),
      ...(d.source ? { source: d.source } : {}),
      scratchDir: d.scratchDir || s.scratchDir,
      keep: d.keep,
      ...(await liveTimelineOption(ctx, d.cluster || s.cluster, d.currentTimeline)),
    });
    return { case: 'drill', value: out };
  },
  failureResult: (err) => (err instanceof DrillFailure ? { case: 'drill', value: err.result } : undefined),
};

export const captureJob: AgentJobKind<'capture'> = {
  async run(c, ctx) {
    const s = ctx.settings;
    const out = await captureSourceCounts({
      cluster: c.cluster || s.cluster,
      pg: s.pg,
      repo: ctx.repo,
      restorePoint: c.restorePoint,
      archiveTimeoutMs: s.archiveTimeoutSec * 1000,
      log: ctx.log,
      progress: ctx.progress,
      signal: ctx.signal,
    });
    return { case: 'capture', value: out };
  },
};
