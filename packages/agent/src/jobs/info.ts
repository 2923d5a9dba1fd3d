/** The info job (InfoJob): what the cluster's repository holds (info/repository-info.ts), reported as RepositoryInfo. */
import { readRepositoryInfo } from '../info/repository-info.js';
import type { AgentJobKind } from './job-kind.js';

export const infoJob: AgentJobKind<'info'> = {
  async run(_message, ctx) {
    return { case: 'info', value: await readRepositoryInfo(ctx.repo, ctx.settings.cluster) };
  },
};
