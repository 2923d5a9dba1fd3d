/**
 * The backup facts the agent and the controller both put on the wire, mapped once here (the
 * package both may import): the backup type enum, and a manifest's summary as BackupInfo. The
 * agent reports a finished backup with backupInfoFromManifest; the controller's catalog rebuild
 * goes through the same function, so a backup recorded live and one re-indexed from the
 * repository are the same row. Hand-written; everything else in this package is generated.
 */
import type { MessageInitShape } from '@bufbuild/protobuf';
import { timestampFromDate } from '@bufbuild/protobuf/wkt';
import { BackupResume, BackupType, type BackupInfoSchema } from './gen/pgfleet/v1/common_pb.js';

/** full, diff or incr: the names the manifest, the catalog and the CLI use. */
export type BackupTypeName = 'full' | 'diff' | 'incr';

const TO_PROTO: Record<BackupTypeName, BackupType> = {
  full: BackupType.FULL,
  diff: BackupType.DIFF,
  incr: BackupType.INCR,
};

/** undefined (a backup whose type is not known) is UNSPECIFIED. */
export function backupTypeToProto(type: BackupTypeName | undefined): BackupType {
  return type === undefined ? BackupType.UNSPECIFIED : TO_PROTO[type];
}

/**
 * Whether a backup continues an interrupted one: 'fresh' never, 'required' or fail (PGF-2080);
 * undefined (UNSPECIFIED, and values this build does not know): when there is one within the window.
 */
export type BackupResumeName = 'fresh' | 'required';

export function backupResumeToProto(resume: BackupResumeName | undefined): BackupResume {
  return resume === 'fresh'
    ? BackupResume.FRESH
    : resume === 'required'
      ? BackupResume.REQUIRED
      : BackupResume.UNSPECIFIED;
}

export function backupResumeFromProto(resume: BackupResume): BackupResumeName | undefined {
  return resume === BackupResume.FRESH ? 'fresh' : resume === BackupResume.REQUIRED ? 'required' : undefined;
}

/** UNSPECIFIED is a full backup (proto3's default); undefined for a value this build does not know. */
export function backupTypeFromProto(type: BackupType): BackupTypeName | undefined {
  switch (type) {
    case BackupType.UNSPECIFIED:
    case BackupType.FULL:
      return 'full';
    case BackupType.DIFF:
      return 'diff';
    case BackupType.INCR:
      return 'incr';
    default:
      return undefined;
  }
}

/**
 * What BackupInfo summarises of a backup manifest (storage's BackupManifest has these fields;
 * named structurally here because this package depends on nothing of pgfleet's).
 */
export interface BackupManifestSummary {
  label: string;
  cluster: string;
  type: BackupTypeName;
  priorLabel?: string;
  systemIdentifier: string;
  pgVersionNum: number;
  timeline: number;
  startLsn: string;
  stopLsn: string;
  /** ISO-8601. */
  startTime: string;
  stopTime: string;
  walStart: string;
  walStop: string;
  /** The file list, or (a manifest read or written as a stream: its summary) only its length. */
  files?: readonly unknown[];
  fileCount?: number;
  sizeBytes: number;
  storedBytes: number;
}

/** A backup's BackupInfo from its manifest; jobId is the job that made it ('' when not known). */
export function backupInfoFromManifest(
  m: BackupManifestSummary,
  jobId: string,
): MessageInitShape<typeof BackupInfoSchema> {
  return {
    label: m.label,
    cluster: m.cluster,
    type: backupTypeToProto(m.type),
    startLsn: m.startLsn,
    stopLsn: m.stopLsn,
    startTime: timestampFromDate(new Date(m.startTime)),
    stopTime: timestampFromDate(new Date(m.stopTime)),
    timeline: m.timeline,
    systemIdentifier: m.systemIdentifier,
    pgVersion: m.pgVersionNum,
    sizeBytes: BigInt(m.sizeBytes),
    storedBytes: BigInt(m.storedBytes),
    fileCount: m.fileCount ?? m.files?.length ?? 0,
    walStart: m.walStart,
    walStop: m.walStop,
    jobId,
    priorLabel: m.priorLabel ?? '',
  };
}
