/**
 * The lease a backup holds while it runs (storage backup-lease.ts), and the checks that make it
 * safe against an expire running at the same time, from the controller or without it:
 *
 *   backup                                   expire of a backup X
 *   B1 choose the prior from the listing      E1 a live lease names X: keep X
 *   B2 write the lease naming the chain       E2 withdraw X's manifest
 *   B3 every chain manifest still exists?     E3 a live lease names X now: put the manifest back,
 *      (no: stop, nothing references it)         keep X; otherwise delete X's files
 *   ... refresh while running ...
 *   B4 refresh, chain manifests still exist?
 *   B5 manifest, then the lease goes
 *
 * If B3 finds X's manifest, every E2 of X comes after B2, so its E3 sees the lease and X's files
 * stay. If the lease went stale meanwhile (the process was paused for longer than staleAfterMs)
 * an expire may have taken X: B4 finds its manifest gone and the backup stops before its own
 * manifest would name missing files.
 *
 * A logical dump holds the same kind of lease under its own label (acquireDump, no chain): it is
 * what tells the objects of a dump still running from those of one whose agent died
 * (logical/abandoned-dumps.ts).
 */
import { hostname } from 'node:os';
import { PgfleetError, type Logger } from '@pgfleet/core';
import {
  entryBackups,
  type BackupLease,
  type BackupManifest,
  type ManifestHead,
  type Repository,
} from '@pgfleet/storage';

/** How often a running backup refreshes its lease. */
export const LEASE_REFRESH_MS = 30_000;
/** A lease this many refresh intervals old is stale: its backup died. Generous, for clock skew between hosts and slow repositories. */
export const LEASE_STALE_REFRESHES = 20;

/**
 * The labels a backup built on `prior` references files of: the prior and every backup the prior
 * reads from (from its entries, or as a streamed reader counted them: ManifestReader.readsFrom).
 */
export function leaseChain(
  prior:
    BackupManifest | { head: Pick<ManifestHead, 'label' | 'priorLabel'>; readsFrom: readonly string[] } | undefined,
): string[] {
  if (!prior) return [];
  const head = 'head' in prior ? prior.head : prior;
  const reads = 'head' in prior ? prior.readsFrom : prior.files.flatMap(entryBackups);
  return [...new Set([head.label, ...(head.priorLabel ? [head.priorLabel] : []), ...reads])];
}

/** Where a lease lives and what losing it is called: a backup's backup.lease, or a dump's dump.lease. */
interface LeaseSlot {
  what: 'backup' | 'dump';
  write(lease: BackupLease): Promise<void>;
  remove(): Promise<void>;
  lost: 'BackupLeaseLost' | 'DumpLeaseLost';
}

function newLease(cluster: string, label: string, chain: readonly string[], refreshMs: number): BackupLease {
  const now = new Date().toISOString();
  return {
    format: 1,
    cluster,
    label,
    chain: [...chain],
    host: hostname(),
    pid: process.pid,
    startedAt: now,
    refreshedAt: now,
    staleAfterMs: refreshMs * LEASE_STALE_REFRESHES,
  };
}

export class BackupLeaseHolder {
  private timer: NodeJS.Timeout | undefined;
  private refreshing: Promise<void> | undefined;

  private constructor(
    private readonly repo: Repository,
    private readonly lease: BackupLease,
    private readonly refreshMs: number,
    private readonly log: Logger,
    private readonly slot: LeaseSlot,
  ) {}

  /**
   * The lease of dump `label` (storage Repository.writeDumpLease: the same form, no chain), which
   * tells a running dump's objects from a dead one's (logical/abandoned-dumps.ts). Refreshed every
   * `refreshMs` until release(); confirm() before dump.json fails with DumpLeaseLost when it cannot.
   */
  static async acquireDump(
    repo: Repository,
    cluster: string,
    label: string,
    log: Logger,
    refreshMs = LEASE_REFRESH_MS,
  ): Promise<BackupLeaseHolder> {
    const holder = new BackupLeaseHolder(repo, newLease(cluster, label, [], refreshMs), refreshMs, log, {
      what: 'dump',
      write: (l) => repo.writeDumpLease(l),
      remove: () => repo.removeDumpLease(cluster, label),
      lost: 'DumpLeaseLost',
    });
    await holder.refresh();
    holder.timer = setInterval(() => void holder.refreshInBackground(), refreshMs);
    holder.timer.unref();
    return holder;
  }

  /**
   * Writes the lease of backup `label` (B2), then checks that every backup of its chain is still
   * complete (B3); BackupChainExpired when one is not. Refreshes it every `refreshMs` until release().
   */
  static async acquire(
    repo: Repository,
    cluster: string,
    label: string,
    chain: readonly string[],
    log: Logger,
    refreshMs = LEASE_REFRESH_MS,
  ): Promise<BackupLeaseHolder> {
    const lease = newLease(cluster, label, chain, refreshMs);
    await repo.writeBackupLease(lease);
    const holder = new BackupLeaseHolder(repo, lease, refreshMs, log, {
      what: 'backup',
      write: (l) => repo.writeBackupLease(l),
      remove: () => repo.removeBackupLease(cluster, label),
      lost: 'BackupLeaseLost',
    });
    try {
      await holder.checkChain('started');
    } catch (err) {
      await holder.release(true);
      throw err;
    }
    holder.timer = setInterval(() => void holder.refreshInBackground(), refreshMs);
    holder.timer.unref();
    return holder;
  }

  /** Records the first WAL segment the backup needs (once pg_backup_start returned), so expire keeps WAL from there. */
  async recordWalStart(segment: string): Promise<void> {
    this.lease.walStart = segment;
    await this.refreshing;
    await this.refresh();
  }

  /** B4: refreshes the lease now and checks the chain again; call right before the manifest. */
  async confirm(): Promise<void> {
    await this.refreshing;
    try {
      await this.refresh();
    } catch (err) {
      throw new PgfleetError(
        this.slot.lost,
        `${this.slot.what} ${this.lease.label} could not refresh its lease in ${this.repo.location}: ${(err as Error).message}`,
        { cause: err },
      );
    }
    await this.checkChain('ran');
  }

  /** Stops refreshing; `remove`: deletes the lease (the backup's manifest exists, or its files are gone). */
  async release(remove: boolean): Promise<void> {
    clearInterval(this.timer);
    await this.refreshing;
    if (!remove) return;
    await this.slot
      .remove()
      .catch((err: unknown) =>
        this.log.warn(
          { label: this.lease.label, err: (err as Error).message },
          `could not remove the lease of the finished ${this.slot.what}; it goes stale and is then ignored`,
        ),
      );
  }

  private async refresh(): Promise<void> {
    this.lease.refreshedAt = new Date().toISOString();
    await this.slot.write(this.lease);
  }

  private async refreshInBackground(): Promise<void> {
    if (this.refreshing) return;
    this.refreshing = this.refresh()
      .catch((err: unknown) =>
        this.log.warn(
          { label: this.lease.label, err: (err as Error).message },
          `could not refresh the ${this.slot.what} lease; the ${this.slot.what} checks it again before its manifest`,
        ),
      )
      .finally(() => (this.refreshing = undefined));
    await this.refreshing;
  }

  private async checkChain(when: 'started' | 'ran'): Promise<void> {
    const { cluster, label, chain } = this.lease;
    for (const c of chain) {
      if (await this.repo.hasManifest(cluster, c)) continue;
      throw new PgfleetError(
        'BackupChainExpired',
        `backup ${c}, which backup ${label} of cluster ${cluster} references files of, was expired while the backup ${when}; it was stopped before its manifest`,
      );
    }
  }
}
