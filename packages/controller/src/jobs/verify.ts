/**
 * Verify jobs on the controller: starting one (read-only check of the cluster's repository),
 * recording its VerifyResult and the WAL gaps it found, and the verify.completed event.
 */
import type { MessageInitShape } from '@bufbuild/protobuf';
import { asPgfleetError, ErrorCodes, newJobId } from '@pgfleet/core';
import type { JobInfoSchema } from '@pgfleet/proto';
import type { ControllerContext } from '../context.js';
import { recordWalGaps } from '../health/wal-gaps.js';
import { resultJson } from '../wire.js';
import { clusterAgent, dispatch, liveTimeline, requireCluster, sentFromHere } from './dispatch.js';
import { errorDetail, jobDurationSeconds, outboxEvent } from './events.js';
import type { ControllerJobKind } from './job-kind.js';
import { jobOfKind } from './params.js';
import { listDumps } from './dump.js';

/** The error code a verify problem kind stands for (docs/repository-format.md). */
const VERIFY_PROBLEM_CODES: Record<string, string> = {
  'manifest-corrupt': ErrorCodes.RepoManifestInvalid.code,
  'missing-file': ErrorCodes.RepoFileMissing.code,
  'size-mismatch': ErrorCodes.RepoChecksumMismatch.code,
  'checksum-mismatch': ErrorCodes.RepoChecksumMismatch.code,
  unreadable: ErrorCodes.RepoIoFailed.code,
  'bad-reference': ErrorCodes.RepoFileMissing.code,
  'wal-gap': ErrorCodes.WalNotInRepository.code,
  'wal-empty': ErrorCodes.WalFileEmpty.code,
  'wal-truncated': ErrorCodes.WalFileEmpty.code,
  'wal-corrupt': ErrorCodes.WalFileInvalid.code,
  'wal-foreign': ErrorCodes.WalFileInvalid.code,
  'wal-unauthenticated': ErrorCodes.WalUnauthenticated.code,
  'timeline-conflict': ErrorCodes.TimelineHistoryConflict.code,
};

export const verifyJob: ControllerJobKind<'verify'> = {
  events(job, to, details, now) {
    if (to !== 'succeeded' && to !== 'failed' && to !== 'cancelled') return [];
    // Every verify that ends says whether the repository is restorable; one that could not run is not ok.
    const v = details.verify;
    const problems = v
      ? v.problems.slice(0, 100).map((p) => ({
          code: VERIFY_PROBLEM_CODES[p.kind] ?? ErrorCodes.VerifyFailed.code,
          message: `${p.kind}${p.label ? ` ${p.label}` : ''}${p.path ? ` ${p.path}` : ''}: ${p.message}`,
          hint: '',
        }))
      : details.error
        ? [errorDetail(details.error)!]
        : [];
    return [
      outboxEvent(
        job.cluster,
        {
          case: 'verifyCompleted',
          value: {
            jobId: job.id,
            ok: to === 'succeeded' && v?.ok === true,
            filesChecked: v?.backups.reduce((n, b) => n + b.filesChecked, 0) ?? 0,
            bytesChecked: v?.backups.reduce((n, b) => n + b.bytesChecked, 0n) ?? 0n,
            problems,
            durationSeconds: jobDurationSeconds(job, now),
            walChecked:
              v !== undefined && v.walSegmentsChecked > 0 && !v.problems.some((p) => p.kind.startsWith('wal-')),
            backupsTotal: v?.backups.length ?? 0,
            backupsRestorable: v?.backups.filter((b) => b.restorable).length ?? 0,
            walSegmentsChecked: v?.walSegmentsChecked ?? 0,
            full: v?.full ?? job.params.full,
          },
        },
        now,
      ),
    ];
  },

  succeeded(_job, result) {
    const verify = result.case === 'verify' ? result.value : undefined;
    return { result: resultJson({ verify }), details: verify ? { verify } : {} };
  },

  async onSucceeded(ctx, job, result, log) {
    if (result.case !== 'verify') return;
    // wal.gap_detected, once per gap (not per verify run); the job's own outcome stands either way.
    await recordWalGaps(ctx.store, job.cluster, result.value, ctx.now()).catch((err: unknown) =>
      log.warn(
        { code: asPgfleetError(err).code },
        `WAL gaps of the verify not recorded: ${asPgfleetError(err).message}`,
      ),
    );
  },
};

/** Starts a verify job (read-only check of the cluster's repository) on the cluster's connected agent. */
export async function startVerifyJob(
  ctx: ControllerContext,
  cluster: string,
  full: boolean,
): Promise<MessageInitShape<typeof JobInfoSchema>> {
  await requireCluster(ctx, cluster);
  const session = await clusterAgent(ctx, cluster, 'any');
  const job = jobOfKind(
    'verify',
    await ctx.store.createJob(
      sentFromHere(ctx, { id: newJobId(), cluster, kind: 'verify', agentId: session.agentId, params: { full } }),
      ctx.now(),
    ),
  );
  return dispatch(
    ctx,
    session,
    job,
    {
      case: 'verify',
      value: {
        full,
        currentTimeline: await liveTimeline(ctx, cluster),
        // The catalog's record of every complete dump: what the repository must hold.
        dumps: (await listDumps(ctx, cluster)).flatMap((d) => (d.dump ? [d.dump] : [])),
      },
    },
    verifyJob,
  );
}
