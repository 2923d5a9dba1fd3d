/**
 * A small, valid full-backup manifest for the storage package's own tests (manifest streaming,
 * trust checks, summaries): one place for the fields every manifest must carry, so a test states
 * only what it is about. Not exported from the package.
 */
import type { BackupManifest } from './manifest.js';

export function testManifest(over: Partial<BackupManifest> = {}): BackupManifest {
  return {
    format: 1,
    label: '20260101-000000F',
    cluster: 'shop',
    type: 'full',
    systemIdentifier: '7',
    pgVersionNum: 150000,
    walSegmentSize: 16 << 20,
    timeline: 1,
    startLsn: '0/2000028',
    stopLsn: '0/2000100',
    startTime: '2026-01-01T00:00:00.000Z',
    stopTime: '2026-01-01T00:00:01.000Z',
    walStart: '000000010000000000000002',
    walStop: '000000010000000000000002',
    backupLabel: 'START WAL LOCATION: 0/2000028\n',
    directories: [
      { path: 'base', mode: 0o700 },
      { path: 'base/1', mode: 0o700 },
    ],
    links: [],
    files: [],
    sizeBytes: 0,
    storedBytes: 0,
    agentVersion: 'test',
    ...over,
  };
}
