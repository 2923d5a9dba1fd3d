/**
 * Every job kind the agent runs, one line each: adding a kind is a module under jobs/ and its
 * line here (the Job message's `kind` oneof names the case).
 */
import { PgfleetError } from '@pgfleet/core';
import type { Job } from '@pgfleet/proto';
import { backupJob } from './backup.js';
import { checkJob } from './check.js';
import { captureJob, drillJob } from './drill.js';
import { expireJob } from './expire.js';
import { infoJob } from './info.js';
import type { AgentJobKind, JobContext, JobKindCase, JobKindMessage, JobResultInit } from './job-kind.js';
import { recoverTableJob } from './recover-table.js';
import { restoreJob } from './restore.js';
import { restorePointsJob } from './restore-points.js';
import { rotateKeyJob } from './rotate-key.js';
import { verifyJob } from './verify.js';
import { walSearchJob } from './wal-search.js';
import { dumpJob, restoreDumpJob } from './dump.js';

const JOB_KINDS: { readonly [K in JobKindCase]: AgentJobKind<K> } = {
  backup: backupJob,
  restore: restoreJob,
  expire: expireJob,
  verify: verifyJob,
  drill: drillJob,
  capture: captureJob,
  check: checkJob,
  info: infoJob,
  restorePoints: restorePointsJob,
  rotateKey: rotateKeyJob,
  recoverTable: recoverTableJob,
  walSearch: walSearchJob,
  dump: dumpJob,
  restoreDump: restoreDumpJob,
};

function runKind<K extends JobKindCase>(kind: K, message: JobKindMessage<K>, ctx: JobContext): Promise<JobResultInit> {
  const module: AgentJobKind<K> = JOB_KINDS[kind];
  return module.run(message, ctx);
}

/** Runs the job by its kind's module; the result is its JobResult case. */
export function runJob(job: Job, ctx: JobContext): Promise<JobResultInit> {
  const kind = job.kind;
  if (kind.case === undefined) throw new PgfleetError('InvalidArgument', `unknown job kind ${String(kind.case)}`);
  return runKind(kind.case, kind.value, ctx);
}

/** The result a failed job still reports, if its error carries one (see AgentJobKind.failureResult). */
export function failureResult(err: unknown): JobResultInit | undefined {
  for (const kind of Object.values(JOB_KINDS) as AgentJobKind<JobKindCase>[]) {
    const result = kind.failureResult?.(err);
    if (result) return result;
  }
  return undefined;
}
