/**
 * Starts the controller: opens the catalog, settles what a previous run left behind, and serves
 * AgentService, AdminService, health and reflection on one gRPC server. Used by `run` and by the
 * integration tests (port 0, temp catalog), so both exercise the same wiring.
 */
import type { DescMethod } from '@bufbuild/protobuf';
import {
  asPgfleetError,
  ErrorCodes,
  PgfleetError,
  redactCredentials,
  silentLogger,
  sleep,
  type Logger,
} from '@pgfleet/core';
import { openCatalog, type CatalogStore } from '@pgfleet/catalog';
import { secretManifestKeys } from '@pgfleet/storage/manifest-auth';
import { repositoryUrl } from '@pgfleet/storage/repository-url';
import {
  addHealthAndReflection,
  addService,
  createServer,
  DEFAULT_SERVER_LIMITS,
  listen,
  serverTlsCredentials,
  type ServerLimits,
} from '@pgfleet/rpc';
import { AdminService, AgentService, EnrollmentService } from '@pgfleet/proto';
import { adminAuthorizer, agentAuthorizer } from './security/access.js';
import { createAdminService } from './admin/service.js';
import { createAgentService, reclaimJobsLater } from './agents/service.js';
import { AgentSessions } from './agents/sessions.js';
import { HeartbeatBatcher, HelloBatcher } from './agents/heartbeats.js';
import { SharedRead } from './agents/shared-read.js';
import { ControllerPeers, LEASE_MS, newControllerId } from './agents/peers.js';
import type { ControllerContext } from './context.js';
import { createEnrollmentService } from './security/enrollment.js';
import { checkWireMessage } from './security/wire-bounds.js';
import { JobWatchers } from './jobs/watchers.js';
import { repositoryManifestReader } from './jobs/backup-admission.js';
import { SchedulerLoop } from './schedule/loop.js';
import { RUN_DEFAULTS, type ControllerConfig } from './options.js';
import { loadTlsDir, type ControllerTls } from './security/tls-dir.js';
import { loadManifestSecret, manifestSecretPath } from './security/manifest-secret.js';
import { JetStreamPublisher, natsSecurityOptions, OutboxRelay } from '@pgfleet/events';
import { catalogOutbox } from './jobs/events.js';
import { DEFAULT_HEALTH_THRESHOLDS, HealthMonitor, type HealthThresholds } from './health/health.js';
import { startConsoleServer, type ConsoleServer } from './console/server.js';
import { createMetricsRegistry, startMetricsServer, type MetricsServer } from './health/metrics.js';

export interface RunningController {
  /** The bound port (the real one when listen asked for port 0). */
  readonly port: number;
  /** host:port clients can dial. */
  readonly address: string;
  /** True when serving TLS (--tls-dir): agents need certificates, admins tokens. */
  readonly tls: boolean;
  readonly context: ControllerContext;
  /** The scheduler loop (tests call `tick(now)` on it). */
  readonly scheduler: SchedulerLoop;
  /** Cluster health evaluation (tests call `evaluate(cluster)` on it). */
  readonly health: HealthMonitor;
  /** The outbox relay when --nats-url is set. */
  readonly relay?: OutboxRelay;
  /** The /metrics server when metricsListen is set and could bind. */
  readonly metrics?: MetricsServer;
  /** The web console when consoleListen is set. */
  readonly console?: ConsoleServer;
  /** Stops serving (open agent streams are cut after `graceMs`) and closes the catalog. */
  close(graceMs?: number): Promise<void>;
}

export interface StartOptions {
  logger?: Logger;
  /** A catalog to use instead of opening config.catalogPath (tests). */
  store?: CatalogStore;
  now?: () => number;
  /** False: do not tick on a timer (tests drive `scheduler.tick(now)` themselves). Default true. */
  schedulerTimer?: boolean;
  /** False: no health timer (tests call `health.evaluate`). Default true. */
  healthTimer?: boolean;
  /** Connection limits other than DEFAULT_SERVER_LIMITS (tests shorten the timeouts). */
  limits?: Partial<ServerLimits>;
}

export async function startController(
  config: Omit<ControllerConfig, 'logLevel'> & { logLevel?: string },
  options: StartOptions = {},
): Promise<RunningController> {
  const logger = options.logger ?? silentLogger();
  const log = logger.child({ component: 'controller' });
  checkTransportChoice(config);
  const store = options.store ?? (await openCatalog(config.catalogPath));
  const now = options.now ?? Date.now;
  // Read before anything else is opened: a bad --tls-dir fails the start with nothing to undo.
  const tls: ControllerTls | undefined = config.tlsDir ? await loadTlsDir(config.tlsDir) : undefined;
  const requireTokens = tls !== undefined || config.requireAuth === true;
  const manifestSecret = await loadManifestSecret(
    manifestSecretPath({
      catalog: config.catalogPath,
      ...(config.manifestSecret ? { manifestSecret: config.manifestSecret } : {}),
      ...(config.tlsDir ? { tlsDir: config.tlsDir } : {}),
    }),
    true,
  );

  const repositories = config.repositories?.length
    ? config.repositories
    : config.repoPath
      ? [{ case: 'posix' as const, value: { path: config.repoPath } }]
      : [];
  const controllerId = newControllerId();
  const ctx: ControllerContext = {
    store,
    controllerId,
    sessions: new AgentSessions(),
    heartbeats: new HeartbeatBatcher(store),
    hellos: new HelloBatcher(store, controllerId, now),
    activeJobs: new SharedRead(() => store.listActiveJobs()),
    watchers: new JobWatchers(),
    logger: logger.child({ component: 'controller' }),
    repositories,
    repositoryKey: repositories.length > 0 ? repositories.map(repositoryUrl).join(' ') : 'agent-configured',
    heartbeatIntervalSeconds: config.heartbeatIntervalSeconds,
    manifestKeys: secretManifestKeys(manifestSecret),
    now,
    connections: new Set(),
    retentionDue: new Set(),
    jobReclaimGraceMs: (config.jobReclaimGraceSeconds ?? RUN_DEFAULTS.jobReclaimGrace) * 1000,
    reclaimTimers: new Map(),
    agentCertificates: tls !== undefined,
  };
  const manifests =
    repositories.length > 0 && config.reportedBackupCheck !== 'facts'
      ? repositoryManifestReader(repositories, ctx.manifestKeys, config.encryptionKey)
      : undefined;
  if (manifests) ctx.manifests = manifests;

  // No agent stream survives a controller restart: the agents a previous run of this controller
  // (or any controller that stopped beating) held count as disconnected until they reconnect.
  // Agents that live controllers sharing the catalog hold stay theirs (agents/peers.ts).
  await store.releaseDeadStreams(ctx.controllerId, now() - LEASE_MS, now());
  const thresholds: HealthThresholds = { ...DEFAULT_HEALTH_THRESHOLDS, ...config.health };
  ctx.healthDefaults = {
    rpoSeconds: thresholds.rpoSeconds,
    staleBackupSeconds: thresholds.staleBackupSeconds,
    silenceSeconds: thresholds.silenceSeconds,
    ...(thresholds.staleDumpSeconds !== undefined ? { staleDumpSeconds: thresholds.staleDumpSeconds } : {}),
  };
  const monitor = new HealthMonitor(store, {
    thresholds,
    intervalSeconds: config.health?.intervalSeconds ?? RUN_DEFAULTS.healthInterval,
    logger: logger.child({ component: 'health' }),
    now,
    onEvents: () => ctx.notifyEvents?.(),
  });
  ctx.health = monitor;
  let relay: OutboxRelay | undefined;
  let publisher: JetStreamPublisher | undefined;
  if (config.natsUrl?.length) {
    publisher = new JetStreamPublisher({
      url: config.natsUrl,
      ...(config.nats ? { natsOptions: natsSecurityOptions(config.nats) } : {}),
      stream: config.eventStream ?? {},
      logger: logger.child({ component: 'events' }),
    });
    relay = new OutboxRelay({
      outbox: catalogOutbox(store, now, logger.child({ component: 'event-relay' })),
      publisher,
      logger: logger.child({ component: 'event-relay' }),
    });
    const r = relay;
    ctx.notifyEvents = () => r.notify();
  }
  // Jobs the previous controller run left unfinished may still be running on their agents, which
  // keep running jobs while disconnected and deliver the results after reconnecting: each agent
  // claims its jobs in Hello; whatever is still unclaimed after the grace fails with the reason.
  const orphanError = {
    code: ErrorCodes.ControllerRestarted.code,
    message: `controller restarted while the job was unfinished, and its agent did not reconnect to claim it within ${ctx.jobReclaimGraceMs / 1000} s`,
  };
  if ((await store.listActiveJobs()).length > 0) reclaimJobsLater(ctx, undefined, orphanError);

  // One connection per agent: a fleet of thousands needs more than the generic 1024 (bench/fleet-scale.mjs).
  const limits = {
    ...DEFAULT_SERVER_LIMITS,
    ...(config.maxConnections !== undefined ? { maxConnections: config.maxConnections } : {}),
    ...options.limits,
  };
  const server = createServer(limits);
  // Access control is one hook per service (access.ts), never inside the handlers; so are the
  // bounds on requests (wire-bounds.ts; the agent stream checks each message it reads).
  const checkRequest = (method: DescMethod, req: object): void => checkWireMessage(method.input, req, method.name);
  addService(
    server,
    AgentService,
    createAgentService({ ...ctx, logger: logger.child({ component: 'agent-service' }) }),
    {
      logger: log,
      ...(tls ? { authorize: agentAuthorizer() } : {}),
    },
  );
  const admin = createAdminService({ ...ctx, logger: logger.child({ component: 'admin-service' }) });
  addService(server, AdminService, admin, {
    logger: log,
    checkRequest,
    ...(requireTokens ? { authorize: adminAuthorizer(store) } : {}),
  });
  addService(
    server,
    EnrollmentService,
    createEnrollmentService({ ...ctx, logger: logger.child({ component: 'enrollment' }) }, tls),
    { logger: log, checkRequest },
  );
  const health = addHealthAndReflection(server, [AgentService, AdminService, EnrollmentService]);

  let port: number;
  // The console is part of the admin API (unlike metrics): a console asked for and not served fails the start.
  let consoleServer: ConsoleServer | undefined;
  try {
    if (config.consoleListen)
      consoleServer = await startConsoleServer(config.consoleListen, {
        store,
        admin,
        ...(tls ? { tls } : {}),
        requireTokens,
        logger: logger.child({ component: 'console' }),
      });
    port = await listen(server, config.listen, tls ? serverTlsCredentials(tls, limits.handshakeTimeoutMs) : undefined);
  } catch (err) {
    await consoleServer?.close();
    server.forceShutdown();
    if (!options.store) await store.close();
    throw err;
  }
  health.setStatus('', 'SERVING');
  let closed = false;
  const scheduler = new SchedulerLoop(ctx, {
    intervalSeconds: config.scheduleIntervalSeconds ?? RUN_DEFAULTS.scheduleInterval,
    limits: {
      maxPerRepository: config.maxBackupsPerRepository ?? RUN_DEFAULTS.maxBackupsPerRepository,
      maxPerHost: config.maxBackupsPerHost ?? RUN_DEFAULTS.maxBackupsPerHost,
    },
  });
  if (options.schedulerTimer ?? true) scheduler.start();
  relay?.start();
  if (options.healthTimer ?? true) monitor.start();
  let metrics: MetricsServer | undefined;
  let metricsFailure: PgfleetError | undefined;
  if (config.metricsListen) {
    const registry = createMetricsRegistry({
      store,
      health: monitor,
      thresholds,
      now,
      ready: () => !closed,
      insecure: tls === undefined,
    });
    try {
      metrics = await startMetricsServer(config.metricsListen, registry, { store, ready: () => !closed, logger: log });
    } catch (err) {
      // A controller that runs without its metrics runs unobserved (alerts on RPO, failed verifies
      // and drills never fire), so a taken port stops the start instead of a log line nobody reads.
      metricsFailure =
        (err as NodeJS.ErrnoException).code === 'EADDRINUSE'
          ? new PgfleetError(
              'MetricsPortInUse',
              `the metrics address ${config.metricsListen} (--metrics-listen) is already in use by another process`,
              { cause: err },
            )
          : asPgfleetError(err, `the metrics server cannot listen on ${config.metricsListen} (--metrics-listen)`);
    }
  }
  const host = config.listen.slice(0, config.listen.lastIndexOf(':'));
  const address = `${host === '0.0.0.0' || host === '[::]' ? '127.0.0.1' : host}:${port}`;
  if (!tls) {
    // --insecure is a choice the operator made; it is repeated loudly so it is never forgotten.
    log.warn(
      { listen: config.listen, insecure: true, loopback: isLoopback(host) },
      `INSECURE: serving without TLS (--insecure): agents are not authenticated and ${
        requireTokens
          ? 'admin tokens travel in clear text'
          : 'admin calls need no token: anyone who can reach this port can run backups and restores'
      }${isLoopback(host) ? '' : ', on a non-loopback address'}; for production run \`pgfleet-controller ca init\` and start with --tls-dir`,
    );
  }
  log.info(
    {
      listen: config.listen,
      port,
      tls: tls !== undefined,
      adminTokens: requireTokens,
      limits,
      catalog: redactCredentials(config.catalogPath),
      repositories: repositories.length > 0 ? repositories.map(repositoryUrl) : 'agent-configured',
      reportedBackupCheck: manifests ? 'manifest' : 'facts',
    },
    'controller listening',
  );

  const peers = new ControllerPeers(ctx, address, (agents) => {
    for (const agent of agents)
      reclaimJobsLater(ctx, agent, {
        code: ErrorCodes.AgentDisconnected.code,
        message: `the controller holding agent ${agent.agentId} stopped and the agent did not reconnect within ${ctx.jobReclaimGraceMs / 1000} s`,
      });
  });
  ctx.peers = peers;
  await peers.start();

  const running: RunningController = {
    port,
    address,
    tls: tls !== undefined,
    context: ctx,
    scheduler,
    health: monitor,
    ...(relay ? { relay } : {}),
    ...(metrics ? { metrics } : {}),
    ...(consoleServer ? { console: consoleServer } : {}),
    async close(graceMs = 5000) {
      if (closed) return;
      closed = true;
      // Streams cut from here on are not agents going away: their jobs stay for the next run to reclaim.
      ctx.closing = true;
      for (const t of ctx.reclaimTimers.values()) clearTimeout(t);
      ctx.reclaimTimers.clear();
      await scheduler.stop();
      await monitor.stop();
      await peers.stop();
      await metrics?.close();
      await consoleServer?.close();
      health.setStatus('', 'NOT_SERVING');
      await new Promise<void>((resolve) => {
        const timer = setTimeout(() => {
          server.forceShutdown();
          resolve();
        }, graceMs);
        server.tryShutdown(() => {
          clearTimeout(timer);
          resolve();
        });
      });
      // Cut streams end their handlers asynchronously; give them a moment to record the disconnect.
      await Promise.race([Promise.allSettled([...ctx.connections]), sleep(2000, { unref: true })]);
      // Unsent events stay in the outbox for the next start.
      await relay?.stop();
      await publisher?.close();
      manifests?.close();
      if (!options.store) await store.close();
      log.info('controller stopped');
    },
  };
  if (metricsFailure) {
    await running.close(0);
    throw metricsFailure;
  }
  return running;
}

/**
 * TLS and tokens are the default: serving in clear text is refused unless the operator said
 * --insecure, so a forgotten flag never leaves a fleet's restores open to its network.
 */
function checkTransportChoice(config: Pick<ControllerConfig, 'tlsDir' | 'insecure'>): void {
  if (config.tlsDir && config.insecure) {
    throw new PgfleetError('InvalidConfig', '--tls-dir and --insecure contradict each other: choose one', {
      hint: 'Drop --insecure (and PGFLEET_INSECURE / insecure: in the config file) to serve TLS with the directory.',
    });
  }
  if (!config.tlsDir && !config.insecure) {
    throw new PgfleetError(
      'InsecureNotChosen',
      'pgfleet-controller serves TLS with agent certificates and admin tokens by default, and no --tls-dir was given',
      {
        hint: 'Create the CA and server certificate with `pgfleet-controller ca init --dir DIR --hostname <names agents dial>` and start with --tls-dir DIR; or, on a trusted lab network only, start with --insecure (clear text, agents unauthenticated).',
      },
    );
  }
}

/** 127.0.0.0/8, ::1 and localhost: only this host can connect. */
export function isLoopback(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, '').toLowerCase();
  return h === 'localhost' || h === '::1' || /^127\.\d+\.\d+\.\d+$/.test(h);
}
