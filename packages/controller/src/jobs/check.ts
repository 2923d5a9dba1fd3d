/**
 * Check jobs on the controller: `pgfleet check` on the cluster's primary agent (CheckJob). Its
 * CheckResult is kept with the job, on failure too (registry.ts failedOutcome); it publishes no
 * events.
 */
import type { MessageInitShape } from '@bufbuild/protobuf';
import { newJobId } from '@pgfleet/core';
import type { JobInfoSchema } from '@pgfleet/proto';
import type { ControllerContext } from '../context.js';
import { resultJson } from '../wire.js';
import { clusterAgent, dispatch, requireCluster, sentFromHere } from './dispatch.js';
import type { ControllerJobKind } from './job-kind.js';
import { jobOfKind } from './params.js';

export const checkJob: ControllerJobKind<'check'> = {
  events: () => [],
  succeeded(_job, result) {
    return { result: resultJson({ check: result.case === 'check' ? result.value : undefined }), details: {} };
  },
};

/**
 * Starts a check of the cluster's WAL archiving on its primary's agent (CheckJob). It switches a
 * WAL segment, so it is the cluster's own agent's job, never another's.
 */
export async function startCheckJob(
  ctx: ControllerContext,
  cluster: string,
  timeoutSeconds: number,
): Promise<MessageInitShape<typeof JobInfoSchema>> {
  await requireCluster(ctx, cluster);
  // pg_switch_wal() and the archiver: the primary's agent.
  const session = await clusterAgent(ctx, cluster, 'primary');
  const job = jobOfKind(
    'check',
    await ctx.store.createJob(
      sentFromHere(ctx, {
        id: newJobId(),
        cluster,
        kind: 'check',
        agentId: session.agentId,
        params: { timeoutSeconds },
      }),
      ctx.now(),
    ),
  );
  return dispatch(ctx, session, job, { case: 'check', value: { timeoutSeconds } }, checkJob);
}
