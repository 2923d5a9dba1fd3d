/** The recover-table job (RecoverTableJob): runRecoverTable through a scratch copy, reported as RecoverTableResult. */
import { runRecoverTable } from '../recover/recover-table.js';
import { scratchJobOptions } from './drill.js';
import { liveTimelineOption, type AgentJobKind } from './job-kind.js';
import { recoveryTargetSpec } from './recovery-target.js';

export const recoverTableJob: AgentJobKind<'recoverTable'> = {
  async run(m, ctx) {
    const s = ctx.settings;
    const { target, inclusive } = recoveryTargetSpec(m.target);
    const out = await runRecoverTable({
      ...(await scratchJobOptions(ctx)),
      cluster: m.cluster || s.cluster,
      ...(m.backupLabel ? { backupLabel: m.backupLabel } : {}),
      // Always promoted: the copy is read by pg_dump and changed before it (see the module header).
      target: { spec: target, ...(inclusive !== undefined ? { inclusive } : {}), proto: m.target! },
      tables: m.tables,
      into: m.into,
      database: m.database,
      scratchDir: m.scratchDir || s.scratchDir,
      ...(await liveTimelineOption(ctx, m.cluster || s.cluster, m.currentTimeline)),
    });
    return { case: 'recoverTable', value: out };
  },
};
