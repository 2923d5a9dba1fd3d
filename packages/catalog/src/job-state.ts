/**
 * The job state machine, shared by every CatalogStore implementation so SQLite and PostgreSQL
 * accept and refuse exactly the same moves: queued -> dispatched -> running -> succeeded | failed
 * | cancelled, where a job may also end from queued or dispatched.
 */
import { PgfleetError } from '@pgfleet/core';
import type { JobRecord, JobStateName, NewJob } from './store.js';

/** The legal moves (a repeated state is handled separately as a no-op). */
const NEXT_STATES: Readonly<Record<JobStateName, readonly JobStateName[]>> = {
  queued: ['dispatched', 'failed', 'cancelled'],
  // An agent may finish before it ever reports progress, so dispatched can end directly.
  dispatched: ['running', 'succeeded', 'failed', 'cancelled'],
  running: ['succeeded', 'failed', 'cancelled'],
  succeeded: [],
  failed: [],
  cancelled: [],
};

export const JOB_STATES: readonly JobStateName[] = Object.keys(NEXT_STATES) as JobStateName[];

export function isLegalJobTransition(from: JobStateName, to: JobStateName): boolean {
  return NEXT_STATES[from].includes(to);
}

/** The states a job can be failed from (every non-terminal one): what "active" means to failActive*. */
export const FAILABLE_JOB_STATES: readonly JobStateName[] = JOB_STATES.filter((s) => isLegalJobTransition(s, 'failed'));

/**
 * Decides a requested move for a job currently in `from`: false when it already is in `to` (an
 * idempotent repeat, nothing to write), true when the move is legal; throws JobStateConflict
 * otherwise. Stores call it with the row locked, so the decision holds when they write.
 */
export function checkJobTransition(id: string, from: JobStateName, to: JobStateName): boolean {
  if (from === to) return false;
  if (!isLegalJobTransition(from, to)) {
    throw new PgfleetError('JobStateConflict', `job ${id} is ${from} and cannot become ${to}`);
  }
  return true;
}

/**
 * createJobIfIdle's refusal: the cluster's unfinished job of a kind that runs one at a time
 * (a backup or an expire), named so the user can follow it.
 */
export function clusterBusyError(cluster: string, active: JobRecord): PgfleetError {
  return new PgfleetError(
    'BackupInProgress',
    `cluster ${cluster} already has a ${active.kind} job running (${active.id}, ${active.state})`,
    { hint: `Follow it with: pgfleet job ${active.id}, then retry.` },
  );
}

/**
 * createJob with an id the catalog already has: a retried create (a caller that did not see the
 * first answer) gets the job it made, whatever state it reached since; the same id for another
 * cluster or kind is a different job and is refused with JobStateConflict.
 */
export function existingJobFor(job: NewJob, existing: JobRecord): JobRecord {
  if (existing.cluster !== job.cluster || existing.kind !== job.kind) {
    throw new PgfleetError(
      'JobStateConflict',
      `job ${job.id} exists already as a ${existing.kind} job of cluster '${existing.cluster}'; it cannot be created again as a ${job.kind} job of cluster '${job.cluster}'`,
    );
  }
  return existing;
}
