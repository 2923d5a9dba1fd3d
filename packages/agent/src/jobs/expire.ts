/** The expire job (ExpireJob): runExpire with the controller's retention plan, reported as ExpireResult. */
import { runExpire } from '../retention/expire.js';
import { expireDumps } from '../retention/expire-dumps.js';
import { removeAbandonedDumps } from '../logical/abandoned-dumps.js';
import type { AgentJobKind } from './job-kind.js';

export const expireJob: AgentJobKind<'expire'> = {
  async run(e, ctx) {
    const { abandonedLabels: _, ...out } = await runExpire({
      cluster: e.cluster || ctx.settings.cluster,
      repo: ctx.repo,
      labels: e.labels,
      walKeepFrom: e.walKeepFrom,
      keepRanges: e.keepRanges,
      dryRun: e.dryRun,
      exact: e.exact,
      log: ctx.log,
      progress: ctx.progress,
      signal: ctx.signal,
    });
    // Dumps after backups and WAL: a dump depends on nothing physical, nothing depends on it.
    const deletedDumpLabels = await expireDumps({
      cluster: e.cluster || ctx.settings.cluster,
      repo: ctx.repo,
      labels: e.dumpLabels,
      dryRun: e.dryRun,
      log: ctx.log,
      signal: ctx.signal,
    });
    // And what dumps killed with their agent left (never listed; logical/abandoned-dumps.ts).
    await removeAbandonedDumps({
      cluster: e.cluster || ctx.settings.cluster,
      repo: ctx.repo,
      dryRun: e.dryRun,
      log: ctx.log,
      signal: ctx.signal,
    });
    return {
      case: 'expire',
      value: {
        ...out,
        deletedDumpLabels,
        backupBytesDeleted: BigInt(out.backupBytesDeleted),
        walBytesDeleted: BigInt(out.walBytesDeleted),
      },
    };
  },
};
