/**
 * What the CLI's commands share for output and for following jobs: printing (tables to stdout,
 * JSON with every field, json-text.ts), job and result descriptions, and `--wait` (WatchJob to the end, progress
 * on stderr, the job's own error code as the exit status).
 */
import type { DescMessage, MessageShape } from '@bufbuild/protobuf';
import { timestampMs, type Timestamp } from '@bufbuild/protobuf/wkt';
import { ErrorCodes, PgfleetError } from '@pgfleet/core';
import type { Client } from '@pgfleet/rpc/client';
import {
  BackupType,
  CheckVerdict,
  JobInfoSchema,
  JobState,
  type AdminService,
  type BackupInfo,
  type ClusterInfo,
  type ExpireResult,
  type JobInfo,
  type RestoreResult,
  type RotateKeyResult,
} from '@pgfleet/proto';
import { formatBytes, formatProgress, formatTime } from './format.js';
import { describeDrill } from './drill-format.js';
import { ProgressView } from './progress-view.js';
import { JsonText, writeJson } from './json-text.js';

export type Admin = Client<typeof AdminService> & { close(): void };

/**
 * Rows per listing page the CLI asks for: the controller's largest (admin/paging.ts), so that
 * 10,000 clusters are two calls; a controller older than paging ignores it and sends everything.
 */
const PAGE_SIZE = 5000;

/** One page of a paged listing: its rows and the token of the next page ('' after the last). */
export type Page<T> = { rows: T[]; nextPageToken: string };

/**
 * The pages of a paged listing, in order, asking for the next page as soon as a page arrives, before
 * the caller works on it: the controller builds page N+1 while the CLI decodes and formats page N.
 * At most one request is ahead of the caller. A failing page throws its error where it would have
 * come in order (after the pages before it were yielded).
 */
export async function* prefetchPages<T>(page: (pageToken: string) => Promise<Page<T>>): AsyncGenerator<T[]> {
  const ask = (token: string): Promise<Page<T>> => {
    const p = page(token);
    // Handled here so that a page failing while the caller works on the one before it is not an
    // unhandled rejection; the loop awaits it and throws its error in order.
    p.catch(() => {});
    return p;
  };
  let pending = ask('');
  for (;;) {
    const r = await pending;
    if (r.nextPageToken === '') {
      yield r.rows;
      return;
    }
    pending = ask(r.nextPageToken);
    yield r.rows;
  }
}

/** Every row of a paged listing (prefetchPages). */
export async function allPages<T>(page: (pageToken: string) => Promise<Page<T>>): Promise<T[]> {
  const rows: T[] = [];
  for await (const p of prefetchPages(page)) rows.push(...p);
  return rows;
}

/** The pages of ListClusters (prefetchPages), in name order. */
export function clusterPages(admin: Admin): AsyncGenerator<ClusterInfo[]> {
  return prefetchPages(async (pageToken) => {
    const r = await admin.listClusters({ pageSize: PAGE_SIZE, pageToken });
    return { rows: r.clusters, nextPageToken: r.nextPageToken };
  });
}

/** Every cluster's status (ListClusters, every page), in name order. */
export async function listAllClusters(admin: Admin): Promise<ClusterInfo[]> {
  const rows: ClusterInfo[] = [];
  for await (const p of clusterPages(admin)) rows.push(...p);
  return rows;
}

/** Every backup of a cluster (ListBackups, every page), oldest first. */
export function listAllBackups(admin: Admin, cluster: string): Promise<BackupInfo[]> {
  return allPages(async (pageToken) => {
    const r = await admin.listBackups({ cluster, pageSize: PAGE_SIZE, pageToken });
    return { rows: r.backups, nextPageToken: r.nextPageToken };
  });
}

export const out = (text: string): void => {
  process.stdout.write(`${text}\n`);
};
export const err = (text: string): void => {
  process.stderr.write(`${text}\n`);
};

/** A message, or a list of them, as the CLI's JSON on stdout (json-text.ts), written as it is made. */
export function printJson<D extends DescMessage>(schema: D, msg: MessageShape<D> | readonly MessageShape<D>[]): void {
  const text = stdoutJson();
  writeJson(text, schema, msg, '');
  text.push('\n');
  text.end();
}

/** JSON text going to stdout in chunks (stdout is synchronous for files, pipes and terminals on Linux). */
export const stdoutJson = (): JsonText => new JsonText((chunk) => process.stdout.write(chunk));

export const ms = (t: Timestamp | undefined): number | undefined => (t ? timestampMs(t) : undefined);
export const stateName = (s: JobState): string => (JobState[s] ?? String(s)).toLowerCase();
export const typeName = (t: BackupType): string =>
  t === BackupType.UNSPECIFIED ? '-' : (BackupType[t] ?? String(t)).toLowerCase();
export function describeJob(j: JobInfo): string {
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
  if (j.restore) lines.push(restoreLine(j.restore));
  if (j.expire) lines.push(describeExpire(j.expire));
  if (j.drill) lines.push(describeDrill(j.drill));
  if (j.recoverTable)
    lines.push(
      ...j.recoverTable.tables.map(
        (t) => `${t.table}: ${t.rowsRecovered} row(s) in ${t.recoveredAs} (merge: ${t.mergeSql.split('\n').join(' ')})`,
      ),
    );
  if (j.capture)
    lines.push(
      `captured row counts of ${j.capture.tables.length} table(s) at restore point ${j.capture.restorePoint} (${j.capture.lsn})`,
    );
  if (j.check)
    lines.push(
      `check: ${j.check.ok ? 'OK' : 'FAILED'}, ${j.check.items.filter((i) => i.verdict === CheckVerdict.FAIL).length} of ${j.check.items.length} check(s) failed${j.check.walSegment ? `, WAL segment ${j.check.walSegment}` : ''} (pgfleet job ${j.id} --output json for details)`,
    );
  if (j.verify)
    lines.push(
      `verify: ${j.verify.ok ? 'OK' : 'FAILED'}, ${j.verify.backups.filter((b) => b.restorable).length} of ${j.verify.backups.length} backup(s) restorable, ${j.verify.problems.length} problem(s) (pgfleet job ${j.id} --output json for details)`,
    );
  return lines.join('\n');
}

export function describeBackup(b: BackupInfo): string {
  return [
    `backup ${b.label} (${typeName(b.type)}${b.priorLabel ? ` on ${b.priorLabel}` : ''}) of cluster ${b.cluster}`,
    `  LSN ${b.startLsn} .. ${b.stopLsn} on timeline ${b.timeline}, WAL ${b.walStart} .. ${b.walStop}`,
    `  ${formatTime(ms(b.startTime))} .. ${formatTime(ms(b.stopTime))}`,
    `  size ${formatBytes(b.sizeBytes)}, stored ${formatBytes(b.storedBytes)}, ${b.fileCount} files`,
  ].join('\n');
}

/** Starts a job and either reports it (without --wait) or follows it to its end. */
export async function startJob(
  admin: Admin,
  json: boolean,
  wait: boolean,
  start: () => Promise<JobInfo>,
): Promise<number> {
  const job = await start();
  if (!wait) {
    if (json) printJson(JobInfoSchema, job);
    else
      out(
        `${job.kind} job ${job.id} ${stateName(job.state)} to agent ${job.agentId}\nfollow it with: pgfleet job ${job.id} --wait`,
      );
    return 0;
  }
  err(`${job.kind} job ${job.id} ${stateName(job.state)} to agent ${job.agentId}`);
  const final = await follow(admin, job);
  if (json) printJson(JobInfoSchema, final);
  else if (final.kind === 'restore' && final.restore) {
    const r = final.restore;
    out(restoreLine(r));
    out('start PostgreSQL on it to recover to the target');
  } else if (final.backup) out(describeBackup(final.backup));
  else if (final.expire) out(describeExpire(final.expire));
  else if (final.rotateKey) out(describeRotateKey(final.cluster, final.rotateKey));
  else out(`${final.kind} job ${final.id} succeeded`);
  return 0;
}

/**
 * Follows WatchJob to the job's end. Ctrl-C stops following, not the job. A failed or cancelled
 * job throws its own error code so the exit status says what went wrong.
 */
export async function follow(admin: Admin, job: JobInfo): Promise<JobInfo> {
  const stop = new AbortController();
  const onSigint = (): void => stop.abort();
  process.once('SIGINT', onSigint);
  let last = job;
  const view = new ProgressView(job.kind);
  try {
    for await (const { job: update } of admin.watchJob({ id: job.id }, { signal: stop.signal })) {
      if (!update) continue;
      last = update;
      if (update.progress && update.state === JobState.RUNNING) view.update(update.progress);
    }
  } catch (e) {
    if (stop.signal.aborted) {
      throw new PgfleetError('Cancelled', `stopped following job ${job.id}; it continues on agent ${job.agentId}`, {
        hint: `Follow it again with: pgfleet job ${job.id} --wait`,
      });
    }
    throw e;
  } finally {
    view.stop();
    process.off('SIGINT', onSigint);
  }
  switch (last.state) {
    case JobState.SUCCEEDED:
      return last;
    case JobState.FAILED:
    case JobState.CANCELLED: {
      const code =
        last.error?.code ||
        (last.state === JobState.CANCELLED ? ErrorCodes.JobCancelled.code : ErrorCodes.JobFailed.code);
      const e = PgfleetError.fromCode(
        code,
        `${last.kind} job ${last.id} ${stateName(last.state)}: ${last.error?.message || 'no reason given'}`,
        last.error?.hint || undefined,
      );
      throw e;
    }
    default:
      throw new PgfleetError(
        'ControllerUnreachable',
        `lost the controller while following job ${last.id} (last state ${stateName(last.state)}); the job may still run`,
        {
          hint: `Check it with: pgfleet job ${last.id}`,
        },
      );
  }
}

/**
 * Follows the job to its end and prints it: the job as JSON, or `describe`'s text of its result.
 * A job that failed is printed too (a failed drill or check says in its result what went wrong),
 * then its error is thrown, so the exit status is the job's own code.
 */
export async function followAndPrint(
  admin: Admin,
  job: JobInfo,
  json: boolean,
  describe: (j: JobInfo) => string | undefined,
): Promise<JobInfo> {
  let final: JobInfo;
  try {
    final = await follow(admin, job);
  } catch (e) {
    const failed = (await admin.getJob({ id: job.id }).catch(() => undefined))?.job;
    if (failed && (failed.state === JobState.FAILED || failed.state === JobState.CANCELLED)) {
      const text = json ? undefined : describe(failed);
      if (json) printJson(JobInfoSchema, failed);
      else if (text) out(text);
    }
    throw e;
  }
  if (json) printJson(JobInfoSchema, final);
  else out(describe(final) ?? `${final.kind} job ${final.id} succeeded`);
  return final;
}

/** A backup's START, STOP, START LSN, STOP LSN and TL cells (the backups and info tables). */
export function backupSpanCells(b: BackupInfo): string[] {
  return [formatTime(ms(b.startTime)), formatTime(ms(b.stopTime)), b.startLsn, b.stopLsn, String(b.timeline)];
}

export function describeExpire(e: ExpireResult): string {
  const lines = [
    `expired ${e.deletedLabels.length} backup(s)${e.deletedLabels.length ? `: ${e.deletedLabels.join(', ')}` : ''} (${e.backupFilesDeleted} files, ${formatBytes(e.backupBytesDeleted)})`,
    `expired ${e.walFilesDeleted} WAL file(s) (${formatBytes(e.walBytesDeleted)})${e.walFilesDeleted ? `: ${e.walFirstDeleted} .. ${e.walLastDeleted}` : ''}`,
  ];
  if (e.skippedLabels.length)
    lines.push(
      `kept ${e.skippedLabels.join(', ')}: a kept backup, or a backup in progress, still reads files from them`,
    );
  return lines.join('\n');
}

/** One line on a finished restore: what, where, which timeline recovery follows, and whether the copy archives. */
function restoreLine(r: RestoreResult): string {
  const timeline = r.timeline ? `; recovery follows timeline ${r.timeline}` : '';
  const archive = r.timeline
    ? r.archivePreserved
      ? '; archiving kept (the restored server archives into the repository)'
      : '; archive_mode off in the copy'
    : '';
  return `restored backup ${r.backupLabel} into ${r.targetDir} (${formatBytes(r.bytes)}, ${r.fileCount} files)${timeline}${archive}`;
}

/** A rotate-key job's result, as the agent-side `pgfleet-agent rotate-key` says it. */
export function describeRotateKey(cluster: string, r: RotateKeyResult): string {
  const ids = r.oldKeyId ? ` (key id ${r.oldKeyId} -> ${r.newKeyId})` : ` (key id ${r.newKeyId})`;
  return `cluster ${cluster}: ${r.rewrapped} data key(s) re-wrapped, ${r.alreadyNew} already under the new key${ids}; the previous key no longer opens this repository`;
}
