/**
 * The agent's one option table: flags, PGFLEET_* environment variables, the YAML config file
 * (--config, the same file archive_command and restore_command point at) and --help.
 *
 * wal-push's client (wal/push-client.ts) loads this module on its way to the daemon, once per
 * WAL segment, so it imports nothing heavy: the core types are erased, the codec list comes from
 * the codec module alone and repository URLs are parsed by storage's light repository-url module.
 */
import { dirname, basename, join } from 'node:path';
import type { CommandSettings, ProgramSpec } from '@pgfleet/core/command-line';
import { ErrorCodes, PgfleetError } from '@pgfleet/core/errors';
import { CODECS } from '@pgfleet/storage/codec-names';
import { repositoryUrl, type RepositorySpec, type S3Credentials } from '@pgfleet/storage/repository-url';
import type { KeySource } from '@pgfleet/storage/key-source';

export { repositoriesFromSettings } from '@pgfleet/storage/repository-url';

/** The repository options every command that touches the repository takes (an encrypted cluster's key among them). */
const REPOSITORY_OPTIONS = [
  'repo',
  'repo2',
  'repo-path',
  's3-access-key-id',
  's3-secret-access-key',
  'encryption-key-file',
  'encryption-key-command',
  'previous-encryption-key-file',
  'previous-encryption-key-command',
] as const;

export const AGENT_PROGRAM = {
  name: 'pgfleet-agent',
  summary: 'pgfleet agent: backups, WAL archiving and restores on a PostgreSQL host',
  options: [
    { name: 'config', type: 'string', description: 'YAML config file with any of the options below', cliOnly: true },
    {
      name: 'controller',
      type: 'string',
      description:
        "controller gRPC address host:port, or a comma list of the fleet's controllers (the agent holds one stream and moves to the next when its controller dies); a DNS name resolving to several controllers also works",
      default: '127.0.0.1:7420',
    },
    {
      name: 'cluster',
      type: 'string',
      format: 'cluster-name',
      description: 'cluster name, unique in the fleet and in the repository',
    },
    {
      name: 'agent-id',
      type: 'string',
      format: 'agent-id',
      description: 'agent identity (default: <hostname>-<cluster>)',
    },
    { name: 'pgdata', type: 'string', description: "the cluster's data directory" },
    {
      name: 'pg-host',
      type: 'string',
      description: 'PostgreSQL host or socket directory',
      default: '/var/run/postgresql',
    },
    { name: 'pg-port', type: 'integer', description: 'PostgreSQL port', default: 5432, min: 1, max: 65535 },
    {
      name: 'pg-user',
      type: 'string',
      description: 'PostgreSQL user (superuser or pg_backup role holder)',
      default: 'postgres',
    },
    { name: 'pg-database', type: 'string', description: 'database to connect to', default: 'postgres' },
    {
      name: 'pg-password',
      type: 'string',
      description: 'PostgreSQL password (prefer a .pgpass file, or PGPASSWORD in the environment)',
      secret: true,
    },
    {
      name: 'pg-bin-dir',
      type: 'string',
      description: 'directory of PostgreSQL binaries (pg_waldump); default /usr/lib/postgresql/<major>/bin',
    },
    {
      name: 'repo',
      type: 'string',
      description:
        "the cluster's repository: /abs/path, posix:/abs/path or s3://bucket/prefix?endpoint=URL&region=R&path-style=true (jobs use the controller's repositories when it names any)",
    },
    {
      name: 'repo2',
      type: 'string',
      description:
        'a second repository (same forms as --repo): backups and WAL go to both, restores read from --repo first and fall back to --repo2',
    },
    { name: 'repo-path', type: 'string', description: 'posix repository directory: shorthand for --repo /abs/path' },
    {
      name: 's3-access-key-id',
      type: 'string',
      description:
        'S3 access key id for S3 repositories (default: the AWS chain: AWS_ACCESS_KEY_ID, AWS_PROFILE, instance role)',
    },
    {
      name: 's3-secret-access-key',
      type: 'string',
      secret: true,
      description: 'S3 secret access key, with --s3-access-key-id',
    },
    {
      name: 'encryption-key-file',
      type: 'string',
      description:
        "file holding the cluster's repository encryption key (32 bytes, base64 or hex; mode 0600 or stricter, else refused; %c = cluster name). Given when the cluster's part of the repository is created, it is encrypted (AES-256-GCM) from then on and needs the key for every read and write",
    },
    {
      name: 'encryption-key-command',
      type: 'string',
      description:
        "command run by /bin/sh whose output is the cluster's encryption key (e.g. 'vault kv get -field=key secret/pgfleet/%c'; %c = the cluster name, also in $PGFLEET_CLUSTER); instead of --encryption-key-file",
    },
    {
      name: 'previous-encryption-key-file',
      type: 'string',
      description:
        "file holding the cluster's previous encryption key (same rules as --encryption-key-file), while a key rotation is under way: after the new key was put in --encryption-key-file, the agent works under this one until `pgfleet repo rotate-key` re-wraps the data keys from it to the new key; remove it afterwards",
    },
    {
      name: 'previous-encryption-key-command',
      type: 'string',
      description:
        'command printing the previous encryption key (same rules as --encryption-key-command); instead of --previous-encryption-key-file',
    },
    {
      name: 'new-encryption-key-file',
      type: 'string',
      description: 'rotate-key: file holding the new key (same rules as --encryption-key-file)',
    },
    {
      name: 'new-encryption-key-command',
      type: 'string',
      description: 'rotate-key: command printing the new key (same rules as --encryption-key-command)',
    },
    {
      name: 'compress',
      type: 'string',
      description: 'compression codec for backups and WAL',
      default: 'zstd',
      choices: CODECS,
    },
    {
      name: 'compress-level',
      type: 'integer',
      description:
        'compression level of backups: zstd 1-19 (default 2), gzip 1-9 (default 6); lz4 and none take none. WAL keeps the default level (archive_command speed matters more there)',
    },
    {
      name: 'max-rate',
      type: 'string',
      description:
        "at most this many bytes per second for the agent's backups and restores (drills' too) together, counted as the data files' content read or written (e.g. 20MB, 1GiB; units are powers of 1024); WAL archiving and wal-fetch are exempt. Default: no limit",
    },
    {
      name: 'checksum-delta',
      type: 'boolean',
      description:
        'diff/incr backups find unchanged files by content (sha256, reads every candidate file) instead of size + mtime',
    },
    {
      name: 'file-incremental',
      type: 'boolean',
      description:
        'diff/incr backups copy changed relation files whole and write no block maps (default: only changed 8 KiB blocks, docs/block-incremental.md)',
    },
    {
      name: 'whole-blocks',
      type: 'boolean',
      description:
        'block-incremental backups store every changed 8 KiB block whole instead of as a compressed XOR against its prior version (default: deltas wherever the backup and the prior backups hold block codecs, zstd, lz4 or none, on any repository; ~10x fewer stored bytes, more backup CPU, docs/block-incremental.md)',
    },
    {
      name: 'block-min-size',
      type: 'integer',
      description: 'smallest relation file (bytes) given a block map and copied block by block in diff/incr backups',
      default: 262144,
      min: 8192,
      max: 1073741824,
    },
    {
      name: 'resume-window',
      type: 'string',
      description:
        "how long an interrupted backup's stored files may be taken over by the next backup of the same kind (or `pgfleet backup --resume`), e.g. 6h or 2d; 0: never resume automatically. An expire removes what is left after it (docs/repository-format.md, Resumable backups)",
      default: '24h',
    },
    {
      name: 'workers',
      type: 'integer',
      description: 'parallel file copies in backups and restores',
      default: 2,
      min: 1,
      max: 64,
    },
    {
      name: 'archive-timeout',
      type: 'integer',
      description: 'seconds a backup waits for its WAL to reach the repository',
      default: 120,
      min: 1,
    },
    {
      name: 'socket',
      type: 'string',
      description:
        'unix socket of the agent daemon that wal-push hands WAL files to (default: <pgdata>.pgfleet-agent.sock, beside the data directory)',
    },
    {
      name: 'archive-ahead',
      type: 'integer',
      description:
        'ready WAL files the daemon pushes ahead in parallel once archive_command has asked for one (0 = off: only what archive_command hands over)',
      default: 3,
      min: 0,
      max: 16,
    },
    {
      name: 'archive-watch-ready',
      type: 'boolean',
      description:
        'push WAL ahead from the moment PostgreSQL marks a segment ready (archive_status), before archive_command asks: the client then finds it stored. Off by default because the daemon then archives whatever archive_command is set to, even while it is failing or paused on purpose',
      default: false,
    },
    {
      name: 'prefetch',
      type: 'integer',
      description: 'WAL segments wal-fetch downloads ahead of recovery into pg_wal/.pgfleet-prefetch (0 = off)',
      default: 4,
      min: 0,
      max: 64,
    },
    {
      name: 'stream',
      type: 'boolean',
      description:
        'stream WAL over a physical replication slot (pgfleet_<cluster>) into a local spool and upload completed segments (RPO of seconds)',
      default: false,
    },
    {
      name: 'stream-spool',
      type: 'string',
      description: 'directory of streamed WAL (default: <pgdata>.pgfleet-stream, beside the data directory)',
    },
    {
      name: 'scratch-dir',
      type: 'string',
      description:
        "parent directory of restore drills' throwaway copies (one pgfleet-drill-<job> directory each, removed when the drill ends); needs room for a whole restored cluster (default: <parent of pgdata>/pgfleet-scratch, on the data directory's filesystem rather than a RAM-backed /tmp)",
    },
    {
      name: 'dump-spool-max',
      type: 'string',
      description: `at most this many bytes of pg_dump output in the agent's spool (pgfleet-dump-* under --scratch-dir) at once, checked while pg_dump runs (e.g. 20GB, 512MiB; units are powers of 1024): a dump that grows past it, or fills the disk, fails (${ErrorCodes.DumpSpoolFull.code}, ${ErrorCodes.DiskFull.code}) and keeps nothing. The spool holds one database's compressed dump at a time`,
      default: '10GiB',
    },
    {
      name: 'dump-store-early',
      type: 'string',
      description:
        "store each table's file of pg_dump's output as soon as pg_dump has closed it (seen in /proc), while the dump goes on, and remove it from the spool; off: every file after pg_dump ends. Without /proc (not Linux) it acts as off",
      default: 'on',
      choices: ['on', 'off'],
    },
    {
      name: 'tls-dir',
      type: 'string',
      description:
        "directory of the agent's certificate and key (agent.crt, agent.key, 0600): mutual TLS with a controller run with --tls-dir; made on first start by enrolling with --enroll-token",
    },
    {
      name: 'cluster-key-file',
      type: 'string',
      description:
        "file holding the cluster's key that authenticates archived WAL names (0600, 64 hex digits): the daemon writes it when the controller welcomes it, so archiving goes on while the controller is down; wal-push without a daemon and wal-fetch read it (default: <pgdata>.pgfleet-cluster.key, beside the data directory like the socket)",
    },
    {
      name: 'enroll-token',
      type: 'string',
      secret: true,
      description:
        'one-time token (pgfleet-controller enroll-token <cluster>) traded for a certificate on the first start with an empty --tls-dir; not needed afterwards',
    },
    {
      name: 'ca-cert',
      type: 'string',
      description:
        "the fleet CA certificate (the controller's ca.crt): talk TLS to the controller and verify it; needed to enroll (default afterwards: <tls-dir>/ca.crt)",
    },
    {
      name: 'insecure',
      type: 'boolean',
      description:
        'talk to the controller in clear text, unauthenticated both ways (a controller run with --insecure, on a lab network); without it the agent needs --ca-cert or --tls-dir',
    },
    {
      name: 'log-level',
      type: 'string',
      description: 'log level',
      default: 'info',
      choices: ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'],
    },
    {
      name: 'log-format',
      type: 'string',
      description:
        'log lines as JSON or readable text; auto: readable when stderr is a terminal, JSON otherwise (journald, files, pipes)',
      default: 'auto',
      choices: ['auto', 'json', 'pretty'],
    },
  ],
  commands: [
    {
      name: 'run',
      summary: 'run the agent daemon: connect to the controller and run its jobs',
      options: [
        'config',
        'controller',
        'cluster',
        'agent-id',
        'pgdata',
        'pg-host',
        'pg-port',
        'pg-user',
        'pg-database',
        'pg-password',
        'pg-bin-dir',
        ...REPOSITORY_OPTIONS,
        'compress',
        'compress-level',
        'max-rate',
        'checksum-delta',
        'file-incremental',
        'whole-blocks',
        'block-min-size',
        'resume-window',
        'workers',
        'archive-timeout',
        'socket',
        'archive-ahead',
        'archive-watch-ready',
        'stream',
        'stream-spool',
        'scratch-dir',
        'dump-spool-max',
        'dump-store-early',
        'tls-dir',
        'cluster-key-file',
        'enroll-token',
        'ca-cert',
        'insecure',
        'log-level',
        'log-format',
      ],
    },
    {
      name: 'wal-push',
      summary: "archive one WAL file (archive_command = 'pgfleet-agent wal-push %p --config FILE')",
      options: [
        'config',
        'cluster',
        ...REPOSITORY_OPTIONS,
        'compress',
        'socket',
        'cluster-key-file',
        'log-level',
        'log-format',
      ],
      positionals: [{ name: 'path', description: 'path of the WAL file (%p), relative to PGDATA', required: true }],
    },
    {
      name: 'wal-fetch',
      summary: "restore one archived WAL file (restore_command = 'pgfleet-agent wal-fetch %f %p --config FILE')",
      options: ['config', 'cluster', ...REPOSITORY_OPTIONS, 'prefetch', 'cluster-key-file', 'log-level', 'log-format'],
      positionals: [
        { name: 'name', description: 'WAL file name (%f)', required: true },
        { name: 'path', description: 'where to write it (%p)', required: true },
      ],
    },
    {
      name: 'rotate-key',
      summary:
        "re-wrap every data key of the cluster's encrypted repository with a new key (--new-encryption-key-file/-command); no data is rewritten and the old key stops working. Restartable: run it again with both keys after an interruption",
      options: [
        'config',
        'cluster',
        ...REPOSITORY_OPTIONS,
        'new-encryption-key-file',
        'new-encryption-key-command',
        // Taken (and unused) so rotate-key reads the same --config file as wal-push and wal-fetch.
        'cluster-key-file',
        'log-level',
        'log-format',
      ],
    },
    {
      name: 'wal-prefetch',
      summary:
        'internal: download the archived WAL segments after <name> into <spool> (started in the background by wal-fetch)',
      options: ['config', 'cluster', ...REPOSITORY_OPTIONS, 'prefetch', 'cluster-key-file', 'log-level', 'log-format'],
      positionals: [
        { name: 'name', description: 'the segment recovery asked for last', required: true },
        { name: 'spool', description: 'prefetch directory', required: true },
      ],
    },
  ],
} as const satisfies ProgramSpec;

/** The typed settings of one agent command (`R`: the options it requires), from the table above. */
export type AgentCommandSettings<
  N extends (typeof AGENT_PROGRAM)['commands'][number]['name'],
  R extends string = never,
> = CommandSettings<typeof AGENT_PROGRAM, N, R>;

type RunSettings = AgentCommandSettings<'run'>;

/** The daemon's configuration: the `run` settings with the defaults that depend on PGDATA applied. */
export interface AgentSettings {
  controller: string;
  cluster: string;
  agentId: string;
  pgdata: string;
  pg: { host: string; port: number; user: string; database: string; password?: string };
  pgBinDir?: string;
  /** The agent's own repositories (--repo/--repo-path, --repo2), in restore preference order. */
  repositories: RepositorySpec[];
  /** Static S3 credentials; absent: the AWS default chain. */
  s3Credentials?: S3Credentials;
  /** The cluster's repository encryption key source (--encryption-key-file/-command). */
  encryption?: KeySource;
  /** The --config file, handed to restore_command so wal-fetch finds the same credentials. */
  configFile?: string;
  compress: RunSettings['compress'];
  /** Compression level of backups (--compress-level, checked against the codec); absent: the codec's default. */
  compressLevel?: number;
  /** Bytes per second for backups and restores together (--max-rate); absent: no limit. */
  maxRateBytes?: number;
  /** diff/incr compare content (sha256) instead of size + mtime */
  checksumDelta?: boolean;
  /** diff/incr copy changed relation files whole, no block maps (--file-incremental) */
  fileIncremental?: boolean;
  /** block-incremental backups store changed blocks whole, no XOR deltas (--whole-blocks) */
  wholeBlocks?: boolean;
  /** smallest relation file with a block map */
  blockMinBytes: number;
  /** How long an interrupted backup may be resumed (--resume-window; 0: never automatically, only with --resume). */
  resumeWindowMs: number;
  workers: number;
  archiveTimeoutSec: number;
  /** unix socket wal-push talks to; defaultSocketPath(pgdata) unless set */
  socket: string;
  archiveAhead: number;
  /** Push-ahead starts at PostgreSQL's .ready files rather than at archive_command's first request. */
  archiveWatchReady: boolean;
  stream: boolean;
  streamSpool: string;
  /** Parent of restore drills' scratch directories (DrillJob.scratch_dir overrides it). */
  scratchDir: string;
  /** Bytes a dump's spool may hold (--dump-spool-max, logical/dump.ts). */
  dumpSpoolMaxBytes: number;
  /** Table files stored while pg_dump runs (--dump-store-early, logical/spool-drain.ts). */
  dumpStoreEarly: boolean;
  /** Mutual TLS: the agent's certificate directory (enrolled into on first start). */
  tlsDir?: string;
  /** Where the daemon keeps its cluster's key (security/cluster-key.ts); defaultClusterKeyFile unless set. */
  clusterKeyFile: string;
  /** One-time enrollment token, used only while tlsDir holds no certificate. */
  enrollToken?: string;
  /** The fleet CA certificate file: TLS to the controller. */
  caCert?: string;
  /** Clear text to the controller when neither tlsDir nor caCert is set (--insecure). */
  insecure?: boolean;
}

/**
 * Where the daemon listens for wal-push when --socket is not set: beside the data directory,
 * in a directory the PostgreSQL OS user owns (/var/lib/postgresql/16 for .../16/main), so only
 * that user can create it. Derived from PGDATA alone so archive_command (which PostgreSQL runs
 * with PGDATA as its working directory) finds it without reading a config file.
 */
export { defaultSocketPath } from './wal/socket.js';

export function defaultStreamSpool(pgdata: string): string {
  return join(dirname(pgdata), `${basename(pgdata)}.pgfleet-stream`);
}

/**
 * Restore drills' scratch area: beside the data directory, so a restored copy lands on a disk
 * sized for a cluster (and writable by the agent's user, who runs PostgreSQL), not on a
 * RAM-backed /tmp. Shared by the clusters of one parent; each drill directory says which agent
 * process owns it.
 */
export function defaultScratchDir(pgdata: string): string {
  return join(dirname(pgdata), 'pgfleet-scratch');
}

/** Static S3 credentials from the settings, or undefined for the AWS default chain. */
export function s3CredentialsFromSettings(settings: {
  readonly s3AccessKeyId: string | undefined;
  readonly s3SecretAccessKey: string | undefined;
}): S3Credentials | undefined {
  const { s3AccessKeyId: accessKeyId, s3SecretAccessKey: secretAccessKey } = settings;
  if (accessKeyId === undefined && secretAccessKey === undefined) return undefined;
  if (accessKeyId === undefined || secretAccessKey === undefined) {
    throw new PgfleetError(
      'InvalidConfig',
      `option '${accessKeyId === undefined ? 's3-access-key-id' : 's3-secret-access-key'}' is missing: set both S3 credentials or neither (the AWS default chain then applies)`,
    );
  }
  return { accessKeyId, secretAccessKey };
}

/** The encryption key source of the settings, undefined when none is given. */
export function keySourceFromSettings(settings: {
  readonly encryptionKeyFile: string | undefined;
  readonly encryptionKeyCommand: string | undefined;
  readonly previousEncryptionKeyFile?: string | undefined;
  readonly previousEncryptionKeyCommand?: string | undefined;
}): KeySource | undefined {
  const { encryptionKeyFile: file, encryptionKeyCommand: command } = settings;
  const { previousEncryptionKeyFile: previousFile, previousEncryptionKeyCommand: previousCommand } = settings;
  if (file === undefined && command === undefined && previousFile === undefined && previousCommand === undefined)
    return undefined;
  return {
    ...(file !== undefined ? { file } : {}),
    ...(command !== undefined ? { command } : {}),
    ...(previousFile !== undefined ? { previousFile } : {}),
    ...(previousCommand !== undefined ? { previousCommand } : {}),
  };
}

/** The flags naming a key source for a child process or restore_command (paths or commands, never a key). */
export function keySourceArgs(source: KeySource | undefined): string[] {
  const args: string[] = [];
  if (source?.file !== undefined) args.push('--encryption-key-file', source.file);
  else if (source?.command !== undefined) args.push('--encryption-key-command', source.command);
  if (source?.previousFile !== undefined) args.push('--previous-encryption-key-file', source.previousFile);
  else if (source?.previousCommand !== undefined)
    args.push('--previous-encryption-key-command', source.previousCommand);
  return args;
}

/** The command-line flags naming `specs` (--repo URL [--repo2 URL]) for a child process or restore_command. */
export function repositoryArgs(specs: readonly RepositorySpec[]): string[] {
  return specs.flatMap((spec, i) => [i === 0 ? '--repo' : `--repo${i + 1}`, repositoryUrl(spec)]);
}

/** Compares configurations: the repositories' canonical URLs, in order (wal-push tells the daemon which it was given). */
export function repositoryIdentity(specs: readonly RepositorySpec[]): string {
  return specs.map(repositoryUrl).join(' ');
}
