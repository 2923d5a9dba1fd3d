/**
 * Prometheus metrics (prom-client) and liveness/readiness probes on --metrics-listen:
 *   GET /metrics  per cluster: last backup time/size/duration, RPO, archive failures, WAL
 *                 archived, health conditions; jobs by state; agents connected; unsent events
 *   GET /healthz  the process is up
 *   GET /readyz   the gRPC server is serving and the catalog answers
 * Figures are read from the catalog (and the health monitor's last assessment) at scrape time,
 * so every controller sharing a catalog reports the same values. One registry per controller.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Gauge, Registry } from 'prom-client';
import type { Logger } from '@pgfleet/core';
import type { CatalogStore } from '@pgfleet/catalog';
import { archiverFromJson, assessCluster, type HealthMonitor, type HealthThresholds } from './health.js';

export interface MetricsOptions {
  store: CatalogStore;
  health: HealthMonitor;
  thresholds: HealthThresholds;
  now: () => number;
  ready: () => boolean;
}

export interface Metrics {
  registry: Registry;
  /** Reads the catalog into the gauges; call before each scrape. */
  refresh(): Promise<void>;
}

export function createMetricsRegistry(opts: MetricsOptions): Metrics {
  const registry = new Registry();
  const { store } = opts;
  const g = (name: string, help: string, labelNames: string[]) => new Gauge({ name, help, labelNames, registers: [registry] });
  const lastBackupTime = g('pgfleet_last_backup_timestamp_seconds', 'Stop time of the newest backup in the catalog (Unix seconds).', ['cluster', 'type']);
  const lastBackupSize = g('pgfleet_last_backup_size_bytes', 'Size of the database copied by the newest backup.', ['cluster', 'type']);
  const lastBackupStored = g('pgfleet_last_backup_stored_bytes', 'Bytes the newest backup stored in the repository.', ['cluster', 'type']);
  const lastBackupDuration = g('pgfleet_last_backup_duration_seconds', 'Duration of the newest backup (start to stop).', ['cluster', 'type']);
  const backups = g('pgfleet_backups', 'Backups in the catalog.', ['cluster']);
  const rpo = g('pgfleet_rpo_seconds', 'Now minus the time of the newest WAL safely in the repository.', ['cluster']);
  const rpoThreshold = g('pgfleet_rpo_threshold_seconds', 'RPO threshold above which rpo.breached is sent.', ['cluster']);
  const archiveFailed = g('pgfleet_wal_archive_failed_total', 'pg_stat_archiver.failed_count as last reported.', ['cluster']);
  const archived = g('pgfleet_wal_archived_total', 'pg_stat_archiver.archived_count as last reported.', ['cluster']);
  const lastArchived = g('pgfleet_wal_last_archived_timestamp_seconds', 'pg_stat_archiver.last_archived_time (Unix seconds).', ['cluster']);
  const archiveFailing = g('pgfleet_wal_archive_failing', '1 while archive_command is failing.', ['cluster']);
  const breached = g('pgfleet_health_breached', '1 while a health condition (archive, rpo, backup_stale, agent_silent) is breached.', ['cluster', 'condition']);
  const jobs = g('pgfleet_jobs', 'Jobs in the catalog by cluster, kind and state.', ['cluster', 'kind', 'state']);
  const agents = g('pgfleet_agents_connected', 'Agents with an open session.', ['cluster']);
  const lastHeartbeat = g('pgfleet_agent_last_heartbeat_timestamp_seconds', 'Time of the newest heartbeat of the cluster\'s agents (Unix seconds).', ['cluster']);
  const unsent = g('pgfleet_events_unsent', 'Events in the outbox not yet acknowledged by NATS (up to 10000).', []);

  const catalogOk = g('pgfleet_scrape_catalog_ok', '1 when the catalog could be read for this scrape.', []);
  // One refresh fills every gauge from one read of the catalog, before the registry serialises them.
  const refresh = async (): Promise<void> => {
    {
      for (const m of [lastBackupTime, lastBackupSize, lastBackupStored, lastBackupDuration, backups, rpo, rpoThreshold, archiveFailed, archived, lastArchived, archiveFailing, breached, jobs, agents, lastHeartbeat, unsent]) m.reset();
      try {
        const now = opts.now();
        const [clusters, allAgents, counts, states, pending] = await Promise.all([
          store.listClusters(),
          store.listAgents(),
          store.countJobs(),
          store.listHealthStates(),
          store.nextUnsentEvents(10_000),
        ]);
        unsent.set(pending.length);
        for (const c of counts) jobs.set({ cluster: c.cluster, kind: c.kind, state: c.state }, c.count);
        for (const s of states) breached.set({ cluster: s.cluster, condition: s.condition }, s.state === 'breached' ? 1 : 0);
        for (const cluster of clusters) {
          const name = cluster.name;
          const list = await store.listBackups(name);
          backups.set({ cluster: name }, list.length);
          const byType = new Map(list.map((b) => [b.type, b]));
          for (const [type, b] of byType) {
            lastBackupTime.set({ cluster: name, type }, b.stopTime / 1000);
            lastBackupSize.set({ cluster: name, type }, b.sizeBytes);
            lastBackupStored.set({ cluster: name, type }, b.storedBytes);
            lastBackupDuration.set({ cluster: name, type }, Math.max(0, (b.stopTime - b.startTime) / 1000));
          }
          const newest = list.at(-1);
          if (newest) {
            lastBackupTime.set({ cluster: name, type: 'any' }, newest.stopTime / 1000);
            lastBackupSize.set({ cluster: name, type: 'any' }, newest.sizeBytes);
            lastBackupStored.set({ cluster: name, type: 'any' }, newest.storedBytes);
            lastBackupDuration.set({ cluster: name, type: 'any' }, Math.max(0, (newest.stopTime - newest.startTime) / 1000));
          }
          const mine = allAgents.filter((a) => a.cluster === name);
          agents.set({ cluster: name }, mine.filter((a) => a.connected).length);
          const seen = Math.max(0, ...mine.map((a) => a.lastSeen ?? 0));
          if (seen > 0) lastHeartbeat.set({ cluster: name }, seen / 1000);
          const agent = [...mine].sort((x, y) => Number(y.connected) - Number(x.connected) || (y.lastSeen ?? 0) - (x.lastSeen ?? 0))[0];
          const a = agent ? archiverFromJson(agent.archiver) : undefined;
          if (a) {
            archiveFailed.set({ cluster: name }, Number(a.failedCount));
            archived.set({ cluster: name }, Number(a.archivedCount));
            if (a.lastArchivedTime !== null) lastArchived.set({ cluster: name }, a.lastArchivedTime / 1000);
          }
          // The monitor's assessment knows the streamed LSN; recompute RPO for "now" from it.
          const known = opts.health.assessments().get(name);
          const assessment = known
            ? assessCluster({ ...known.obs, now }, opts.thresholds)
            : agent
              ? assessCluster({
                  cluster: name, now, clusterCreatedAt: cluster.createdAt,
                  agent: { id: agent.id, connected: agent.connected, lastSeen: agent.lastSeen, ...(a ? { archiver: a } : {}), ...(agent.currentLsn ? { currentLsn: agent.currentLsn } : {}) },
                }, opts.thresholds)
              : undefined;
          if (assessment?.rpoSeconds !== undefined) rpo.set({ cluster: name }, assessment.rpoSeconds);
          if (assessment?.archiveFailing !== undefined) archiveFailing.set({ cluster: name }, assessment.archiveFailing ? 1 : 0);
          rpoThreshold.set({ cluster: name }, opts.thresholds.rpoSeconds);
        }
        catalogOk.set(1);
      } catch {
        catalogOk.set(0);
      }
    }
  };
  return { registry, refresh };
}

export interface MetricsServer {
  readonly port: number;
  readonly address: string;
  close(): Promise<void>;
}

/** Serves /metrics, /healthz and /readyz on host:port (port 0 picks a free one). */
export async function startMetricsServer(listen: string, { registry, refresh }: Metrics, opts: { store: CatalogStore; ready: () => boolean; logger: Logger }): Promise<MetricsServer> {
  const i = listen.lastIndexOf(':');
  const host = listen.slice(0, i).replace(/^\[|\]$/g, '');
  const port = Number(listen.slice(i + 1));
  const server: Server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    const reply = (code: number, body: string, type = 'text/plain; charset=utf-8') => {
      res.writeHead(code, { 'content-type': type });
      res.end(body);
    };
    if (req.method !== 'GET' && req.method !== 'HEAD') return reply(405, 'method not allowed\n');
    if (path === '/healthz') return reply(200, 'ok\n');
    if (path === '/readyz') {
      if (!opts.ready()) return reply(503, 'not serving\n');
      opts.store.listClusters().then(
        () => reply(200, 'ready\n'),
        (err: Error) => reply(503, `catalog unavailable: ${err.message}\n`),
      );
      return;
    }
    if (path === '/metrics') {
      refresh().then(() => registry.metrics()).then(
        (text) => reply(200, text, registry.contentType),
        (err: Error) => reply(500, `${err.message}\n`),
      );
      return;
    }
    reply(404, 'not found: try /metrics, /healthz or /readyz\n');
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const bound = (server.address() as AddressInfo).port;
  opts.logger.info({ listen, port: bound }, 'metrics listening');
  return {
    port: bound,
    address: `${host.includes(':') ? `[${host}]` : host}:${bound}`,
    close: () => new Promise<void>((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    }),
  };
}
