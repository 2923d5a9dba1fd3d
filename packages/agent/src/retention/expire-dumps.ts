/**
 * The logical dumps part of an expire job (ExpireJob.dump_labels, retention by the policy's
 * logical tiers, docs/logical.md): each dump's dump.json goes first, then its files
 * (Repository.deleteDump), so a crash half-way leaves a directory without a manifest, which no
 * listing takes for a complete dump and which the next expire of that label removes. Deleting a
 * dump that is already gone is a no-op, so a retried job converges.
 */
import { isDumpLabel, PgfleetError, type Logger } from '@pgfleet/core';
import type { Repository } from '@pgfleet/storage';

export interface ExpireDumpsOptions {
  cluster: string;
  repo: Repository;
  labels: readonly string[];
  dryRun?: boolean;
  log: Logger;
  signal?: AbortSignal;
}

/** Deletes the dumps `labels`; returns the labels deleted (all of them, in order). */
export async function expireDumps(o: ExpireDumpsOptions): Promise<string[]> {
  // A label becomes part of a key prefix: nothing that could reach outside the dump's directory.
  for (const label of o.labels)
    if (!isDumpLabel(label))
      throw new PgfleetError('InvalidArgument', `expire job names '${label}', which is not a dump label`);
  const deleted: string[] = [];
  for (const label of o.labels) {
    o.signal?.throwIfAborted();
    if (!o.dryRun) await o.repo.deleteDump(o.cluster, label);
    deleted.push(label);
    o.log.info({ label, dryRun: o.dryRun === true }, 'dump expired');
  }
  return deleted;
}
