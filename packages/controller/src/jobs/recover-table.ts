/**
 * Recover-table jobs on the controller (`pgfleet recover-table`, docs/undo.md): checking the
 * table names, choosing the backup like a restore does, sending the job to the primary's agent
 * (it loads into the live cluster, which only the primary accepts), recording the
 * RecoverTableResult, and the events: restore.completed carries the tables brought back (where
 * they are and how many rows), restore.failed says why not. The agent does the work (agent
 * recover/recover-table.ts): the controller never connects to a cluster.
 */
import type { MessageInitShape } from '@bufbuild/protobuf';
import { newJobId, PgfleetError } from '@pgfleet/core';
import { recoverTablePlan } from '@pgfleet/pg';
import type { JobInfoSchema, StartRecoverTableRequest } from '@pgfleet/proto';
import type { ControllerContext } from '../context.js';
import { chooseBackup } from '../restore/pitr.js';
import { pitrTargetFromProto, recoveryTargetFromJson, recoveryTargetJson, resultJson } from '../wire.js';
import { clusterAgent, dispatch, liveTimeline, requireCluster, sentFromHere } from './dispatch.js';
import type { ControllerJobKind } from './job-kind.js';
import { jobOfKind, type NewTypedJob } from './params.js';
import { restoreOutcomeEvents } from './restore.js';

export const recoverTableJob: ControllerJobKind<'recover-table'> = {
  events(job, to, details, now) {
    const p = job.params;
    const r = details.recoverTable;
    const target = recoveryTargetFromJson(p.target);
    return restoreOutcomeEvents(
      job,
      to,
      {
        backupLabel: r?.backupLabel || p.backupLabel,
        // The scratch copy is gone: the rows are in the live cluster (recovered_tables).
        targetDir: '',
        error: details.error,
        completed: {
          ...(target ? { target } : {}),
          restoredBytes: r?.restoredBytes ?? 0n,
          recoveredTables: r?.tables ?? [],
          database: r?.database || p.database,
        },
      },
      now,
    );
  },

  succeeded(_job, result) {
    const recoverTable = result.case === 'recoverTable' ? result.value : undefined;
    return { result: resultJson({ recoverTable }), details: recoverTable ? { recoverTable } : {} };
  },
};

export async function startRecoverTableJob(
  ctx: ControllerContext,
  req: StartRecoverTableRequest,
): Promise<MessageInitShape<typeof JobInfoSchema>> {
  await requireCluster(ctx, req.cluster);
  if (!req.target?.target.case)
    throw new PgfleetError('TargetInvalid', 'recover-table needs a recovery target (--before-xid, --target-time, ...)');
  // A typo in a name fails here, before a restore starts.
  recoverTablePlan(req.tables, req.into);
  const backupLabel = chooseBackup(
    await ctx.store.listBackups(req.cluster),
    pitrTargetFromProto(req.target),
    ctx.now(),
    req.backupLabel,
  );
  // The rows are loaded into the live cluster: only its primary takes writes.
  const session = await clusterAgent(ctx, req.cluster, 'primary');
  const target = req.target!;
  const created: NewTypedJob<'recover-table'> = {
    id: newJobId(),
    cluster: req.cluster,
    kind: 'recover-table',
    agentId: session.agentId,
    params: {
      backupLabel,
      target: recoveryTargetJson(target),
      tables: [...req.tables],
      into: [...req.into],
      database: req.database,
    },
  };
  const job = jobOfKind('recover-table', await ctx.store.createJob(sentFromHere(ctx, created), ctx.now()));
  return dispatch(
    ctx,
    session,
    job,
    {
      case: 'recoverTable',
      value: {
        cluster: req.cluster,
        backupLabel,
        target,
        tables: req.tables,
        into: req.into,
        database: req.database,
        currentTimeline: await liveTimeline(ctx, req.cluster),
      },
    },
    recoverTableJob,
  );
}
