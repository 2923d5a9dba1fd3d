/**
 * WAL search jobs on the controller (`pgfleet wal search`, issue 15): a read-only look at the
 * cluster's archived WAL for the transactions that deleted, updated, truncated or dropped, run by
 * any connected agent of the cluster (every agent reads the same repository). The controller adds
 * the timeline the primary writes now, so the search follows that lineage; the result is kept
 * with the job and no event is published.
 */
import type { MessageInitShape } from '@bufbuild/protobuf';
import { timestampDate } from '@bufbuild/protobuf/wkt';
import { newJobId } from '@pgfleet/core';
import type { JobInfoSchema, WalSearchJob } from '@pgfleet/proto';
import type { ControllerContext } from '../context.js';
import { resultJson } from '../wire.js';
import { clusterAgent, dispatch, liveTimeline, requireCluster, sentFromHere } from './dispatch.js';
import type { ControllerJobKind } from './job-kind.js';
import { jobOfKind } from './params.js';

export const walSearchJob: ControllerJobKind<'wal-search'> = {
  events: () => [],
  succeeded(_job, result) {
    return {
      result: resultJson({ walSearch: result.case === 'walSearch' ? result.value : undefined }),
      details: {},
    };
  },
};

/** Starts a WAL search job (WalSearchJob) on a connected agent of the cluster. */
export async function startWalSearchJob(
  ctx: ControllerContext,
  cluster: string,
  search: WalSearchJob | undefined,
): Promise<MessageInitShape<typeof JobInfoSchema>> {
  await requireCluster(ctx, cluster);
  const session = await clusterAgent(ctx, cluster, 'any');
  const s = search ?? ({} as Partial<WalSearchJob>);
  const params = {
    ...(s.since ? { since: timestampDate(s.since).toISOString() } : {}),
    ...(s.until ? { until: timestampDate(s.until).toISOString() } : {}),
    ...(s.table ? { table: s.table } : {}),
    ...(s.database ? { database: s.database } : {}),
    ...(s.kinds?.length ? { kinds: [...s.kinds] } : {}),
    ...(s.minRows ? { minRows: Number(s.minRows) } : {}),
    ...(s.limit ? { limit: s.limit } : {}),
  };
  const job = jobOfKind(
    'wal-search',
    await ctx.store.createJob(
      sentFromHere(ctx, { id: newJobId(), cluster, kind: 'wal-search', agentId: session.agentId, params }),
      ctx.now(),
    ),
  );
  return dispatch(
    ctx,
    session,
    job,
    {
      case: 'walSearch',
      value: {
        ...(s.since ? { since: s.since } : {}),
        ...(s.until ? { until: s.until } : {}),
        table: s.table ?? '',
        database: s.database ?? '',
        kinds: [...(s.kinds ?? [])],
        minRows: s.minRows ?? 0n,
        limit: s.limit ?? 0,
        currentTimeline: await liveTimeline(ctx, cluster),
      },
    },
    walSearchJob,
  );
}
