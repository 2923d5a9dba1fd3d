/**
 * The check job (CheckJob): `pgfleet check`'s settings checks plus the WAL proof, on the
 * cluster's primary agent. The same full check runs before a cluster's first backup (backup.ts),
 * and a failed one reports its items with the failure, whichever job ran it.
 */
import { loadConfigFile } from '@pgfleet/core';
import { CheckVerdict } from '@pgfleet/proto';
import type { AgentSettings } from '../options.js';
import { ArchiveCheckFailure, runArchiveCheck, type ArchiveCheckOptions, type CheckOutcome } from '../wal/check.js';
import type { AgentJobKind, JobContext } from './job-kind.js';

/** How long `pgfleet check` waits for its WAL segment when the job names no timeout. */
const DEFAULT_CHECK_TIMEOUT_MS = 60_000;

/** What every archive check of this agent shares (cluster, PostgreSQL, how to read archive_command's --config). */
export function archiveCheckBase(
  s: AgentSettings,
): Pick<ArchiveCheckOptions, 'cluster' | 'pgdata' | 'pg' | 'streaming' | 'loadConfig'> {
  return { cluster: s.cluster, pgdata: s.pgdata, pg: s.pg, streaming: s.stream, loadConfig: loadConfigFile };
}

/**
 * The full check with the WAL proof, for a check job or before a cluster's first backup: throws
 * ArchiveCheckFailure (with every item) when a check fails, returns the items otherwise.
 */
export async function runFullCheck(
  ctx: JobContext,
  timeoutMs: number,
  progress?: (message: string) => void,
): Promise<CheckOutcome> {
  const { settings: s, log } = ctx;
  const out = await runArchiveCheck({
    ...archiveCheckBase(s),
    repo: ctx.repo,
    // A restore point named after the job: a recovery target the check leaves behind, like a drill's.
    walProof: { timeoutMs, restorePoint: `pgfleet-check-${ctx.job.jobId}` },
    // The job came over the controller's stream: it reaches this agent.
    controller: { name: 'controller', verdict: 'ok', message: `the controller at ${s.controller} sent this job` },
    signal: ctx.signal,
    ...(progress ? { progress } : {}),
  });
  for (const i of out.items)
    if (i.verdict !== 'ok') log.warn({ check: i.name, verdict: i.verdict }, `${i.name}: ${i.message}`);
  if (!out.ok) throw new ArchiveCheckFailure(s.cluster, out);
  return out;
}

const VERDICTS = { ok: CheckVerdict.OK, warn: CheckVerdict.WARN, fail: CheckVerdict.FAIL } as const;

export function checkResultToProto(c: CheckOutcome) {
  return {
    items: c.items.map((i) => ({ name: i.name, verdict: VERDICTS[i.verdict], message: i.message })),
    ok: c.ok,
    walSegment: c.walSegment,
    walSeconds: c.walSeconds,
  };
}

export const checkJob: AgentJobKind<'check'> = {
  async run(message, ctx) {
    const timeoutMs = message.timeoutSeconds > 0 ? message.timeoutSeconds * 1000 : DEFAULT_CHECK_TIMEOUT_MS;
    const out = await runFullCheck(ctx, timeoutMs, (text) =>
      ctx.progress({ phase: 'check', bytesDone: 0, bytesTotal: 0, filesDone: 0, filesTotal: 0, message: text }),
    );
    return { case: 'check', value: checkResultToProto(out) };
  },
  failureResult: (err) =>
    err instanceof ArchiveCheckFailure ? { case: 'check', value: checkResultToProto(err.outcome) } : undefined,
};
