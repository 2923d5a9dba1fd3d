/**
 * How a drill result reads in a terminal: the verdict, then RTO, amcheck and the row-count
 * comparison, and for a failed drill what its PostgreSQL logged, and where a kept scratch
 * directory is. Shared by `pgfleet drill`, `pgfleet drills` and `pgfleet job <id>`.
 */
import { timestampMs } from '@bufbuild/protobuf/wkt';
import type { DrillResult, RecoveryTarget } from '@pgfleet/proto';
import { formatBytes, formatTable, formatTime } from './format.js';

const ms = (t: Parameters<typeof timestampMs>[0] | undefined): number | undefined => (t ? timestampMs(t) : undefined);

export const secs = (s: number): string => `${s.toFixed(1)} s`;

/** The verdict, then the figures, amcheck and the count comparison. */
export function describeDrill(d: DrillResult): string {
  const lines = [
    d.dumpLabel
      ? `dump drill ${d.ok ? 'PASSED' : `FAILED in stage ${d.stage}`}: dump ${d.dumpLabel} (${d.dumpDatabases.join(', ') || 'no database'})`
      : `drill ${d.ok ? 'PASSED' : `FAILED in stage ${d.stage}`}: backup ${d.backupLabel || '-'}${d.target ? `, target ${describeTarget(d.target)}` : ''}`,
  ];
  for (const r of d.reasons) lines.push(`  reason: ${r}`);
  if (d.postgresLogProblems.length)
    lines.push('PostgreSQL log, FATAL/PANIC/ERROR/WARNING lines:', ...indent(d.postgresLogProblems));
  if (d.postgresLogTail.length)
    lines.push(`PostgreSQL log, last ${d.postgresLogTail.length} line(s):`, ...indent(d.postgresLogTail));
  if (d.keptDir) lines.push(keptLine(d.keptDir));
  if (d.dumpLabel && d.rtoSeconds > 0) {
    lines.push(`restore time ${secs(d.rtoSeconds)} (fetch and pg_restore of ${formatBytes(d.restoredBytes)})`);
  } else if (d.rtoSeconds > 0) {
    lines.push(
      `RTO ${secs(d.rtoSeconds)} (restore ${secs(d.restoreSeconds)} of ${formatBytes(d.restoredBytes)}, recovery ${secs(d.recoverySeconds)})${d.recoveredLsn ? `, recovered to ${d.recoveredLsn}` : ''}${d.recoveredTime ? ` (last commit ${formatTime(ms(d.recoveredTime))})` : ''}`,
    );
  } else if (d.restoreSeconds > 0) {
    lines.push(`restore ${secs(d.restoreSeconds)} of ${formatBytes(d.restoredBytes)}; not promoted`);
  }
  if (d.databasesChecked > 0) {
    lines.push(
      `amcheck: ${d.amcheckFindings.length === 0 ? 'clean' : `${d.amcheckFindings.length} finding(s)`}, ${d.relationsChecked} relation(s) in ${d.databasesChecked} database(s)`,
    );
    for (const f of d.amcheckFindings.slice(0, 20))
      lines.push(`  ${f.check} ${f.database}.${f.relation}: ${f.message}`);
    if (d.amcheckFindings.length > 20) lines.push(`  ... and ${d.amcheckFindings.length - 20} more (--output json)`);
  }
  if (d.countsCompared) {
    const bound = d.dumpLabel
      ? 'the rows pg_dump wrote, counted when the dump was stored'
      : d.countChangeBound === 0n
        ? 'source quiet: exact comparison'
        : `source changed up to ${d.countChangeBound} row(s) while counted`;
    const at = d.dumpLabel ? '' : `; restore point ${d.source?.restorePoint ?? '-'} at ${d.source?.lsn ?? '-'}`;
    lines.push(
      `row counts: ${d.countsEqual ? 'equal' : `${d.countDiffs.length} table(s) differ`} in ${d.tablesCompared} table(s) (${bound}${at})`,
    );
    if (d.countDiffs.length) {
      lines.push(
        formatTable(
          ['DATABASE', 'TABLE', d.dumpLabel ? 'DUMP' : 'SOURCE', 'RESTORED'],
          d.countDiffs
            .slice(0, 20)
            .map((x) => [
              x.database,
              `${x.schema}.${x.table}`,
              x.sourceRows < 0n ? 'absent' : String(x.sourceRows),
              x.restoredRows < 0n ? 'missing' : String(x.restoredRows),
            ]),
        ),
      );
    }
  } else if (d.stage === 'done' || d.stage === 'counts') {
    lines.push('row counts: not compared (the target is not a restore point the source was counted at)');
  }
  return lines.join('\n');
}

const indent = (ls: readonly string[]): string[] => ls.map((l) => `  ${l}`);

/** Where a kept scratch directory is and what it holds (docs/drills.md, "Keeping the copy"). */
export const keptLine = (dir: string): string =>
  `scratch directory kept: ${dir} (restored data directory ${dir}/data, server log ${dir}/postgres.log); remove it when done: rm -rf ${dir}`;

/**
 * Under the `pgfleet drills` table: for each drill that failed with PostgreSQL log lines, or kept
 * its directory, those lines and the directory (the whole tail: `pgfleet job <id>`).
 */
export function describeDrillDetails(drills: ReadonlyArray<{ jobId: string; result?: DrillResult }>): string[] {
  const lines: string[] = [];
  for (const { jobId, result: r } of drills) {
    if (!r || (!r.postgresLogProblems.length && !r.keptDir)) continue;
    lines.push('', `${jobId}${r.ok ? '' : ` (failed in stage ${r.stage})`}:`);
    if (r.postgresLogProblems.length)
      lines.push(
        '  PostgreSQL log:',
        ...indent(indent(r.postgresLogProblems)),
        `  (last ${r.postgresLogTail.length} log line(s): pgfleet job ${jobId})`,
      );
    if (r.keptDir) lines.push(`  ${keptLine(r.keptDir)}`);
  }
  return lines;
}

export function describeTarget(t: RecoveryTarget): string {
  switch (t.target.case) {
    case 'time':
      return `time ${formatTime(ms(t.target.value))}`;
    case 'lsn':
      return `LSN ${t.target.value}`;
    case 'name':
      return `restore point '${t.target.value}'`;
    case 'xid':
      return `xid ${t.target.value}`;
    case 'immediate':
      return 'immediate';
    case 'latest':
      return 'latest';
    default:
      return '-';
  }
}
