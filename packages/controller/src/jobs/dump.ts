/**
 * Logical backups on the controller (`pgfleet dump`, `pgfleet dumps`, `pgfleet restore-dump`,
 * docs/logical.md): a dump job goes to the cluster's primary agent (pg_dump reads the live
 * cluster); its DumpResult, kept with the succeeded job, is the catalog's record of the dump
 * (databases, files with their checksums, tables with row estimates, sizes, times, the pg_dump
 * version). A failed dump records no DumpResult, so it is never listed. A restore-dump job goes to
 * an agent of the target cluster with the dump's file list and checksums from that record: the
 * agent trusts the catalog for what the repository must hold, never the repository itself.
 */
import type { MessageInitShape } from '@bufbuild/protobuf';
import { fromJson, type JsonValue } from '@bufbuild/protobuf';
import { dumpLabel, isDumpLabel, newJobId, PgfleetError } from '@pgfleet/core';
import {
  DumpResultSchema,
  type DumpInfoSchema,
  type DumpJob,
  type DumpResult,
  type JobInfoSchema,
  type StartRestoreDumpRequest,
} from '@pgfleet/proto';
import type { ControllerContext } from '../context.js';
import { resultJson, type JobResultJson } from '../wire.js';
import { clusterAgent, dispatch, requireCluster } from './dispatch.js';
import type { ControllerJobKind } from './job-kind.js';
import { jobOfKind } from './params.js';

/** pg_dump --jobs and pg_restore --jobs beyond this are refused (each is a backend and a process). */
const MAX_JOBS = 64;
/** How many complete dumps `pgfleet dumps` reads back from the job history. */
const DUMP_HISTORY = 10_000;

export const dumpJob: ControllerJobKind<'dump'> = {
  events: () => [],
  succeeded(_job, result) {
    return { result: resultJson({ dump: result.case === 'dump' ? result.value : undefined }), details: {} };
  },
};

export const restoreDumpJob: ControllerJobKind<'restore-dump'> = {
  events: () => [],
  succeeded(_job, result) {
    return {
      result: resultJson({ restoreDump: result.case === 'restoreDump' ? result.value : undefined }),
      details: {},
    };
  },
};

function requireJobs(jobs: number): number {
  if (jobs > MAX_JOBS) throw new PgfleetError('DumpInvalid', `--jobs ${jobs} is more than ${MAX_JOBS}`);
  return Math.max(1, jobs);
}

/** Starts a dump (DumpJob) on the cluster's primary agent. */
export async function startDumpJob(
  ctx: ControllerContext,
  cluster: string,
  dump: DumpJob | undefined,
): Promise<MessageInitShape<typeof JobInfoSchema>> {
  await requireCluster(ctx, cluster);
  const d = dump ?? ({ databases: [], jobs: 0, lockWaitTimeoutMs: 0, withPasswords: false } as Partial<DumpJob>);
  const jobs = requireJobs(d.jobs ?? 0);
  for (const db of d.databases ?? [])
    if (!db || db.includes('\0')) throw new PgfleetError('DumpInvalid', `'${db}' is not a database name`);
  // pg_dump reads the live cluster: the primary's agent (a standby's would cancel on conflicts).
  const session = await clusterAgent(ctx, cluster, 'primary');
  const label = dumpLabel(new Date(ctx.now()));
  const params = {
    label,
    databases: [...(d.databases ?? [])],
    jobs,
    ...(d.lockWaitTimeoutMs ? { lockWaitTimeoutMs: d.lockWaitTimeoutMs } : {}),
    ...(d.withPasswords ? { withPasswords: true } : {}),
  };
  const job = jobOfKind(
    'dump',
    await ctx.store.createJob({ id: newJobId(), cluster, kind: 'dump', agentId: session.agentId, params }, ctx.now()),
  );
  return dispatch(
    ctx,
    session,
    job,
    {
      case: 'dump',
      value: {
        label,
        databases: params.databases,
        jobs,
        lockWaitTimeoutMs: d.lockWaitTimeoutMs ?? 0,
        withPasswords: d.withPasswords ?? false,
      },
    },
    dumpJob,
  );
}

/** The cluster's complete dumps, newest first: the DumpResults of its succeeded dump jobs. */
export async function listDumps(
  ctx: ControllerContext,
  cluster: string,
): Promise<MessageInitShape<typeof DumpInfoSchema>[]> {
  await requireCluster(ctx, cluster);
  const jobs = await ctx.store.listJobs({ cluster, kind: 'dump', state: 'succeeded', limit: DUMP_HISTORY });
  return jobs.flatMap((job) => {
    const dump = (job.result as JobResultJson | null)?.dump;
    if (!dump) return [];
    return [
      { cluster, jobId: job.id, dump: fromJson(DumpResultSchema, dump as JsonValue, { ignoreUnknownFields: true }) },
    ];
  });
}

/** The dump `label` of `cluster` (the newest holding `database` when no label is given). */
export async function findDump(
  ctx: ControllerContext,
  cluster: string,
  label: string,
  database: string,
): Promise<DumpResult> {
  for (const d of await listDumps(ctx, cluster)) {
    const dump = d.dump as DumpResult;
    if (label && dump.label !== label) continue;
    // '' (a dump drill of every database): any dump.
    if (!database || dump.databases.some((x) => x.name === database)) return dump;
    if (label)
      throw new PgfleetError(
        'DumpNotFound',
        `dump ${label} of cluster '${cluster}' holds no database '${database}' (it holds ${dump.databases.map((x) => x.name).join(', ') || 'none'})`,
      );
  }
  throw new PgfleetError(
    'DumpNotFound',
    label
      ? `cluster '${cluster}' has no complete dump ${label}`
      : `cluster '${cluster}' has no complete dump of database '${database}'`,
  );
}

/**
 * Starts pg_restore of one database of a dump (RestoreDumpJob) on the primary agent of the
 * target cluster (the dump's own when none is named): the new database is created there.
 */
export async function startRestoreDumpJob(
  ctx: ControllerContext,
  req: StartRestoreDumpRequest,
): Promise<MessageInitShape<typeof JobInfoSchema>> {
  await requireCluster(ctx, req.cluster);
  if (req.label && !isDumpLabel(req.label))
    throw new PgfleetError('DumpInvalid', `'${req.label}' is not a dump label (like 20261207-010203-123L)`);
  if (!req.database) throw new PgfleetError('DumpInvalid', '--database names the dumped database to restore');
  const toCluster = req.toCluster || req.cluster;
  await requireCluster(ctx, toCluster);
  const toDatabase = req.toDatabase || req.database;
  if (toDatabase.includes('\0')) throw new PgfleetError('DumpInvalid', `'${toDatabase}' is not a database name`);
  const jobs = requireJobs(req.jobs);
  const dump = await findDump(ctx, req.cluster, req.label, req.database);
  const database = dump.databases.find((x) => x.name === req.database)!;
  // pg_restore creates a database: only the target cluster's primary takes writes.
  const session = await clusterAgent(ctx, toCluster, 'primary');
  const params = {
    fromCluster: req.cluster,
    label: dump.label,
    database: req.database,
    toCluster,
    toDatabase,
    tables: [...req.tables],
    schemas: [...req.schemas],
    jobs,
    ...(req.clean ? { clean: true } : {}),
  };
  const job = jobOfKind(
    'restore-dump',
    await ctx.store.createJob(
      { id: newJobId(), cluster: toCluster, kind: 'restore-dump', agentId: session.agentId, params },
      ctx.now(),
    ),
  );
  return dispatch(
    ctx,
    session,
    job,
    {
      case: 'restoreDump',
      value: {
        cluster: req.cluster,
        label: dump.label,
        database,
        codec: dump.codec,
        toDatabase,
        tables: [...req.tables],
        schemas: [...req.schemas],
        jobs,
        clean: req.clean,
      },
    },
    restoreDumpJob,
  );
}
