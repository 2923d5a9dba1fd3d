/**
 * Info and restore points jobs on the controller: read-only looks at the cluster's repository
 * (`pgfleet info`, `pgfleet restore-points`) run by any of its agents; the result is kept with
 * the job and no event is published.
 */
import type { MessageInitShape } from '@bufbuild/protobuf';
import { timestampFromDate } from '@bufbuild/protobuf/wkt';
import { newJobId } from '@pgfleet/core';
import type { JobInfoSchema } from '@pgfleet/proto';
import type { ControllerContext } from '../context.js';
import { resultJson } from '../wire.js';
import { clusterAgent, dispatch, requireCluster, type JobKindInit, sentFromHere } from './dispatch.js';
import type { ControllerJobKind } from './job-kind.js';
import { jobOfKind } from './params.js';

export const infoJob: ControllerJobKind<'info'> = {
  events: () => [],
  succeeded(_job, result) {
    return { result: resultJson({ info: result.case === 'info' ? result.value : undefined }), details: {} };
  },
};

export const restorePointsJob: ControllerJobKind<'restore-points'> = {
  events: () => [],
  succeeded(_job, result) {
    return {
      result: resultJson({ restorePoints: result.case === 'restorePoints' ? result.value : undefined }),
      details: {},
    };
  },
};

/**
 * Starts a job without params that any connected agent of the cluster can run (every host's
 * agent reads the same repository): info, rotate-key.
 */
export async function startOnAnyAgent<K extends 'info' | 'rotate-key'>(
  ctx: ControllerContext,
  cluster: string,
  kind: K,
  message: JobKindInit,
  module: ControllerJobKind<K>,
): Promise<MessageInitShape<typeof JobInfoSchema>> {
  await requireCluster(ctx, cluster);
  const session = await clusterAgent(ctx, cluster, 'any');
  const job = jobOfKind(
    kind,
    await ctx.store.createJob(
      sentFromHere(ctx, { id: newJobId(), cluster, kind, agentId: session.agentId, params: {} }),
      ctx.now(),
    ),
  );
  return dispatch(ctx, session, job, message, module);
}

/** Starts an info job (InfoJob) on a connected agent of the cluster. */
export function startInfoJob(ctx: ControllerContext, cluster: string): Promise<MessageInitShape<typeof JobInfoSchema>> {
  return startOnAnyAgent(ctx, cluster, 'info', { case: 'info', value: {} }, infoJob);
}

/** Starts a restore points job (RestorePointsJob) on a connected agent of the cluster. */
export async function startRestorePointsJob(
  ctx: ControllerContext,
  cluster: string,
  since: Date | undefined,
): Promise<MessageInitShape<typeof JobInfoSchema>> {
  await requireCluster(ctx, cluster);
  const session = await clusterAgent(ctx, cluster, 'any');
  const job = jobOfKind(
    'restore-points',
    await ctx.store.createJob(
      sentFromHere(ctx, {
        id: newJobId(),
        cluster,
        kind: 'restore-points',
        agentId: session.agentId,
        params: since ? { since: since.toISOString() } : {},
      }),
      ctx.now(),
    ),
  );
  return dispatch(
    ctx,
    session,
    job,
    { case: 'restorePoints', value: since ? { since: timestampFromDate(since) } : {} },
    restorePointsJob,
  );
}
