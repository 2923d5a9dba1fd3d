/**
 * Repository fixtures for the agent's unit tests (expire, verify): a posix repository in a temp
 * directory and hand-written backups in it, just real enough for what those jobs read (manifest,
 * stored files by key, WAL by name).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after } from 'node:test';
import { PosixDriver, Repository, type BackupManifest, type ManifestFile } from '@pgfleet/storage';
import { TEST_MANIFEST_KEYS } from '@pgfleet/storage/testing';

/** The cluster keys of every test repository (a fixed secret: tests sign manifests and WAL names and check them like a fleet does). */
export { TEST_MANIFEST_KEYS };

/**
 * Returns a function that makes a posix Repository in a new temp directory; every directory it
 * made is removed when the test file ends. Call it at the top of a test file (it registers `after`).
 */
export function tempRepositories(prefix: string): () => { root: string; repo: Repository } {
  const dirs: string[] = [];
  after(() => {
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });
  return () => {
    const root = mkdtempSync(join(tmpdir(), prefix));
    dirs.push(root);
    return { root, repo: new Repository(new PosixDriver(root), TEST_MANIFEST_KEYS) };
  };
}

/** The name of segment `n` (below 2^32) of timeline `tli`. */
export const segmentName = (tli: number, n: number): string =>
  tli.toString(16).toUpperCase().padStart(8, '0') + '00000000' + n.toString(16).toUpperCase().padStart(8, '0');

/** A 4-byte uncompressed manifest entry stored by backup `backup`, whose content hashes to sha. */
export function manifestFile(path: string, backup: string, sha: string): ManifestFile {
  return {
    path,
    size: 4,
    mtimeMs: 0,
    mode: 0o600,
    sha256: sha,
    storedSize: 4,
    storedSha256: sha,
    codec: 'none',
    backup,
  };
}

export interface TestBackup {
  cluster: string;
  label: string;
  type: 'full' | 'incr';
  walStart: string;
  walStop: string;
  files: ManifestFile[];
  priorLabel?: string;
  /** ISO-8601; 2026-01-01T00:00:00Z unless given. */
  startTime?: string;
  /** ISO-8601; 2026-01-01T00:01:00Z unless given. */
  stopTime?: string;
  /** 16 MiB unless given. */
  walSegmentSize?: number;
  /** The manifest format (1 unless given; 2 for block-incremental entries). */
  format?: number;
}

/** Stores `body` for each file the backup itself holds, then its manifest (last, as a real backup does). */
export async function putTestBackup(repo: Repository, b: TestBackup, body: Buffer): Promise<void> {
  for (const f of b.files.filter((x) => x.backup === b.label))
    await repo.driver.put(repo.backupFileKey(b.cluster, b.label, f.path, 'none'), body);
  const m: BackupManifest = {
    format: b.format ?? 1,
    label: b.label,
    cluster: b.cluster,
    type: b.type,
    ...(b.priorLabel ? { priorLabel: b.priorLabel } : {}),
    systemIdentifier: '1',
    pgVersionNum: 170000,
    walSegmentSize: b.walSegmentSize ?? 16 * 1024 * 1024,
    timeline: Number.parseInt(b.walStart.slice(0, 8), 16),
    startLsn: '0/1',
    stopLsn: '0/2',
    startTime: b.startTime ?? '2026-01-01T00:00:00Z',
    stopTime: b.stopTime ?? '2026-01-01T00:01:00Z',
    walStart: b.walStart,
    walStop: b.walStop,
    backupLabel: 'x',
    directories: [],
    links: [],
    files: b.files,
    sizeBytes: 0,
    storedBytes: 0,
    agentVersion: 'test',
  };
  await repo.writeManifest(m);
}

export type TestBackupWriter = (
  label: string,
  type: 'full' | 'incr',
  walStart: string,
  walStop: string,
  files: ManifestFile[],
  more?: Partial<TestBackup>,
) => Promise<void>;

/**
 * putTestBackup for one cluster and body, in the short form a test writes its chain in (label,
 * type, WAL range, files); `defaults`, then `more`, set what else differs. `repo` is asked at each
 * call: test files make a new repository per test.
 */
export function testBackupWriter(
  repo: () => Repository,
  cluster: string,
  body: Buffer,
  defaults: Partial<TestBackup> = {},
): TestBackupWriter {
  return (label, type, walStart, walStop, files, more = {}) =>
    putTestBackup(repo(), { cluster, label, type, walStart, walStop, files, ...defaults, ...more }, body);
}
