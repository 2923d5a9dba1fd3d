/** A RecoveryTarget message as the restore code reads it (restore and drill jobs). */
import { timestampDate } from '@bufbuild/protobuf/wkt';
import { TargetAction, type RecoveryTarget } from '@pgfleet/proto';
import type { TargetSpec } from '../restore/restore.js';

/** UTC timestamp in PostgreSQL's input format with microsecond precision (a JS Date would cut it to milliseconds, moving the target). */
export function pgTimestamp(seconds: bigint, nanos: number): string {
  const base = new Date(Number(seconds) * 1000).toISOString().slice(0, 19).replace('T', ' ');
  return `${base}.${String(Math.floor(nanos / 1000)).padStart(6, '0')}+00`;
}

export function recoveryTargetSpec(t: RecoveryTarget | undefined): {
  target: TargetSpec;
  action: 'promote' | 'pause' | 'shutdown';
  inclusive?: boolean;
} {
  const action =
    t?.action === TargetAction.PAUSE ? 'pause' : t?.action === TargetAction.SHUTDOWN ? 'shutdown' : 'promote';
  const inclusive = t?.inclusive;
  const v = t?.target;
  let target: TargetSpec;
  switch (v?.case) {
    case 'time':
      target = { kind: 'time', time: timestampDate(v.value), pgTime: pgTimestamp(v.value.seconds, v.value.nanos) };
      break;
    case 'lsn':
      target = { kind: 'lsn', lsn: v.value };
      break;
    case 'name':
      target = { kind: 'name', name: v.value };
      break;
    case 'xid':
      target = { kind: 'xid', xid: v.value };
      break;
    case 'immediate':
      target = { kind: 'immediate' };
      break;
    default:
      target = { kind: 'latest' };
  }
  return { target, action, ...(inclusive !== undefined ? { inclusive } : {}) };
}
