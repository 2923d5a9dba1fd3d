/**
 * Leaderships (scheduler, health, outbox) with several controllers on one catalog: each round
 * asks the store for its leadership (a PostgreSQL advisory lock on a session of its own, a new
 * fencing epoch at each acquisition). This logs the changes, so an operator (or a test reading
 * the logs after a kill -9) sees when each controller took or lost which leadership, and under
 * which epoch its writes are fenced.
 */
import type { Logger } from '@pgfleet/core';
import type { CatalogStore } from '@pgfleet/catalog';

/** Per store: the leaderships it held at its last round, with their epoch. */
const held = new WeakMap<CatalogStore, Map<string, number | undefined>>();

/** store.tryAcquireLeadership, logging an acquisition (with its epoch) and a loss. */
export async function tryLead(store: CatalogStore, name: string, logger: Logger | undefined): Promise<boolean> {
  const leads = await store.tryAcquireLeadership(name);
  let mine = held.get(store);
  if (!mine) held.set(store, (mine = new Map()));
  const epoch = leads ? store.leadershipFence(name)?.epoch : undefined;
  const before = mine.has(name) ? mine.get(name) : null;
  if (leads && before !== epoch) {
    mine.set(name, epoch);
    logger?.info({ leadership: name, epoch }, `leading ${name} from now on`);
  } else if (!leads && before !== null) {
    mine.delete(name);
    logger?.warn({ leadership: name, epoch: before }, `no longer leading ${name}: another controller leads it`);
  }
  return leads;
}
