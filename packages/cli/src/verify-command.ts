/**
 * `pgfleet verify <cluster> [--full] [--wait]`: starts a verify job on the cluster's agent. With
 * --wait it prints one row per backup (restorable to which range, or not) and every problem
 * found, and exits with PGF-5005 (VerifyFailed) when anything is not restorable or any fault was
 * found; --output json prints the job (its `verify` result) on stdout before failing.
 */
import { PgfleetError, type OptionValues } from '@pgfleet/core';
import { JobInfoSchema, type VerifyResult } from '@pgfleet/proto';
import { formatBytes, formatTable, formatTime } from './format.js';
import { err, follow, ms, out, printJson, stateName, typeName, type Admin } from './output.js';
import { cliSettings } from './program.js';

export async function verifyCommand(
  admin: Admin,
  cluster: string,
  options: OptionValues,
  json: boolean,
): Promise<number> {
  const settings = cliSettings('verify', options);
  const { job } = await admin.startVerify({ cluster, full: settings.full });
  if (!settings.wait) {
    if (json) printJson(JobInfoSchema, job!);
    else
      out(
        `verify job ${job!.id} ${stateName(job!.state)} to agent ${job!.agentId}\nfollow it with: pgfleet job ${job!.id}`,
      );
    return 0;
  }
  err(`verify job ${job!.id} ${stateName(job!.state)} to agent ${job!.agentId}`);
  const final = await follow(admin, job!);
  if (json) printJson(JobInfoSchema, final);
  const v = final.verify;
  if (!v) throw new PgfleetError('Internal', `verify job ${final.id} succeeded without a result`);
  if (!json) out(describeVerify(v));
  if (!v.ok) {
    const bad = v.backups.filter((b) => !b.restorable).length;
    const damaged = v.dumps.filter((d) => !d.ok).length;
    throw new PgfleetError(
      'VerifyFailed',
      `verify of cluster ${cluster} (job ${final.id}): ${bad} of ${v.backups.length} backup(s) not restorable, ${v.problems.filter((p) => p.kind !== 'incomplete-backup').length} problem(s)${damaged ? `, ${damaged} of ${v.dumps.length} dump(s) damaged` : ''}`,
    );
  }
  return 0;
}

/** The table of verdicts, then the problems, then a summary line. */
export function describeVerify(v: VerifyResult): string {
  const lines: string[] = [];
  if (v.backups.length === 0) lines.push('no backups in the repository');
  else {
    lines.push(
      formatTable(
        ['LABEL', 'TYPE', 'VERDICT', 'FROM LSN', 'FROM TIME', 'TO LSN', 'TL', 'FILES', 'CHECKED'],
        v.backups.map((b) => [
          b.label,
          typeName(b.type),
          b.restorable ? 'restorable' : 'NOT RESTORABLE',
          b.fromLsn || '-',
          formatTime(ms(b.fromTime)),
          b.restorable ? b.toLsn : '-',
          b.restorable ? String(b.toTimeline) : '-',
          String(b.filesChecked),
          formatBytes(b.bytesChecked),
        ]),
      ),
    );
    lines.push('');
    for (const b of v.backups) {
      if (b.restorable) {
        lines.push(
          `${b.label}: restorable to [${b.fromLsn} (${formatTime(ms(b.fromTime))}), ${b.toLsn} on timeline ${b.toTimeline}]`,
        );
        for (const r of b.reasons) lines.push(`  note: ${r}`);
      } else {
        lines.push(`${b.label}: not restorable: ${b.reasons.join('; ')}`);
      }
    }
  }
  // Timelines only when there is more than one: after a failover or a PITR, which one restores follow.
  if (v.timelines.length > 1) {
    lines.push('', 'timelines:');
    lines.push(
      formatTable(
        ['TL', 'PARENT', 'SWITCH LSN', 'STARTED', 'NEWEST SEGMENT', 'LINEAGE'],
        v.timelines.map((t) => [
          String(t.timeline),
          t.parent ? String(t.parent) : '-',
          t.switchLsn || '-',
          formatTime(ms(t.startedAt)),
          t.newestSegment || '-',
          !t.liveKnown ? 'unknown' : t.onLiveLineage ? 'live' : 'FORK (restores never follow it)',
        ]),
      ),
    );
    const forks = v.timelines.filter((t) => t.liveKnown && !t.onLiveLineage);
    if (forks.length > 0) {
      lines.push(
        `  note: timeline(s) ${forks.map((t) => t.timeline).join(', ')} are not on the cluster's current lineage: a restored copy that archived here, or a branch a later PITR abandoned (docs/timelines.md)`,
      );
    }
  }
  const problems = v.problems;
  if (problems.length > 0) {
    lines.push('', `problems (${problems.length}):`);
    for (const p of problems) {
      const where =
        p.kind === 'wal-gap'
          ? `timeline ${p.timeline} [${p.lsnFrom}, ${p.lsnTo})`
          : [p.label, p.path].filter(Boolean).join(' ');
      lines.push(`  ${p.kind.padEnd(18)} ${where}: ${p.message}`);
    }
  }
  if (v.dumps.length > 0) {
    lines.push('', `dumps (${v.dumps.length}):`);
    for (const d of v.dumps)
      lines.push(
        `  ${d.label} ${d.ok ? 'ok' : 'DAMAGED'}: ${d.filesChecked} file(s), ${formatBytes(d.bytesChecked)} checked${d.ok ? '' : `; ${d.reasons.join('; ')}`}`,
      );
  }
  const restorable = v.backups.filter((b) => b.restorable).length;
  lines.push(
    '',
    `${v.ok ? 'verify OK' : 'verify FAILED'} (${v.full ? 'full' : 'fast'}): ${restorable} of ${v.backups.length} backup(s) restorable, ${v.walSegmentsChecked} WAL segment(s) checked${v.walNewest.length ? `, newest ${v.walNewest.join(', ')}` : ''}`,
  );
  return lines.join('\n');
}
