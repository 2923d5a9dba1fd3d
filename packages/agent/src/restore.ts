/**
 * Restore (and PITR set-up) into a new directory: every file is fetched, decompressed and
 * checked against its sha256 in parallel; then backup_label, the recovery settings and
 * recovery.signal are written, so that starting PostgreSQL on the directory replays archived WAL
 * (via `pgfleet-agent wal-fetch`) up to the target and then acts as asked (promote by default).
 */
import { createWriteStream } from 'node:fs';
import { appendFile, chmod, mkdir, readdir, symlink, utimes, writeFile } from 'node:fs/promises';
import { dirname, isAbsolute, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { PgfleetError, type Logger } from '@pgfleet/core';
import type { BackupManifest, Repository } from '@pgfleet/storage';
import { runPool } from './pool.js';
import { ProgressTracker, type ProgressSink } from './progress.js';
import { findTargetLsn } from './target-resolver.js';

export type TargetSpec =
  | { kind: 'time'; time: Date; /** exact text for recovery_target_time, microsecond precision */ pgTime?: string }
  | { kind: 'lsn'; lsn: string }
  | { kind: 'name'; name: string }
  | { kind: 'xid'; xid: string }
  | { kind: 'immediate' }
  | { kind: 'latest' };

export interface RestoreOptions {
  cluster: string;
  repo: Repository;
  repoPath: string;
  backupLabel?: string;
  targetDir: string;
  target: TargetSpec;
  inclusive?: boolean;
  action: 'promote' | 'pause' | 'shutdown';
  workers: number;
  pgBinDir?: string;
  log: Logger;
  progress: ProgressSink;
  signal?: AbortSignal;
}

export interface RestoreOutcome {
  manifest: BackupManifest;
  bytes: number;
}

/** The command PostgreSQL runs to fetch WAL: this very agent, with the repository spelled out so the restored cluster needs no agent config. */
export function restoreCommand(cluster: string, repoPath: string): string {
  const bin = join(dirname(fileURLToPath(import.meta.url)), 'bin.js');
  return `"${process.execPath}" "${bin}" wal-fetch "%f" "%p" --cluster "${cluster}" --repo-path "${repoPath}"`;
}

function confString(value: string): string {
  return `'${value.replace(/\\/g, '\\\\').replace(/'/g, "''")}'`;
}

function recoverySettings(o: RestoreOptions): string[] {
  const lines = [
    '',
    `# Added by pgfleet restore of cluster ${o.cluster} (remove after recovery if you change the archive layout)`,
    `restore_command = ${confString(restoreCommand(o.cluster, o.repoPath))}`,
    `recovery_target_timeline = 'latest'`,
  ];
  const t = o.target;
  if (t.kind === 'time') lines.push(`recovery_target_time = ${confString(t.pgTime ?? t.time.toISOString().replace('T', ' ').replace('Z', '+00'))}`);
  if (t.kind === 'lsn') lines.push(`recovery_target_lsn = ${confString(t.lsn)}`);
  if (t.kind === 'name') lines.push(`recovery_target_name = ${confString(t.name)}`);
  if (t.kind === 'xid') lines.push(`recovery_target_xid = ${confString(t.xid)}`);
  if (t.kind === 'immediate') lines.push(`recovery_target = 'immediate'`);
  if (t.kind !== 'latest') {
    lines.push(`recovery_target_action = '${o.action}'`);
    if (o.inclusive !== undefined && t.kind !== 'immediate') lines.push(`recovery_target_inclusive = ${o.inclusive ? 'on' : 'off'}`);
  }
  return lines;
}

async function chooseBackup(o: RestoreOptions): Promise<BackupManifest> {
  if (o.backupLabel) return o.repo.readManifest(o.cluster, o.backupLabel);
  const backups = await o.repo.listBackups(o.cluster);
  if (backups.length === 0) throw new PgfleetError('NoBackup', `cluster ${o.cluster} has no complete backup in ${o.repo.location}`);
  if (o.target.kind === 'name' || o.target.kind === 'xid') {
    const found = await findTargetLsn(o.repo, o.cluster, backups, o.target, { pgBinDir: o.pgBinDir, log: o.log });
    return found.backup;
  }
  // Time/LSN targets are normally resolved by the controller; the agent falls back to the newest.
  return backups.at(-1)!;
}

export async function runRestore(o: RestoreOptions): Promise<RestoreOutcome> {
  if (!isAbsolute(o.targetDir)) throw new PgfleetError('InvalidArgument', `restore target ${o.targetDir} must be an absolute path`);
  const existing = await readdir(o.targetDir).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return [];
    throw err;
  });
  if (existing.length > 0) throw new PgfleetError('RestoreTargetNotEmpty', `restore target ${o.targetDir} is not empty (${existing.length} entries)`);

  const tracker = new ProgressTracker(o.progress, 'choose-backup');
  const manifest = await chooseBackup(o);
  o.log.info({ label: manifest.label, targetDir: o.targetDir }, 'restoring backup');
  tracker.state.bytesTotal = manifest.sizeBytes;
  tracker.state.filesTotal = manifest.files.length;

  await mkdir(o.targetDir, { recursive: true, mode: 0o700 });
  await chmod(o.targetDir, 0o700);
  for (const d of manifest.directories) await mkdir(join(o.targetDir, d.path), { recursive: true, mode: d.mode });
  for (const l of manifest.links) await symlink(l.target, join(o.targetDir, l.path));

  tracker.phase('copy');
  await runPool(
    manifest.files,
    o.workers,
    async (f) => {
      const dest = join(o.targetDir, f.path);
      const key = o.repo.backupFileKey(manifest.cluster, f.backup, f.path, f.codec);
      await o.repo.readObject(key, f.codec, { sha256: f.sha256, size: f.size }, createWriteStream(dest, { mode: f.mode, highWaterMark: 1 << 20 }));
      await utimes(dest, new Date(f.mtimeMs), new Date(f.mtimeMs));
      tracker.add(f.size, 1);
    },
    o.signal,
  );

  tracker.phase('recovery-settings');
  await writeFile(join(o.targetDir, 'backup_label'), manifest.backupLabel, { mode: 0o600 });
  if (manifest.tablespaceMap) await writeFile(join(o.targetDir, 'tablespace_map'), manifest.tablespaceMap, { mode: 0o600 });
  // postgresql.auto.conf is read last, so these settings win over anything in postgresql.conf.
  await appendFile(join(o.targetDir, 'postgresql.auto.conf'), `${recoverySettings(o).join('\n')}\n`, { mode: 0o600 });
  await writeFile(join(o.targetDir, 'recovery.signal'), '', { mode: 0o600 });
  tracker.phase('done');
  return { manifest, bytes: manifest.sizeBytes };
}
