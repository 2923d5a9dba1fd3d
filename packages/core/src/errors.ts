/**
 * The one registry of user-facing errors. Every condition a user can hit has a stable code
 * (PGF-xxxx) that scripts and runbooks can match on, a message that says what happened, a hint
 * that says what to do, the gRPC status it maps to, and the process exit code of the CLIs.
 * Codes are never reused or renumbered; add new ones at the end of their block.
 */
import { redactCredentials } from './redact.js';

/** gRPC status codes we map to (numeric values from the gRPC spec, so core needs no grpc import). */
export const GrpcStatus = {
  OK: 0,
  CANCELLED: 1,
  UNKNOWN: 2,
  INVALID_ARGUMENT: 3,
  DEADLINE_EXCEEDED: 4,
  NOT_FOUND: 5,
  ALREADY_EXISTS: 6,
  PERMISSION_DENIED: 7,
  RESOURCE_EXHAUSTED: 8,
  FAILED_PRECONDITION: 9,
  ABORTED: 10,
  OUT_OF_RANGE: 11,
  UNIMPLEMENTED: 12,
  INTERNAL: 13,
  UNAVAILABLE: 14,
  DATA_LOSS: 15,
  UNAUTHENTICATED: 16,
} as const;
export type GrpcStatusCode = (typeof GrpcStatus)[keyof typeof GrpcStatus];

interface ErrorSpec {
  readonly code: string;
  readonly grpc: GrpcStatusCode;
  /** Exit status of a CLI that fails with this error. 2 = usage/config, 3 = not found, 4 = precondition, 5 = unavailable, 6 = data, 7 = authentication/authorization, 1 = other. */
  readonly exit: number;
  readonly hint: string;
}

function spec(code: string, grpc: GrpcStatusCode, exit: number, hint: string): ErrorSpec {
  return { code, grpc, exit, hint };
}

/** The registry. Keys are the names used in code; `code` is what users see. */
export const ErrorCodes = {
  // 1xxx: usage and configuration
  InvalidArgument: spec(
    'PGF-1001',
    GrpcStatus.INVALID_ARGUMENT,
    2,
    'Check the command line; --help lists every option.',
  ),
  InvalidConfig: spec(
    'PGF-1002',
    GrpcStatus.INVALID_ARGUMENT,
    2,
    'Fix the named key in the config file or environment.',
  ),
  UnknownCommand: spec('PGF-1003', GrpcStatus.INVALID_ARGUMENT, 2, 'Run with --help to list the commands.'),
  InvalidClusterName: spec(
    'PGF-1010',
    GrpcStatus.INVALID_ARGUMENT,
    2,
    'A cluster name is 1 to 63 characters: lower-case letters, digits, and _ . - after the first (a letter or digit), without "/" or "..". It is a directory in every repository, so one name may never reach into another\'s; register the cluster under a name that fits.',
  ),
  InvalidAgentId: spec(
    'PGF-1011',
    GrpcStatus.INVALID_ARGUMENT,
    2,
    'An agent id is 1 to 128 characters: letters, digits, and _ . : @ + - after the first (a letter or digit), without "/" or "..". Set --agent-id to one that fits.',
  ),
  InvalidBackupLabel: spec(
    'PGF-1012',
    GrpcStatus.INVALID_ARGUMENT,
    2,
    'A backup label is 1 to 128 characters: letters, digits, and _ . + - after the first (a letter or digit), without "/" or ".."; list real labels with `pgfleet backups <cluster>`.',
  ),
  InputTooLarge: spec(
    'PGF-1013',
    GrpcStatus.INVALID_ARGUMENT,
    2,
    'A field of the request is longer, holds more entries or a larger or stranger number than pgfleet accepts (the message names the field and the bound); send a smaller value. A client or agent that sends it is broken or hostile.',
  ),
  MalformedMessage: spec(
    'PGF-1014',
    GrpcStatus.INVALID_ARGUMENT,
    2,
    'The request bytes are not a valid protobuf message of the called method: the client speaks another protocol version or is broken. Use a pgfleet client of the same version as the controller.',
  ),
  InsecureNotChosen: spec(
    'PGF-1020',
    GrpcStatus.INVALID_ARGUMENT,
    2,
    'Give TLS material (controller: --tls-dir from `pgfleet-controller ca init`; agent and CLI: --ca-cert, agents also --tls-dir), or say --insecure (PGFLEET_INSECURE=true) to run in clear text without authentication on a trusted lab network; docs/security.md.',
  ),
  SecretOnCommandLine: spec(
    'PGF-1021',
    GrpcStatus.INVALID_ARGUMENT,
    2,
    'Every user of the host can read command lines (ps, /proc/<pid>/cmdline): give the secret through its environment variable, the config file, or its --<option>-file (a file only its owner can read).',
  ),
  SecretFileUnsafe: spec(
    'PGF-1022',
    GrpcStatus.INVALID_ARGUMENT,
    2,
    'A file holding a secret must be readable by its owner only: chmod 600 FILE (or 640 with a trusted group).',
  ),
  CompressLevelInvalid: spec(
    'PGF-1060',
    GrpcStatus.INVALID_ARGUMENT,
    2,
    'Give --compress-level within the range of the codec of --compress: zstd 1 to 19 (default 2), gzip 1 to 9 (default 6); lz4 and none have no levels, so drop --compress-level for them.',
  ),
  SizeInvalid: spec(
    'PGF-1061',
    GrpcStatus.INVALID_ARGUMENT,
    2,
    'Give a size as a whole number of bytes or with a unit: kB, MB, GB, TB (powers of 1024, as in PostgreSQL and pgBackRest) or KiB, MiB, GiB, TiB, e.g. 20MB or 1GiB.',
  ),
  // 11xx: ordinary failures of the machine around pgfleet (files, disks, addresses), never bugs
  FilePermissionDenied: spec(
    'PGF-1100',
    GrpcStatus.FAILED_PRECONDITION,
    4,
    "The operating-system user of the process that failed (named in the message: the agent, the controller or the CLI) may not read or write the path in the message. Fix its owner or mode (chown/chmod), or choose a path that user may write: a restore --to directory must be creatable and writable by the agent's user, the agent must run as the owner of PGDATA.",
  ),
  DiskFull: spec(
    'PGF-1101',
    GrpcStatus.RESOURCE_EXHAUSTED,
    4,
    'The file system holding the path in the message is full (or its quota is used up). Free space there or use a path on a larger file system, then run the job again; what was being written was not kept as complete.',
  ),
  ReadOnlyFileSystem: spec(
    'PGF-1102',
    GrpcStatus.FAILED_PRECONDITION,
    4,
    'The path in the message is on a file system mounted read-only: remount it read-write or choose a path on a writable one.',
  ),
  NotAController: spec(
    'PGF-1103',
    GrpcStatus.UNAVAILABLE,
    5,
    "Something answers at that address, but not a pgfleet controller (another HTTP/2 or gRPC service, a web server, or a TLS/clear-text mismatch): point --controller (PGFLEET_CONTROLLER) at the controller's --listen address (default port 7420) and check --ca-cert / --insecure match how it runs.",
  ),
  MetricsPortInUse: spec(
    'PGF-1104',
    GrpcStatus.FAILED_PRECONDITION,
    2,
    'Another process (often postgres_exporter on 9187, or a second controller) already listens on the metrics address: choose a free one with --metrics-listen, or stop the other process. The controller does not start without its metrics rather than run unobserved.',
  ),
  // 2xxx: fleet objects that do not exist or are in the wrong state
  UnknownCluster: spec(
    'PGF-2001',
    GrpcStatus.NOT_FOUND,
    3,
    'List known clusters with `pgfleet clusters`; a cluster appears once its agent has connected.',
  ),
  UnknownJob: spec('PGF-2002', GrpcStatus.NOT_FOUND, 3, 'List jobs with `pgfleet jobs`.'),
  UnknownBackup: spec('PGF-2003', GrpcStatus.NOT_FOUND, 3, 'List backups with `pgfleet backups <cluster>`.'),
  AgentNotConnected: spec(
    'PGF-2004',
    GrpcStatus.FAILED_PRECONDITION,
    4,
    'Start `pgfleet-agent run` for the cluster and check it can reach the controller.',
  ),
  JobFailed: spec('PGF-2005', GrpcStatus.ABORTED, 1, 'See the job with `pgfleet job <id>` and the agent log.'),
  AgentDisconnected: spec(
    'PGF-2006',
    GrpcStatus.UNAVAILABLE,
    5,
    'The agent went away during the job; check the agent host and retry.',
  ),
  JobCancelled: spec('PGF-2007', GrpcStatus.CANCELLED, 1, 'The job was cancelled; start it again when ready.'),
  JobStateConflict: spec(
    'PGF-2008',
    GrpcStatus.FAILED_PRECONDITION,
    4,
    'The job is already in a state that does not allow this change; see `pgfleet job <id>`.',
  ),
  BackupInProgress: spec(
    'PGF-2009',
    GrpcStatus.FAILED_PRECONDITION,
    4,
    'A backup or retention expire of this cluster is already running; one at a time keeps labels, WAL waits and expiry apart. Wait for it (`pgfleet jobs --cluster <cluster>`) or cancel it (`pgfleet cancel <job>`).',
  ),
  StandbyNotConnected: spec(
    'PGF-2010',
    GrpcStatus.FAILED_PRECONDITION,
    4,
    'A backup from a standby needs a connected agent on a standby that is caught up (see `pgfleet status`): start `pgfleet-agent run` on the standby host, wait for replay to catch up, or back up with --from prefer-standby or --from primary.',
  ),
  BackupChainExpired: spec(
    'PGF-2030',
    GrpcStatus.FAILED_PRECONDITION,
    4,
    'A backup this diff/incr builds on was expired while the new backup started or ran, so the new one stopped before its manifest (it never references missing files). Start the backup again: it builds on a backup that still exists.',
  ),
  BackupLeaseLost: spec(
    'PGF-2031',
    GrpcStatus.UNAVAILABLE,
    5,
    'The backup could not keep its lease in the repository fresh (the write failed, or the lease was removed after it went stale), so an expire may have removed files it references; it stopped before its manifest. Check that the repository is reachable and writable, then start the backup again.',
  ),
  ReportedBackupRefused: spec(
    'PGF-2020',
    GrpcStatus.FAILED_PRECONDITION,
    6,
    'The agent reported a backup the controller cannot believe (label, system identifier, LSNs, times or its manifest in the repository); nothing was recorded. Check the agent host (it may be compromised or misconfigured), its clock and its repository, then run `pgfleet verify <cluster>`.',
  ),
  BackupHasDependents: spec(
    'PGF-2060',
    GrpcStatus.FAILED_PRECONDITION,
    4,
    'Other backups (diff/incr) read files from this one; deleting it alone would break them. Delete them with it (`pgfleet backup delete <cluster> <label> --with-dependents`), or delete the newest dependent first.',
  ),
  BackupPinned: spec(
    'PGF-2061',
    GrpcStatus.FAILED_PRECONDITION,
    4,
    'The backup (or one of its dependents) is pinned; release it first with `pgfleet pin <cluster> <label> --unpin` if it may really go.',
  ),
  BackupHeld: spec(
    'PGF-2062',
    GrpcStatus.FAILED_PRECONDITION,
    4,
    'A backup in progress references this one (its lease in the repository names it); wait until that backup ends, then delete again.',
  ),
  NothingToResume: spec(
    'PGF-2080',
    GrpcStatus.FAILED_PRECONDITION,
    4,
    'A backup with --resume continues an interrupted one, and the repository holds none it can continue: none of this cluster and type (and, for diff/incr, the same prior backup) taken from this data directory, within the resume window, and not held by a running backup. Run the backup without --resume to take a fresh one.',
  ),
  BackupSummaryMismatch: spec(
    'PGF-2300',
    GrpcStatus.DATA_LOSS,
    6,
    "A backup's summary (what listings choose backups by) disagrees with its authenticated manifest; the backup was not used. Run pgfleet verify on the cluster and take a new backup.",
  ),
  ControllerAddressInvalid: spec(
    'PGF-2320',
    GrpcStatus.INVALID_ARGUMENT,
    2,
    'Give --controller (PGFLEET_CONTROLLER) as host:port, or a comma list of them (host1:7420,host2:7420); a DNS name resolving to several controllers is one entry.',
  ),
  LeadershipLost: spec(
    'PGF-2321',
    GrpcStatus.FAILED_PRECONDITION,
    4,
    'Another controller took the leadership (this one paused or lost its catalog session): the write was refused so nothing fires twice. Nothing to do; the leader runs the schedule.',
  ),
  DispatcherLost: spec(
    'PGF-2340',
    GrpcStatus.UNAVAILABLE,
    5,
    "The controller that created the job died before its agent had it, and the agent never claimed it: the job was failed so the cluster's next job can start. A scheduled job runs again at its next fire time; start a manual one again.",
  ),
  PageTokenInvalid: spec(
    'PGF-2350',
    GrpcStatus.INVALID_ARGUMENT,
    2,
    'The page token is not one this controller handed out (or was cut): start the listing again without it; the CLI and the console fetch every page themselves.',
  ),
  // 3xxx: PostgreSQL and the data directory
  PgdataMissing: spec(
    'PGF-3001',
    GrpcStatus.FAILED_PRECONDITION,
    4,
    "Point --pgdata at the cluster's data directory (the one holding PG_VERSION).",
  ),
  ArchiveModeOff: spec(
    'PGF-3002',
    GrpcStatus.FAILED_PRECONDITION,
    4,
    "Set archive_mode = on and archive_command = 'pgfleet-agent wal-push %p', then restart PostgreSQL.",
  ),
  PgConnectFailed: spec(
    'PGF-3003',
    GrpcStatus.UNAVAILABLE,
    5,
    'Check the connection settings (--pg-host, --pg-port, --pg-user) and that PostgreSQL is running.',
  ),
  PgQueryFailed: spec('PGF-3004', GrpcStatus.INTERNAL, 1, 'See the PostgreSQL log for details.'),
  SystemIdMismatch: spec(
    'PGF-3005',
    GrpcStatus.FAILED_PRECONDITION,
    4,
    'The repository holds another cluster under this name; use another cluster name or repository.',
  ),
  RestoreTargetNotEmpty: spec(
    'PGF-3006',
    GrpcStatus.FAILED_PRECONDITION,
    4,
    'Restore into an empty or new directory, or use --delta to update an existing data directory of the cluster in place.',
  ),
  RestoreTargetInUse: spec(
    'PGF-3007',
    GrpcStatus.FAILED_PRECONDITION,
    4,
    'Stop the PostgreSQL server running on that data directory before a delta restore into it.',
  ),
  PageChecksumMismatch: spec(
    'PGF-3008',
    GrpcStatus.DATA_LOSS,
    6,
    'Data pages in PGDATA fail their checksum twice: the files are damaged on disk. The backup holds them as found; check the storage, find the affected relations (the file names are relfilenodes) and recover them from an older backup.',
  ),
  ScratchSpaceLow: spec(
    'PGF-3009',
    GrpcStatus.RESOURCE_EXHAUSTED,
    4,
    "The drill's scratch area has too little free space for the restored copy; point the agent's --scratch-dir at a larger filesystem or free space there.",
  ),
  PgVersionUnsupported: spec(
    'PGF-3010',
    GrpcStatus.FAILED_PRECONDITION,
    4,
    'The PostgreSQL major version is too old for this operation (the message names the minimum and why); restore drills need PostgreSQL 14 or later. Upgrade the cluster, and meanwhile prove restores with `pgfleet restore` and `pgfleet verify`.',
  ),
  BackupLabelInUse: spec(
    'PGF-3011',
    GrpcStatus.ALREADY_EXISTS,
    4,
    'Another backup of the cluster already uses this label (labels have one-second resolution); the system clock may have gone back. Check the clock and start the backup again; nothing was overwritten.',
  ),
  HostSystemIdMismatch: spec(
    'PGF-3012',
    GrpcStatus.FAILED_PRECONDITION,
    4,
    "Every agent of a cluster must run against the same database system (a standby made from its primary by pg_basebackup); this agent's PostgreSQL is another one. Give it its own --cluster name, or point --pgdata/--pg-port at the right server.",
  ),
  // 4xxx: WAL archive
  WalFileMissing: spec(
    'PGF-4001',
    GrpcStatus.NOT_FOUND,
    3,
    'archive_command was given a path that does not exist; PostgreSQL will retry.',
  ),
  WalFileEmpty: spec(
    'PGF-4002',
    GrpcStatus.INVALID_ARGUMENT,
    6,
    'The WAL file is empty or truncated; it was refused so PostgreSQL retries with the complete file.',
  ),
  WalFileInvalid: spec(
    'PGF-4003',
    GrpcStatus.INVALID_ARGUMENT,
    6,
    'The file is not a WAL segment of this cluster (bad header, timeline, position or system identifier).',
  ),
  WalConflict: spec(
    'PGF-4004',
    GrpcStatus.ALREADY_EXISTS,
    6,
    'The repository already holds a different file under this name; it is never overwritten. Investigate before removing either copy.',
  ),
  WalNotInRepository: spec('PGF-4005', GrpcStatus.NOT_FOUND, 3, 'The segment is not archived (yet).'),
  WalArchiveTimeout: spec(
    'PGF-4006',
    GrpcStatus.DEADLINE_EXCEEDED,
    5,
    'Check archive_command and pg_stat_archiver.failed_count: WAL needed by the backup did not reach the repository.',
  ),
  WalDaemonFailed: spec(
    'PGF-4007',
    GrpcStatus.UNAVAILABLE,
    5,
    'The agent daemon took the WAL file but gave no answer; PostgreSQL retries (archiving is idempotent). See the agent log.',
  ),
  WalStreamFailed: spec(
    'PGF-4008',
    GrpcStatus.UNAVAILABLE,
    5,
    'WAL streaming stopped; it reconnects by itself. Check max_wal_senders, the replication entry in pg_hba.conf and the agent log.',
  ),
  ArchiveCheckFailed: spec(
    'PGF-4009',
    GrpcStatus.FAILED_PRECONDITION,
    4,
    "WAL archiving does not work end to end: fix what the failing check lines say (archive_mode = on, archive_command = 'pgfleet-agent wal-push %p --config FILE' naming this cluster, a writable repository), then run `pgfleet check <cluster>` again until every line is ok.",
  ),
  TimelineHistoryConflict: spec(
    'PGF-4010',
    GrpcStatus.FAILED_PRECONDITION,
    6,
    'The timeline history contradicts the history the repository holds for its parent timeline: it comes from another lineage (a copy of another system, or a crafted file). It was not archived; find out which server produced it, and keep restored copies from archiving into this repository (`pgfleet restore` turns archive_mode off unless --archive preserve).',
  ),
  WalCopyDamaged: spec(
    'PGF-4020',
    GrpcStatus.DATA_LOSS,
    6,
    'An archived copy of this WAL file vanished or failed the checksum its name carries when a push found it; it was replaced with the file PostgreSQL still holds. Check the storage under the repository and run `pgfleet verify <cluster>`.',
  ),
  // 5xxx: repository
  RepoFileMissing: spec(
    'PGF-5001',
    GrpcStatus.NOT_FOUND,
    6,
    'A file the manifest lists is missing from the repository; the backup cannot be restored.',
  ),
  RepoChecksumMismatch: spec(
    'PGF-5002',
    GrpcStatus.DATA_LOSS,
    6,
    'A repository file does not match its checksum; the backup is damaged.',
  ),
  RepoManifestInvalid: spec(
    'PGF-5003',
    GrpcStatus.DATA_LOSS,
    6,
    'The backup manifest is missing or corrupt; the backup cannot be used.',
  ),
  RepoIoFailed: spec(
    'PGF-5004',
    GrpcStatus.UNAVAILABLE,
    5,
    'Check that the repository path exists and is writable by the agent user.',
  ),
  VerifyFailed: spec(
    'PGF-5005',
    GrpcStatus.DATA_LOSS,
    6,
    'Verify found backups that cannot be restored (missing or damaged files, WAL gaps, corrupt manifests); see the problems it lists, take a new full backup, and find out what damaged the repository.',
  ),
  DrillFailed: spec(
    'PGF-5006',
    GrpcStatus.DATA_LOSS,
    6,
    'A restore drill did not prove the backup: see its stage and reasons (`pgfleet drills <cluster>`, `pgfleet job <id> --output json`); amcheck findings mean damaged data or indexes, count differences mean the restored data is not what the source held at the restore point.',
  ),
  RepoObjectTampered: spec(
    'PGF-5010',
    GrpcStatus.DATA_LOSS,
    6,
    'An encrypted repository object failed authentication: its bytes were changed, cut short, moved from another object or replaced. Nothing of it was used; restore from another backup or the second repository, and find out who could write to the repository.',
  ),
  EncryptionModeMismatch: spec(
    'PGF-5011',
    GrpcStatus.FAILED_PRECONDITION,
    4,
    "A cluster's encryption is chosen when its part of the repository is created: an encrypted cluster needs its key (--encryption-key-file or --encryption-key-command), a plaintext one must be used without a key (or use a new cluster name / repository to start encrypted).",
  ),
  ManifestPathRejected: spec(
    'PGF-5020',
    GrpcStatus.DATA_LOSS,
    6,
    'The manifest lists a path no PostgreSQL data directory has (absolute, with .. or an empty segment, a link outside pg_tblspc/<oid>, a file under a link, a duplicate): it was not written by pgfleet as it is. Nothing was restored from it; treat the repository as tampered with, find out who can write to it, and restore another backup.',
  ),
  RestoreEscapeRefused: spec(
    'PGF-5021',
    GrpcStatus.FAILED_PRECONDITION,
    4,
    'The restore met a symbolic link or a non-directory where it must create a directory or file, and refused to write through it (it would have written outside the target). Inspect the named path: remove what was planted there, or restore into a new empty directory.',
  ),
  BlockMapInvalid: spec(
    'PGF-5070',
    GrpcStatus.DATA_LOSS,
    6,
    'The block map of a block-incremental file (docs/block-incremental.md) is damaged or names blocks its backups do not hold; the file cannot be rebuilt from this backup. Run `pgfleet verify <cluster>`, restore another backup, and take a new full backup.',
  ),
  // 6xxx: recovery targets
  TargetBeforeOldestBackup: spec(
    'PGF-6001',
    GrpcStatus.OUT_OF_RANGE,
    4,
    'Choose a target after the end of the oldest backup (see `pgfleet backups <cluster>`).',
  ),
  TargetInFuture: spec('PGF-6002', GrpcStatus.OUT_OF_RANGE, 4, 'Choose a target in the past, or --target latest.'),
  TargetInvalid: spec(
    'PGF-6003',
    GrpcStatus.INVALID_ARGUMENT,
    2,
    'Give exactly one of --target-time, --target-lsn, --target-name, --target-xid, --before-xid, --before-lsn or --target immediate|latest.',
  ),
  RestorePointNotFound: spec(
    'PGF-6004',
    GrpcStatus.NOT_FOUND,
    3,
    'No archived WAL holds a restore point of that name; list restore points with pg_waldump or use a time target.',
  ),
  NoBackup: spec(
    'PGF-6005',
    GrpcStatus.FAILED_PRECONDITION,
    4,
    'Take a backup first: `pgfleet backup <cluster> --wait`.',
  ),
  TargetTimelineInvalid: spec(
    'PGF-6006',
    GrpcStatus.OUT_OF_RANGE,
    4,
    'The target is not on a timeline the chosen backup can reach: list the timelines with `pgfleet verify <cluster>`, pick a backup of that timeline (--backup) or another --target-timeline.',
  ),
  // 61xx: reading WAL records (issue 15, packages/pg/src/wal-decode)
  WalFormatUnsupported: spec(
    'PGF-6100',
    GrpcStatus.FAILED_PRECONDITION,
    4,
    'The WAL was written by a PostgreSQL major whose record format this decoder does not read (it reads PostgreSQL 15 WAL only). Nothing was decoded; search WAL of a PostgreSQL 15 cluster, or use pg_waldump of the matching major.',
  ),
  // Retired: lz4 images are expanded too since, and an image of an unknown method is an unknown
  // page, not an error. Kept so that PGF-6101 never means something else.
  WalImageUnsupported: spec(
    'PGF-6101',
    GrpcStatus.UNIMPLEMENTED,
    4,
    'A full-page image in the WAL is compressed with a method this decoder cannot expand (it expands pglz and zstd). Set wal_compression to pglz or zstd (or off) on the cluster, or read the record with pg_waldump.',
  ),
  WalDecodeInputInvalid: spec(
    'PGF-6102',
    GrpcStatus.INVALID_ARGUMENT,
    2,
    'The WAL segments given to the decoder do not fit together (size, order or start position): pass whole segments of one WAL segment size, in order, each with its own start LSN.',
  ),
  // 612x: pgfleet wal search (issue 15)
  WalSearchTableUnknown: spec(
    'PGF-6120',
    GrpcStatus.NOT_FOUND,
    3,
    'No such table in the catalog snapshot of the backup the search started from, nor created in the WAL read: check the name (schema.name, as `\\dt` shows it) and --database, or search from an older backup with --since.',
  ),
  WalSearchBeforeOldestBackup: spec(
    'PGF-6121',
    GrpcStatus.OUT_OF_RANGE,
    4,
    "The archived WAL is read from the start of a backup on: give a --since at or after the oldest backup's start (see `pgfleet backups <cluster>`), or leave --since out.",
  ),
  WalSearchInvalid: spec(
    'PGF-6122',
    GrpcStatus.INVALID_ARGUMENT,
    2,
    'Times are ISO-8601 (2026-12-06T21:30:00Z), --table is schema.name (or a name in public), --kind one of delete, update, truncate, drop, all, --min-rows and --limit whole numbers.',
  ),
  WalSearchGap: spec(
    'PGF-6123',
    GrpcStatus.DATA_LOSS,
    6,
    'A WAL segment of the searched range is missing from the repository (or only an unauthenticated copy is): the transactions after it cannot be read. Search with --until before the gap, or run `pgfleet verify <cluster>` to see what the archive lacks.',
  ),
  WalSearchNoBackup: spec(
    'PGF-6124',
    GrpcStatus.FAILED_PRECONDITION,
    4,
    'The search starts from a backup (its catalog snapshot names the tables, its start bounds the WAL read): take one first with `pgfleet backup <cluster> --wait`.',
  ),
  // 6150-6199: recover-table (docs/undo.md)
  RecoverTableNotFound: spec(
    'PGF-6150',
    GrpcStatus.NOT_FOUND,
    3,
    'The table does not exist in the copy recovered to that target (it did not exist then, or is in another database or schema): check the name and --database, or choose a later target.',
  ),
  RecoverTableNameInvalid: spec(
    'PGF-6151',
    GrpcStatus.INVALID_ARGUMENT,
    2,
    'Name tables as schema.name (--table public.orders) and new names as one identifier or pgfleet_recovered.name (--into orders_before), at most 63 bytes; give --into once per --table or not at all.',
  ),
  RecoveredTableExists: spec(
    'PGF-6152',
    GrpcStatus.ALREADY_EXISTS,
    4,
    'recover-table never overwrites: a table of that name is already in schema pgfleet_recovered of the live cluster. Choose another name with --into, or drop or rename the old one first.',
  ),
  RecoverTableLiveUnreachable: spec(
    'PGF-6153',
    GrpcStatus.UNAVAILABLE,
    5,
    "The agent could not connect to the live cluster's database to load the recovered rows: check that PostgreSQL is up and that --database names an existing database the agent's role may connect to.",
  ),
  RecoverTableCopyFailed: spec(
    'PGF-6155',
    GrpcStatus.FAILED_PRECONDITION,
    4,
    "The scratch copy did not start or did not recover to the target (PostgreSQL's own message is quoted): check the target, that the archive holds the WAL up to it (`pgfleet verify <cluster>`), and the agent's scratch area.",
  ),
  RecoverTableLoadFailed: spec(
    'PGF-6154',
    GrpcStatus.INTERNAL,
    1,
    "Dumping a table from the recovered copy or loading it into the live cluster failed (pg_dump's or psql's message says why); nothing of that table was kept in the live cluster (one transaction per table).",
  ),
  // 62xx: logical backups (pgfleet dump, restore-dump; docs/logical.md)
  DumpFailed: spec(
    'PGF-6200',
    GrpcStatus.ABORTED,
    1,
    'pg_dump or pg_dumpall failed (its message is quoted: a lock not granted within --lock-wait-timeout, a database dropped meanwhile, a connection refused); nothing of the dump was kept or listed. Retry, or raise --lock-wait-timeout when a long transaction holds locks.',
  ),
  DumpDatabaseUnknown: spec(
    'PGF-6201',
    GrpcStatus.NOT_FOUND,
    4,
    'List the databases with `psql -l` on the cluster; templates and databases that refuse connections are not dumped.',
  ),
  DumpNotFound: spec(
    'PGF-6202',
    GrpcStatus.NOT_FOUND,
    4,
    'List the complete dumps with `pgfleet dumps <cluster>`; a failed dump is never listed.',
  ),
  RestoreDumpTargetExists: spec(
    'PGF-6203',
    GrpcStatus.ALREADY_EXISTS,
    4,
    'Choose another --to-database, or give --clean to drop the existing database first (its data is lost).',
  ),
  RestoreDumpFailed: spec(
    'PGF-6204',
    GrpcStatus.INTERNAL,
    1,
    'pg_restore failed (its message is quoted), or a dump file read from the repository did not match its checksum; the new database may be incomplete: drop it, check the dump with `pgfleet verify`, and retry.',
  ),
  DumpInvalid: spec(
    'PGF-6205',
    GrpcStatus.INVALID_ARGUMENT,
    2,
    '--jobs is 1 to 64, --lock-wait-timeout a duration (30s, 5m), --database/--to-database names, --table schema.name or a name, --schema a name.',
  ),
  // 623x-624x: dump drills and the dump spool (pgfleet drill --dump; docs/drills.md, docs/logical.md)
  DumpDrillCountsDiffer: spec(
    'PGF-6230',
    GrpcStatus.DATA_LOSS,
    1,
    'The dump restored, but the tables named in the message hold a different number of rows than pg_dump wrote for them when the dump was taken: the dump does not restore what it holds. Keep the dump, run `pgfleet verify` on the repository, and take a new dump; report the tables with the drill job id.',
  ),
  DumpSpoolFull: spec(
    'PGF-6231',
    GrpcStatus.RESOURCE_EXHAUSTED,
    4,
    "pg_dump wrote more into the agent's spool (under --scratch-dir) than --dump-spool-max allows; the dump was stopped and nothing of it kept. Raise --dump-spool-max (the compressed size of the largest database dumped), or point --scratch-dir at a larger file system.",
  ),
  DumpDrillFailed: spec(
    'PGF-6232',
    GrpcStatus.ABORTED,
    1,
    "The dump drill could not restore the dump into its throwaway PostgreSQL (initdb, the server start or pg_restore failed: the message quotes them). The scratch area was cleaned up; fix what the message names (the PostgreSQL binaries of the dump's major version on the agent, --pg-bin-dir, space under --scratch-dir) and run the drill again.",
  ),
  DumpDrillUnavailable: spec(
    'PGF-6233',
    GrpcStatus.FAILED_PRECONDITION,
    4,
    'This dump was taken before dumps recorded exact row counts, so a drill has nothing exact to compare with. Take a new dump (`pgfleet dump <cluster>`) and drill that one.',
  ),
  DumpFileNotWhole: spec(
    'PGF-6240',
    GrpcStatus.INTERNAL,
    1,
    "A table file of pg_dump's output did not end as whole COPY data when the agent took it as closed, so it was not stored while pg_dump ran: the agent stores it after pg_dump ends instead (nothing to do; a dump never fails with this). Seen only in the agent's debug log.",
  ),
  // 625x: restore-dump --globals (docs/logical.md, "Globals")
  RestoreDumpGlobalsFailed: spec(
    'PGF-6250',
    GrpcStatus.ABORTED,
    1,
    "A statement of the dump's globals (pg_dumpall --globals-only) failed on the target cluster; the message quotes it (passwords left out) with PostgreSQL's error, e.g. a tablespace whose directory does not exist on the target's host. Nothing of the database was restored; roles and tablespaces created before that statement stay (a new run skips them). Fix the cause (create the directory, or the tablespace yourself) and run restore-dump --globals again.",
  ),
  // 626x: dumps in the repository (leases, dumps whose agent died; docs/logical.md "Killed dumps")
  DumpLeaseLost: spec(
    'PGF-6260',
    GrpcStatus.UNAVAILABLE,
    5,
    "The dump could not keep its lease in the repository fresh (the write failed, or the agent was stalled long enough for the lease to go stale) and files it had stored were removed as a dead dump's, or may be; it stopped before its dump.json, so nothing of it is listed. Check that the repository is reachable and writable, then take the dump again.",
  ),
  // 7xxx: network and services
  ControllerUnreachable: spec(
    'PGF-7001',
    GrpcStatus.UNAVAILABLE,
    5,
    'Check --controller (host:port) and that `pgfleet-controller run` is up.',
  ),
  Timeout: spec(
    'PGF-7002',
    GrpcStatus.DEADLINE_EXCEEDED,
    5,
    'The operation took longer than allowed; retry or raise the timeout.',
  ),
  ControllerRestarted: spec(
    'PGF-7003',
    GrpcStatus.ABORTED,
    5,
    'The controller restarted while the job ran; its outcome is unknown, start the job again.',
  ),
  Cancelled: spec(
    'PGF-7004',
    GrpcStatus.CANCELLED,
    1,
    'The call was cancelled before it finished (interrupted, or the peer went away); retry if it is still needed.',
  ),
  EventPublishFailed: spec(
    'PGF-7005',
    GrpcStatus.UNAVAILABLE,
    5,
    'Check the NATS URL and that nats-server runs with JetStream enabled (-js); events wait in the catalog outbox and are published once NATS is reachable.',
  ),
  EventInvalid: spec(
    'PGF-7006',
    GrpcStatus.INVALID_ARGUMENT,
    6,
    'The message is not a pgfleet event in the encoding its pgfleet-encoding header names; see docs/events.md.',
  ),
  ConsoleListenFailed: spec(
    'PGF-7100',
    GrpcStatus.UNAVAILABLE,
    5,
    "The web console could not listen on --console-listen (the message says why, e.g. the port is taken): choose another host:port, or 'off'.",
  ),
  ConsoleNotBuilt: spec(
    'PGF-7101',
    GrpcStatus.FAILED_PRECONDITION,
    4,
    "The console's bundled files are missing from the controller's dist/console: build the controller (`npm run build`), or start with --console-listen off.",
  ),
  ConsoleUnknownCall: spec(
    'PGF-7102',
    GrpcStatus.NOT_FOUND,
    3,
    'The console API serves POST /api/<method> for the AdminService methods the console uses (docs/console.md); check the path.',
  ),
  // 8xxx: identity and access (agent certificates, admin tokens, enrollment)
  Unauthenticated: spec(
    'PGF-8001',
    GrpcStatus.UNAUTHENTICATED,
    7,
    "Admin calls need a bearer token (--token, PGFLEET_TOKEN or --token-file; create one with `pgfleet-controller token create`); agents need a certificate from this controller's CA (enroll with `pgfleet-agent run --tls-dir DIR --enroll-token TOKEN --ca-cert FILE`).",
  ),
  PermissionDenied: spec(
    'PGF-8002',
    GrpcStatus.PERMISSION_DENIED,
    7,
    "The token's role does not allow this call (viewer: read; operator: + backup, restore, retention apply, pin; admin: everything); use a token with a higher role.",
  ),
  EnrollmentFailed: spec(
    'PGF-8003',
    GrpcStatus.PERMISSION_DENIED,
    7,
    'Enrollment tokens are single-use and expire: issue a new one with `pgfleet-controller enroll-token <cluster>` and start the agent with it.',
  ),
  EncryptionKeyWrong: spec(
    'PGF-8010',
    GrpcStatus.PERMISSION_DENIED,
    7,
    "The encryption key given is not the cluster's (compare the key ids in the message): give the current key; after a rotate-key only the new key works, and an interrupted rotate-key is finished by running it again with both keys.",
  ),
  EncryptionKeyInvalid: spec(
    'PGF-8011',
    GrpcStatus.FAILED_PRECONDITION,
    2,
    'The encryption key could not be obtained: a key file must be a regular file of mode 0600 or stricter holding 32 bytes as base64 or 64 hex digits; a key command must exit 0 and print such a key.',
  ),
  ManifestUnauthenticated: spec(
    'PGF-8020',
    GrpcStatus.DATA_LOSS,
    6,
    "The manifest's authentication code does not match: it was changed, or copied from another backup or cluster, after the agent wrote it. Nothing was trusted from it; treat the repository as tampered with and restore another backup.",
  ),
  ManifestUnsigned: spec(
    'PGF-8021',
    GrpcStatus.FAILED_PRECONDITION,
    4,
    'The manifest carries no authentication code (written by a pgfleet before manifests were signed, or stripped). Check the repository, then sign the existing manifests once with `pgfleet-controller catalog sign-manifests --catalog URL --repo URL` (docs/security.md), or take a new full backup.',
  ),
  ManifestKeyMissing: spec(
    'PGF-8022',
    GrpcStatus.FAILED_PRECONDITION,
    4,
    "This process holds no manifest key for the cluster: the controller sends it with every job. Upgrade the controller to the agent's version, and check its --manifest-secret file.",
  ),
  AgentIdBound: spec(
    'PGF-8030',
    GrpcStatus.PERMISSION_DENIED,
    7,
    'Sent only by controllers from before agents were keyed by (cluster, agent id), where an agent id belonged to the first cluster it enrolled or connected for: upgrade the controller, or give the agent of this cluster its own --agent-id (and a new enrollment token). Kept so that such an answer is still understood.',
  ),
  JobNotOwned: spec(
    'PGF-8031',
    GrpcStatus.PERMISSION_DENIED,
    7,
    'An agent may only report on or cancel the jobs of its own cluster that were dispatched to it; the message was ignored. Look for a misconfigured or compromised agent host.',
  ),
  RepositoriesNotPinned: spec(
    'PGF-8032',
    GrpcStatus.PERMISSION_DENIED,
    7,
    "The agent writes only to the repositories of its own --repo/--repo2: configure the same repositories on the controller (--repo/--repo2), or remove them from the agent's configuration to let the controller decide.",
  ),
  WalUnauthenticated: spec(
    'PGF-8040',
    GrpcStatus.DATA_LOSS,
    6,
    'The archived WAL or timeline history object carries no authentication code, or one that does not match its cluster, name and checksum: it was planted, renamed or copied from another cluster, or archived by a pgfleet before WAL names were authenticated. It is never replayed. Run `pgfleet verify <cluster>`; for a repository archived before this check existed, sign its WAL once with `pgfleet-controller catalog sign-manifests` after checking it (docs/security.md).',
  ),
  WalKeyMissing: spec(
    'PGF-8041',
    GrpcStatus.FAILED_PRECONDITION,
    4,
    "This process holds no key to authenticate the cluster's archived WAL: the agent daemon receives it from the controller when it connects and keeps it in --cluster-key-file (default <pgdata>.pgfleet-cluster.key, beside the data directory); wal-push and wal-fetch read it from there. Start the agent once while the controller runs, and give wal-push the same --cluster-key-file as the daemon. PostgreSQL keeps the WAL and retries.",
  ),
  ClusterKeyFileInvalid: spec(
    'PGF-8042',
    GrpcStatus.FAILED_PRECONDITION,
    2,
    "The cluster key file must be a regular file of mode 0600 or stricter, owned by the agent's user, holding 64 hex digits; delete it and start the agent daemon once while the controller runs to write it again.",
  ),
  EncryptionPreviousKeyMissing: spec(
    'PGF-8050',
    GrpcStatus.FAILED_PRECONDITION,
    4,
    "`pgfleet repo rotate-key` rotates from the agent's previous key to its current one: put the new key in the agent's --encryption-key-file (or -command), the old one in --previous-encryption-key-file (or -command), restart the agent, then run it again (docs/security.md, Rotating the key).",
  ),
  EncryptionPreviousKeyWrong: spec(
    'PGF-8051',
    GrpcStatus.FAILED_PRECONDITION,
    4,
    "Neither the agent's previous key nor its current one is the key the cluster's repository is encrypted with (compare the key ids in the message): give the agent the repository's key as --previous-encryption-key-file (or -command) and restart it.",
  ),
  // 9xxx: bugs
  Internal: spec('PGF-9001', GrpcStatus.INTERNAL, 1, 'This is a bug in pgfleet; please report it with the log.'),
} as const;

export type ErrorName = keyof typeof ErrorCodes;

const byCode = new Map<string, ErrorName>(
  (Object.keys(ErrorCodes) as ErrorName[]).map((name) => [ErrorCodes[name].code, name]),
);

/** The one error class for user-facing failures. `cause` keeps the underlying error for logs. */
export class PgfleetError extends Error {
  readonly errorName: ErrorName;
  readonly code: string;
  readonly hint: string;

  constructor(name: ErrorName, message: string, options?: { cause?: unknown; hint?: string }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'PgfleetError';
    this.errorName = name;
    this.code = ErrorCodes[name].code;
    this.hint = options?.hint ?? ErrorCodes[name].hint;
  }

  get grpcStatus(): GrpcStatusCode {
    return ErrorCodes[this.errorName].grpc;
  }

  get exitCode(): number {
    return ErrorCodes[this.errorName].exit;
  }

  /** "PGF-4002 wal file ... is empty" followed by the hint on its own line. */
  format(): string {
    return `${this.code} ${this.message}${this.hint ? `\n  hint: ${this.hint}` : ''}`;
  }

  /** Rebuilds an error received over the wire (code + message + hint). Unknown codes become Internal. */
  static fromCode(code: string, message: string, hint?: string): PgfleetError {
    const name = byCode.get(code) ?? 'Internal';
    return new PgfleetError(name, message, hint ? { hint } : undefined);
  }

  static is(err: unknown, name?: ErrorName): err is PgfleetError {
    return err instanceof PgfleetError && (name === undefined || err.errorName === name);
  }
}

/**
 * Wraps anything thrown into a PgfleetError (unexpected errors become Internal with the cause kept;
 * see systemErrorName). `context` says what was being done, before the underlying message.
 */
export function asPgfleetError(err: unknown, context?: string): PgfleetError {
  if (err instanceof PgfleetError) return err;
  const raw = err instanceof Error ? err.message : String(err);
  const message = context ? `${context}: ${raw}` : raw;
  const system = systemErrorName((err as { code?: unknown } | undefined)?.code);
  return new PgfleetError(system ?? 'Internal', message, { cause: err });
}

/**
 * Node's system errors that are the machine's state, not a bug: a path the user may not write,
 * a full disk, a read-only mount. Each gets its own code and hint instead of "a bug in pgfleet".
 */
function systemErrorName(code: unknown): ErrorName | undefined {
  switch (code) {
    case 'EACCES':
    case 'EPERM':
      return 'FilePermissionDenied';
    case 'ENOSPC':
    case 'EDQUOT':
      return 'DiskFull';
    case 'EROFS':
      return 'ReadOnlyFileSystem';
    default:
      return undefined;
  }
}

/**
 * How every pgfleet binary ends: the command's exit code, or for a failure its PGF code, message
 * and hint on stderr and the registry's exit code. A stack trace is printed only for errors that
 * are not PgfleetErrors (bugs), never for user-facing conditions.
 */
export function exitWith(run: Promise<number>, prefix = ''): void {
  run.then(
    (code) => {
      process.exitCode = code;
    },
    (err: unknown) => {
      const e = asPgfleetError(err);
      // A URL with a password in a message (a catalog, a NATS server) is shown without it.
      process.stderr.write(`${prefix}${redactCredentials(e.format())}\n`);
      if (!(err instanceof PgfleetError))
        process.stderr.write(`${redactCredentials((err as Error)?.stack ?? String(err))}\n`);
      process.exitCode = e.exitCode;
    },
  );
}
