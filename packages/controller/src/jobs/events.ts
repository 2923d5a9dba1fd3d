/**
 * The controller's side of events (docs/events.md): building the events that report a state
 * change, in the form the catalog outbox stores (the encoded pgfleet.v1.Event), and the Outbox
 * view of the catalog the relay reads. The store writes the events in the same transaction as
 * the change, so an event exists exactly when its change does.
 */
import { fromBinary, toBinary } from '@bufbuild/protobuf';
import { timestampDate, timestampFromMs } from '@bufbuild/protobuf/wkt';
import { ErrorCodes, PgfleetError } from '@pgfleet/core';
import type {
  CatalogStore,
  JobRecord,
  JobStateName,
  OutboxEventInput,
  OutboxEventRecord,
  BackupRecord,
} from '@pgfleet/catalog';
import { newEvent, type EventPayloadInit, type Outbox, type OutboxEntry } from '@pgfleet/events';
import {
  EventSchema,
  type DrillResult,
  type Event,
  type ExpireResult,
  type RestoreResult,
  type VerifyResult,
} from '@pgfleet/proto';
import { backupInfoFromRecord, backupKindToProto } from '../wire.js';

/** One event as the outbox stores it. */
export function outboxEvent(cluster: string, payload: EventPayloadInit, time: number): OutboxEventInput {
  const event = newEvent(cluster, payload, { time: new Date(time) });
  return { id: event.id, cluster, kind: event.kind, time, payload: toBinary(EventSchema, event) };
}

export function decodeOutboxEvent(record: OutboxEventRecord): Event {
  try {
    return fromBinary(EventSchema, record.payload);
  } catch (err) {
    throw new PgfleetError(
      'EventInvalid',
      `outbox event ${record.seq} (${record.id}) does not decode: ${(err as Error).message}`,
      { cause: err },
    );
  }
}

/** The catalog as the relay's Outbox. */
export function catalogOutbox(store: CatalogStore, now: () => number = Date.now): Outbox {
  return {
    async nextBatch(limit: number): Promise<OutboxEntry[]> {
      return (await store.nextUnsentEvents(limit)).map((r) => ({ seq: r.seq, event: decodeOutboxEvent(r) }));
    },
    async markSent(seqs: readonly number[]): Promise<void> {
      await store.markEventsSent(seqs, now());
    },
  };
}

const seconds = (from: number | null, to: number): number => (from === null ? 0 : Math.max(0, (to - from) / 1000));

function errorDetail(
  error: { code: string; message: string } | undefined,
): { code: string; message: string; hint: string } | undefined {
  if (!error) return undefined;
  return { code: error.code, message: error.message, hint: PgfleetError.fromCode(error.code, '').hint ?? '' };
}

interface BackupParams {
  type?: 'full' | 'diff' | 'incr';
  scheduledAt?: string;
}
interface RestoreParams {
  targetDir?: string;
  backupLabel?: string;
}

export interface JobOutcomeDetails {
  error?: { code: string; message: string };
  backup?: BackupRecord;
  restore?: RestoreResult;
  expire?: ExpireResult;
  /** Labels the expire job removed that the catalog forgets. */
  expiredLabels?: readonly string[];
  verify?: VerifyResult;
  /** A drill's result, present on failure too (stage and reasons). */
  drill?: DrillResult;
}

interface DrillParams {
  backupLabel?: string;
  scheduledAt?: string;
}

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
  'timeline-conflict': ErrorCodes.TimelineHistoryConflict.code,
};

/**
 * The events reporting a move of `job` to `to` (empty when the move reports nothing):
 * backup.started on dispatch, backup.completed/failed, restore.completed/failed,
 * retention.expired. Passed as the transition's `events` so they commit with it.
 */
export function jobEvents(
  job: JobRecord,
  to: JobStateName,
  details: JobOutcomeDetails,
  now: number,
): OutboxEventInput[] {
  const duration = seconds(job.startedAt ?? job.createdAt, now);
  if (job.kind === 'backup') {
    const p = (job.params ?? {}) as BackupParams;
    const type = backupKindToProto(p.type ?? 'full');
    const scheduled = p.scheduledAt !== undefined;
    if (to === 'dispatched')
      return [outboxEvent(job.cluster, { case: 'backupStarted', value: { jobId: job.id, type, scheduled } }, now)];
    if (to === 'succeeded' && details.backup) {
      return [
        outboxEvent(
          job.cluster,
          {
            case: 'backupCompleted',
            value: { jobId: job.id, backup: backupInfoFromRecord(details.backup), durationSeconds: duration },
          },
          now,
        ),
      ];
    }
    if (to === 'failed' || to === 'cancelled') {
      return [
        outboxEvent(
          job.cluster,
          {
            case: 'backupFailed',
            value: { jobId: job.id, type, scheduled, durationSeconds: duration, error: errorDetail(details.error) },
          },
          now,
        ),
      ];
    }
    return [];
  }
  if (job.kind === 'restore') {
    const p = (job.params ?? {}) as RestoreParams;
    if (to === 'succeeded') {
      return [
        outboxEvent(
          job.cluster,
          {
            case: 'restoreCompleted',
            value: {
              jobId: job.id,
              backupLabel: details.restore?.backupLabel || p.backupLabel || '',
              targetDir: details.restore?.targetDir || p.targetDir || '',
              durationSeconds: duration,
              restoredBytes: details.restore?.bytes ?? 0n,
            },
          },
          now,
        ),
      ];
    }
    if (to === 'failed' || to === 'cancelled') {
      return [
        outboxEvent(
          job.cluster,
          {
            case: 'restoreFailed',
            value: {
              jobId: job.id,
              backupLabel: p.backupLabel ?? '',
              targetDir: p.targetDir ?? '',
              durationSeconds: duration,
              error: errorDetail(details.error),
            },
          },
          now,
        ),
      ];
    }
    return [];
  }
  if (job.kind === 'verify' && (to === 'succeeded' || to === 'failed' || to === 'cancelled')) {
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
            durationSeconds: duration,
            walChecked:
              v !== undefined && v.walSegmentsChecked > 0 && !v.problems.some((p) => p.kind.startsWith('wal-')),
            backupsTotal: v?.backups.length ?? 0,
            backupsRestorable: v?.backups.filter((b) => b.restorable).length ?? 0,
            walSegmentsChecked: v?.walSegmentsChecked ?? 0,
            full: v?.full ?? ((job.params ?? {}) as { full?: boolean }).full === true,
          },
        },
        now,
      ),
    ];
  }
  if (job.kind === 'drill' && (to === 'succeeded' || to === 'failed' || to === 'cancelled')) {
    const p = (job.params ?? {}) as DrillParams;
    const d = details.drill;
    const common = {
      jobId: job.id,
      backupLabel: d?.backupLabel || p.backupLabel || '',
      durationSeconds: duration,
      agentId: job.agentId,
      scheduled: p.scheduledAt !== undefined,
    };
    if (to === 'succeeded' && d?.ok) {
      return [
        outboxEvent(
          job.cluster,
          {
            case: 'drillCompleted',
            value: {
              ...common,
              ...(d.target ? { target: d.target } : {}),
              recoveredLsn: d.recoveredLsn,
              ...(d.recoveredTime ? { recoveredTime: d.recoveredTime } : {}),
              restoredBytes: d.restoredBytes,
              rtoSeconds: d.rtoSeconds,
              restoreSeconds: d.restoreSeconds,
              recoverySeconds: d.recoverySeconds,
              relationsChecked: d.relationsChecked,
              tablesCompared: d.tablesCompared,
              countsEqual: d.countsEqual,
              keptDir: d.keptDir,
            },
          },
          now,
        ),
      ];
    }
    const error = details.error ?? {
      code: ErrorCodes.DrillFailed.code,
      message: d?.reasons.join('; ') || 'the drill did not pass',
    };
    // No result: the agent never reported one (not started, cancelled, or the agent went away).
    // Reasons are never empty: an agent's result without any (older agents) or none at all falls back to the job's error.
    const reasons = d?.reasons.filter((r) => r.trim() !== '') ?? [];
    return [
      outboxEvent(
        job.cluster,
        {
          case: 'drillFailed',
          value: {
            ...common,
            error: errorDetail(error),
            stage: d?.stage || (job.startedAt === null ? 'dispatch' : 'unknown'),
            reasons: reasons.length ? reasons : [error.message || `${error.code} without a message`],
            postgresLogProblems: d?.postgresLogProblems ?? [],
            keptDir: d?.keptDir ?? '',
          },
        },
        now,
      ),
    ];
  }
  if (job.kind === 'expire' && to === 'succeeded' && details.expire) {
    const e = details.expire;
    return [
      outboxEvent(
        job.cluster,
        {
          case: 'retentionExpired',
          value: {
            jobId: job.id,
            expiredBackupLabels: [...(details.expiredLabels ?? e.deletedLabels)],
            walSegmentsRemoved: BigInt(e.walFilesDeleted),
            freedBytes: e.backupBytesDeleted + e.walBytesDeleted,
            ...(e.walLastDeleted ? { walExpiredBefore: e.walLastDeleted } : {}),
          },
        },
        now,
      ),
    ];
  }
  return [];
}

/** A factory for the store's bulk failures (agent gone, controller restart). */
export function failedJobEvents(
  error: { code: string; message: string },
  now: number,
): (job: JobRecord) => OutboxEventInput[] {
  // The job passed in is already failed; its kind and params are what matter.
  return (job) => jobEvents({ ...job, state: 'running' }, 'failed', { error }, now);
}

export function timestampMs(ts: { seconds: bigint; nanos: number } | undefined): number | null {
  if (!ts) return null;
  const ms = timestampDate(ts as Parameters<typeof timestampDate>[0]).getTime();
  return ms > 0 ? ms : null;
}

export { timestampFromMs };
