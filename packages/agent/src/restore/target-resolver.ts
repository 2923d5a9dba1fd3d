/**
 * Named restore points and transaction ids exist only inside the WAL, so the backup to restore
 * for them cannot be picked from the catalog. The agent decodes the archived WAL with PostgreSQL's
 * own pg_waldump (the binary matching the backup's major version) and looks for the
 * RESTORE_POINT record of that name, or the COMMIT/ABORT record of that xid; the backup is the
 * newest one that is consistent (stop LSN) before that record.
 */
import { execFile } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { PgfleetError, type Logger } from '@pgfleet/core';
import { Lsn, walFileKind } from '@pgfleet/pg';
import type { BackupManifest, Codec, Repository } from '@pgfleet/storage';

const run = promisify(execFile);

export interface TargetLsn {
  lsn: Lsn;
  backup: BackupManifest;
}

/** Where a restore point or transaction end was found: its LSN and the timeline whose WAL holds it. */
export interface TargetHit {
  lsn: Lsn;
  timeline: number;
}

/**
 * Every place in the archived WAL (from the oldest backup's start on) where the target is: the
 * RESTORE_POINT record of that name, or the COMMIT/ABORT of that xid. Sorted by LSN. The same
 * record can be found on two timelines when it precedes a switch (the new timeline's first
 * segment holds a copy of its parent's WAL up to the switch point).
 */
export async function findTargetHits(
  repo: Repository,
  cluster: string,
  oldest: Pick<BackupManifest, 'pgVersionNum' | 'walStart'>,
  target: { kind: 'name'; name: string } | { kind: 'xid'; xid: string },
  opts: { pgBinDir?: string },
): Promise<TargetHit[]> {
  const major = Math.floor(oldest.pgVersionNum / 10000);
  const waldump = join(opts.pgBinDir ?? `/usr/lib/postgresql/${major}/bin`, 'pg_waldump');
  const segments: { name: string; key: string; sha256: string; codec: Codec }[] = [];
  for await (const w of repo.listWal(cluster)) {
    // Only authenticated copies (wal-auth.ts): a planted segment must not place the target.
    if (w.authentic && walFileKind(w.name) === 'segment' && w.name.slice(8) >= oldest.walStart.slice(8))
      segments.push(w);
  }
  if (segments.length === 0) throw new PgfleetError('RestorePointNotFound', `no archived WAL for cluster ${cluster}`);
  const dir = await mkdtemp(join(tmpdir(), 'pgfleet-waldump-'));
  try {
    for (const s of segments)
      await repo.readObject(s.key, s.codec, { sha256: s.sha256 }, createWriteStream(join(dir, s.name)));
    const byTimeline = new Map<string, string[]>();
    for (const s of segments)
      byTimeline.set(s.name.slice(0, 8), [...(byTimeline.get(s.name.slice(0, 8)) ?? []), s.name]);
    const hits: TargetHit[] = [];
    for (const [tliHex, names] of byTimeline) {
      names.sort();
      // pg_waldump exits non-zero at the end of valid WAL (the unfilled tail of the last segment): read its output anyway.
      const out = await run(waldump, ['-p', dir, names[0]!, names.at(-1)!], { maxBuffer: 1 << 30 }).then(
        (r) => r.stdout,
        (err: { stdout?: string; stderr?: string }) => {
          if (!err.stdout)
            throw new PgfleetError('Internal', `pg_waldump failed: ${err.stderr ?? String(err)}`, { cause: err });
          return err.stdout;
        },
      );
      for (const line of out.split('\n')) {
        const lsn = /lsn: ([0-9A-F]+\/[0-9A-F]+)/.exec(line)?.[1];
        if (!lsn) continue;
        if (
          target.kind === 'name'
            ? line.includes(`desc: RESTORE_POINT ${target.name}`) &&
              line.trimEnd().endsWith(`RESTORE_POINT ${target.name}`)
            : /rmgr: Transaction/.test(line) &&
              new RegExp(`tx:\\s+${target.xid},`).test(line) &&
              /desc: (COMMIT|ABORT)/.test(line)
        ) {
          hits.push({ lsn: Lsn.parse(lsn), timeline: Number.parseInt(tliHex, 16) });
        }
      }
    }
    return hits.sort((a, b) => a.lsn.compare(b.lsn) || a.timeline - b.timeline);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

export function describeWalTarget(target: { kind: 'name'; name: string } | { kind: 'xid'; xid: string }): string {
  return target.kind === 'name' ? `restore point '${target.name}'` : `transaction ${target.xid}`;
}

/** The newest backup consistent before the first place the target is found (single-timeline use: drills). */
export async function findTargetLsn(
  repo: Repository,
  cluster: string,
  backups: BackupManifest[],
  target: { kind: 'name'; name: string } | { kind: 'xid'; xid: string },
  opts: { pgBinDir?: string; log: Logger },
): Promise<TargetLsn> {
  const oldest = backups[0]!;
  const hits = await findTargetHits(repo, cluster, oldest, target, opts);
  for (const hit of hits) {
    const candidates = backups.filter((b) => Lsn.parse(b.stopLsn).compare(hit.lsn) <= 0);
    if (candidates.length > 0) {
      opts.log.info(
        { target, lsn: hit.lsn.toString(), backup: candidates.at(-1)!.label },
        'recovery target found in archived WAL',
      );
      return { lsn: hit.lsn, backup: candidates.at(-1)! };
    }
  }
  throw targetNotFound(cluster, oldest, target, hits);
}

export function targetNotFound(
  cluster: string,
  oldest: BackupManifest,
  target: { kind: 'name'; name: string } | { kind: 'xid'; xid: string },
  hits: readonly TargetHit[],
): PgfleetError {
  const what = describeWalTarget(target);
  if (hits.length > 0)
    return new PgfleetError(
      'TargetBeforeOldestBackup',
      `${what} (at ${hits[0]!.lsn.toString()}) is before the end of the oldest backup ${oldest.label} (${oldest.stopLsn})`,
    );
  return new PgfleetError('RestorePointNotFound', `${what} is not in the archived WAL of cluster ${cluster}`);
}
