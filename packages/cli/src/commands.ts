/**
 * The CLI's commands: each validates its arguments locally, makes one or two AdminService calls
 * and renders the answer as a table or JSON. Output goes to stdout; progress of --wait goes to
 * stderr so `--output json` stays parseable. The controller's errors arrive as PgfleetError
 * (rpc maps them), so a failed call prints the same code the controller chose.
 */
import { readFileSync } from 'node:fs';
import { isAbsolute } from 'node:path/posix';
import {
  PgfleetError,
  pickOptions,
  settingsOf,
  type OptionValues,
  type ParsedCommand,
  type Settings,
} from '@pgfleet/core';
import { bearerMetadata, clientTlsCredentials, createClient, insecureCredentials } from '@pgfleet/rpc/client';
import {
  AdminService,
  BackupInfoSchema,
  BackupSource,
  backupResumeToProto,
  backupTypeToProto,
  ClusterInfoSchema,
  JobInfoSchema,
  JobState,
  RestoreArchive,
} from '@pgfleet/proto';
import { formatBytes, formatTable, formatTime } from './format.js';
import {
  backupSpanCells,
  describeJob,
  err,
  follow,
  followAndPrint,
  listAllBackups,
  listAllClusters,
  ms,
  out,
  printJson,
  startJob,
  stateName,
  typeName,
  type Admin,
} from './output.js';
import { pinCommand, policyCommand, retentionCommand } from './policy-commands.js';
import { recoveryTargetFromOptions } from './target.js';
import { eventsCommand } from './events-command.js';
import { verifyCommand } from './verify-command.js';
import { checkCommand, checkTimeoutSeconds } from './check-command.js';
import { cliProgram, cliSettings } from './program.js';
import { drillCommand, drillsCommand, drillTargetFromOptions } from './drill-command.js';
import { statusCommand } from './status-command.js';
import { recoverTableCommand, recoverTableRequestFromOptions } from './recover-table-command.js';
import {
  backupDeleteCommand,
  infoCommand,
  isBackupDelete,
  restorePointsCommand,
  restorePointsSince,
  repoCommand,
} from './repository-commands.js';
import { applyCommand, fleetFileFromOptions } from './apply-command.js';
import { enrollTokenCommand, enrollTtlSeconds, tokenCommand } from './token-commands.js';
import { walCommand, walSearchFromOptions } from './wal-search-command.js';
import {
  dumpCommand,
  dumpFromOptions,
  dumpsCommand,
  restoreDumpCommand,
  restoreDumpFromOptions,
} from './dump-command.js';

const BACKUP_SOURCES = {
  primary: BackupSource.PRIMARY,
  standby: BackupSource.STANDBY,
  'prefer-standby': BackupSource.PREFER_STANDBY,
} as const;

/** The options every command shares: how to reach the controller and how to print. */
const CONNECTION_OPTIONS = pickOptions(cliProgram.options, [
  'controller',
  'token',
  'ca-cert',
  'insecure',
  'timeout',
  'output',
]);
type ConnectionSettings = Settings<(typeof CONNECTION_OPTIONS)[number]>;

function readOptionFile(option: string, path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (err) {
    throw new PgfleetError('InvalidConfig', `--${option} ${path}: ${(err as Error).message}`, { cause: err });
  }
}

/**
 * The connection settings of a command line. Each controller call may take --timeout seconds,
 * unless the command's own --timeout means something else (check: how long its WAL proof
 * waits); then the table's default.
 */
function connectionSettings(parsed: ParsedCommand): ConnectionSettings {
  const ownTimeout = parsed.command.localOptions?.some((o) => o.name === 'timeout') === true;
  return settingsOf(CONNECTION_OPTIONS, ownTimeout ? { ...parsed.options, timeout: undefined } : parsed.options);
}

/** The largest controller response the CLI accepts (gRPC's default is 4 MiB). */
const MAX_RESPONSE_BYTES = 32 * 1024 * 1024;

function connect(settings: ConnectionSettings): Admin {
  return createClient(AdminService, settings.controller, {
    defaultDeadlineMs: settings.timeout * 1000,
    unavailableError: 'ControllerUnreachable',
    // Listings come in pages well under gRPC's 4 MiB default (admin/paging.ts); the larger
    // limit only keeps a response that grows past it anyway (a cluster with very many hosts
    // or dumps) from failing.
    channelOptions: { 'grpc.max_receive_message_length': MAX_RESPONSE_BYTES },
    credentials: settings.caCert
      ? clientTlsCredentials({ caPem: readOptionFile('ca-cert', settings.caCert) })
      : insecureCredentials(settings.insecure, 'pgfleet', settings.controller),
    ...(settings.token ? { metadata: bearerMetadata(settings.token) } : {}),
  });
}

export async function runCommand(parsed: ParsedCommand): Promise<number> {
  const { options, positionals } = parsed;
  const connection = connectionSettings(parsed);
  const json = connection.output === 'json';
  // Local validation first: a bad flag fails before any connection attempt.
  const restoreRequest =
    parsed.command.name === 'restore' ? restoreRequestFromOptions(positionals[0]!, options) : undefined;
  if (parsed.command.name === 'drill') drillTargetFromOptions(options);
  const recoverTableRequest =
    parsed.command.name === 'recover-table' ? recoverTableRequestFromOptions(positionals[0]!, options) : undefined;
  const fleetFile = parsed.command.name === 'apply' ? fleetFileFromOptions(options) : undefined;
  const ttlSeconds = parsed.command.name === 'enroll-token' ? enrollTtlSeconds(options) : 0;
  const checkTimeout = parsed.command.name === 'check' ? checkTimeoutSeconds(options) : 0;
  const backupDelete = parsed.command.name === 'backup' && isBackupDelete(positionals);
  const since = parsed.command.name === 'restore-points' ? restorePointsSince(options) : undefined;
  const walSearch = parsed.command.name === 'wal' ? walSearchFromOptions(options) : undefined;
  const dump = parsed.command.name === 'dump' ? dumpFromOptions(options) : undefined;
  const restoreDump =
    parsed.command.name === 'restore-dump' ? restoreDumpFromOptions(positionals[0]!, options) : undefined;
  const admin = connect(connection);
  try {
    switch (parsed.command.name) {
      case 'status':
        return await statusCommand(admin, cliSettings('status', options).cluster, json);
      case 'clusters':
        return await clusters(admin, json);
      case 'backups':
        return await backups(admin, positionals[0]!, json);
      case 'backup': {
        if (backupDelete) return await backupDeleteCommand(admin, positionals[1]!, positionals[2]!, options, json);
        const backup = cliSettings('backup', options);
        if (backup.resume && backup.noResume)
          throw new PgfleetError('InvalidArgument', '--resume and --no-resume contradict each other: give one');
        return await startJob(
          admin,
          json,
          backup.wait,
          async () =>
            (
              await admin.startBackup({
                cluster: positionals[0]!,
                type: backupTypeToProto(backup.type),
                from: backup.from === undefined ? BackupSource.UNSPECIFIED : BACKUP_SOURCES[backup.from],
                resume: backupResumeToProto(backup.resume ? 'required' : backup.noResume ? 'fresh' : undefined),
              })
            ).job!,
        );
      }
      case 'restore':
        return await startJob(
          admin,
          json,
          cliSettings('restore', options).wait,
          async () => (await admin.startRestore(restoreRequest!)).job!,
        );
      case 'jobs':
        return await jobs(admin, json, options);
      case 'job':
        return await showJob(admin, positionals[0]!, json, cliSettings('job', options).wait);
      case 'cancel':
        return await cancelJob(admin, positionals[0]!, cliSettings('cancel', options).wait, json);
      case 'policy':
        return await policyCommand(admin, positionals, options, json);
      case 'retention':
        return await retentionCommand(admin, positionals, options, json);
      case 'pin':
        return await pinCommand(admin, positionals, options, json);
      case 'events':
        return await eventsCommand(admin, options, json);
      case 'verify':
        return await verifyCommand(admin, positionals[0]!, options, json);
      case 'check':
        return await checkCommand(admin, positionals[0]!, checkTimeout, json);
      case 'drill':
        return await drillCommand(admin, positionals[0]!, options, json);
      case 'drills':
        return await drillsCommand(admin, positionals[0], options, json);
      case 'apply':
        return await applyCommand(admin, fleetFile!, options, json);
      case 'token':
        return await tokenCommand(admin, positionals, options, json);
      case 'info':
        return await infoCommand(admin, positionals[0], json);
      case 'restore-points':
        return await restorePointsCommand(admin, positionals[0]!, since, json);
      case 'repo':
        return await repoCommand(admin, positionals, cliSettings('repo', options).wait, json);
      case 'recover-table':
        return await recoverTableCommand(admin, recoverTableRequest!, options, json);
      case 'wal':
        return await walCommand(admin, positionals, walSearch!, json);
      case 'dump':
        return await dumpCommand(admin, positionals[0]!, dump!, options, json);
      case 'dumps':
        return await dumpsCommand(admin, positionals[0]!, json);
      case 'restore-dump':
        return await restoreDumpCommand(admin, restoreDump!, options, json);
      case 'enroll-token':
        return await enrollTokenCommand(admin, positionals[0]!, ttlSeconds, json);
      default:
        throw new PgfleetError('UnknownCommand', `unknown command '${parsed.command.name}'`);
    }
  } finally {
    admin.close();
  }
}

function restoreRequestFromOptions(cluster: string, options: OptionValues) {
  const settings = cliSettings('restore', options);
  const to = settings.to ?? '';
  if (to === '') throw new PgfleetError('InvalidArgument', 'restore needs --to DIR: the directory to restore into');
  // The path is on the restoring agent's host, so resolving it against this shell's cwd would be wrong.
  if (!isAbsolute(to))
    throw new PgfleetError(
      'InvalidArgument',
      `--to '${to}' is not an absolute path (it names a directory on the agent's host)`,
    );
  const tablespaceDir = settings.tablespaceDir ?? '';
  if (tablespaceDir !== '' && !isAbsolute(tablespaceDir))
    throw new PgfleetError(
      'InvalidArgument',
      `--tablespace-dir '${tablespaceDir}' is not an absolute path (it names a directory on the agent's host)`,
    );
  return {
    cluster,
    targetDir: to,
    target: recoveryTargetFromOptions(options),
    backupLabel: settings.backup ?? '',
    agentId: settings.agent ?? '',
    delta: settings.delta,
    tablespaceDir,
    targetTimeline: settings.targetTimeline ?? 0,
    archive:
      settings.archive === 'preserve'
        ? RestoreArchive.PRESERVE
        : settings.archive === 'off'
          ? RestoreArchive.OFF
          : RestoreArchive.UNSPECIFIED,
  };
}

async function clusters(admin: Admin, json: boolean): Promise<number> {
  const clusters = await listAllClusters(admin);
  if (json) {
    printJson(ClusterInfoSchema, clusters);
    return 0;
  }
  out(
    formatTable(
      [
        'CLUSTER',
        'PG',
        'AGENT',
        'CONNECTED',
        'LAST SEEN',
        'LAST BACKUP',
        'BACKUP END',
        'LAST ARCHIVED WAL',
        'ARCHIVE FAILURES',
      ],
      clusters.map((c) => [
        c.name,
        c.pgVersion ? String(c.pgVersion) : '-',
        c.agentId || '-',
        c.agentConnected ? 'yes' : 'no',
        formatTime(ms(c.lastSeen)),
        c.lastBackup?.label || '-',
        formatTime(ms(c.lastBackup?.stopTime)),
        c.archiver?.lastArchivedWal || '-',
        c.archiver ? String(c.archiver.failedCount) : '-',
      ]),
    ),
  );
  return 0;
}

async function backups(admin: Admin, cluster: string, json: boolean): Promise<number> {
  const backups = await listAllBackups(admin, cluster);
  if (json) {
    printJson(BackupInfoSchema, backups);
    return 0;
  }
  out(
    formatTable(
      ['LABEL', 'TYPE', 'PRIOR', 'START', 'STOP', 'START LSN', 'STOP LSN', 'TL', 'SIZE', 'STORED', 'FILES', 'PINNED'],
      backups.map((b) => [
        b.label,
        typeName(b.type),
        b.priorLabel || '-',
        ...backupSpanCells(b),
        formatBytes(b.sizeBytes),
        formatBytes(b.storedBytes),
        String(b.fileCount),
        b.pinned ? 'yes' : '',
      ]),
    ),
  );
  return 0;
}

async function jobs(admin: Admin, json: boolean, options: OptionValues): Promise<number> {
  const settings = cliSettings('jobs', options);
  const { jobs } = await admin.listJobs({ cluster: settings.cluster ?? '', limit: settings.limit });
  if (json) {
    printJson(JobInfoSchema, jobs);
    return 0;
  }
  out(
    formatTable(
      ['ID', 'KIND', 'CLUSTER', 'STATE', 'AGENT', 'CREATED', 'FINISHED', 'ERROR'],
      jobs.map((j) => [
        j.id,
        j.kind,
        j.cluster,
        stateName(j.state),
        j.agentId,
        formatTime(ms(j.createdAt)),
        formatTime(ms(j.finishedAt)),
        j.error ? `${j.error.code} ${j.error.message}` : '',
      ]),
    ),
  );
  return 0;
}

/** Asks for the cancel; with --wait follows the job until it ends (exit 0 only if it ended cancelled). */
async function cancelJob(admin: Admin, id: string, wait: boolean, json: boolean): Promise<number> {
  const { job } = await admin.cancelJob({ id });
  let last = job!;
  if (wait && last.state !== JobState.CANCELLED) {
    err(`cancel sent to agent ${last.agentId}; waiting for job ${id} to stop`);
    try {
      last = await follow(admin, last);
    } catch (e) {
      // follow() reports a cancelled (or failed) job as an error: a cancelled one is what was asked.
      last = (await admin.getJob({ id })).job ?? last;
      if (last.state !== JobState.CANCELLED) throw e;
    }
  }
  if (json) printJson(JobInfoSchema, last);
  else
    out(
      last.state === JobState.CANCELLED
        ? `job ${id} cancelled`
        : `job ${id} ${stateName(last.state)}${wait ? '' : `: cancel sent to agent ${last.agentId} (follow it with: pgfleet job ${id})`}`,
    );
  if (wait && last.state !== JobState.CANCELLED) {
    throw new PgfleetError('JobStateConflict', `job ${id} ended ${stateName(last.state)} before the cancel reached it`);
  }
  return 0;
}

async function showJob(admin: Admin, id: string, json: boolean, wait: boolean): Promise<number> {
  const { job } = await admin.getJob({ id });
  if (wait) {
    // Follows even a job that already ended: WatchJob answers with its final state at once.
    await followAndPrint(admin, job!, json, describeJob);
    return 0;
  }
  if (json) printJson(JobInfoSchema, job!);
  else out(describeJob(job!));
  return 0;
}
