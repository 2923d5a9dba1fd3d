/**
 * Point-in-time recovery: which backup a restore starts from. Pure functions over catalog
 * records, so every rule is table-tested without a server.
 *
 * PostgreSQL facts relied on: a base backup is consistent only at its stop LSN (the end of
 * pg_backup_stop), so recovery can stop at a target only when the backup ended at or before it;
 * among those the newest one needs the least WAL replay. Restore points (recovery_target_name)
 * and transaction ids (recovery_target_xid) cannot be placed in time or LSN from the catalog:
 * the agent finds them in the archived WAL and picks the backup itself (empty label).
 */
import { PgfleetError } from '@pgfleet/core';
import type { BackupRecord } from '@pgfleet/catalog';
import { Lsn } from '@pgfleet/pg';

/** How far a time target may lie ahead of the controller's clock (clock skew between hosts). */
export const FUTURE_SKEW_MS = 5_000;

export type PitrTarget =
  | { kind: 'time'; time: number }
  | { kind: 'lsn'; lsn: string }
  | { kind: 'name'; name: string }
  | { kind: 'xid'; xid: string }
  | { kind: 'immediate' }
  | { kind: 'latest' };

export type BackupSummary = Pick<BackupRecord, 'label' | 'stopTime' | 'stopLsn'>;

/** Checks the parts of a target that do not depend on backups (form of LSN/xid/name). */
export function validateTarget(target: PitrTarget): void {
  switch (target.kind) {
    case 'time':
      if (!Number.isFinite(target.time)) throw new PgfleetError('TargetInvalid', 'the target time is not a valid time');
      return;
    case 'lsn':
      if (!Lsn.isValid(target.lsn))
        throw new PgfleetError('TargetInvalid', `target LSN '${target.lsn}' is not an LSN like 0/3000060`);
      return;
    case 'name':
      if (target.name === '') throw new PgfleetError('TargetInvalid', 'the target restore point name is empty');
      // recovery_target_name is limited to NAMEDATALEN - 1 bytes like pg_create_restore_point's argument.
      if (Buffer.byteLength(target.name) > 63)
        throw new PgfleetError('TargetInvalid', `restore point name '${target.name}' is longer than 63 bytes`);
      return;
    case 'xid':
      // recovery_target_xid takes a 32-bit xid or an epoch-qualified 64-bit one (full transaction id).
      if (!/^\d+$/.test(target.xid) || BigInt(target.xid) < 3n) {
        throw new PgfleetError(
          'TargetInvalid',
          `target xid '${target.xid}' is not a normal transaction id (an integer >= 3)`,
        );
      }
      return;
    case 'immediate':
    case 'latest':
      return;
  }
}

export function describeTarget(target: PitrTarget): string {
  switch (target.kind) {
    case 'time':
      return `time ${new Date(target.time).toISOString()}`;
    case 'lsn':
      return `LSN ${target.lsn}`;
    case 'name':
      return `restore point '${target.name}'`;
    case 'xid':
      return `xid ${target.xid}`;
    default:
      return target.kind;
  }
}

/**
 * Returns the label of the backup to restore for the target ('' = the agent picks, for name and
 * xid targets). `explicitLabel` (the user's --backup) must exist and, for time/LSN targets, end
 * at or before the target.
 */
export function chooseBackup(
  backups: readonly BackupSummary[],
  target: PitrTarget,
  now: number,
  explicitLabel = '',
): string {
  validateTarget(target);
  if (target.kind === 'time' && target.time > now + FUTURE_SKEW_MS) {
    throw new PgfleetError(
      'TargetInFuture',
      `target ${describeTarget(target)} is in the future (controller time ${new Date(now).toISOString()})`,
    );
  }
  if (backups.length === 0) throw new PgfleetError('NoBackup', 'the cluster has no backup yet');
  const byStop = [...backups].sort((a, b) => a.stopTime - b.stopTime || cmpLsn(a.stopLsn, b.stopLsn));
  const endsBefore = (b: BackupSummary): boolean =>
    target.kind === 'time'
      ? b.stopTime <= target.time
      : target.kind === 'lsn'
        ? Lsn.parse(b.stopLsn).compare(Lsn.parse(target.lsn)) <= 0
        : true;

  if (explicitLabel !== '') {
    const chosen = byStop.find((b) => b.label === explicitLabel);
    if (!chosen) throw new PgfleetError('UnknownBackup', `backup '${explicitLabel}' does not exist for this cluster`);
    if (!endsBefore(chosen)) {
      throw new PgfleetError(
        'TargetInvalid',
        `backup '${explicitLabel}' ends (${new Date(chosen.stopTime).toISOString()}, LSN ${chosen.stopLsn}) after the ${describeTarget(target)}; recovery cannot stop before the backup is consistent`,
        {
          hint: 'Choose an older backup with --backup, or leave --backup out and let the controller pick.',
        },
      );
    }
    return chosen.label;
  }
  if (target.kind === 'name' || target.kind === 'xid') return '';
  if (target.kind === 'immediate' || target.kind === 'latest') return byStop[byStop.length - 1]!.label;

  const candidates = byStop.filter(endsBefore);
  if (candidates.length === 0) {
    const oldest = byStop[0]!;
    throw new PgfleetError(
      'TargetBeforeOldestBackup',
      `${describeTarget(target)} is before the end of the oldest backup '${oldest.label}' (${new Date(oldest.stopTime).toISOString()}, LSN ${oldest.stopLsn})`,
    );
  }
  return candidates[candidates.length - 1]!.label;
}

function cmpLsn(a: string, b: string): number {
  return Lsn.parse(a).compare(Lsn.parse(b));
}
