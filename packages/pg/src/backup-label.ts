/**
 * The backup_label file PostgreSQL returns from pg_backup_stop. A restored data directory must
 * hold it, or recovery would start from the last checkpoint in pg_control (taken after the copy
 * began) and silently miss changes: its START WAL LOCATION and CHECKPOINT LOCATION tell recovery
 * where to begin.
 */
import { PgfleetError } from '@pgfleet/core';
import { Lsn } from './lsn.js';

export interface BackupLabel {
  startLsn: Lsn;
  checkpointLsn: Lsn | undefined;
  startTimeline: number;
  startSegment: string;
  label: string;
}

export function parseBackupLabel(text: string): BackupLabel {
  const field = (name: string) => new RegExp(`^${name}: (.*)$`, 'm').exec(text)?.[1];
  const start = field('START WAL LOCATION');
  const m = start ? /^([0-9A-F]+\/[0-9A-F]+) \(file ([0-9A-F]{24})\)/.exec(start) : null;
  if (!m) throw new PgfleetError('Internal', `backup_label has no START WAL LOCATION:\n${text}`);
  const checkpoint = field('CHECKPOINT LOCATION');
  return {
    startLsn: Lsn.parse(m[1]!),
    checkpointLsn: checkpoint ? Lsn.parse(checkpoint) : undefined,
    startTimeline: Number.parseInt(field('START TIMELINE') ?? m[2]!.slice(0, 8), field('START TIMELINE') ? 10 : 16),
    startSegment: m[2]!,
    label: field('LABEL') ?? '',
  };
}
