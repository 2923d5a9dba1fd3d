/**
 * Fixtures for the unit tests that back up a hand-made data directory and restore it (copy engine,
 * delta restore): the manifest of a full backup of cluster c1 that began at 0/2000028 on
 * timeline 1, and the options of a restore of it to the latest point.
 */
import { createLogger } from '@pgfleet/core';
import type { BackupManifest, ManifestFile, Repository } from '@pgfleet/storage';
import type { RestoreOptions } from '../restore/restore.js';

export const TEST_CLUSTER = 'c1';

/** A full backup's manifest (WAL 000000010000000000000002) listing what the test stored. */
export function testFullManifest(o: {
  label: string;
  /** pg_control starts with the system identifier: a delta restore checks it against the target's. */
  systemIdentifier: string;
  directories: BackupManifest['directories'];
  links: BackupManifest['links'];
  files: ManifestFile[];
}): BackupManifest {
  return {
    format: 1,
    label: o.label,
    cluster: TEST_CLUSTER,
    type: 'full',
    systemIdentifier: o.systemIdentifier,
    pgVersionNum: 160000,
    walSegmentSize: 16 << 20,
    timeline: 1,
    startLsn: '0/2000028',
    stopLsn: '0/2000100',
    startTime: new Date().toISOString(),
    stopTime: new Date().toISOString(),
    walStart: '000000010000000000000002',
    walStop: '000000010000000000000002',
    backupLabel: 'START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\n',
    directories: o.directories,
    links: o.links,
    files: o.files,
    sizeBytes: o.files.reduce((s, f) => s + f.size, 0),
    storedBytes: o.files.reduce((s, f) => s + f.storedSize, 0),
    agentVersion: 'test',
  };
}

/** Restores backup `label` of c1 from the posix repository at repoPath into targetDir, promoting at the end of WAL. */
export function testRestoreOptions(
  repo: Repository,
  repoPath: string,
  label: string,
  targetDir: string,
  over: Partial<RestoreOptions> = {},
): RestoreOptions {
  return {
    cluster: TEST_CLUSTER,
    repo,
    walFetchArgs: ['--repo', repoPath],
    backupLabel: label,
    targetDir,
    target: { kind: 'latest' },
    action: 'promote',
    workers: 2,
    log: createLogger({ level: 'silent' }),
    progress: () => {},
    ...over,
  };
}
