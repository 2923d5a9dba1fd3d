/**
 * The lease of a backup in progress (docs/repository-format.md "Atomicity"):
 * `<cluster>/backup/<label>/backup.lease`, written when the backup starts, refreshed while it
 * runs, removed when it ends. Until its manifest exists a backup is invisible to every listing,
 * so without the lease nothing in the repository says that it will soon reference files of
 * older backups: an expire (from the controller, or one run while the controller is down) could
 * delete them, and the manifest written later would name missing files. The catalog cannot say
 * it either: a backup whose agent lost the controller for longer than the reclaim grace is a
 * failed job there while the agent still runs it.
 *
 * A lease names the backups whose files the new one references (`chain`: its prior and every
 * backup the prior reads from). Expire keeps a backup that a live lease names. A lease not
 * refreshed for `staleAfterMs` belongs to a backup that died (kill -9, power loss: nothing ran to
 * remove it): it is ignored and reported, so a dead backup cannot hold retention forever.
 */
import { PgfleetError } from '@pgfleet/core/errors';

export const BACKUP_LEASE_FORMAT = 1;

export interface BackupLease {
  format: 1;
  cluster: string;
  /** The backup in progress. */
  label: string;
  /** Labels of the backups whose files this backup references (empty for a full). */
  chain: string[];
  /** The first WAL segment the backup needs, once pg_backup_start named it: expire keeps WAL from there. */
  walStart?: string;
  /** Who holds it, for the operator reading a report. */
  host: string;
  pid: number;
  startedAt: string;
  refreshedAt: string;
  /** Without a refresh for this long the lease is stale (its backup presumed dead). */
  staleAfterMs: number;
}

/** A lease as found in the repository, with what expire makes of it. */
export interface FoundLease {
  key: string;
  label: string;
  /** Undefined when the object could not be parsed (then it protects nothing and is reported). */
  lease: BackupLease | undefined;
  state: 'live' | 'stale' | 'unreadable';
  /** Milliseconds since its last refresh (by the clock of the reader). */
  ageMs?: number;
}

export function parseBackupLease(text: string, key: string): BackupLease {
  let doc: Partial<BackupLease>;
  try {
    doc = JSON.parse(text) as Partial<BackupLease>;
  } catch (err) {
    throw new PgfleetError('RepoManifestInvalid', `backup lease ${key} is not JSON`, { cause: err });
  }
  const ok =
    doc.format === BACKUP_LEASE_FORMAT &&
    typeof doc.cluster === 'string' &&
    typeof doc.label === 'string' &&
    Array.isArray(doc.chain) &&
    doc.chain.every((l) => typeof l === 'string') &&
    typeof doc.refreshedAt === 'string' &&
    Number.isFinite(Date.parse(doc.refreshedAt)) &&
    typeof doc.staleAfterMs === 'number' &&
    doc.staleAfterMs > 0;
  if (!ok) throw new PgfleetError('RepoManifestInvalid', `backup lease ${key} is not a pgfleet backup lease`);
  return doc as BackupLease;
}

/**
 * Bounds on what a lease may claim: anyone who can write the cluster's prefix can write a lease, and
 * a lease that never goes stale would hold retention (backups and their WAL) forever.
 */
export const MAX_LEASE_STALE_MS = 60 * 60_000;
/** A refresh time further ahead of the reader's clock than this is not clock skew: the lease is stale. */
export const MAX_LEASE_CLOCK_SKEW_MS = 10 * 60_000;

/** Live or stale at `nowMs`; a refresh time a little ahead of the reader's clock (clock skew) counts as fresh. */
export function leaseState(lease: BackupLease, nowMs: number): { state: 'live' | 'stale'; ageMs: number } {
  const refreshedMs = Date.parse(lease.refreshedAt);
  const ageMs = Math.max(0, nowMs - refreshedMs);
  const staleAfterMs = Math.min(lease.staleAfterMs, MAX_LEASE_STALE_MS);
  const fromTheFuture = refreshedMs - nowMs > MAX_LEASE_CLOCK_SKEW_MS;
  return { state: fromTheFuture || ageMs > staleAfterMs ? 'stale' : 'live', ageMs };
}

/**
 * Backup label -> the live lease that protects it: the leased backup's own label and every label
 * of its chain.
 */
export function leasedLabels(found: readonly FoundLease[]): Map<string, FoundLease> {
  const out = new Map<string, FoundLease>();
  for (const f of found) {
    if (f.state !== 'live' || !f.lease) continue;
    for (const label of [f.label, ...f.lease.chain]) if (!out.has(label)) out.set(label, f);
  }
  return out;
}
