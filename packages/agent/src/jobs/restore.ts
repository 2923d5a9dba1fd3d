/** The restore job (RestoreJob): runRestore into the job's target directory, reported as RestoreResult. */
import { RestoreArchive } from '@pgfleet/proto';
import { runRestore } from '../restore/restore.js';
import { liveTimelineOption, type AgentJobKind } from './job-kind.js';
import { recoveryTargetSpec } from './recovery-target.js';

export const restoreJob: AgentJobKind<'restore'> = {
  async run(r, ctx) {
    const s = ctx.settings;
    const { target, action, inclusive } = recoveryTargetSpec(r.target);
    const out = await runRestore({
      cluster: r.cluster || s.cluster,
      repo: ctx.repo,
      walFetchArgs: await ctx.walFetchArgs(),
      ...(r.backupLabel ? { backupLabel: r.backupLabel, labelIsHint: r.backupLabelIsHint } : {}),
      ...(await liveTimelineOption(ctx, r.cluster || s.cluster, r.currentTimeline)),
      ...(r.targetTimeline ? { targetTimeline: r.targetTimeline } : {}),
      ...(r.archive === RestoreArchive.OFF
        ? { archive: 'off' as const }
        : r.archive === RestoreArchive.PRESERVE
          ? { archive: 'preserve' as const }
          : {}),
      targetDir: r.targetDir,
      delta: r.delta,
      ownPgdata: s.pgdata,
      ...(r.tablespaceDir ? { tablespaceDir: r.tablespaceDir } : {}),
      target,
      action,
      ...(inclusive !== undefined ? { inclusive } : {}),
      workers: s.workers,
      ...(ctx.rateLimit ? { rateLimit: ctx.rateLimit } : {}),
      ...(s.pgBinDir ? { pgBinDir: s.pgBinDir } : {}),
      log: ctx.log,
      progress: ctx.progress,
      signal: ctx.signal,
    });
    return {
      case: 'restore',
      value: {
        backupLabel: out.manifest.label,
        targetDir: r.targetDir,
        bytes: BigInt(out.bytes),
        fileCount: out.fileCount,
        timeline: out.timeline,
        archivePreserved: out.archivePreserved,
      },
    };
  },
};
