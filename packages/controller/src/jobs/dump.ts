/**
 * Logical backups on the controller (`pgfleet dump`, `pgfleet dumps`, `pgfleet restore-dump`,
 * docs/logical.md): a dump job goes to the cluster's primary agent (pg_dump reads the live
 * cluster); its DumpResult becomes the catalog's dumps row in the transaction that ends the job
 * (databases, files with their checksums, tables with row estimates, sizes, times, the pg_dump
 * version), with dump.completed in the outbox. A failed dump records no row, so it is never
 * listed, and publishes dump.failed. Retention marks rows expired (retention/dumps.ts); listings
 * and restores read complete rows only. A restore-dump job goes to
 * an agent of the target cluster with the dump's file list and checksums from that record: the
 * agent trusts the catalog for what the repository must hold, never the repository itself.
 */
import type { MessageInitShape } from '@bufbuild/protobuf';
import { fromJson, toJson, type JsonValue } from '@bufbuild/protobuf';
import { dumpLabel, ErrorCodes, isDumpLabel, newJobId, PgfleetError } from '@pgfleet/core';
import type { DumpRecord, LeadershipFence, ScheduleRunRecord } from '@pgfleet/catalog';
import {
  DumpResultSchema,
  type DumpInfoSchema,
  type DumpJob,
  type DumpResult,
  type JobInfoSchema,
  type StartRestoreDumpRequest,
} from '@pgfleet/proto';
import type { ControllerContext } from '../context.js';
import { resultJson } from '../wire.js';
import { clusterAgent, dispatch, requireCluster, sentFromHere } from './dispatch.js';
import { errorDetail, jobDurationSeconds, outboxEvent, timestampMs } from './events.js';
import type { ControllerJobKind } from './job-kind.js';
import { jobOfKind, type TypedJob } from './params.js';

/** pg_dump --jobs and pg_restore --jobs beyond this are refused (each is a backend and a process). */
const MAX_JOBS = 64;
/** The catalog record of a dump the agent reported (sizes summed over its databases). */
export function dumpRecord(
  job: Pick<TypedJob<'dump'>, 'cluster' | 'id' | 'startedAt' | 'createdAt'>,
  dump: DumpResult,
  now: number,
): DumpRecord {
  return {
    cluster: job.cluster,
    label: dump.label,
    jobId: job.id,
    startTime: timestampMs(dump.started) ?? job.startedAt ?? job.createdAt,
    stopTime: timestampMs(dump.finished) ?? now,
    sizeBytes: dump.databases.reduce((n, d) => n + Number(d.size), 0),
    storedBytes: dump.databases.reduce((n, d) => n + Number(d.storedSize), 0),
    result: toJson(DumpResultSchema, dump),
  };
}

/** A dump row's DumpResult (the JSON the catalog keeps). */
export function dumpResultOf(record: DumpRecord): DumpResult {
  return fromJson(DumpResultSchema, (record.result ?? {}) as JsonValue, { ignoreUnknownFields: true });
}

export const dumpJob: ControllerJobKind<'dump'> = {
  events(job, to, details, now) {
    const scheduled = job.params.scheduledAt !== undefined;
    const durationSeconds = jobDurationSeconds(job, now);
    if (to === 'succeeded' && details.dump) {
      const d = details.dump;
      const databases = dumpResultOf(d).databases.map((x) => x.name);
      return [
        outboxEvent(
          job.cluster,
          {
            case: 'dumpCompleted',
            value: {
              jobId: job.id,
              label: d.label,
              databases,
              size: BigInt(d.sizeBytes),
              storedSize: BigInt(d.storedBytes),
              durationSeconds,
              scheduled,
            },
          },
          now,
        ),
      ];
    }
    if (to === 'failed' || to === 'cancelled')
      return [
        outboxEvent(
          job.cluster,
          {
            case: 'dumpFailed',
            value: {
              jobId: job.id,
              label: job.params.label,
              durationSeconds,
              scheduled,
              error: errorDetail(details.error),
            },
          },
          now,
        ),
      ];
    return [];
  },
  succeeded(job, result) {
    if (result.case !== 'dump' || !isDumpLabel(result.value.label))
      return {
        error: { code: ErrorCodes.Internal.code, message: 'the agent reported success without the dump it made' },
      };
    const dump = dumpRecord(job, result.value, Date.now());
    return { result: resultJson({ dump: result.value }), dump, details: { dump } };
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
  /** A scheduled dump: its fire time, recorded (`runs`) in the transaction that creates the job. */
  scheduled?: { scheduledAt: string; fence?: LeadershipFence; runs?: readonly ScheduleRunRecord[] },
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
    ...(scheduled ? { scheduledAt: scheduled.scheduledAt } : {}),
  };
  const created = { id: newJobId(), cluster, kind: 'dump' as const, agentId: session.agentId, params };
  // A scheduled dump only while its scheduler still leads (the fence) and while no dump of the
  // cluster runs (checked and created in one catalog transaction, like scheduled backups).
  const job = jobOfKind(
    'dump',
    scheduled
      ? await ctx.store.createJobIfIdle(
          cluster,
          ['dump'],
          sentFromHere(ctx, created),
          ctx.now(),
          scheduled.fence,
          scheduled.runs,
        )
      : await ctx.store.createJob(sentFromHere(ctx, created), ctx.now()),
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

/** The cluster's complete dumps (the catalog's dumps rows, expired ones left out), newest first. */
export async function listDumps(
  ctx: ControllerContext,
  cluster: string,
): Promise<MessageInitShape<typeof DumpInfoSchema>[]> {
  await requireCluster(ctx, cluster);
  const rows = await ctx.store.listDumps(cluster);
  return rows.reverse().map((d) => ({ cluster, jobId: d.jobId, dump: dumpResultOf(d) }));
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
      : database
        ? `cluster '${cluster}' has no complete dump of database '${database}'`
        : `cluster '${cluster}' has no complete dump yet (pgfleet dump ${cluster}, or a --logical schedule, makes one)`,
  );
}

/**
 * Starts pg_restore of one database of a dump (RestoreDumpJob) on the primary agent of the
 * target cluster (the dump's own when none is named): the new database is created there, after
 * the dump's globals (roles, tablespaces) when `globals` asks for them.
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
  if (req.globals && !dump.globals?.sha256)
    throw new PgfleetError(
      'DumpInvalid',
      `dump ${dump.label} of cluster '${req.cluster}' recorded no globals to apply`,
    );
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
    ...(req.globals ? { globals: true } : {}),
  };
  const job = jobOfKind(
    'restore-dump',
    await ctx.store.createJob(
      sentFromHere(ctx, { id: newJobId(), cluster: toCluster, kind: 'restore-dump', agentId: session.agentId, params }),
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
        // The globals file as the catalog recorded it: the agent checks what it reads against it.
        ...(req.globals ? { globals: dump.globals!, globalsWithPasswords: dump.withPasswords } : {}),
      },
    },
    restoreDumpJob,
  );
}
