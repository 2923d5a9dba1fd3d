/**
 * What a job kind is on the controller: a module under jobs/ that starts it (params -> catalog
 * job -> dispatch), records its result in the catalog and says which events its moves publish.
 * The agent stream's result handling (agents/service.ts), cancels and bulk failures go through
 * registry.ts, which holds one line per kind; a kind module never imports the registry.
 */
import type { BackupRecord, DumpRecord, JobError, JobKind, JobStateName, OutboxEventInput } from '@pgfleet/catalog';
import type { JobResult } from '@pgfleet/proto';
import type { ControllerContext } from '../context.js';
import type { JobResultJson } from '../wire.js';
import type { JobOutcomeDetails } from './events.js';
import type { TypedJob } from './params.js';

/** The `result` oneof of an agent's JobResult. */
export type AgentResult = JobResult['result'];

/** What a successful result records: the job's result blob, a backup row, and what its events say. */
export interface SucceededOutcome {
  result: JobResultJson;
  backup?: BackupRecord;
  /** A dump job's catalog record (inserted with the success, one transaction). */
  dump?: DumpRecord;
  details: JobOutcomeDetails;
}

export interface ControllerJobKind<K extends JobKind> {
  /** The events reporting a move of the job to `to` (empty when that move reports nothing). */
  events(job: TypedJob<K>, to: JobStateName, details: JobOutcomeDetails, now: number): OutboxEventInput[];
  /** A successful result: what the catalog records, or the error that fails the job instead. */
  succeeded(job: TypedJob<K>, result: AgentResult): SucceededOutcome | { error: JobError };
  /**
   * Checks a successful result against what the controller knows without the agent, before
   * anything is recorded: the error that fails the job instead (e.g. a reported backup that
   * cannot be believed, backup-admission.ts); undefined to record it.
   */
  admit?(ctx: ControllerContext, job: TypedJob<K>, result: AgentResult): Promise<JobError | undefined>;
  /**
   * After a success committed (and before watchers hear of it, so a waiting client sees the
   * catalog as the job left it): what follows from it (retention due, expired rows, WAL gaps).
   */
  onSucceeded?(
    ctx: ControllerContext,
    job: TypedJob<K>,
    result: AgentResult,
    log: ControllerContext['logger'],
  ): Promise<void>;
  /** After the job ended in any way, published (a capture hands over to its drill); `result` is absent for bulk failures. */
  onFinished?(ctx: ControllerContext, job: TypedJob<K>, result: AgentResult | undefined): Promise<void>;
  /**
   * A success reported for a job that had already ended (its agent came back after the reclaim
   * grace): true when it was applied (the repository changed, so the catalog must follow) and
   * nothing else is to be done with it.
   */
  lateSuccess?(
    ctx: ControllerContext,
    job: TypedJob<K>,
    result: AgentResult,
    log: ControllerContext['logger'],
  ): Promise<boolean>;
}
