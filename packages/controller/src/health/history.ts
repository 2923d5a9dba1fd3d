/**
 * The history the console's charts draw (docs/console.md): every health evaluation adds the
 * cluster's RPO to a minute and an hour bucket in the catalog (max and mean, catalog
 * cluster_history), and old buckets are pruned, minute ones sooner, so a year of history stays a
 * few thousand rows per cluster whatever the heartbeat rate. Backups, drills and events need no
 * copy: the catalog keeps them already.
 */
import type { MessageInitShape } from '@bufbuild/protobuf';
import { timestampFromMs } from '@bufbuild/protobuf/wkt';
import type { CatalogStore, ClusterSample, HistoryResolution } from '@pgfleet/catalog';
import type { GetClusterHistoryResponseSchema } from '@pgfleet/proto';

const HOUR_MS = 3_600_000;
/** How long each resolution's buckets are kept. */
export const HISTORY_KEEP_MS: Record<HistoryResolution, number> = { 60: 48 * HOUR_MS, 3600: 400 * 24 * HOUR_MS };
/**
 * At most one sample per cluster this often: heartbeats evaluate health every few seconds, and RPO
 * grows linearly between archived segments, so a bucket's max is off by at most this much.
 */
export const MIN_SAMPLE_GAP_MS = 10_000;
/** How often a controller prunes (a cheap indexed delete; once an hour is plenty). */
const PRUNE_EVERY_MS = HOUR_MS;
/** A history request without `since`: the last day. */
const DEFAULT_SPAN_MS = 24 * HOUR_MS;

/** Records samples and prunes now and then; one per health monitor. */
export class HistoryRecorder {
  private lastPrune = 0;
  private readonly lastSample = new Map<string, number>();

  constructor(private readonly store: CatalogStore) {}

  async record(cluster: string, at: number, rpoSeconds: number): Promise<void> {
    await this.recordMany([{ cluster, at, rpoSeconds }]);
  }

  /** Samples of many clusters (a health batch's) in one catalog transaction. */
  async recordMany(samples: readonly ClusterSample[]): Promise<void> {
    const taken = samples.filter(({ cluster, at }) => {
      const last = this.lastSample.get(cluster);
      if (last !== undefined && at >= last && at - last < MIN_SAMPLE_GAP_MS) return false;
      this.lastSample.set(cluster, at);
      return true;
    });
    if (taken.length === 0) return;
    await this.store.recordClusterSamples(taken);
    const at = Math.max(...taken.map((s) => s.at));
    if (at - this.lastPrune < PRUNE_EVERY_MS) return;
    this.lastPrune = at;
    for (const [resolution, keep] of Object.entries(HISTORY_KEEP_MS))
      await this.store.pruneClusterHistory(Number(resolution) as HistoryResolution, at - keep);
  }
}

/**
 * The cluster's RPO buckets since `since` (default the last day): minute buckets while they
 * cover the span, hour buckets for anything older than the minutes are kept.
 */
export async function clusterHistory(
  store: CatalogStore,
  cluster: string,
  since: number | undefined,
  now: number,
): Promise<MessageInitShape<typeof GetClusterHistoryResponseSchema>> {
  const from = since ?? now - DEFAULT_SPAN_MS;
  const resolution: HistoryResolution = now - from <= HISTORY_KEEP_MS[60] ? 60 : 3600;
  const buckets = await store.listClusterHistory(cluster, resolution, from);
  return {
    rpo: buckets.map((b) => ({
      start: timestampFromMs(b.start),
      resolutionSeconds: b.resolution,
      rpoMaxSeconds: b.rpoMaxSeconds,
      rpoAvgSeconds: b.rpoAvgSeconds,
      samples: b.samples,
    })),
  };
}
