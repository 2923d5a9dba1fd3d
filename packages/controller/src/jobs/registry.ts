/**
 * Every job kind the controller starts, one line each: adding a kind is a module under jobs/
 * and its line here. Code that handles jobs of any kind (the agent stream's results, cancels,
 * jobs failed in bulk) reaches the kind's module through these functions, with the job's params
 * parsed for its kind once on the way in.
 */
import type { JobKind, JobRecord, JobStateName, OutboxEventInput } from '@pgfleet/catalog';
import type { ControllerContext } from '../context.js';
import { resultJson, type JobResultJson } from '../wire.js';
import { backupJob } from './backup.js';
import { checkJob } from './check.js';
import { captureJob, drillJob } from './drill.js';
import type { JobOutcomeDetails } from './events.js';
import { expireJob } from './expire.js';
import { infoJob, restorePointsJob } from './info.js';
import type { AgentResult, ControllerJobKind } from './job-kind.js';
import { typedJob, type TypedJob } from './params.js';
import { restoreJob } from './restore.js';
import { recoverTableJob } from './recover-table.js';
import { rotateKeyJob } from './rotate-key.js';
import { verifyJob } from './verify.js';
import { walSearchJob } from './wal-search.js';
import { dumpJob, restoreDumpJob } from './dump.js';

const JOB_KINDS: { readonly [K in JobKind]: ControllerJobKind<K> } = {
  backup: backupJob,
  restore: restoreJob,
  expire: expireJob,
  verify: verifyJob,
  drill: drillJob,
  capture: captureJob,
  check: checkJob,
  info: infoJob,
  'restore-points': restorePointsJob,
  'rotate-key': rotateKeyJob,
  'recover-table': recoverTableJob,
  'wal-search': walSearchJob,
  dump: dumpJob,
  'restore-dump': restoreDumpJob,
};

/** The module of a job's kind, for a job whose params are parsed (see typedJob). */
export function kindOf<K extends JobKind>(job: TypedJob<K>): ControllerJobKind<K> {
  return JOB_KINDS[job.kind as K];
}

/**
 * The events reporting a move of `job` to `to` (empty when the move reports nothing), as its
 * kind publishes them. Passed as the transition's `events` so they commit with it.
 */
export function jobEvents(
  job: JobRecord,
  to: JobStateName,
  details: JobOutcomeDetails,
  now: number,
): OutboxEventInput[] {
  const typed = typedJob(job);
  return kindOf(typed).events(typed, to, details, now);
}

/** A factory for the store's bulk failures (agent gone, controller restart). */
export function failedJobEvents(
  error: { code: string; message: string },
  now: number,
): (job: JobRecord) => OutboxEventInput[] {
  // The job passed in is already failed; its kind and params are what matter.
  return (job) => jobEvents({ ...job, state: 'running' }, 'failed', { error }, now);
}

/**
 * What a failed result keeps with the failure, whatever the job's kind: a drill's DrillResult
 * (stage, reasons) and a check's items, also from a backup whose first archive check failed.
 */
export function failedOutcome(result: AgentResult): { result?: JobResultJson; details: JobOutcomeDetails } {
  const drill = result.case === 'drill' ? result.value : undefined;
  const check = result.case === 'check' ? result.value : undefined;
  return { ...(drill || check ? { result: resultJson({ drill, check }) } : {}), details: drill ? { drill } : {} };
}

/** Jobs the store ended in bulk (an agent went away, a restart): what their kinds do when a job ends (a capture's drill fails). */
export async function jobsEnded(ctx: ControllerContext, jobs: readonly JobRecord[]): Promise<void> {
  for (const job of jobs) {
    const typed = typedJob(job);
    await kindOf(typed).onFinished?.(ctx, typed, undefined);
  }
}
