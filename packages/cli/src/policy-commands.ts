/**
 * `pgfleet policy get|set`, `pgfleet retention plan|apply` and `pgfleet pin`: arguments are
 * checked here before any call, the controller validates values again (cron syntax, counts) and
 * names the flag in its error.
 */
import type { MessageInitShape } from '@bufbuild/protobuf';
import { timestampMs } from '@bufbuild/protobuf/wkt';
import { PgfleetError, parseDuration, pickOptions, settingsOf, type OptionValues } from '@pgfleet/core';
import {
  ApplyRetentionResponseSchema,
  BackupInfoSchema,
  GetPolicyResponseSchema,
  PlanRetentionResponseSchema,
  type GetPolicyResponse,
  type PlanRetentionResponse,
  type PolicySettings,
  type PolicySettingsSchema,
} from '@pgfleet/proto';
import { formatBytes, formatTable, formatTime } from './format.js';
import { out, printJson, startJob, typeName, type Admin } from './output.js';
import { cliProgram, cliSettings, POLICY_FLAGS } from './program.js';

/** Policy keys as the controller names them -> the flag a user types. */
export const KEY_FLAGS: Record<string, string> = {
  full: 'full',
  diff: 'diff',
  incr: 'incr',
  drill: 'drill',
  logical: 'logical',
  dumpDrill: 'dump-drill',
  spreadMinutes: 'spread-minutes',
  backupFrom: 'backup-from',
  catchUp: 'catch-up',
  pitrWindowDays: 'pitr-window-days',
  daily: 'daily',
  weekly: 'weekly',
  monthly: 'monthly',
  yearly: 'yearly',
  minFull: 'min-full',
  autoExpire: 'auto-expire',
  expireGraceSeconds: 'expire-grace',
  logicalDaily: 'logical-daily',
  logicalWeekly: 'logical-weekly',
  logicalMonthly: 'logical-monthly',
  logicalYearly: 'logical-yearly',
  logicalMin: 'logical-min',
  rpoThresholdSeconds: 'rpo-threshold',
  staleBackupThresholdSeconds: 'stale-backup-threshold',
  agentSilenceThresholdSeconds: 'agent-silence-threshold',
  staleDumpThresholdSeconds: 'stale-dump-threshold',
};

function action(command: string, given: string | undefined, allowed: readonly string[]): string {
  if (given === undefined || !allowed.includes(given)) {
    throw new PgfleetError(
      'InvalidArgument',
      `pgfleet ${command}: expected ${allowed.map((a) => `'${a}'`).join(' or ')} after '${command}', got ${given === undefined ? 'nothing' : `'${given}'`}`,
    );
  }
  return given;
}

/** The `policy set` flags' specs, typed: their settings are the policy values. */
const POLICY_OPTIONS = pickOptions(cliProgram.options, POLICY_FLAGS);

/** A schedule flag's cron line, trimmed; the common slip (a 6-field or 4-field line) is refused here. */
function schedule(
  flag: 'full' | 'diff' | 'incr' | 'drill' | 'logical' | 'dump-drill',
  given: string | undefined,
): string | undefined {
  if (given === undefined) return undefined;
  const cron = given.trim();
  // The controller parses the expression fully; catch the common slip (a quoted 6-field or 4-field line) here.
  if (cron !== '' && cron.split(/\s+/).length !== 5) {
    throw new PgfleetError(
      'InvalidArgument',
      `--${flag} '${given}' is not a 5-field cron expression (minute hour day-of-month month day-of-week, UTC); '' turns the schedule off`,
    );
  }
  return cron;
}

function onOff(given: string | undefined): boolean | undefined {
  return given === undefined ? undefined : given === 'on';
}

/** The settings `policy set` flags give; unset flags are left out (inherited / unchanged). */
export function policySettingsFromOptions(options: OptionValues): MessageInitShape<typeof PolicySettingsSchema> {
  const p = settingsOf(POLICY_OPTIONS, options);
  const all: MessageInitShape<typeof PolicySettingsSchema> = {
    full: schedule('full', p.full),
    diff: schedule('diff', p.diff),
    incr: schedule('incr', p.incr),
    drill: schedule('drill', p.drill),
    logical: schedule('logical', p.logical),
    dumpDrill: schedule('dump-drill', p.dumpDrill),
    spreadMinutes: p.spreadMinutes,
    backupFrom: p.backupFrom,
    catchUp: onOff(p.catchUp),
    pitrWindowDays: p.pitrWindowDays,
    daily: p.daily,
    weekly: p.weekly,
    monthly: p.monthly,
    yearly: p.yearly,
    minFull: p.minFull,
    autoExpire: onOff(p.autoExpire),
    expireGraceSeconds: p.expireGrace === undefined ? undefined : parseDuration(p.expireGrace, 'expire-grace') / 1000,
    logicalDaily: p.logicalDaily,
    logicalWeekly: p.logicalWeekly,
    logicalMonthly: p.logicalMonthly,
    logicalYearly: p.logicalYearly,
    logicalMin: p.logicalMin,
    staleDumpThresholdSeconds: p.staleDumpThreshold,
    rpoThresholdSeconds: p.rpoThreshold,
    staleBackupThresholdSeconds: p.staleBackupThreshold,
    agentSilenceThresholdSeconds: p.agentSilenceThreshold,
  };
  return Object.fromEntries(Object.entries(all).filter(([, value]) => value !== undefined));
}

export async function policyCommand(
  admin: Admin,
  positionals: string[],
  options: OptionValues,
  json: boolean,
): Promise<number> {
  const verb = action('policy', positionals[0], ['get', 'set']);
  const cluster = positionals[1] ?? '';
  const settings = cliSettings('policy', options);
  const { fleet } = settings;
  if (fleet && cluster)
    throw new PgfleetError('InvalidArgument', 'pgfleet policy: give either <cluster> or --fleet, not both');
  if (verb === 'get') {
    const given = POLICY_FLAGS.filter((f) => options[f] !== undefined);
    if (given.length || settings.reset)
      throw new PgfleetError(
        'InvalidArgument',
        `pgfleet policy get takes no --${given[0] ?? 'reset'}; use 'pgfleet policy set'`,
      );
    const policy = await admin.getPolicy({ cluster });
    if (json) printJson(GetPolicyResponseSchema, policy);
    else out(describePolicy(policy));
    return 0;
  }
  if (!fleet && !cluster) throw new PgfleetError('InvalidArgument', 'pgfleet policy set needs <cluster> or --fleet');
  const policySettings = policySettingsFromOptions(options);
  if (Object.keys(policySettings).length === 0 && !settings.reset) {
    throw new PgfleetError(
      'InvalidArgument',
      `pgfleet policy set: nothing to set; give at least one of ${POLICY_FLAGS.map((f) => `--${f}`).join(', ')} (or --reset)`,
    );
  }
  const { policy } = await admin.setPolicy({ cluster, fleet, settings: policySettings, reset: settings.reset });
  if (json) printJson(GetPolicyResponseSchema, policy!);
  else out(describePolicy(policy!));
  return 0;
}

export function describePolicy(p: GetPolicyResponse): string {
  const head = p.cluster
    ? `policy of cluster ${p.cluster} (cluster values over the fleet default over built-in defaults)`
    : 'fleet default policy (clusters inherit what they do not set)';
  const rows = p.values.map((v) => [KEY_FLAGS[v.key] ?? v.key, v.value, v.source]);
  const lines = [head, formatTable(['KEY', 'VALUE', 'SOURCE'], rows)];
  // retentionConfigured is the effective auto-expire switch.
  if (!p.retentionConfigured)
    lines.push(
      "retention: automatic expiry is off, so backups expire only when asked (pgfleet retention apply); 'pgfleet policy set --auto-expire on' makes it automatic",
    );
  else {
    const grace = p.values.find((v) => v.key === 'expireGraceSeconds')?.value ?? '';
    lines.push(
      `retention: automatic; each expiry is announced (retention.planned) ${grace} s before it runs, and 'pgfleet pin' in that time keeps a backup`,
    );
  }
  return lines.join('\n');
}

export function describePlan(p: PlanRetentionResponse): string {
  const pol = p.policy as PolicySettings | undefined;
  const lines = [
    `retention plan of cluster ${p.cluster} at ${formatTime(p.now ? timestampMs(p.now) : undefined)}`,
    `policy: PITR window ${pol?.pitrWindowDays ?? '-'} days (from ${formatTime(p.windowStart ? timestampMs(p.windowStart) : undefined)}), daily ${pol?.daily ?? '-'}, weekly ${pol?.weekly ?? '-'}, monthly ${pol?.monthly ?? '-'}, yearly ${pol?.yearly ?? '-'}, min-full ${pol?.minFull ?? '-'}`,
    formatTable(
      ['LABEL', 'TYPE', 'STOP', 'ACTION', 'REASONS', 'WAL'],
      p.backups.map((b) => [
        b.label,
        typeName(b.type),
        formatTime(b.stopTime ? timestampMs(b.stopTime) : undefined),
        b.keep ? 'keep' : 'expire',
        b.reasons.join(','),
        `${b.walStart}..${b.walStop}`,
      ]),
    ),
  ];
  const expiring = p.backups.filter((b) => !b.keep).length;
  lines.push(`${expiring} of ${p.backups.length} backups would be removed`);
  if (p.dumps.length) {
    lines.push(
      pol?.logicalMin === undefined
        ? 'logical dumps: no logical-* tier is set, every dump is kept'
        : `logical dumps: logical-daily ${pol.logicalDaily ?? '-'}, logical-weekly ${pol.logicalWeekly ?? '-'}, logical-monthly ${pol.logicalMonthly ?? '-'}, logical-yearly ${pol.logicalYearly ?? '-'}, logical-min ${pol.logicalMin}`,
      formatTable(
        ['DUMP', 'STOP', 'ACTION', 'REASONS', 'STORED'],
        p.dumps.map((d) => [
          d.label,
          formatTime(d.stopTime ? timestampMs(d.stopTime) : undefined),
          d.keep ? 'keep' : 'expire',
          d.reasons.join(','),
          formatBytes(d.storedSize),
        ]),
      ),
      `${p.dumps.filter((d) => !d.keep).length} of ${p.dumps.length} dumps would be removed`,
    );
  }
  if (!p.walKeepFrom) {
    lines.push('WAL: all kept (no usable full backup anchors the PITR window)');
  } else {
    lines.push(
      `WAL: kept from position ${p.walKeepFrom.slice(8)} (segment ${p.walKeepFrom}, first of PITR anchor ${p.anchorLabel}) on, on every timeline; timeline history files always`,
    );
    if (p.walKeepRanges.length) {
      lines.push('WAL kept before that for long-term backups:');
      for (const r of p.walKeepRanges) lines.push(`  ${r.walStart}..${r.walStop} (${r.label})`);
    }
    lines.push(`WAL expired: every other segment before ${p.walKeepFrom.slice(8)}`);
  }
  return lines.join('\n');
}

export async function retentionCommand(
  admin: Admin,
  positionals: string[],
  options: OptionValues,
  json: boolean,
): Promise<number> {
  const verb = action('retention', positionals[0], ['plan', 'apply']);
  const { wait } = cliSettings('retention', options);
  const cluster = positionals[1]!;
  if (verb === 'plan') {
    if (wait) throw new PgfleetError('InvalidArgument', 'pgfleet retention plan takes no --wait (it starts nothing)');
    const plan = await admin.planRetention({ cluster });
    if (json) printJson(PlanRetentionResponseSchema, plan);
    else out(describePlan(plan));
    return 0;
  }
  const applied = await admin.applyRetention({ cluster });
  if (!applied.job) {
    if (json) printJson(ApplyRetentionResponseSchema, applied);
    else
      out(`nothing to remove for cluster ${cluster}: no backup or dump expires and no WAL can (no usable full backup)`);
    return 0;
  }
  if (!json) process.stderr.write(`${describePlan(applied.plan!)}\n`);
  return startJob(admin, json, wait, async () => applied.job!);
}

export async function pinCommand(
  admin: Admin,
  positionals: string[],
  options: OptionValues,
  json: boolean,
): Promise<number> {
  const [cluster, label] = positionals as [string, string];
  const pinned = !cliSettings('pin', options).unpin;
  const { backup } = await admin.pinBackup({ cluster, label, pinned });
  if (json) printJson(BackupInfoSchema, backup!);
  else
    out(
      `backup ${label} of cluster ${cluster} ${pinned ? 'pinned: retention keeps it' : 'unpinned: retention may remove it'}`,
    );
  return 0;
}
