/**
 * Recovery targets from the restore flags, checked before anything is sent: exactly one target
 * (--before-xid/--before-lsn count as one: they are --target-xid/--target-lsn made exclusive),
 * and each in the form PostgreSQL will accept, so a typo fails in the shell (PGF-6003) instead of
 * after a restore has copied gigabytes.
 */
import type { MessageInitShape } from '@bufbuild/protobuf';
import { PgfleetError, type OptionValues } from '@pgfleet/core';
import { cliSettings, RECOVERY_TARGET_FLAGS, type CliSettings } from './program.js';
import { TargetAction, type RecoveryTargetSchema } from '@pgfleet/proto';

export interface ParsedTime {
  /** Whole seconds since the epoch. */
  seconds: bigint;
  /** Sub-second part, kept to the nanosecond: PostgreSQL times have microseconds, Date only milliseconds. */
  nanos: number;
}

const TIME_RE =
  /^(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d{1,9}))?)?)?\s*(Z|z|UTC|[+-]\d{2}(?::?\d{2})?)?$/;

/**
 * Parses ISO-8601 ('2026-03-01T12:00:00Z') and PostgreSQL's output format
 * ('2026-03-01 12:00:00.123456+02'). Without a zone the time is this machine's local time.
 */
export function parseTargetTime(text: string, option = 'target-time'): ParsedTime {
  const bad = (why: string) =>
    new PgfleetError('TargetInvalid', `--${option} '${text}' ${why}`, {
      hint: "Use ISO-8601 (2026-03-01T12:00:00Z) or PostgreSQL's form '2026-03-01 12:00:00.123456+00'.",
    });
  const m = TIME_RE.exec(text.trim());
  if (!m) throw bad('is not a time');
  const [, y, mo, d, hh = '00', mi = '00', ss = '00', frac = '', zone] = m as unknown as string[];
  const month = Number(mo);
  const day = Number(d);
  // Date.parse rolls 2026-02-30 over into March; a DBA typing it meant something else.
  if (month < 1 || month > 12 || day < 1 || day > new Date(Date.UTC(Number(y), month, 0)).getUTCDate())
    throw bad('is not a calendar date');
  if (Number(hh) > 23 || Number(mi) > 59 || Number(ss) > 59) throw bad('has an hour, minute or second out of range');
  let tz = '';
  if (zone && /^(z|utc)$/i.test(zone)) tz = 'Z';
  else if (zone) {
    const z = /^([+-])(\d{2}):?(\d{2})?$/.exec(zone)!;
    if (Number(z[2]) > 15 || Number(z[3] ?? 0) > 59) throw bad('has a time zone offset out of range');
    tz = `${z[1]}${z[2]}:${z[3] ?? '00'}`;
  }
  const ms = Date.parse(`${y}-${mo}-${d}T${hh}:${mi}:${ss}${tz}`);
  if (!Number.isFinite(ms)) throw bad('is not a time');
  return { seconds: BigInt(Math.floor(ms / 1000)), nanos: Number(frac.padEnd(9, '0')) };
}

export function parsedTimeToDate(t: ParsedTime): Date {
  return new Date(Number(t.seconds) * 1000 + Math.floor(t.nanos / 1e6));
}

const ACTIONS: Record<NonNullable<CliSettings<'restore'>['targetAction']>, TargetAction> = {
  promote: TargetAction.PROMOTE,
  pause: TargetAction.PAUSE,
  shutdown: TargetAction.SHUTDOWN,
};

const TARGETS = RECOVERY_TARGET_FLAGS;

const LSN_RE = /^[0-9A-Fa-f]{1,8}\/[0-9A-Fa-f]{1,8}$/;

/** The RecoveryTarget of `pgfleet restore`'s flags; anything but exactly one valid target is TargetInvalid. */
export function recoveryTargetFromOptions(options: OptionValues): MessageInitShape<typeof RecoveryTargetSchema> {
  const s = cliSettings('restore', options);
  const targets: Record<(typeof TARGETS)[number], string | undefined> = {
    'target-time': s.targetTime,
    'target-lsn': s.targetLsn,
    'target-name': s.targetName,
    'target-xid': s.targetXid,
    target: s.target,
    'before-xid': s.beforeXid,
    'before-lsn': s.beforeLsn,
  };
  const given = TARGETS.filter((k) => targets[k] !== undefined);
  if (given.length !== 1) {
    throw new PgfleetError(
      'TargetInvalid',
      given.length === 0
        ? 'restore needs a recovery target'
        : `restore takes exactly one recovery target, got ${given.map((k) => `--${k}`).join(' and ')}`,
    );
  }
  // --before-xid/--before-lsn are --target-xid/--target-lsn with recovery_target_inclusive = off.
  const before = given[0] === 'before-xid' || given[0] === 'before-lsn';
  const common = {
    action: s.targetAction === undefined ? TargetAction.UNSPECIFIED : ACTIONS[s.targetAction],
    ...(s.targetExclusive || before ? { inclusive: false } : {}),
  };
  const value = targets[given[0]!]!;
  switch (given[0]) {
    case 'target-time':
      return { ...common, target: { case: 'time', value: parseTargetTime(value) } };
    case 'target-lsn':
    case 'before-lsn':
      if (!LSN_RE.test(value))
        throw new PgfleetError('TargetInvalid', `--${given[0]} '${value}' is not an LSN like 0/3000060`);
      return { ...common, target: { case: 'lsn', value: value.toUpperCase() } };
    case 'target-name':
      if (value === '') throw new PgfleetError('TargetInvalid', '--target-name is empty');
      return { ...common, target: { case: 'name', value } };
    case 'target-xid':
    case 'before-xid':
      if (!/^\d+$/.test(value))
        throw new PgfleetError('TargetInvalid', `--${given[0]} '${value}' is not a transaction id (an integer)`);
      return { ...common, target: { case: 'xid', value } };
    default:
      // --target is limited to immediate|latest by the option table.
      return value === 'immediate'
        ? { ...common, target: { case: 'immediate', value: true } }
        : { ...common, target: { case: 'latest', value: true } };
  }
}
