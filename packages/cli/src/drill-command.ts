/**
 * `pgfleet drill <cluster> [--backup L] [--target-... X] [--on AGENT] [--keep] [--wait]`: a restore
 * drill (docs/drills.md). Without a target the source's rows are counted at a fresh restore point
 * and compared with the restored copy; with one (the flags of `pgfleet restore`) only restore,
 * recovery and amcheck are proven. With --wait it prints the verdict, the RTO, amcheck's findings,
 * the count comparison and, for a failed drill, what its PostgreSQL logged, and exits non-zero with
 * the drill's error code when it failed (the result is printed first, also as JSON with --output
 * json). --keep leaves the scratch directory (restored data and server log) for inspection.
 *
 * `pgfleet drill <cluster> --dump LABEL|latest [--database D] [--jobs N]`: a dump drill (restore a
 * logical dump into a throwaway server, compare each table's rows with those the dump recorded).
 *
 * `pgfleet drills [<cluster>]`: the drill history, newest first, with why each failed.
 */
import { PgfleetError, type OptionValues } from '@pgfleet/core';
import { create } from '@bufbuild/protobuf';
import {
  DrillRecordSchema,
  JobInfoSchema,
  JobState,
  RecoveryTargetSchema,
  type DrillRecord,
  type RecoveryTarget,
} from '@pgfleet/proto';
import { formatTable, formatTime } from './format.js';
import { err, followAndPrint, ms, out, printJson, stateName, type Admin } from './output.js';
import { recoveryTargetFromOptions } from './target.js';
import { cliSettings } from './program.js';
import { describeDrill, describeDrillDetails, secs } from './drill-format.js';

export { describeDrill };

/** The drill's target from the restore flags, or undefined (a fresh restore point on the source). */
export function drillTargetFromOptions(options: OptionValues): RecoveryTarget | undefined {
  const s = cliSettings('drill', options);
  if ([s.targetTime, s.targetLsn, s.targetName, s.targetXid, s.target].every((t) => t === undefined)) {
    if (s.targetExclusive)
      throw new PgfleetError(
        'TargetInvalid',
        '--target-exclusive needs a target (--target-time, --target-lsn, --target-name or --target-xid)',
      );
    return undefined;
  }
  // A drill always promotes: the copy must accept writes to be proven (amcheck runs in it).
  return create(RecoveryTargetSchema, recoveryTargetFromOptions({ ...options, 'target-action': undefined }));
}

/** --dump LABEL|latest [--database D] [--jobs N]: a dump drill; refused with a backup's flags. */
export function dumpDrillFromOptions(
  s: {
    dump?: string | undefined;
    database?: string | undefined;
    jobs?: number | undefined;
    backup?: string | undefined;
  },
  hasTarget: boolean,
): { label: string; database: string; jobs: number } | undefined {
  if (s.dump === undefined) {
    if (s.database !== undefined)
      throw new PgfleetError(
        'InvalidArgument',
        '--database belongs to a dump drill: give --dump LABEL (or --dump latest)',
      );
    return undefined;
  }
  if (s.backup !== undefined || hasTarget)
    throw new PgfleetError(
      'InvalidArgument',
      '--dump drills a logical dump: --backup and --target-* are for drills of physical backups',
    );
  return { label: s.dump === 'latest' ? '' : s.dump, database: s.database ?? '', jobs: s.jobs ?? 2 };
}

export async function drillCommand(
  admin: Admin,
  cluster: string,
  options: OptionValues,
  json: boolean,
): Promise<number> {
  const target = drillTargetFromOptions(options);
  const s = cliSettings('drill', options);
  const dump = dumpDrillFromOptions(s, target !== undefined);
  const { job } = await admin.startDrill({
    cluster,
    backupLabel: s.backup ?? '',
    ...(target ? { target } : {}),
    agentId: s.on ?? '',
    keep: s.keep,
    ...(dump ? { dump } : {}),
  });
  if (!s.wait) {
    if (json) printJson(JobInfoSchema, job!);
    else
      out(
        `drill job ${job!.id} ${stateName(job!.state)} to agent ${job!.agentId}\nfollow it with: pgfleet job ${job!.id}`,
      );
    return 0;
  }
  err(`drill job ${job!.id} ${stateName(job!.state)} to agent ${job!.agentId}`);
  // A failed drill still has a result worth reading: printed before the job's own error code.
  await followAndPrint(admin, job!, json, (j) => j.drill && describeDrill(j.drill));
  return 0;
}

/** Why a drill did not pass, never empty: its reasons, else the job's error, else its state. */
function failureReason(d: DrillRecord): string {
  const reasons = d.result?.reasons.filter((r) => r.trim() !== '') ?? [];
  if (reasons.length) return reasons.join('; ');
  if (d.error) return `${d.error.code} ${d.error.message}`.trim();
  return d.state === JobState.SUCCEEDED
    ? 'the drill did not pass'
    : `${stateName(d.state)}${d.result?.stage ? ` in stage ${d.result.stage}` : ''}`;
}

export async function drillsCommand(
  admin: Admin,
  cluster: string | undefined,
  options: OptionValues,
  json: boolean,
): Promise<number> {
  const { drills } = await admin.listDrills({ cluster: cluster ?? '', limit: cliSettings('drills', options).limit });
  if (json) {
    printJson(DrillRecordSchema, drills);
    return 0;
  }
  if (drills.length === 0) {
    out('no drills yet');
    return 0;
  }
  out(
    formatTable(
      ['JOB', 'CLUSTER', 'AGENT', 'STATE', 'HOW', 'FINISHED', 'BACKUP', 'RTO', 'AMCHECK', 'COUNTS', 'REASON'],
      drills.map((d) => {
        const r = d.result;
        const amcheck =
          !r || r.databasesChecked === 0
            ? '-'
            : r.amcheckFindings.length === 0
              ? 'clean'
              : `${r.amcheckFindings.length} finding(s)`;
        const counts = !r?.countsCompared
          ? '-'
          : r.countsEqual
            ? `equal (${r.tablesCompared})`
            : `${r.countDiffs.length} differ`;
        const ok = d.state === JobState.SUCCEEDED && r?.ok === true;
        return [
          d.jobId,
          d.cluster,
          d.agentId,
          stateName(d.state),
          d.scheduled ? 'scheduled' : 'manual',
          formatTime(ms(d.finishedAt)),
          r?.dumpLabel ? `dump ${r.dumpLabel}` : r?.backupLabel || '-',
          r && r.rtoSeconds > 0 ? secs(r.rtoSeconds) : '-',
          r?.dumpLabel ? 'n/a' : amcheck,
          counts,
          ok ? '' : failureReason(d),
        ];
      }),
    ),
  );
  const details = describeDrillDetails(drills);
  if (details.length) out(details.join('\n'));
  return 0;
}
