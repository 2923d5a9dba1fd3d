/**
 * The commands that look at or change what a cluster's repository holds, as a pgBackRest user
 * reaches for them: `pgfleet backup delete <cluster> <label> [--with-dependents]`, `pgfleet info
 * [<cluster>]`, `pgfleet restore-points <cluster> [--since T]` and `pgfleet repo rotate-key
 * <cluster> [--wait]`. Each starts a job on the
 * cluster's agent (which reads the repository) and waits for it; --output json prints the job's
 * result message (RepositoryInfo, RestorePointList) or, for delete, the job.
 */
import { PgfleetError, type OptionValues } from '@pgfleet/core';
import {
  JobInfoSchema,
  RepositoryInfoSchema,
  RestorePointListSchema,
  type JobInfo,
  type RepositoryInfo,
  type RestorePointList,
} from '@pgfleet/proto';
import { timestampFromDate } from '@bufbuild/protobuf/wkt';
import { formatBytes, formatTable, formatTime } from './format.js';
import {
  backupSpanCells,
  describeExpire,
  err,
  follow,
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
import { cliSettings } from './program.js';
import { parsedTimeToDate, parseTargetTime } from './target.js';

/** Whether `pgfleet backup` was called as `backup delete <cluster> <label>`. */
export function isBackupDelete(positionals: readonly string[]): boolean {
  if (positionals.length <= 1) return false;
  if (positionals[0] === 'delete' && positionals.length === 3) return true;
  throw new PgfleetError(
    'InvalidArgument',
    `pgfleet backup takes a cluster (backup <cluster>) or delete, a cluster and a label (backup delete <cluster> <label>); got '${positionals.join(' ')}'`,
  );
}

export async function backupDeleteCommand(
  admin: Admin,
  cluster: string,
  label: string,
  options: OptionValues,
  json: boolean,
): Promise<number> {
  const { withDependents } = cliSettings('backup', options);
  const { job, labels } = await admin.deleteBackup({ cluster, label, withDependents });
  err(
    `deleting ${labels.join(', ')} of cluster ${cluster}: expire job ${job!.id} ${stateName(job!.state)} to agent ${job!.agentId}`,
  );
  const final = await follow(admin, job!);
  if (json) printJson(JobInfoSchema, final);
  else if (final.expire) out(describeExpire(final.expire));
  // A backup that a backup in progress leased after the job's first check keeps its manifest (and is reported skipped).
  const kept = final.expire?.skippedLabels ?? [];
  if (kept.length > 0)
    throw new PgfleetError(
      'BackupHeld',
      `backup ${kept.join(', ')} of cluster ${cluster} was not deleted: a backup in progress references it`,
    );
  return 0;
}

/** Starts the job, waits for it and returns it (a failed one throws its own code). */
async function runToEnd(admin: Admin, start: Promise<{ job?: JobInfo }>): Promise<JobInfo> {
  const { job } = await start;
  err(`${job!.kind} job ${job!.id} ${stateName(job!.state)} to agent ${job!.agentId}`);
  return follow(admin, job!);
}

export async function infoCommand(admin: Admin, cluster: string | undefined, json: boolean): Promise<number> {
  const clusters = cluster ? [cluster] : (await listAllClusters(admin)).map((c) => c.name);
  const infos: RepositoryInfo[] = [];
  let failure: unknown;
  for (const name of clusters) {
    try {
      const job = await runToEnd(admin, admin.startInfo({ cluster: name }));
      if (!job.info) throw new PgfleetError('Internal', `info job ${job.id} succeeded without a result`);
      infos.push(job.info);
      if (!json) {
        // The catalog adds what the repository does not know: which backups are pinned.
        const pinned = new Set((await listAllBackups(admin, name)).filter((b) => b.pinned).map((b) => b.label));
        out(describeInfo(job.info, pinned));
      }
    } catch (e) {
      // One cluster without a connected agent must not hide the others.
      if (cluster) throw e;
      err(`cluster ${name}: ${e instanceof Error ? e.message : String(e)}`);
      failure ??= e;
    }
  }
  if (json) printJson(RepositoryInfoSchema, cluster ? infos[0]! : infos);
  if (failure) throw failure;
  return 0;
}

/** Backups, then WAL per timeline, then totals. */
export function describeInfo(info: RepositoryInfo, pinned: ReadonlySet<string> = new Set()): string {
  const lines = [`cluster ${info.cluster} (repository ${info.location})`];
  if (info.backups.length === 0) lines.push('no backups');
  else
    lines.push(
      formatTable(
        [
          'LABEL',
          'TYPE',
          'DEPENDS ON',
          'START',
          'STOP',
          'START LSN',
          'STOP LSN',
          'TL',
          'SIZE',
          'OWN',
          'STORED',
          'CODEC',
          'PINNED',
        ],
        info.backups.map((r) => {
          const b = r.backup!;
          return [
            b.label,
            typeName(b.type),
            r.dependsOn.join(' <- ') || '-',
            ...backupSpanCells(b),
            formatBytes(b.sizeBytes),
            formatBytes(r.ownSizeBytes),
            formatBytes(b.storedBytes),
            r.codec ? `${r.codec}${r.compressLevel ? `:${r.compressLevel}` : ''}` : '-',
            pinned.has(b.label) ? 'yes' : '',
          ];
        }),
      ),
    );
  lines.push('');
  if (info.wal.length === 0) lines.push('no archived WAL');
  else
    lines.push(
      formatTable(
        ['TL', 'OLDEST WAL', 'NEWEST WAL', 'SEGMENTS', 'STORED', 'HISTORY'],
        info.wal.map((t) => [
          String(t.timeline),
          t.oldestSegment || '-',
          t.newestSegment || '-',
          String(t.segments),
          formatBytes(t.storedBytes),
          t.history ? 'yes' : t.timeline === 1 ? '-' : 'MISSING',
        ]),
      ),
    );
  if (info.unauthenticatedWalFiles > 0n)
    lines.push(
      `${info.unauthenticatedWalFiles} archived WAL object(s) without a valid MAC are not counted and never restored from (pgfleet verify names them)`,
    );
  lines.push(
    '',
    `total: ${info.backups.length} backup(s), ${formatBytes(info.backupStoredBytes)} stored for ${formatBytes(info.backupOwnSizeBytes)} of data; WAL ${formatBytes(info.walStoredBytes)} stored in ${info.wal.reduce((n, t) => n + t.segments, 0n)} segment(s)`,
  );
  return lines.join('\n');
}

/** --since as a time, by --target-time's rules (checked before any call). */
export function restorePointsSince(options: OptionValues): Date | undefined {
  const { since } = cliSettings('restore-points', options);
  return since === undefined ? undefined : parsedTimeToDate(parseTargetTime(since, 'since'));
}

export async function restorePointsCommand(
  admin: Admin,
  cluster: string,
  sinceTime: Date | undefined,
  json: boolean,
): Promise<number> {
  const job = await runToEnd(
    admin,
    admin.startRestorePoints({ cluster, ...(sinceTime ? { since: timestampFromDate(sinceTime) } : {}) }),
  );
  if (!job.restorePoints) throw new PgfleetError('Internal', `restore-points job ${job.id} succeeded without a result`);
  if (json) printJson(RestorePointListSchema, job.restorePoints);
  else out(describeRestorePoints(job.restorePoints));
  return 0;
}

export function describeRestorePoints(l: RestorePointList): string {
  const lines: string[] = [];
  if (l.points.length === 0) lines.push('no restore points');
  else
    lines.push(
      formatTable(
        ['NAME', 'TIME', 'LSN', 'TL'],
        l.points.map((p) => [p.name, formatTime(ms(p.time)), p.lsn, String(p.timeline)]),
      ),
    );
  lines.push(
    '',
    l.segmentsRead > 0
      ? `${l.points.length} restore point(s) in WAL ${l.fromSegment} .. ${l.toSegment} (${l.segmentsRead} segment(s) read)`
      : 'no archived WAL to read',
  );
  return lines.join('\n');
}

/** `pgfleet repo rotate-key <cluster> [--wait]`: a rotate-key job on one of the cluster's agents. */
export async function repoCommand(
  admin: Admin,
  positionals: readonly string[],
  wait: boolean,
  json: boolean,
): Promise<number> {
  const [action, cluster] = positionals;
  if (action !== 'rotate-key' || cluster === undefined)
    throw new PgfleetError(
      'InvalidArgument',
      `pgfleet repo takes rotate-key <cluster>; got '${positionals.join(' ')}'`,
    );
  return startJob(admin, json, wait, async () => (await admin.startRotateKey({ cluster })).job!);
}
