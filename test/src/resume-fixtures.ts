/** What the resume e2e tests (resume.test, resume-random-kill.test) share: their tables, job JSON, row digests and the copy bound. */
import assert from 'node:assert/strict';
import type { BackupManifest, JournalBatch } from '@pgfleet/storage';
import { join } from 'node:path';
import { startPostgres, type PgInstance } from '@pgfleet/testkit';
import { tableDigests as digestsOf } from './block-chain.js';
import type { Fleet } from './harness.js';

export const TABLES = ['big1', 'big2', 'big3', 'big4', 'small'] as const;

export interface JobJson {
  id: string;
  state: string;
  error?: { code: string; message: string };
  progress?: { phase: string; message?: string };
  backup?: { label: string };
}

/** Row count and md5 of every table, to compare a restore with its source. */
export function tableDigests(pg: PgInstance): Promise<Record<string, string>> {
  return digestsOf(pg, TABLES);
}

/** "N file(s) copied (B bytes); M file(s) (T bytes) taken over ..." from the job's last progress message. */
export function figures(job: JobJson): { copiedBytes: number; takenFiles: number; takenBytes: number } {
  const message = job.progress?.message ?? '';
  const copied = /(\d+) file\(s\) copied \((\d+) bytes\)/.exec(message);
  const taken = /(\d+) file\(s\) \((\d+) bytes\) taken over/.exec(message);
  assert.ok(copied, `the job reports what it copied: ${message}`);
  return { copiedBytes: Number(copied[2]), takenFiles: Number(taken?.[1] ?? 0), takenBytes: Number(taken?.[2] ?? 0) };
}

/**
 * The bytes of a backup's own files that the killed run had not journaled, or journaled but must
 * be copied again: changed since (size or mtime), an mtime too close to that run's listing to
 * prove it unchanged (prior.ts MTIME_GUARD_MS), or pg_control (always copied again, last).
 */
export function notJournaled(manifest: BackupManifest, journal: JournalBatch[]): number {
  const journaled = new Map(journal.flatMap((b) => b.files.map((f) => [f.path, { f, listedAtMs: b.listedAtMs }])));
  let bytes = 0;
  for (const f of manifest.files.filter((x) => x.backup === manifest.label)) {
    const j = journaled.get(f.path);
    if (
      !j ||
      f.path === 'global/pg_control' ||
      j.f.size !== f.size ||
      j.f.mtimeMs !== f.mtimeMs ||
      j.f.mtimeMs >= j.listedAtMs - 2000
    )
      bytes += f.size;
  }
  return bytes;
}

/**
 * Restores `label` of `cluster` (to its end, `--target immediate`) into a fresh directory, starts
 * PostgreSQL on it and checks every table's digest against `expected`. The started server is
 * pushed to `started` (stopped here on success; the caller's after() stops it on failure).
 */
export async function restoreExactly(
  fleet: Fleet,
  cluster: string,
  label: string,
  expected: Record<string, string>,
  started: PgInstance[],
): Promise<void> {
  const dir = join(fleet.dir, `restore-${label}`);
  const r = await fleet.cli('restore', cluster, '--to', dir, '--backup', label, '--target', 'immediate', '--wait');
  assert.equal(r.code, 0, `restore of ${label}:\n${r.stdout}\n${r.stderr}\n${await fleet.logs()}`);
  const pg = await startPostgres({ dataDir: dir, waitForRecovery: true, settings: { archive_mode: 'off' } });
  started.push(pg);
  assert.deepEqual(await tableDigests(pg), expected, `rows restored from ${label}`);
  await pg.stop();
}
