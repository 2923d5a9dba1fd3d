/** The expire job (ExpireJob): runExpire with the controller's retention plan, reported as ExpireResult. */
import { runExpire } from '../retention/expire.js';
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
    return {
      case: 'expire',
      value: {
        ...out,
        backupBytesDeleted: BigInt(out.backupBytesDeleted),
        walBytesDeleted: BigInt(out.walBytesDeleted),
      },
    };
  },
};
