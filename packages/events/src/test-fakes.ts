/**
 * Test doubles for this package's own seams (Outbox, EventPublisher) and one sample event per
 * kind. Only tests import this module; index.ts does not export it.
 */
import { ErrorCodes, PgfleetError } from '@pgfleet/core';
import { BackupType, type Event } from '@pgfleet/proto';
import { timestampFromDate } from '@bufbuild/protobuf/wkt';
import { newEvent, type EventKind, type EventPayloadInit } from './kinds.js';
import type { EventPublisher } from './publisher.js';
import type { Outbox, OutboxEntry } from './relay.js';

/** An in-memory outbox: what the catalog table does, minus the transaction. */
export class MemoryOutbox implements Outbox {
  private readonly rows: { seq: number; event: Event; sent: boolean }[] = [];
  private nextSeq = 1;
  /** nextBatch rejects this many more times. */
  failReads = 0;
  /** markSent rejects this many more times (a crash between publish and markSent). */
  failMarks = 0;
  readonly markCalls: number[][] = [];

  add(...events: Event[]): void {
    for (const event of events) this.rows.push({ seq: this.nextSeq++, event, sent: false });
  }

  async nextBatch(limit: number): Promise<OutboxEntry[]> {
    if (this.failReads > 0) {
      this.failReads--;
      throw new Error('catalog unavailable');
    }
    return this.rows
      .filter((r) => !r.sent)
      .slice(0, limit)
      .map(({ seq, event }) => ({ seq, event }));
  }

  async markSent(seqs: readonly number[]): Promise<void> {
    if (this.failMarks > 0) {
      this.failMarks--;
      throw new Error('crashed before markSent');
    }
    this.markCalls.push([...seqs]);
    const set = new Set(seqs);
    for (const r of this.rows) if (set.has(r.seq)) r.sent = true;
  }

  unsent(): Event[] {
    return this.rows.filter((r) => !r.sent).map((r) => r.event);
  }

  all(): Event[] {
    return this.rows.map((r) => r.event);
  }
}

/**
 * A publisher that is "down" for a number of calls, or for chosen events the first time they
 * are published; it records every call and every success.
 */
export class FakePublisher implements EventPublisher {
  /** publish() rejects this many more times, whatever the event. */
  failNext = 0;
  /** Event ids that fail on their first attempt only. */
  readonly failOnceIds = new Set<string>();
  /** When set, publish() waits for it before answering. */
  gate: Promise<void> | undefined;
  readonly attempts: Event[] = [];
  readonly published: Event[] = [];
  closed = false;

  async publish(event: Event): Promise<void> {
    this.attempts.push(event);
    if (this.gate) await this.gate;
    if (this.failNext > 0) {
      this.failNext--;
      throw new PgfleetError('EventPublishFailed', 'NATS is down (fake)');
    }
    if (this.failOnceIds.delete(event.id))
      throw new PgfleetError('EventPublishFailed', `refused ${event.id} once (fake)`);
    this.published.push(event);
  }

  async close(): Promise<void> {
    this.closed = true;
  }
}

/** Wraps a publisher and counts calls (to show a republish happened and was deduped downstream). */
export class CountingPublisher implements EventPublisher {
  calls = 0;
  constructor(private readonly inner: EventPublisher) {}
  publish(event: Event): Promise<void> {
    this.calls++;
    return this.inner.publish(event);
  }
  close(): Promise<void> {
    return this.inner.close();
  }
}

const T0 = new Date('2026-11-24T15:30:12Z');
const ts = (secondsAfter: number) => timestampFromDate(new Date(T0.getTime() + secondsAfter * 1000));

/** One realistic payload per kind (also the source of the JSON examples in docs/events.md). */
export const SAMPLE_PAYLOADS: { [K in EventKind]: EventPayloadInit } = {
  'agent.connected': {
    case: 'agentConnected',
    value: {
      agentId: 'db1.example.com:main',
      hostname: 'db1.example.com',
      agentVersion: '0.1.0',
      pgVersion: 17,
      systemIdentifier: '7441125932436571234',
    },
  },
  'agent.disconnected': {
    case: 'agentDisconnected',
    value: { agentId: 'db1.example.com:main', reason: 'stream closed by peer', lastHeartbeatTime: ts(-10) },
  },
  'agent.silent': {
    case: 'agentSilent',
    value: { agentId: 'db1.example.com:main', lastHeartbeatTime: ts(-95), silentSeconds: 95, thresholdSeconds: 90 },
  },
  'backup.started': {
    case: 'backupStarted',
    value: {
      jobId: '6f1c2f7e-8a43-4b51-9d0e-2b7f3c1a9e10',
      label: '20261124-153012F',
      type: BackupType.FULL,
      scheduled: true,
    },
  },
  'backup.completed': {
    case: 'backupCompleted',
    value: {
      jobId: '6f1c2f7e-8a43-4b51-9d0e-2b7f3c1a9e10',
      durationSeconds: 42.5,
      backup: {
        label: '20261124-153012F',
        cluster: 'main',
        type: BackupType.FULL,
        startLsn: '0/5000028',
        stopLsn: '0/5000138',
        startTime: ts(0),
        stopTime: ts(42),
        timeline: 1,
        systemIdentifier: '7441125932436571234',
        pgVersion: 17,
        sizeBytes: 52_428_800n,
        storedBytes: 6_291_456n,
        fileCount: 1012,
        walStart: '000000010000000000000005',
        walStop: '000000010000000000000005',
        jobId: '6f1c2f7e-8a43-4b51-9d0e-2b7f3c1a9e10',
      },
    },
  },
  'backup.failed': {
    case: 'backupFailed',
    value: {
      jobId: '0c9d1e55-3b7a-4f0e-8c2d-5a6b7c8d9e0f',
      label: '20261124-160000I',
      type: BackupType.INCR,
      durationSeconds: 3.2,
      scheduled: true,
      error: {
        code: ErrorCodes.RepoIoFailed.code,
        message: 'cannot write /backup/main/backup/20261124-160000I: EACCES',
        hint: 'Check that the repository path exists and is writable by the agent user.',
      },
    },
  },
  'backup.stale': {
    case: 'backupStale',
    value: {
      lastBackupLabel: '20261122-010000F',
      lastBackupTime: ts(-2 * 86400),
      ageSeconds: 2 * 86400,
      thresholdSeconds: 36 * 3600,
      schedule: '0 1 * * *',
    },
  },
  'wal.archive_failed': {
    case: 'walArchiveFailed',
    value: {
      failedCount: 3n,
      lastFailedWal: '00000001000000000000002A',
      lastFailedTime: ts(0),
      message: `${ErrorCodes.RepoIoFailed.code} cannot write /backup/main/wal/00000001000000000000002A: EACCES`,
      lastArchivedWal: '000000010000000000000029',
      lastArchivedTime: ts(-930),
    },
  },
  'wal.archive_recovered': {
    case: 'walArchiveRecovered',
    value: {
      lastArchivedWal: '00000001000000000000002A',
      lastArchivedTime: ts(300),
      failedCount: 12n,
      failingSeconds: 300,
    },
  },
  'wal.gap_detected': {
    case: 'walGapDetected',
    value: {
      timeline: 1,
      firstMissingWal: '000000010000000000000031',
      lastMissingWal: '000000010000000000000032',
      missingSegments: 2n,
    },
  },
  'rpo.breached': {
    case: 'rpoBreached',
    value: {
      rpoSeconds: 930,
      thresholdSeconds: 900,
      lastArchivedWal: '000000010000000000000029',
      lastArchivedTime: ts(-930),
    },
  },
  'rpo.recovered': {
    case: 'rpoRecovered',
    value: {
      rpoSeconds: 12,
      thresholdSeconds: 900,
      lastArchivedWal: '00000001000000000000002B',
      lastArchivedTime: ts(-12),
      breachedSeconds: 310,
    },
  },
  'retention.planned': {
    case: 'retentionPlanned',
    value: {
      backupLabels: ['20261110-010000F', '20261111-010000I'],
      expireAfter: ts(3600),
      graceSeconds: 3600,
    },
  },
  'retention.expired': {
    case: 'retentionExpired',
    value: {
      jobId: '9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d',
      expiredBackupLabels: ['20261110-010000F', '20261111-010000I'],
      walExpiredBefore: '000000010000000000000010',
      walSegmentsRemoved: 16n,
      freedBytes: 335_544_320n,
      oldestBackupLabel: '20261117-010000F',
      oldestRecoveryTime: ts(-7 * 86400),
    },
  },
  'restore.completed': {
    case: 'restoreCompleted',
    value: {
      jobId: '1b2c3d4e-5f60-4718-293a-4b5c6d7e8f90',
      backupLabel: '20261124-153012F',
      targetDir: '/var/lib/postgresql/17/restore',
      durationSeconds: 18.4,
      restoredBytes: 52_428_800n,
      target: { target: { case: 'time', value: ts(600) } },
    },
  },
  'restore.failed': {
    case: 'restoreFailed',
    value: {
      jobId: '2c3d4e5f-6071-4829-3a4b-5c6d7e8f9012',
      backupLabel: '20261124-153012F',
      targetDir: '/var/lib/postgresql/17/main',
      durationSeconds: 0.1,
      error: {
        code: ErrorCodes.RestoreTargetNotEmpty.code,
        message: 'restore target /var/lib/postgresql/17/main is not empty',
        hint: '',
      },
    },
  },
  'verify.completed': {
    case: 'verifyCompleted',
    value: {
      jobId: '3d4e5f60-7182-493a-4b5c-6d7e8f901234',
      backupLabel: '20261124-153012F',
      ok: true,
      filesChecked: 1012,
      bytesChecked: 52_428_800n,
      durationSeconds: 4.7,
      walChecked: true,
    },
  },
  'drill.completed': {
    case: 'drillCompleted',
    value: {
      jobId: '4e5f6071-8293-4a4b-5c6d-7e8f90123456',
      backupLabel: '20261124-153012F',
      target: { target: { case: 'latest', value: true } },
      durationSeconds: 64.2,
      recoveredLsn: '0/2B0000A0',
      recoveredTime: ts(1200),
      restoredBytes: 52_428_800n,
    },
  },
  'drill.failed': {
    case: 'drillFailed',
    value: {
      jobId: '5f607182-93a4-4b5c-6d7e-8f9012345678',
      backupLabel: '20261124-153012F',
      stage: 'recovery',
      durationSeconds: 31,
      error: {
        code: ErrorCodes.WalNotInRepository.code,
        message: 'WAL segment 000000010000000000000031 is not in the repository',
        hint: 'The segment is not archived (yet).',
      },
      reasons: [
        'recovery failed: FATAL: recovery ended before configured recovery target was reached',
        "recovery: WAL segment 000000010000000000000031 needed by recovery is not in the repository (recovery restored up to 000000010000000000000030); the drill's PostgreSQL exited during recovery",
      ],
      postgresLogProblems: [
        '2026-11-24 15:30:11.804 UTC [4711] FATAL:  recovery ended before configured recovery target was reached',
      ],
    },
  },
  'key.rotated': {
    case: 'keyRotated',
    value: {
      jobId: '60718293-a4b5-4c6d-7e8f-901234567890',
      ok: true,
      rewrapped: 42,
      alreadyNew: 0,
      oldKeyId: '3f2a9c1d0e8b7a65',
      newKeyId: '9b8c7d6e5f4a3b2c',
      durationSeconds: 0.8,
    },
  },
  'dump.completed': {
    case: 'dumpCompleted',
    value: {
      jobId: '71829304-b5c6-4d7e-8f90-123456789012',
      label: '20261124-013000-120L',
      databases: ['orders', 'billing'],
      size: 1_842_003_968n,
      storedSize: 402_113_536n,
      durationSeconds: 95.4,
      scheduled: true,
    },
  },
  'dump.failed': {
    case: 'dumpFailed',
    value: {
      jobId: '82930415-c6d7-4e8f-9012-345678901234',
      error: {
        code: ErrorCodes.DumpFailed.code,
        message: 'pg_dump of database orders failed: could not obtain lock on relation "orders"',
      },
      label: '20261124-013000-120L',
      durationSeconds: 60.2,
      scheduled: true,
    },
  },
  'dump.stale': {
    case: 'dumpStale',
    value: {
      lastDumpLabel: '20261122-013000-120L',
      lastDumpTime: ts(-2 * 86400),
      ageSeconds: 2 * 86400 + 3600,
      thresholdSeconds: 129600,
      schedule: '30 1 * * *',
    },
  },
};

/** The sample of one kind as a full event with a fixed id and time. */
export function sampleEvent(kind: EventKind, cluster = 'main', id = '8d6c1f3e-2b4a-4e59-9a7b-0c1d2e3f4a5b'): Event {
  return newEvent(cluster, SAMPLE_PAYLOADS[kind], { id, time: T0 });
}
