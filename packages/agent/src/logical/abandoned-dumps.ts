/**
 * Dumps whose agent died (docs/logical.md "Killed dumps"): an agent killed in the middle of a dump
 * (kill -9, OOM, power loss) cannot remove what the dump had stored (the databases before, the
 * table files stored while pg_dump ran), and the catalog cannot say it either: a dump whose agent
 * lost the controller for longer than the reclaim grace is a failed job there while the agent
 * still runs it. So the repository says it, with the dump's lease (backup/lease.ts acquireDump,
 * `<cluster>/dump/<label>/dump.lease`), written before the dump stores anything, refreshed every
 * 30 s while it runs, removed after its dump.json.
 *
 * A label without dump.json (never listed: the catalog records only dumps whose job succeeded, a
 * catalog rebuild only labels with dump.json) is abandoned when its lease no longer holds it
 * (resume.ts leaseHeld): stale (not refreshed for 10 min), or naming a process of this host that is
 * gone (a restarted agent knows at once), or this very process when it runs no dump of that label.
 * A live lease of another host, or of a live process here, or of a dump this process runs, keeps it.
 * A label with no lease at all (a dump of an agent from before leases, or a removal that stopped
 * half-way) is judged by its start time: abandoned a day after it.
 *
 * Who removes them: every agent daemon, at its start and hourly (daemon.ts, its own cluster in its
 * own repositories: a cluster never dumped or expired again is swept too), every dump while its
 * pg_dump runs (runDump, for its own cluster), and every expire job. The lease is read again right before the delete; a dump stalled past its lease's
 * staleness whose objects were removed meanwhile finds them missing before its dump.json and
 * fails with DumpLeaseLost, so nothing incomplete is ever listed.
 */
import { type Logger } from '@pgfleet/core';
import type { Repository } from '@pgfleet/storage';
import { leaseHeld } from '../backup/resume.js';

/** A dump directory with no lease at all is abandoned this long after its label's time. */
export const UNLEASED_DUMP_AGE_MS = 24 * 3_600_000;

/** Dumps this process runs, `<cluster>/<label>` (runDump adds its own before it writes its lease). */
const running = new Set<string>();

/** Marks dump `label` of `cluster` as running in this process until the returned function is called. */
export function runningDump(cluster: string, label: string): () => void {
  const key = `${cluster}/${label}`;
  running.add(key);
  return () => running.delete(key);
}

/** The time a dump label names (core dumpLabel: YYYYMMDD-HHMMSS-mmmL, UTC). */
function dumpLabelTimeMs(label: string): number | undefined {
  const m = /^(\d{4})(\d{2})(\d{2})-(\d{2})(\d{2})(\d{2})-(\d{3})L$/.exec(label);
  if (!m) return undefined;
  const [y, mo, d, h, mi, s, ms] = m.slice(1).map(Number) as [number, number, number, number, number, number, number];
  return Date.UTC(y, mo - 1, d, h, mi, s, ms);
}

/** Why unfinished dump `label` is abandoned, or undefined while something may still write it (module header). */
async function whyAbandoned(
  repo: Repository,
  cluster: string,
  label: string,
  nowMs: number,
): Promise<string | undefined> {
  const found = await repo.readDumpLease(cluster, label, nowMs);
  if (found) {
    if (leaseHeld(found.lease, found.state, running.has(`${cluster}/${label}`))) return undefined;
    if (found.state === 'stale') return `its lease was not refreshed for ${Math.round(found.ageMs! / 1000)} s`;
    if (found.state === 'unreadable') return 'its lease is unreadable';
    return `its lease names process ${found.lease!.pid} of this host, which ${found.lease!.pid === process.pid ? 'runs no such dump' : 'is gone'}`;
  }
  const startedMs = dumpLabelTimeMs(label);
  if (startedMs === undefined || nowMs - startedMs <= UNLEASED_DUMP_AGE_MS) return undefined;
  return `it has no lease and started ${Math.round((nowMs - startedMs) / 3_600_000)} h ago`;
}

export interface RemoveAbandonedDumpsOptions {
  repo: Repository;
  cluster: string;
  dryRun?: boolean;
  log: Logger;
  signal?: AbortSignal;
  /** The clock leases are judged by (tests). */
  now?: () => number;
}

/** Removes the cluster's abandoned dumps (module header); returns their labels. */
export async function removeAbandonedDumps(o: RemoveAbandonedDumpsOptions): Promise<string[]> {
  const now = o.now ?? Date.now;
  const removed: string[] = [];
  for (const d of await o.repo.dumpDirectories(o.cluster)) {
    o.signal?.throwIfAborted();
    if (d.complete) continue;
    const why = await whyAbandoned(o.repo, o.cluster, d.label, now());
    if (why === undefined) continue;
    // Asked again right before the delete: a dump's lease written or refreshed meanwhile keeps it.
    if ((await whyAbandoned(o.repo, o.cluster, d.label, now())) === undefined) continue;
    // Listed after that second look, so a dump that wrote its dump.json and then dropped its
    // lease between the two looks is seen as complete here, not judged by a listing from before.
    const objects = await o.repo.dumpObjects(o.cluster, d.label);
    if (objects.some((x) => x.key.endsWith('/dump.json'))) continue;
    if (!o.dryRun) await o.repo.deleteDump(o.cluster, d.label);
    removed.push(d.label);
    o.log.info(
      {
        label: d.label,
        files: objects.length,
        bytes: objects.reduce((n, x) => n + x.size, 0),
        why,
        dryRun: o.dryRun === true,
      },
      'removed the files of a dump whose agent died (never listed: no dump.json)',
    );
  }
  return removed;
}
