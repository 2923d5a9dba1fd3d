/**
 * What a job kind is on the agent: a module under jobs/ that turns its part of the Job message
 * into the engine's options, runs the engine and maps the outcome to its JobResult case. The
 * daemon gives every run a JobContext (settings, the opened repository, the few daemon services
 * a job may use) and knows nothing of the kinds themselves; registry.ts lists them.
 */
import type { MessageInitShape } from '@bufbuild/protobuf';
import type { Logger } from '@pgfleet/core';
import type { Job, JobResultSchema } from '@pgfleet/proto';
import type { Repository } from '@pgfleet/storage';
import type { AgentSettings } from '../options.js';
import type { RateLimiter } from '../copy/rate-limit.js';
import type { Progress } from '../progress.js';

/** The `kind` oneof of the Job message: which job, with its own message. */
export type JobKindCase = NonNullable<Job['kind']['case']>;
export type JobKindMessage<K extends JobKindCase> = Extract<Job['kind'], { case: K }>['value'];

/** The `result` oneof of JobResult a job reports. */
export type JobResultInit = NonNullable<MessageInitShape<typeof JobResultSchema>['result']>;

export interface JobContext {
  /** The whole job (its id names restore points; its repositories were opened as `repo`). */
  job: Job;
  settings: AgentSettings;
  repo: Repository;
  /** What restore_command's wal-fetch needs to find and trust the job's repositories (restores and drills ask; writes the job's key file). */
  walFetchArgs(): Promise<string[]>;
  /**
   * Claims a kind that runs one at a time on this agent (a backup: labels, the WAL wait and
   * cleanup assume it); returns the release, or undefined when it is taken.
   */
  exclusive(key: string): (() => void) | undefined;
  /**
   * The timeline `cluster` runs on now, for a job that follows its lineage (restore, drill,
   * recover-table, verify, wal-search): the controller's `given` (from the primary's heartbeats,
   * an interval old, more when the primary just restarted) or, when this agent serves that
   * cluster's primary, its server's own read now, whichever is newer. Right after a promotion or
   * an in-place PITR the controller can still name the old timeline; a restore to a time on the
   * new one would then follow the old lineage and end before its target.
   */
  liveTimeline(cluster: string, given: number): Promise<number>;
  /** Sends the controller a WAL switch request for this job (a backup on a standby, agent.proto WalSwitch). */
  requestWalSwitch(lsn: string): void;
  /** The agent's --max-rate bucket, one for all its backups and restores (absent: no limit). */
  rateLimit?: RateLimiter;
  log: Logger;
  progress: (p: Progress) => void;
  signal: AbortSignal;
  /** Whether the agent is stopping (its jobs are aborted for that, not cancelled by a user). */
  stopping(): boolean;
}

/** `{ currentTimeline }` for an engine's options, absent when neither the controller nor the server knows it. */
export async function liveTimelineOption(
  ctx: JobContext,
  cluster: string,
  given: number,
): Promise<{ currentTimeline?: number }> {
  const tli = await ctx.liveTimeline(cluster, given);
  return tli ? { currentTimeline: tli } : {};
}

export interface AgentJobKind<K extends JobKindCase> {
  run(message: JobKindMessage<K>, ctx: JobContext): Promise<JobResultInit>;
  /**
   * The result a failed job still reports, when the error carries one (a drill that ran but did
   * not pass: its stage and reasons; a failed archive check: its items, from a backup's first
   * check too). Asked of every kind, since one kind's run may fail with another's error.
   */
  failureResult?(err: unknown): JobResultInit | undefined;
}
