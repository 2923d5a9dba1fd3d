/**
 * Prometheus metrics (prom-client) and liveness/readiness probes on --metrics-listen:
 *   GET /metrics  per cluster: last backup time/size/duration, RPO and its threshold, archive
 *                 failures, WAL archived (pg_stat_archiver and the agent's bytes/segments), pg_wal
 *                 space, replication slot, stream lag, health conditions; the last verify's
 *                 verdict and the last drill's verdict and RTO; jobs by state; agents connected;
 *                 unsent events
 *   GET /healthz  the process is up
 *   GET /readyz   the gRPC server is serving and the catalog answers
 * Figures are read from the catalog (and the health monitor's last assessment) at scrape time,
 * so every controller sharing a catalog reports the same values. One registry per controller.
 * Per-cluster WAL figures are those of the agent the health monitor judges by (the connected
 * one, else the one seen last); the agent's archived bytes/segments count since it started, so
 * they drop back on an agent restart like any counter (rate() handles that).
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Gauge, Registry } from 'prom-client';
import { redactCredentials, timeSlicer, type Logger } from '@pgfleet/core';
import type { AgentRecord, AgentWalHealth, BackupRecord, CatalogStore, DumpRecord } from '@pgfleet/catalog';
import {
  archiverFromJson,
  assessCluster,
  clusterThresholds,
  observedAgent,
  pickAgent,
  type HealthMonitor,
  type HealthThresholds,
} from './health.js';
import { drillSummaryFromJob, verifySummaryFromJob } from './status.js';

export interface MetricsOptions {
  store: CatalogStore;
  health: HealthMonitor;
  thresholds: HealthThresholds;
  now: () => number;
  ready: () => boolean;
  /** How the controller serves: pgfleet_controller_insecure is 1 without TLS (--insecure), for alerting. */
  insecure?: boolean;
}

export interface Metrics {
  registry: Registry;
  /** Reads the catalog into the gauges; call before each scrape. */
  refresh(): Promise<void>;
}

export function createMetricsRegistry(opts: MetricsOptions): Metrics {
  const registry = new Registry();
  const { store } = opts;
  // Every per-scrape gauge is reset before it is filled, so a cluster or label that is gone disappears.
  const perScrape: Gauge[] = [];
  const g: GaugeMaker = (name, help, labelNames) => {
    const gauge = new Gauge({ name, help, labelNames, registers: [registry] });
    perScrape.push(gauge);
    return gauge;
  };
  // Declared in the order /metrics lists them.
  const backups = backupGauges(g);
  const dumps = dumpGauges(g);
  const rpo = rpoGauges(g);
  const archiver = archiverGauges(g);
  const wal = walGauges(g);
  const fleet = fleetGauges(g);
  const checks = restoreCheckGauges(g);
  new Gauge({
    name: 'pgfleet_controller_insecure',
    help: '1 when the controller serves without TLS (--insecure): agents unauthenticated, traffic in clear text.',
    registers: [registry],
  }).set(opts.insecure ? 1 : 0);
  const catalogOk = new Gauge({
    name: 'pgfleet_scrape_catalog_ok',
    help: '1 when the catalog could be read for this scrape.',
    registers: [registry],
  });

  // One refresh fills every gauge from one read of the catalog, before the registry serialises them.
  const refresh = async (): Promise<void> => {
    for (const m of perScrape) m.reset();
    try {
      const now = opts.now();
      const [clusters, allAgents, counts, states, pending, policies, lastDumps] = await Promise.all([
        store.listClusters(),
        store.listAgents(),
        store.countJobs(),
        store.listHealthStates(),
        store.nextUnsentEvents(10_000),
        store.listPolicies(),
        store.latestDumps(),
      ]);
      for (const d of lastDumps) setDumpGauges(dumps, d);
      fleet.unsent.set(pending.length);
      for (const c of counts) fleet.jobs.set({ cluster: c.cluster, kind: c.kind, state: c.state }, c.count);
      for (const s of states)
        fleet.breached.set({ cluster: s.cluster, condition: s.condition }, s.state === 'breached' ? 1 : 0);
      // By scope and by cluster, and in time slices: a scrape of 10,000 clusters must neither be
      // quadratic nor hold agent streams and admin calls for its whole length.
      const policyOf = new Map(policies.map((p) => [p.scope, p]));
      const agentsOf = new Map<string, typeof allAgents>();
      for (const a of allAgents) {
        const list = agentsOf.get(a.cluster);
        if (list) list.push(a);
        else agentsOf.set(a.cluster, [a]);
      }
      const slice = timeSlicer();
      for (const cluster of clusters) {
        await slice();
        const name = cluster.name;
        const thresholds = clusterThresholds(opts.thresholds, policyOf, name);
        rpo.rpoThreshold.set({ cluster: name }, thresholds.rpoSeconds);
        rpo.staleThreshold.set({ cluster: name }, thresholds.staleBackupSeconds);
        if (thresholds.staleDumpSeconds !== undefined)
          dumps.staleDumpThreshold.set({ cluster: name }, thresholds.staleDumpSeconds);
        setBackupGauges(backups, name, await store.listBackups(name));
        await setRestoreCheckGauges(checks, store, name);
        const mine = agentsOf.get(name) ?? [];
        fleet.agents.set({ cluster: name }, mine.filter((a) => a.connected).length);
        const seen = Math.max(0, ...mine.map((a) => a.lastSeen ?? 0));
        if (seen > 0) fleet.lastHeartbeat.set({ cluster: name }, seen / 1000);
        const agent = pickAgent(mine);
        setArchiverGauges(archiver, name, agent);
        if (agent?.walHealth) setWalGauges(wal, name, agent.walHealth);
        // The monitor's assessment knows the streamed LSN; recompute RPO for "now" from it.
        const known = opts.health.assessments().get(name);
        const assessment = known
          ? assessCluster({ ...known.obs, now }, thresholds)
          : agent
            ? assessCluster(
                { cluster: name, now, clusterCreatedAt: cluster.createdAt, agent: observedAgent(agent) },
                thresholds,
              )
            : undefined;
        if (assessment?.rpoSeconds !== undefined) rpo.rpo.set({ cluster: name }, assessment.rpoSeconds);
        if (assessment?.archiveFailing !== undefined)
          archiver.archiveFailing.set({ cluster: name }, assessment.archiveFailing ? 1 : 0);
      }
      catalogOk.set(1);
    } catch {
      catalogOk.set(0);
    }
  };
  return { registry, refresh };
}

/** Declares one per-scrape gauge in the registry. */
type GaugeMaker = (name: string, help: string, labelNames: string[]) => Gauge;

/** The newest complete logical dump of each cluster (docs/logical.md), and the dump.stale threshold. */
function dumpGauges(g: GaugeMaker) {
  return {
    lastDumpTime: g(
      'pgfleet_last_dump_timestamp_seconds',
      'Finish time of the newest complete logical dump (Unix seconds).',
      ['cluster'],
    ),
    lastDumpSize: g('pgfleet_last_dump_size_bytes', "Content bytes of the newest dump's files.", ['cluster']),
    lastDumpStored: g('pgfleet_last_dump_stored_bytes', 'Bytes the newest dump stored in the repository.', ['cluster']),
    lastDumpDuration: g('pgfleet_last_dump_duration_seconds', 'Duration of the newest dump (start to finish).', [
      'cluster',
    ]),
    staleDumpThreshold: g(
      'pgfleet_stale_dump_threshold_seconds',
      'dump.stale threshold of the cluster (absent: dumps are not judged).',
      ['cluster'],
    ),
  };
}

function setDumpGauges(m: ReturnType<typeof dumpGauges>, d: DumpRecord): void {
  const cluster = d.cluster;
  m.lastDumpTime.set({ cluster }, d.stopTime / 1000);
  m.lastDumpSize.set({ cluster }, d.sizeBytes);
  m.lastDumpStored.set({ cluster }, d.storedBytes);
  m.lastDumpDuration.set({ cluster }, Math.max(0, (d.stopTime - d.startTime) / 1000));
}

/** The newest backup of each type (and of any type) and how many the catalog holds. */
function backupGauges(g: GaugeMaker) {
  return {
    lastBackupTime: g(
      'pgfleet_last_backup_timestamp_seconds',
      'Stop time of the newest backup in the catalog (Unix seconds).',
      ['cluster', 'type'],
    ),
    lastBackupSize: g('pgfleet_last_backup_size_bytes', 'Size of the database copied by the newest backup.', [
      'cluster',
      'type',
    ]),
    lastBackupStored: g('pgfleet_last_backup_stored_bytes', 'Bytes the newest backup stored in the repository.', [
      'cluster',
      'type',
    ]),
    lastBackupDuration: g('pgfleet_last_backup_duration_seconds', 'Duration of the newest backup (start to stop).', [
      'cluster',
      'type',
    ]),
    backups: g('pgfleet_backups', 'Backups in the catalog.', ['cluster']),
  };
}

function setBackupGauges(m: ReturnType<typeof backupGauges>, cluster: string, list: readonly BackupRecord[]): void {
  m.backups.set({ cluster }, list.length);
  // The newest backup of each type, and of any type; list is oldest first, so later ones win.
  const newest = new Map<string, BackupRecord>(list.map((b) => [b.type, b]));
  if (list.length) newest.set('any', list.at(-1)!);
  for (const [type, b] of newest) {
    m.lastBackupTime.set({ cluster, type }, b.stopTime / 1000);
    m.lastBackupSize.set({ cluster, type }, b.sizeBytes);
    m.lastBackupStored.set({ cluster, type }, b.storedBytes);
    m.lastBackupDuration.set({ cluster, type }, Math.max(0, (b.stopTime - b.startTime) / 1000));
  }
}

/**
 * Is it restorable, per cluster: the verdict of the newest verify that finished and of the newest
 * drill that ended, with the drill's RTO, so an alert can fire on a failing or slowing drill.
 */
function restoreCheckGauges(g: GaugeMaker) {
  return {
    verifyOk: g(
      'pgfleet_last_verify_ok',
      '1 when the newest finished verify found every backup restorable, 0 when it found a fault (absent: never verified).',
      ['cluster'],
    ),
    verifyTime: g('pgfleet_last_verify_timestamp_seconds', 'When the newest finished verify ended (Unix seconds).', [
      'cluster',
    ]),
    drillOk: g(
      'pgfleet_last_drill_ok',
      '1 when the newest drill that ended passed (restored, amcheck clean, row counts equal), else 0 (absent: no drill yet).',
      ['cluster'],
    ),
    drillRto: g(
      'pgfleet_last_drill_rto_seconds',
      'Recovery time measured by the newest drill that ended with one (restore start to a promoted, checked server).',
      ['cluster'],
    ),
    drillTime: g('pgfleet_last_drill_timestamp_seconds', 'When the newest drill that ended finished (Unix seconds).', [
      'cluster',
    ]),
  };
}

async function setRestoreCheckGauges(
  m: ReturnType<typeof restoreCheckGauges>,
  store: CatalogStore,
  cluster: string,
): Promise<void> {
  const [verifies, drills] = await Promise.all([
    store.listJobs({ cluster, kind: 'verify', state: 'succeeded', limit: 1 }),
    // The newest drill that ended, whichever way (a running one has no verdict yet), as `pgfleet status` shows it.
    store.listJobs({ cluster, kind: 'drill', limit: 10 }),
  ]);
  const verify = verifies[0] && verifySummaryFromJob(verifies[0]);
  if (verify) {
    m.verifyOk.set({ cluster }, verify.ok ? 1 : 0);
    m.verifyTime.set({ cluster }, Number(verify.time?.seconds ?? 0));
  }
  const drill = drills.map(drillSummaryFromJob).find((d) => d !== undefined);
  if (drill) {
    m.drillOk.set({ cluster }, drill.ok ? 1 : 0);
    if (drill.rtoSeconds) m.drillRto.set({ cluster }, drill.rtoSeconds);
    m.drillTime.set({ cluster }, Number(drill.time?.seconds ?? 0));
  }
}

/** The RPO now, and the thresholds the health monitor holds RPO and backup age to. */
function rpoGauges(g: GaugeMaker) {
  return {
    rpo: g('pgfleet_rpo_seconds', 'Now minus the time of the newest WAL safely in the repository.', ['cluster']),
    rpoThreshold: g(
      'pgfleet_rpo_threshold_seconds',
      "RPO threshold above which rpo.breached is sent (the cluster's policy, else the fleet's, else --rpo-threshold).",
      ['cluster'],
    ),
    staleThreshold: g(
      'pgfleet_backup_stale_threshold_seconds',
      'Backup age above which backup.stale is sent (policy, else --stale-backup-threshold).',
      ['cluster'],
    ),
  };
}

/** pg_stat_archiver as the agent last reported it, and whether archive_command is failing. */
function archiverGauges(g: GaugeMaker) {
  return {
    archiveFailed: g('pgfleet_wal_archive_failed_total', 'pg_stat_archiver.failed_count as last reported.', [
      'cluster',
    ]),
    archived: g('pgfleet_wal_archived_total', 'pg_stat_archiver.archived_count as last reported.', ['cluster']),
    lastArchived: g(
      'pgfleet_wal_last_archived_timestamp_seconds',
      'pg_stat_archiver.last_archived_time (Unix seconds).',
      ['cluster'],
    ),
    archiveFailing: g('pgfleet_wal_archive_failing', '1 while archive_command is failing.', ['cluster']),
  };
}

function setArchiverGauges(
  m: ReturnType<typeof archiverGauges>,
  cluster: string,
  agent: AgentRecord | undefined,
): void {
  const a = agent ? archiverFromJson(agent.archiver) : undefined;
  if (!a) return;
  m.archiveFailed.set({ cluster }, Number(a.failedCount));
  m.archived.set({ cluster }, Number(a.archivedCount));
  if (a.lastArchivedTime !== null) m.lastArchived.set({ cluster }, a.lastArchivedTime / 1000);
}

/** The agent's WAL health: what it archived, pg_wal's space, its replication slot and stream lag. */
function walGauges(g: GaugeMaker) {
  return {
    archivedBytes: g(
      'pgfleet_wal_archived_bytes_total',
      'WAL bytes (uncompressed) the agent stored in the repository since it started (archive_command hand-offs, push-ahead, streaming).',
      ['cluster'],
    ),
    archivedSegments: g(
      'pgfleet_wal_archived_segments_total',
      'WAL segments the agent stored in the repository since it started.',
      ['cluster'],
    ),
    pgWalBytes: g('pgfleet_pg_wal_bytes', 'Bytes of WAL in pg_wal.', ['cluster']),
    pgWalFree: g('pgfleet_pg_wal_free_bytes', 'Free bytes (for unprivileged users) on the filesystem holding pg_wal.', [
      'cluster',
    ]),
    pgWalTotal: g('pgfleet_pg_wal_filesystem_bytes', 'Size of the filesystem holding pg_wal.', ['cluster']),
    slotRetained: g(
      'pgfleet_wal_slot_retained_bytes',
      "WAL the agent's replication slot holds back in pg_wal (current LSN - restart_lsn).",
      ['cluster', 'slot'],
    ),
    slotActive: g('pgfleet_wal_slot_active', "1 while a WAL stream uses the agent's replication slot.", [
      'cluster',
      'slot',
      'wal_status',
    ]),
    lagBytes: g(
      'pgfleet_wal_stream_lag_bytes',
      "Current LSN minus the LSN the agent's WAL stream has fsynced (0 when caught up or not streaming).",
      ['cluster'],
    ),
    lagSeconds: g(
      'pgfleet_wal_stream_lag_seconds',
      'How long the WAL stream has been behind (heartbeat resolution; 0 when caught up or not streaming).',
      ['cluster'],
    ),
  };
}

function setWalGauges(m: ReturnType<typeof walGauges>, cluster: string, w: AgentWalHealth): void {
  m.archivedBytes.set({ cluster }, w.walBytesArchived);
  m.archivedSegments.set({ cluster }, w.walSegmentsArchived);
  m.pgWalBytes.set({ cluster }, w.pgWalBytes);
  m.pgWalFree.set({ cluster }, w.pgWalFreeBytes);
  m.pgWalTotal.set({ cluster }, w.pgWalTotalBytes);
  m.lagBytes.set({ cluster }, w.streamLagBytes);
  m.lagSeconds.set({ cluster }, w.streamLagSeconds);
  if (w.slotName) {
    m.slotRetained.set({ cluster, slot: w.slotName }, w.slotRetainedBytes);
    m.slotActive.set({ cluster, slot: w.slotName, wal_status: w.slotWalStatus }, w.slotActive ? 1 : 0);
  }
}

/** Health conditions, jobs by state, agents and their heartbeats, and the event outbox. */
function fleetGauges(g: GaugeMaker) {
  return {
    breached: g(
      'pgfleet_health_breached',
      '1 while a health condition (archive, rpo, backup_stale, agent_silent, wal_gap) is breached.',
      ['cluster', 'condition'],
    ),
    jobs: g('pgfleet_jobs', 'Jobs in the catalog by cluster, kind and state.', ['cluster', 'kind', 'state']),
    agents: g('pgfleet_agents_connected', 'Agents with an open session.', ['cluster']),
    lastHeartbeat: g(
      'pgfleet_agent_last_heartbeat_timestamp_seconds',
      "Time of the newest heartbeat of the cluster's agents (Unix seconds).",
      ['cluster'],
    ),
    unsent: g('pgfleet_events_unsent', 'Events in the outbox not yet acknowledged by NATS (up to 10000).', []),
  };
}

export interface MetricsServer {
  readonly port: number;
  readonly address: string;
  close(): Promise<void>;
}

/** Serves /metrics, /healthz and /readyz on host:port (port 0 picks a free one). */
export async function startMetricsServer(
  listen: string,
  { registry, refresh }: Metrics,
  opts: { store: CatalogStore; ready: () => boolean; logger: Logger },
): Promise<MetricsServer> {
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
        (err: Error) => reply(503, `catalog unavailable: ${redactCredentials(err.message)}\n`),
      );
      return;
    }
    if (path === '/metrics') {
      refresh()
        .then(() => registry.metrics())
        .then(
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
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
