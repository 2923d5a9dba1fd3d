/**
 * The controller's option table: one declaration drives flags, PGFLEET_* environment variables,
 * the YAML --config file and --help (see @pgfleet/core options). resolveRunConfig turns parsed
 * values into the typed configuration the server takes, failing with PGF-1002 naming the key.
 */
import {
  ErrorCodes,
  LOG_FORMATS,
  missingOption,
  PgfleetError,
  resolveSettings,
  type CommandSettings,
  type LogFormat,
  type OptionValues,
  type ProgramSpec,
} from '@pgfleet/core';
import { repositoriesFromSettings, type RepositorySpec } from '@pgfleet/storage/repository-url';
import { ADMIN_ROLES } from '@pgfleet/catalog';
import type { NatsSecurity } from '@pgfleet/events';
import { DEFAULT_SERVER_HOSTNAMES } from './security/tls-dir.js';

export const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'] as const;

export const controllerProgram = {
  name: 'pgfleet-controller',
  summary: 'the pgfleet controller: catalog, schedules, retention, job dispatch and the admin API',
  options: [
    {
      name: 'config',
      type: 'string',
      cliOnly: true,
      description: 'YAML file holding any of the options below (flags and environment win over it).',
    },
    {
      name: 'listen',
      type: 'string',
      default: '127.0.0.1:7420',
      description: 'host:port of the gRPC server for agents and the admin CLI (port 0 picks a free port).',
    },
    {
      name: 'catalog',
      type: 'string',
      description:
        'Catalog: a SQLite file path (created with its schema when missing) or a postgres://user@host/db URL for several controllers (required).',
    },
    {
      name: 'repo',
      type: 'string',
      description:
        'The repository every job names: /abs/path, posix:/abs/path or s3://bucket/prefix?endpoint=URL&region=R&path-style=true (S3 credentials stay with each agent). Unset: each agent uses its own --repo/--repo2.',
    },
    {
      name: 'repo2',
      type: 'string',
      description:
        'A second repository (same forms): backups and WAL go to both, restores read from --repo first and fall back to --repo2.',
    },
    { name: 'repo-path', type: 'string', description: 'Posix shorthand for --repo /abs/path.' },
    {
      name: 'reported-backup-check',
      type: 'string',
      default: 'manifest',
      choices: ['manifest', 'facts'],
      description:
        "What a backup an agent reports must pass before it enters the catalog. manifest: its facts (label, system identifier, LSNs, times) and its manifest read from --repo agreeing with them (the controller needs read access to the repository; S3 credentials from the controller's environment). facts: the facts only, for a controller that cannot read the repository. Without --repo only the facts are checked.",
    },
    {
      name: 'heartbeat-interval',
      type: 'integer',
      default: 5,
      min: 1,
      max: 3600,
      description: 'Seconds between agent heartbeats, sent to every agent on connect.',
    },
    {
      name: 'max-connections',
      type: 'integer',
      default: 16384,
      min: 16,
      max: 1_000_000,
      description:
        "Connections the gRPC listener holds at once (one per agent, plus admins); more are refused at accept. The process's open-file limit (ulimit -n) must be above it.",
    },
    {
      name: 'job-reclaim-grace',
      type: 'integer',
      default: 60,
      min: 1,
      max: 24 * 3600,
      description:
        'Seconds an agent has to reconnect and claim its unfinished jobs (after its stream broke or the controller restarted) before they fail; agents keep running jobs while disconnected and deliver their results on reconnect. Also how long, past the 10 s lease of a controller that died, the jobs it had created and not yet recorded as sent wait for their agent to claim them before they fail (DispatcherLost).',
    },
    {
      name: 'log-level',
      type: 'string',
      default: 'info',
      choices: LOG_LEVELS,
      description: 'Log level of the log on stderr.',
    },
    {
      name: 'log-format',
      type: 'string',
      default: 'auto',
      choices: LOG_FORMATS,
      description:
        'Log lines as JSON or readable text; auto: readable when stderr is a terminal, JSON otherwise (journald, files, pipes).',
    },
    {
      name: 'schedule-interval',
      type: 'integer',
      default: 30,
      min: 1,
      max: 3600,
      description:
        'Seconds between scheduler rounds (due backups, retention). Cron times have minute resolution; a round runs what became due since the last one.',
    },
    {
      name: 'max-backups-per-repository',
      type: 'integer',
      default: 8,
      min: 1,
      max: 100_000,
      description:
        'Scheduled backups start only while fewer than this many backups and expire jobs run on their repository; the others stay due for the next round.',
    },
    {
      name: 'max-backups-per-host',
      type: 'integer',
      default: 2,
      min: 1,
      max: 1000,
      description:
        'Scheduled backups start only while fewer than this many backups and expire jobs run on their agent host.',
    },
    {
      name: 'tls-dir',
      type: 'string',
      description:
        'Directory made by `ca init` (CA and server certificate). With it the server speaks TLS only: agents need a certificate from the CA (enrollment), admin calls a bearer token.',
    },
    {
      name: 'manifest-secret',
      type: 'string',
      description:
        "File holding the secret every cluster's manifest key is derived from (generated 0600 at the first run when missing). Default: manifest.secret in --tls-dir, else beside a SQLite catalog; required with a PostgreSQL catalog and no --tls-dir. Every controller of a catalog needs the same file; keep a copy with the CA key.",
    },
    {
      name: 'insecure',
      type: 'boolean',
      description:
        'Serve without --tls-dir: clear text, agents not authenticated, admin calls without tokens unless --require-auth. For a lab or a quickstart only; the controller refuses to start with neither --tls-dir nor --insecure.',
    },
    {
      name: 'require-auth',
      type: 'boolean',
      description: 'With --insecure: still require admin bearer tokens (implied by --tls-dir).',
    },
    {
      name: 'nats-url',
      type: 'string',
      description:
        'NATS server URL(s), comma-separated (nats://host:4222). Set: events in the catalog outbox are published to JetStream stream PGFLEET_EVENTS. Unset: they only accumulate in the catalog (pgfleet events).',
    },
    {
      name: 'nats-user',
      type: 'string',
      description: 'NATS user name (with --nats-password); never put credentials in --nats-url.',
    },
    {
      name: 'nats-password',
      type: 'string',
      secret: true,
      description: 'NATS password of --nats-user.',
    },
    {
      name: 'nats-creds-file',
      type: 'string',
      description: 'NATS credentials file (JWT and NKey seed, e.g. from nsc), instead of --nats-user.',
    },
    {
      name: 'nats-tls-ca',
      type: 'string',
      description: "CA certificate (PEM) that signed the NATS server's certificate: TLS required and verified.",
    },
    {
      name: 'nats-tls-cert',
      type: 'string',
      description: 'Client certificate (PEM) for a NATS server that verifies clients.',
    },
    { name: 'nats-tls-key', type: 'string', description: 'Private key (PEM) of --nats-tls-cert.' },
    {
      name: 'nats-stream-max-age',
      type: 'integer',
      default: 7 * 24 * 3600,
      min: 0,
      max: 10 * 365 * 24 * 3600,
      description: 'Seconds PGFLEET_EVENTS keeps events when the controller creates the stream (0: no age limit).',
    },
    {
      name: 'nats-stream-max-bytes',
      type: 'integer',
      default: 1024 ** 3,
      min: -1,
      max: Number.MAX_SAFE_INTEGER,
      description: 'Bytes PGFLEET_EVENTS keeps when the controller creates the stream (-1: no limit).',
    },
    {
      name: 'nats-duplicate-window',
      type: 'integer',
      default: 3600,
      min: 1,
      max: 7 * 24 * 3600,
      description: 'Seconds JetStream remembers event ids to drop republished copies (never more than the max age).',
    },
    {
      name: 'rpo-threshold',
      type: 'integer',
      default: 300,
      min: 1,
      max: 30 * 24 * 3600,
      description: 'Seconds: rpo.breached when the newest WAL safely in the repository is older than this.',
    },
    {
      name: 'stale-backup-threshold',
      type: 'integer',
      default: 26 * 3600,
      min: 1,
      max: 365 * 24 * 3600,
      description: 'Seconds: backup.stale when a cluster has no successful backup newer than this.',
    },
    {
      name: 'stale-dump-threshold',
      type: 'integer',
      default: 0,
      min: 0,
      max: 365 * 24 * 3600,
      description:
        'Seconds: dump.stale when a cluster has no complete logical dump newer than this (0: only clusters whose policy sets --logical or --stale-dump-threshold are judged).',
    },
    {
      name: 'agent-silence-threshold',
      type: 'integer',
      default: 60,
      min: 1,
      max: 24 * 3600,
      description: 'Seconds: agent.silent when an open agent session sent no heartbeat for this long.',
    },
    {
      name: 'health-interval',
      type: 'integer',
      default: 10,
      min: 1,
      max: 3600,
      description: 'Seconds between health evaluations of every cluster (they also run on each heartbeat).',
    },
    {
      name: 'metrics-listen',
      type: 'string',
      default: '127.0.0.1:7430',
      description: `host:port of the HTTP server for /metrics, /healthz and /readyz (port 0 picks a free port; 'off' disables it). Not 9187, postgres_exporter's port, which often runs on the same host. When the port is taken the controller does not start (${ErrorCodes.MetricsPortInUse.code}).`,
    },
    {
      name: 'console-listen',
      type: 'string',
      default: 'off',
      description:
        "host:port of the web console (docs/console.md): HTTPS with --tls-dir's certificate and the admin tokens and roles, or HTTP with --insecure (port 0 picks a free port; 'off', the default, serves none).",
    },
    {
      name: 'dir',
      type: 'string',
      cliOnly: true,
      description:
        'ca init: the TLS directory to create (or, holding a CA already, to issue a new server certificate in).',
    },
    {
      name: 'hostname',
      type: 'string',
      cliOnly: true,
      default: DEFAULT_SERVER_HOSTNAMES.join(','),
      description:
        'ca init: comma-separated host names and IP addresses agents and admins dial; each becomes a subject alternative name of the server certificate.',
    },
    {
      name: 'ttl',
      type: 'string',
      cliOnly: true,
      default: '1h',
      description: 'enroll-token: how long the token stays usable, e.g. 30m, 1h, 7d.',
    },
    {
      name: 'role',
      type: 'string',
      cliOnly: true,
      choices: ADMIN_ROLES,
      description:
        'token create: viewer (read), operator (+ backup, restore, retention apply, pin) or admin (+ policy set).',
    },
    {
      name: 'name',
      type: 'string',
      cliOnly: true,
      description: 'token create: a unique name saying who or what uses the token.',
    },
    {
      name: 'output',
      type: 'string',
      cliOnly: true,
      default: 'table',
      choices: ['table', 'json'],
      description: 'token list, catalog rebuild: aligned columns (a report) or JSON.',
    },
    {
      name: 'cluster',
      type: 'string',
      format: 'cluster-name',
      cliOnly: true,
      description: 'catalog rebuild: only this cluster of the repository.',
    },
    {
      name: 'encryption-key-file',
      type: 'string',
      description:
        "file holding an encrypted cluster's repository key, for reading its manifests (run: checking reported backups; catalog rebuild) (mode 0600 or stricter; %c = the cluster name, so one setting serves every cluster)",
    },
    {
      name: 'encryption-key-command',
      type: 'string',
      description:
        "command run by /bin/sh printing an encrypted cluster's key, for reading its manifests (run, catalog rebuild) (%c = the cluster name, also $PGFLEET_CLUSTER), e.g. 'vault kv get -field=key secret/pgfleet/%c'",
    },
    {
      name: 'previous-encryption-key-file',
      type: 'string',
      description:
        "file holding an encrypted cluster's previous repository key (same rules as --encryption-key-file) during a key rotation: manifests are read with the key the repository is under, the previous one until `pgfleet repo rotate-key` ran; remove it afterwards",
    },
    {
      name: 'previous-encryption-key-command',
      type: 'string',
      description:
        'command printing the previous key (same rules as --encryption-key-command); instead of --previous-encryption-key-file',
    },
    {
      name: 'dry-run',
      type: 'boolean',
      cliOnly: true,
      description: 'catalog rebuild: report what would be added, updated and removed; change nothing.',
    },
  ],
  commands: [
    {
      name: 'run',
      summary: 'Run the controller (gRPC server for agents and admins) until SIGINT/SIGTERM.',
      options: [
        'config',
        'listen',
        'catalog',
        'repo',
        'repo2',
        'repo-path',
        'reported-backup-check',
        'encryption-key-file',
        'encryption-key-command',
        'previous-encryption-key-file',
        'previous-encryption-key-command',
        'heartbeat-interval',
        'max-connections',
        'job-reclaim-grace',
        'log-level',
        'log-format',
        'schedule-interval',
        'max-backups-per-repository',
        'max-backups-per-host',
        'tls-dir',
        'manifest-secret',
        'insecure',
        'require-auth',
        'nats-url',
        'nats-user',
        'nats-password',
        'nats-creds-file',
        'nats-tls-ca',
        'nats-tls-cert',
        'nats-tls-key',
        'nats-stream-max-age',
        'nats-stream-max-bytes',
        'nats-duplicate-window',
        'rpo-threshold',
        'stale-backup-threshold',
        'stale-dump-threshold',
        'agent-silence-threshold',
        'health-interval',
        'metrics-listen',
        'console-listen',
      ],
    },
    {
      name: 'ca',
      summary:
        "ca init --dir DIR [--hostname a,b]: create the fleet CA (ECDSA P-256, 10 years) and the controller's server certificate; run with --tls-dir DIR.",
      options: ['dir', 'hostname'],
      positionals: [{ name: 'action', description: 'init.', required: true }],
    },
    {
      name: 'enroll-token',
      summary:
        'Print a one-time token an agent of <cluster> trades for its certificate (pgfleet-agent run --enroll-token); stored hashed.',
      options: ['config', 'catalog', 'ttl'],
      positionals: [{ name: 'cluster', description: 'The cluster the enrolling agent may speak for.', required: true }],
    },
    {
      name: 'token',
      summary:
        'token create --role R --name N (prints the token once) | token list | token revoke <id|name>: admin API bearer tokens.',
      options: ['config', 'catalog', 'role', 'name', 'output'],
      positionals: [
        { name: 'action', description: 'create, list or revoke.', required: true },
        { name: 'token', description: 'revoke: the token id or name.' },
      ],
    },
    {
      name: 'catalog',
      summary:
        'catalog rebuild --catalog URL --repo URL|--repo-path DIR [--cluster X] [--dry-run]: re-index the backups of a repository from their manifests (unknown clusters are created; rows whose manifest is gone are removed; manifests failing authentication are skipped). Idempotent. catalog sign-manifests (same options): sign the manifests written before manifests were signed, once, after checking the repository (docs/security.md).',
      options: [
        'config',
        'catalog',
        'repo',
        'repo-path',
        'encryption-key-file',
        'encryption-key-command',
        'previous-encryption-key-file',
        'previous-encryption-key-command',
        'cluster',
        'dry-run',
        'output',
        'tls-dir',
        'manifest-secret',
      ],
      positionals: [{ name: 'action', description: 'rebuild or sign-manifests.', required: true }],
    },
  ],
} as const satisfies ProgramSpec;

export interface ControllerConfig {
  listen: string;
  catalogPath: string;
  /**
   * The repositories every job names (Job.repositories), in restore preference order; empty or
   * absent: agents use their own configuration.
   */
  repositories?: RepositorySpec[];
  /** Posix shorthand for `repositories: [{ case: 'posix', value: { path } }]` (when `repositories` is absent). */
  repoPath?: string;
  /** Reported backups: their manifest read from the repositories too (default), or their facts only. */
  reportedBackupCheck?: 'manifest' | 'facts';
  /** Key source of encrypted clusters for that manifest read (%c = the cluster). */
  encryptionKey?: { file?: string; command?: string; previousFile?: string; previousCommand?: string };
  heartbeatIntervalSeconds: number;
  /** Connections the gRPC listener holds at once; default 16384 (DEFAULT_SERVER_LIMITS says 1024 for other servers). */
  maxConnections?: number;
  /** Seconds an agent has to reconnect and claim its unfinished jobs before they fail; default 60. */
  jobReclaimGraceSeconds?: number;
  logLevel: string;
  /** json, pretty or auto (pretty when stderr is a terminal); default auto. */
  logFormat?: LogFormat;
  /** Seconds between scheduler rounds; default 30. */
  scheduleIntervalSeconds?: number;
  /** Concurrency limits of scheduled jobs; defaults 8 per repository, 2 per host. */
  maxBackupsPerRepository?: number;
  maxBackupsPerHost?: number;
  /** TLS directory (ca init): TLS only, agent certificates and admin tokens required. */
  tlsDir?: string;
  /** Serve without TLS (clear text, agents unauthenticated): must be said explicitly when tlsDir is absent. */
  insecure?: boolean;
  /** Admin tokens required without TLS too. */
  requireAuth?: boolean;
  /** The manifest secret's file (security/manifest-secret.ts); absent: the default beside --tls-dir or the SQLite catalog. */
  manifestSecret?: string;
  /** NATS server URLs; absent: events stay in the catalog outbox. */
  natsUrl?: string[];
  /** NATS credentials and TLS. */
  nats?: NatsSecurity;
  /** Retention of PGFLEET_EVENTS when the controller creates it. */
  eventStream?: { maxAgeSeconds?: number; maxBytes?: number; duplicateWindowSeconds?: number };
  /** Health thresholds (seconds); defaults rpo 300, stale backup 26 h, silence 60. */
  health?: {
    rpoSeconds?: number;
    staleBackupSeconds?: number;
    silenceSeconds?: number;
    intervalSeconds?: number;
    staleDumpSeconds?: number;
  };
  /** host:port of /metrics, /healthz, /readyz; absent: none (the CLI's default is 127.0.0.1:7430). */
  metricsListen?: string;
  /** host:port of the web console; absent: none. */
  consoleListen?: string;
}

/** The typed settings of one controller command (`R`: the options it requires), from the table above. */
export type ControllerCommandSettings<
  N extends (typeof controllerProgram)['commands'][number]['name'],
  R extends string = never,
> = CommandSettings<typeof controllerProgram, N, R>;

/** The table's defaults of `run`: what a configuration built without the command line (tests) leaves out. */
export const RUN_DEFAULTS = resolveSettings(controllerProgram, 'run', {});

/** host:port, with an IPv6 host in brackets. */
const HOST_PORT = /^(\[[0-9a-fA-F:.]+\]|[^\s:]+):\d{1,5}$/;

export function resolveRunConfig(values: OptionValues): ControllerConfig {
  const run = resolveSettings(controllerProgram, 'run', values, ['listen']);
  const { listen } = run;
  if (!HOST_PORT.test(listen)) {
    throw new PgfleetError(
      'InvalidConfig',
      `option 'listen': '${listen}' is not host:port (e.g. 127.0.0.1:7420 or [::]:7420)`,
    );
  }
  if (!run.catalog) throw missingOption(controllerProgram, 'catalog');
  return {
    listen,
    catalogPath: run.catalog,
    // Empty when the agents bring their own repositories.
    repositories: repositoriesFromSettings(run),
    reportedBackupCheck: run.reportedBackupCheck === 'facts' ? 'facts' : 'manifest',
    ...(run.encryptionKeyFile ||
    run.encryptionKeyCommand ||
    run.previousEncryptionKeyFile ||
    run.previousEncryptionKeyCommand
      ? {
          encryptionKey: {
            file: run.encryptionKeyFile,
            command: run.encryptionKeyCommand,
            previousFile: run.previousEncryptionKeyFile,
            previousCommand: run.previousEncryptionKeyCommand,
          },
        }
      : {}),
    heartbeatIntervalSeconds: run.heartbeatInterval,
    maxConnections: run.maxConnections,
    jobReclaimGraceSeconds: run.jobReclaimGrace,
    logLevel: run.logLevel,
    logFormat: run.logFormat as LogFormat,
    scheduleIntervalSeconds: run.scheduleInterval,
    maxBackupsPerRepository: run.maxBackupsPerRepository,
    maxBackupsPerHost: run.maxBackupsPerHost,
    ...(run.tlsDir ? { tlsDir: run.tlsDir } : {}),
    ...(run.insecure ? { insecure: true } : {}),
    ...(run.requireAuth ? { requireAuth: true } : {}),
    ...(run.manifestSecret ? { manifestSecret: run.manifestSecret } : {}),
    ...eventsAndHealthConfig(run),
  };
}

/** The events, health and metrics part of the run configuration. */
function eventsAndHealthConfig(
  run: ControllerCommandSettings<'run'>,
): Pick<ControllerConfig, 'natsUrl' | 'nats' | 'eventStream' | 'health' | 'metricsListen' | 'consoleListen'> {
  const natsUrl = run.natsUrl
    ? run.natsUrl
        .split(',')
        .map((u) => u.trim())
        .filter(Boolean)
    : undefined;
  const metrics = run.metricsListen;
  if (metrics !== 'off' && !HOST_PORT.test(metrics)) {
    throw new PgfleetError('InvalidConfig', `option 'metrics-listen': '${metrics}' is not host:port or 'off'`);
  }
  const consoleListen = run.consoleListen;
  if (consoleListen !== 'off' && !HOST_PORT.test(consoleListen)) {
    throw new PgfleetError('InvalidConfig', `option 'console-listen': '${consoleListen}' is not host:port or 'off'`);
  }
  const nats: NatsSecurity = {
    ...(run.natsUser ? { user: run.natsUser } : {}),
    ...(run.natsPassword ? { password: run.natsPassword } : {}),
    ...(run.natsCredsFile ? { credsFile: run.natsCredsFile } : {}),
    ...(run.natsTlsCa ? { tlsCa: run.natsTlsCa } : {}),
    ...(run.natsTlsCert ? { tlsCert: run.natsTlsCert } : {}),
    ...(run.natsTlsKey ? { tlsKey: run.natsTlsKey } : {}),
  };
  return {
    ...(natsUrl ? { natsUrl } : {}),
    ...(Object.keys(nats).length > 0 ? { nats } : {}),
    eventStream: {
      maxAgeSeconds: run.natsStreamMaxAge,
      maxBytes: run.natsStreamMaxBytes,
      duplicateWindowSeconds: run.natsDuplicateWindow,
    },
    health: {
      rpoSeconds: run.rpoThreshold,
      staleBackupSeconds: run.staleBackupThreshold,
      silenceSeconds: run.agentSilenceThreshold,
      ...(run.staleDumpThreshold > 0 ? { staleDumpSeconds: run.staleDumpThreshold } : {}),
      intervalSeconds: run.healthInterval,
    },
    ...(metrics !== 'off' ? { metricsListen: metrics } : {}),
    ...(consoleListen !== 'off' ? { consoleListen } : {}),
  };
}
