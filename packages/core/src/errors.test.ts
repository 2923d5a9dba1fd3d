/**
 * Pins every error's stable code, gRPC status and CLI exit status. Scripts and runbooks match on
 * the codes, so a code is never renumbered or reused: changing one here must be a deliberate act.
 * This file and errors.ts are the only places that write 'PGF-' codes (eslint.config.js); every
 * other test names an error through ErrorCodes, so this is where the numbers are checked.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ErrorCodes, PgfleetError, asPgfleetError, type ErrorName } from './errors.js';

/** name: [code, gRPC status, exit status] */
const pinned: Record<ErrorName, [string, number, number]> = {
  InvalidArgument: ['PGF-1001', 3, 2],
  InvalidConfig: ['PGF-1002', 3, 2],
  UnknownCommand: ['PGF-1003', 3, 2],
  InvalidClusterName: ['PGF-1010', 3, 2],
  InvalidAgentId: ['PGF-1011', 3, 2],
  InvalidBackupLabel: ['PGF-1012', 3, 2],
  InputTooLarge: ['PGF-1013', 3, 2],
  MalformedMessage: ['PGF-1014', 3, 2],
  InsecureNotChosen: ['PGF-1020', 3, 2],
  SecretOnCommandLine: ['PGF-1021', 3, 2],
  SecretFileUnsafe: ['PGF-1022', 3, 2],
  CompressLevelInvalid: ['PGF-1060', 3, 2],
  SizeInvalid: ['PGF-1061', 3, 2],
  FilePermissionDenied: ['PGF-1100', 9, 4],
  DiskFull: ['PGF-1101', 8, 4],
  ReadOnlyFileSystem: ['PGF-1102', 9, 4],
  NotAController: ['PGF-1103', 14, 5],
  MetricsPortInUse: ['PGF-1104', 9, 2],
  UnknownCluster: ['PGF-2001', 5, 3],
  UnknownJob: ['PGF-2002', 5, 3],
  UnknownBackup: ['PGF-2003', 5, 3],
  AgentNotConnected: ['PGF-2004', 9, 4],
  JobFailed: ['PGF-2005', 10, 1],
  AgentDisconnected: ['PGF-2006', 14, 5],
  JobCancelled: ['PGF-2007', 1, 1],
  JobStateConflict: ['PGF-2008', 9, 4],
  BackupInProgress: ['PGF-2009', 9, 4],
  StandbyNotConnected: ['PGF-2010', 9, 4],
  BackupChainExpired: ['PGF-2030', 9, 4],
  BackupLeaseLost: ['PGF-2031', 14, 5],
  ReportedBackupRefused: ['PGF-2020', 9, 6],
  BackupHasDependents: ['PGF-2060', 9, 4],
  BackupPinned: ['PGF-2061', 9, 4],
  BackupHeld: ['PGF-2062', 9, 4],
  NothingToResume: ['PGF-2080', 9, 4],
  BackupSummaryMismatch: ['PGF-2300', 15, 6],
  ControllerAddressInvalid: ['PGF-2320', 3, 2],
  LeadershipLost: ['PGF-2321', 9, 4],
  DispatcherLost: ['PGF-2340', 14, 5],
  PageTokenInvalid: ['PGF-2350', 3, 2],
  PgdataMissing: ['PGF-3001', 9, 4],
  ArchiveModeOff: ['PGF-3002', 9, 4],
  PgConnectFailed: ['PGF-3003', 14, 5],
  PgQueryFailed: ['PGF-3004', 13, 1],
  SystemIdMismatch: ['PGF-3005', 9, 4],
  RestoreTargetNotEmpty: ['PGF-3006', 9, 4],
  RestoreTargetInUse: ['PGF-3007', 9, 4],
  PageChecksumMismatch: ['PGF-3008', 15, 6],
  ScratchSpaceLow: ['PGF-3009', 8, 4],
  PgVersionUnsupported: ['PGF-3010', 9, 4],
  BackupLabelInUse: ['PGF-3011', 6, 4],
  HostSystemIdMismatch: ['PGF-3012', 9, 4],
  WalFileMissing: ['PGF-4001', 5, 3],
  WalFileEmpty: ['PGF-4002', 3, 6],
  WalFileInvalid: ['PGF-4003', 3, 6],
  WalConflict: ['PGF-4004', 6, 6],
  WalNotInRepository: ['PGF-4005', 5, 3],
  WalArchiveTimeout: ['PGF-4006', 4, 5],
  WalDaemonFailed: ['PGF-4007', 14, 5],
  WalStreamFailed: ['PGF-4008', 14, 5],
  ArchiveCheckFailed: ['PGF-4009', 9, 4],
  TimelineHistoryConflict: ['PGF-4010', 9, 6],
  WalCopyDamaged: ['PGF-4020', 15, 6],
  RepoFileMissing: ['PGF-5001', 5, 6],
  RepoChecksumMismatch: ['PGF-5002', 15, 6],
  RepoManifestInvalid: ['PGF-5003', 15, 6],
  RepoIoFailed: ['PGF-5004', 14, 5],
  VerifyFailed: ['PGF-5005', 15, 6],
  DrillFailed: ['PGF-5006', 15, 6],
  RepoObjectTampered: ['PGF-5010', 15, 6],
  EncryptionModeMismatch: ['PGF-5011', 9, 4],
  ManifestPathRejected: ['PGF-5020', 15, 6],
  RestoreEscapeRefused: ['PGF-5021', 9, 4],
  BlockMapInvalid: ['PGF-5070', 15, 6],
  TargetBeforeOldestBackup: ['PGF-6001', 11, 4],
  TargetInFuture: ['PGF-6002', 11, 4],
  TargetInvalid: ['PGF-6003', 3, 2],
  RestorePointNotFound: ['PGF-6004', 5, 3],
  NoBackup: ['PGF-6005', 9, 4],
  TargetTimelineInvalid: ['PGF-6006', 11, 4],
  WalFormatUnsupported: ['PGF-6100', 9, 4],
  WalImageUnsupported: ['PGF-6101', 12, 4],
  WalDecodeInputInvalid: ['PGF-6102', 3, 2],
  WalSearchTableUnknown: ['PGF-6120', 5, 3],
  WalSearchBeforeOldestBackup: ['PGF-6121', 11, 4],
  WalSearchInvalid: ['PGF-6122', 3, 2],
  WalSearchGap: ['PGF-6123', 15, 6],
  WalSearchNoBackup: ['PGF-6124', 9, 4],
  ControllerUnreachable: ['PGF-7001', 14, 5],
  Timeout: ['PGF-7002', 4, 5],
  ControllerRestarted: ['PGF-7003', 10, 5],
  Cancelled: ['PGF-7004', 1, 1],
  EventPublishFailed: ['PGF-7005', 14, 5],
  EventInvalid: ['PGF-7006', 3, 6],
  ConsoleListenFailed: ['PGF-7100', 14, 5],
  ConsoleNotBuilt: ['PGF-7101', 9, 4],
  ConsoleUnknownCall: ['PGF-7102', 5, 3],
  Unauthenticated: ['PGF-8001', 16, 7],
  PermissionDenied: ['PGF-8002', 7, 7],
  EnrollmentFailed: ['PGF-8003', 7, 7],
  EncryptionKeyWrong: ['PGF-8010', 7, 7],
  EncryptionKeyInvalid: ['PGF-8011', 9, 2],
  ManifestUnauthenticated: ['PGF-8020', 15, 6],
  ManifestUnsigned: ['PGF-8021', 9, 4],
  ManifestKeyMissing: ['PGF-8022', 9, 4],
  AgentIdBound: ['PGF-8030', 7, 7],
  JobNotOwned: ['PGF-8031', 7, 7],
  RepositoriesNotPinned: ['PGF-8032', 7, 7],
  WalUnauthenticated: ['PGF-8040', 15, 6],
  WalKeyMissing: ['PGF-8041', 9, 4],
  ClusterKeyFileInvalid: ['PGF-8042', 9, 2],
  EncryptionPreviousKeyMissing: ['PGF-8050', 9, 4],
  EncryptionPreviousKeyWrong: ['PGF-8051', 9, 4],
  RecoverTableNotFound: ['PGF-6150', 5, 3],
  RecoverTableNameInvalid: ['PGF-6151', 3, 2],
  RecoveredTableExists: ['PGF-6152', 6, 4],
  RecoverTableLiveUnreachable: ['PGF-6153', 14, 5],
  RecoverTableLoadFailed: ['PGF-6154', 13, 1],
  RecoverTableCopyFailed: ['PGF-6155', 9, 4],
  DumpFailed: ['PGF-6200', 10, 1],
  DumpDatabaseUnknown: ['PGF-6201', 5, 4],
  DumpNotFound: ['PGF-6202', 5, 4],
  RestoreDumpTargetExists: ['PGF-6203', 6, 4],
  RestoreDumpFailed: ['PGF-6204', 13, 1],
  DumpInvalid: ['PGF-6205', 3, 2],
  DumpDrillCountsDiffer: ['PGF-6230', 15, 1],
  DumpSpoolFull: ['PGF-6231', 8, 4],
  DumpDrillFailed: ['PGF-6232', 10, 1],
  DumpDrillUnavailable: ['PGF-6233', 9, 4],
  DumpFileNotWhole: ['PGF-6240', 13, 1],
  RestoreDumpGlobalsFailed: ['PGF-6250', 10, 1],
  DumpLeaseLost: ['PGF-6260', 14, 5],
  Internal: ['PGF-9001', 13, 1],
};

test('every registry entry keeps its code, gRPC status and exit status', () => {
  const actual = Object.fromEntries(
    Object.entries(ErrorCodes).map(([name, spec]) => [name, [spec.code, spec.grpc, spec.exit]]),
  );
  assert.deepEqual(actual, pinned);
});

test('codes are unique and fromCode maps each back to its name; an unknown code becomes Internal', () => {
  const codes = Object.values(ErrorCodes).map((s) => s.code);
  assert.equal(new Set(codes).size, codes.length);
  for (const name of Object.keys(ErrorCodes) as ErrorName[]) {
    const e = PgfleetError.fromCode(ErrorCodes[name].code, 'm');
    assert.deepEqual([e.errorName, e.code, e.hint], [name, ErrorCodes[name].code, ErrorCodes[name].hint]);
  }
  assert.equal(PgfleetError.fromCode('PGF-0000', 'm').errorName, 'Internal');
});

test('format() prints the code, the message and the hint; anything else thrown becomes Internal', () => {
  const e = new PgfleetError('UnknownJob', "job 'x' does not exist");
  assert.equal(e.format(), "PGF-2002 job 'x' does not exist\n  hint: List jobs with `pgfleet jobs`.");
  const cause = new TypeError('boom');
  const wrapped = asPgfleetError(cause);
  assert.deepEqual([wrapped.code, wrapped.message, wrapped.cause], ['PGF-9001', 'boom', cause]);
});

test('system errors of the machine (permissions, full disk, read-only mount) get their own codes, never PGF-9001', async () => {
  const { chmod, mkdir, mkdtemp, rm, writeFile } = await import('node:fs/promises');
  const { tmpdir } = await import('node:os');
  const { join } = await import('node:path');
  // A real refusal: a read-only directory stops a normal user; root passes file modes, but not sysfs.
  const parent = await mkdtemp(join(tmpdir(), 'pgfleet-errors-'));
  await chmod(parent, 0o500);
  const target = process.getuid?.() === 0 ? '/sys/pgfleet-restore-target' : join(parent, 'restore');
  const denied = await mkdir(target).catch((err: unknown) => err);
  await chmod(parent, 0o700);
  await rm(parent, { recursive: true });
  const e = asPgfleetError(denied);
  // sysfs refuses with EPERM, or EROFS where a container mounts it read-only: both the machine's state.
  assert.ok(['PGF-1100', 'PGF-1102'].includes(e.code), e.format());
  assert.match(e.message, /pgfleet-restore-target|restore/);
  const full = await writeFile('/dev/full', 'x').catch((err: unknown) => err);
  assert.equal(asPgfleetError(full).code, 'PGF-1101');
  assert.match(asPgfleetError(full).hint, /full/);
});
