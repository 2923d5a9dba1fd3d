/**
 * `pgfleet recover-table <cluster> --table schema.name[,...] [--into name[,...]] [--database D]
 * [--before-xid X | --before-lsn L | --target-time T | --target-name N | --target-xid X
 * [--target-exclusive]] [--backup L] [--wait]` (docs/undo.md): tables as they were at the target,
 * loaded into the live cluster under schema pgfleet_recovered. With --wait it prints, per table,
 * the rows recovered, where they are, the live table's rows now and the SQL to compare or merge,
 * and the time to recover; --output json prints the job with its RecoverTableResult.
 */
import { PgfleetError, type OptionValues } from '@pgfleet/core';
import { JobInfoSchema, TargetAction, type JobInfo, type RecoverTableResult } from '@pgfleet/proto';
import { formatBytes } from './format.js';
import { err, followAndPrint, out, printJson, stateName, type Admin } from './output.js';
import { cliSettings } from './program.js';
import { recoveryTargetFromOptions } from './target.js';
import { secs } from './drill-format.js';

/**
 * A list flag's names: split at commas outside double quotes (a quoted identifier may hold a
 * comma). The names themselves are checked by the controller (PGF-6151).
 */
export function splitNameList(text: string | undefined): string[] {
  if (text === undefined) return [];
  const out: string[] = [];
  let cur = '';
  let quoted = false;
  for (const ch of text) {
    if (ch === '"') quoted = !quoted;
    if (ch === ',' && !quoted) {
      out.push(cur.trim());
      cur = '';
    } else cur += ch;
  }
  out.push(cur.trim());
  return out.filter((n) => n !== '');
}

/** The StartRecoverTable request of the flags; a target is required and the copy always promotes. */
export function recoverTableRequestFromOptions(cluster: string, options: OptionValues) {
  const s = cliSettings('recover-table', options);
  const tables = splitNameList(s.table);
  if (tables.length === 0)
    throw new PgfleetError('RecoverTableNameInvalid', 'recover-table needs --table schema.name (one or more)');
  const target = recoveryTargetFromOptions({ ...options, 'target-action': undefined });
  return {
    cluster,
    tables,
    into: splitNameList(s.into),
    database: s.database ?? '',
    backupLabel: s.backup ?? '',
    target: { ...target, action: TargetAction.PROMOTE },
  };
}

export async function recoverTableCommand(
  admin: Admin,
  req: ReturnType<typeof recoverTableRequestFromOptions>,
  options: OptionValues,
  json: boolean,
): Promise<number> {
  const { job } = await admin.startRecoverTable(req);
  if (!cliSettings('recover-table', options).wait) {
    if (json) printJson(JobInfoSchema, job!);
    else
      out(
        `recover-table job ${job!.id} ${stateName(job!.state)} to agent ${job!.agentId}\nfollow it with: pgfleet job ${job!.id}`,
      );
    return 0;
  }
  err(`recover-table job ${job!.id} ${stateName(job!.state)} to agent ${job!.agentId}`);
  await followAndPrint(admin, job!, json, (j: JobInfo) =>
    j.recoverTable ? describeRecoverTable(j.recoverTable) : undefined,
  );
  return 0;
}

/** The human summary: per table where the rows are, how many, the live table now, and the SQL. */
export function describeRecoverTable(r: RecoverTableResult): string {
  const when = r.recoveredLsn ? ` (recovered to LSN ${r.recoveredLsn})` : '';
  const lines = [
    `recovered ${r.tables.length} table(s) of database ${r.database} from backup ${r.backupLabel}${when} in ${secs(r.totalSeconds)}: restore ${secs(r.restoreSeconds)}, WAL replay ${secs(r.recoverySeconds)}, dump and load ${secs(r.dumpLoadSeconds)}`,
  ];
  for (const t of r.tables) {
    const live =
      t.liveRows < 0n ? 'the live table does not exist (dropped)' : `the live table holds ${t.liveRows} row(s) now`;
    lines.push(
      '',
      `${t.table}: ${t.rowsRecovered} row(s) recovered into ${t.recoveredAs} (${formatBytes(t.dumpBytes)} loaded); ${live}`,
    );
    if (t.partitions.length) lines.push(`  partitions: ${t.partitions.join(', ')}`);
    lines.push(`  primary key: ${t.primaryKey.length ? t.primaryKey.join(', ') : 'none (rows are compared whole)'}`);
    if (t.droppedForeignKeys.length) lines.push(`  foreign keys left out: ${t.droppedForeignKeys.join(', ')}`);
    if (t.droppedFunctionCalls.length)
      lines.push(`  left out (they call functions outside pg_catalog): ${t.droppedFunctionCalls.join(', ')}`);
    lines.push(`  compare: ${t.compareSql}`, `  merge:   ${t.mergeSql.replace(/\n/g, '\n           ')}`);
  }
  lines.push('', 'Review the merge SQL before running it; drop the pgfleet_recovered tables when done.');
  return lines.join('\n');
}
