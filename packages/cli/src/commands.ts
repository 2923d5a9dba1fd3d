/**
 * The CLI's commands: each validates its arguments locally, makes one or two AdminService calls
 * and renders the answer as a table or JSON. Output goes to stdout; progress of --wait goes to
 * stderr so `--output json` stays parseable. The controller's errors arrive as PgfleetError
 * (rpc maps them), so a failed call prints the same code the controller chose.
 */
import { isAbsolute } from 'node:path/posix';
import { toJson, type DescMessage, type MessageShape } from '@bufbuild/protobuf';
import { timestampMs, type Timestamp } from '@bufbuild/protobuf/wkt';
import { PgfleetError, type OptionValues, type ParsedCommand } from '@pgfleet/core';
import { createClient, type Client } from '@pgfleet/rpc';
import {
  AdminService,
  BackupInfoSchema,
  BackupType,
  ClusterInfoSchema,
  JobInfoSchema,
  JobState,
  type BackupInfo,
  type JobInfo,
} from '@pgfleet/proto';
import { formatBytes, formatProgress, formatTable, formatTime } from './format.js';
import { recoveryTargetFromOptions } from './target.js';
import { describeExpire, pinCommand, policyCommand, retentionCommand } from './policy-commands.js';

export type Admin = Client<typeof AdminService> & { close(): void };

const JSON_OPTIONS = { alwaysEmitImplicit: true } as const;

export const out = (text: string): void => {
  process.stdout.write(`${text}\n`);
};
const err = (text: string): void => {
  process.stderr.write(`${text}\n`);
};

export function printJson<D extends DescMessage>(schema: D, msg: MessageShape<D> | readonly MessageShape<D>[]): void {
  const value = Array.isArray(msg) ? msg.map((m) => toJson(schema, m, JSON_OPTIONS)) : toJson(schema, msg as MessageShape<D>, JSON_OPTIONS);
  out(JSON.stringify(value, null, 2));
}

const ms = (t: Timestamp | undefined): number | undefined => (t ? timestampMs(t) : undefined);
const stateName = (s: JobState): string => (JobState[s] ?? String(s)).toLowerCase();
const typeName = (t: BackupType): string => (t === BackupType.UNSPECIFIED ? '-' : (BackupType[t] ?? String(t)).toLowerCase());
const TYPES: Record<string, BackupType> = { full: BackupType.FULL, diff: BackupType.DIFF, incr: BackupType.INCR };

function connect(options: OptionValues): Admin {
  const address = String(options.controller);
  return createClient(AdminService, address, { defaultDeadlineMs: Number(options.timeout) * 1000, unavailableError: 'ControllerUnreachable' });
}

export async function runCommand(parsed: ParsedCommand): Promise<number> {
  const { options, positionals } = parsed;
  const json = options.output === 'json';
  // Local validation first: a bad flag fails before any connection attempt.
  const restoreRequest = parsed.command.name === 'restore' ? restoreRequestFromOptions(positionals[0]!, options) : undefined;
  const admin = connect(options);
  try {
    switch (parsed.command.name) {
      case 'clusters':
        return await clusters(admin, json);
      case 'backups':
        return await backups(admin, positionals[0]!, json);
      case 'backup':
        return await startJob(admin, json, options.wait === true, async () =>
          (await admin.startBackup({ cluster: positionals[0]!, type: TYPES[String(options.type)] ?? BackupType.FULL })).job!);
      case 'restore':
        return await startJob(admin, json, options.wait === true, async () => (await admin.startRestore(restoreRequest!)).job!);
      case 'jobs':
        return await jobs(admin, json, options);
      case 'job':
        return await showJob(admin, positionals[0]!, json);
      case 'policy':
        return await policyCommand(admin, positionals, options, json);
      case 'retention':
        return await retentionCommand(admin, positionals, options, json);
      case 'pin':
        return await pinCommand(admin, positionals, options, json);
      default:
        throw new PgfleetError('UnknownCommand', `unknown command '${parsed.command.name}'`);
    }
  } finally {
    admin.close();
  }
}

function restoreRequestFromOptions(cluster: string, options: OptionValues) {
  const to = options.to === undefined ? '' : String(options.to);
  if (to === '') throw new PgfleetError('InvalidArgument', 'restore needs --to DIR: the directory to restore into');
  // The path is on the restoring agent's host, so resolving it against this shell's cwd would be wrong.
  if (!isAbsolute(to)) throw new PgfleetError('InvalidArgument', `--to '${to}' is not an absolute path (it names a directory on the agent's host)`);
  return {
    cluster,
    targetDir: to,
    target: recoveryTargetFromOptions(options),
    backupLabel: options.backup === undefined ? '' : String(options.backup),
    agentId: options.agent === undefined ? '' : String(options.agent),
    delta: options.delta === true,
  };
}

async function clusters(admin: Admin, json: boolean): Promise<number> {
  const { clusters } = await admin.listClusters({});
  if (json) {
    printJson(ClusterInfoSchema, clusters);
    return 0;
  }
  out(formatTable(
    ['CLUSTER', 'PG', 'AGENT', 'CONNECTED', 'LAST SEEN', 'LAST BACKUP', 'BACKUP END', 'LAST ARCHIVED WAL', 'ARCHIVE FAILURES'],
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
  ));
  return 0;
}

async function backups(admin: Admin, cluster: string, json: boolean): Promise<number> {
  const { backups } = await admin.listBackups({ cluster });
  if (json) {
    printJson(BackupInfoSchema, backups);
    return 0;
  }
  out(formatTable(
    ['LABEL', 'TYPE', 'PRIOR', 'START', 'STOP', 'START LSN', 'STOP LSN', 'TL', 'SIZE', 'STORED', 'FILES'],
    backups.map((b) => [
      b.label,
      typeName(b.type),
      b.priorLabel || '-',
      formatTime(ms(b.startTime)),
      formatTime(ms(b.stopTime)),
      b.startLsn,
      b.stopLsn,
      String(b.timeline),
      formatBytes(b.sizeBytes),
      formatBytes(b.storedBytes),
      String(b.fileCount),
    ]),
  ));
  return 0;
}

async function jobs(admin: Admin, json: boolean, options: OptionValues): Promise<number> {
  const { jobs } = await admin.listJobs({ cluster: options.cluster === undefined ? '' : String(options.cluster), limit: Number(options.limit) });
  if (json) {
    printJson(JobInfoSchema, jobs);
    return 0;
  }
  out(formatTable(
    ['ID', 'KIND', 'CLUSTER', 'STATE', 'AGENT', 'CREATED', 'FINISHED', 'ERROR'],
    jobs.map((j) => [j.id, j.kind, j.cluster, stateName(j.state), j.agentId, formatTime(ms(j.createdAt)), formatTime(ms(j.finishedAt)), j.error ? `${j.error.code} ${j.error.message}` : '']),
  ));
  return 0;
}

async function showJob(admin: Admin, id: string, json: boolean): Promise<number> {
  const { job } = await admin.getJob({ id });
  if (json) printJson(JobInfoSchema, job!);
  else out(describeJob(job!));
  return 0;
}

function describeJob(j: JobInfo): string {
  const rows: [string, string][] = [
    ['id', j.id],
    ['kind', j.kind],
    ['cluster', j.cluster],
    ['state', stateName(j.state)],
    ['agent', j.agentId],
    ['created', formatTime(ms(j.createdAt))],
    ['started', formatTime(ms(j.startedAt))],
    ['finished', formatTime(ms(j.finishedAt))],
  ];
  if (j.progress) rows.push(['progress', formatProgress(j.kind, j.progress)]);
  if (j.error) rows.push(['error', `${j.error.code} ${j.error.message}`]);
  const lines = rows.map(([k, v]) => `${`${k}:`.padEnd(10)} ${v}`);
  if (j.backup) lines.push(describeBackup(j.backup));
  if (j.restore) lines.push(`restored backup ${j.restore.backupLabel} into ${j.restore.targetDir} (${formatBytes(j.restore.bytes)}, ${j.restore.fileCount} files)`);
  if (j.expire) lines.push(describeExpire(j.expire));
  return lines.join('\n');
}

function describeBackup(b: BackupInfo): string {
  return [
    `backup ${b.label} (${typeName(b.type)}${b.priorLabel ? ` on ${b.priorLabel}` : ''}) of cluster ${b.cluster}`,
    `  LSN ${b.startLsn} .. ${b.stopLsn} on timeline ${b.timeline}, WAL ${b.walStart} .. ${b.walStop}`,
    `  ${formatTime(ms(b.startTime))} .. ${formatTime(ms(b.stopTime))}`,
    `  size ${formatBytes(b.sizeBytes)}, stored ${formatBytes(b.storedBytes)}, ${b.fileCount} files`,
  ].join('\n');
}

/** Starts a job and either reports it (without --wait) or follows it to its end. */
export async function startJob(admin: Admin, json: boolean, wait: boolean, start: () => Promise<JobInfo>): Promise<number> {
  const job = await start();
  if (!wait) {
    if (json) printJson(JobInfoSchema, job);
    else out(`${job.kind} job ${job.id} ${stateName(job.state)} to agent ${job.agentId}\nfollow it with: pgfleet job ${job.id}`);
    return 0;
  }
  err(`${job.kind} job ${job.id} ${stateName(job.state)} to agent ${job.agentId}`);
  const final = await follow(admin, job);
  if (json) printJson(JobInfoSchema, final);
  else if (final.kind === 'restore' && final.restore) {
    const r = final.restore;
    out(`restored backup ${r.backupLabel} into ${r.targetDir} (${formatBytes(r.bytes)}, ${r.fileCount} files)`);
    out('start PostgreSQL on it to recover to the target');
  } else if (final.backup) out(describeBackup(final.backup));
  else if (final.expire) out(describeExpire(final.expire));
  else out(`${final.kind} job ${final.id} succeeded`);
  return 0;
}

/**
 * Follows WatchJob to the job's end. Ctrl-C stops following, not the job. A failed or cancelled
 * job throws its own error code so the exit status says what went wrong.
 */
async function follow(admin: Admin, job: JobInfo): Promise<JobInfo> {
  const stop = new AbortController();
  const onSigint = (): void => stop.abort();
  process.once('SIGINT', onSigint);
  let last = job;
  let lastLine = '';
  try {
    for await (const { job: update } of admin.watchJob({ id: job.id }, { signal: stop.signal })) {
      if (!update) continue;
      last = update;
      if (update.progress && update.state === JobState.RUNNING) {
        const line = formatProgress(update.kind, update.progress);
        if (line !== lastLine) err(line);
        lastLine = line;
      }
    }
  } catch (e) {
    if (stop.signal.aborted) {
      throw new PgfleetError('Cancelled', `stopped following job ${job.id}; it continues on agent ${job.agentId}`, { hint: `Follow it again with: pgfleet job ${job.id}` });
    }
    throw e;
  } finally {
    process.off('SIGINT', onSigint);
  }
  switch (last.state) {
    case JobState.SUCCEEDED:
      return last;
    case JobState.FAILED:
    case JobState.CANCELLED: {
      const code = last.error?.code || (last.state === JobState.CANCELLED ? 'PGF-2007' : 'PGF-2005');
      const e = PgfleetError.fromCode(code, `${last.kind} job ${last.id} ${stateName(last.state)}: ${last.error?.message || 'no reason given'}`, last.error?.hint || undefined);
      throw e;
    }
    default:
      throw new PgfleetError('ControllerUnreachable', `lost the controller while following job ${last.id} (last state ${stateName(last.state)}); the job may still run`, {
        hint: `Check it with: pgfleet job ${last.id}`,
      });
  }
}
