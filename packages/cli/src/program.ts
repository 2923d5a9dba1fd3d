/**
 * The `pgfleet` option table: every command and flag, with the environment variables that can
 * set the shared ones. --help is generated from it. Per-command flags are cliOnly so a stray
 * PGFLEET_TARGET_TIME in the environment can never steer a restore.
 */
import { ErrorCodes, resolveSettings, type CommandSettings, type OptionValues, type ProgramSpec } from '@pgfleet/core';

const CONNECTION = ['controller', 'timeout', 'token', 'ca-cert', 'insecure'] as const;
/** The flags naming a recovery target, of which a restore takes exactly one (target.ts). */
export const RECOVERY_TARGET_FLAGS = [
  'target-time',
  'target-lsn',
  'target-name',
  'target-xid',
  'target',
  'before-xid',
  'before-lsn',
] as const;
const TARGET_FLAGS = [...RECOVERY_TARGET_FLAGS, 'target-action', 'target-exclusive'] as const;
/** policy set flags, in the order `policy get` lists the keys. */
export const POLICY_FLAGS = [
  'full',
  'diff',
  'incr',
  'drill',
  'logical',
  'dump-drill',
  'spread-minutes',
  'backup-from',
  'catch-up',
  'pitr-window-days',
  'daily',
  'weekly',
  'monthly',
  'yearly',
  'min-full',
  'auto-expire',
  'expire-grace',
  'logical-daily',
  'logical-weekly',
  'logical-monthly',
  'logical-yearly',
  'logical-min',
  'rpo-threshold',
  'stale-backup-threshold',
  'agent-silence-threshold',
  'stale-dump-threshold',
] as const;

/** --limit of the listing commands (jobs, events, wal search: each says what it limits). */
const LIMIT_OPTION = {
  name: 'limit',
  type: 'integer',
  cliOnly: true,
  default: 50,
  min: 1,
  max: 10_000,
  description: 'At most this many jobs, newest first.',
} as const;

/** --jobs of dump and restore-dump (pg_dump's and pg_restore's). */
const JOBS_OPTION = {
  name: 'jobs',
  type: 'integer',
  cliOnly: true,
  default: 1,
  min: 1,
  max: 64,
  description: 'Parallel jobs.',
} as const;

export const cliProgram = {
  name: 'pgfleet',
  summary: 'admin CLI of a pgfleet controller: clusters, backups, restores, jobs, policies and retention',
  options: [
    { name: 'controller', type: 'string', default: '127.0.0.1:7420', description: 'host:port of the controller.' },
    {
      name: 'token',
      type: 'string',
      secret: true,
      description:
        'Admin bearer token (from `pgfleet-controller token create`); needed unless the controller runs with --insecure and without --require-auth. A secret: from PGFLEET_TOKEN or a file (--token-file), never a flag.',
    },
    {
      name: 'ca-cert',
      type: 'string',
      description:
        "Fleet CA certificate (the controller's ca.crt): talk TLS to the controller and verify it against this CA.",
    },
    {
      name: 'insecure',
      type: 'boolean',
      description:
        'Talk to the controller in clear text, without verifying it (a controller run with --insecure, on a lab network). Without it the CLI needs --ca-cert.',
    },
    {
      name: 'timeout',
      type: 'integer',
      default: 30,
      min: 1,
      max: 86_400,
      description: 'Seconds to wait for each call to the controller (not for --wait).',
    },
    {
      name: 'output',
      type: 'string',
      default: 'table',
      choices: ['table', 'json'],
      description: 'Output format: aligned columns or JSON.',
    },
    {
      name: 'type',
      type: 'string',
      cliOnly: true,
      default: 'full',
      choices: ['full', 'diff', 'incr'],
      description: 'Backup type.',
    },
    {
      name: 'from',
      type: 'string',
      cliOnly: true,
      choices: ['primary', 'standby', 'prefer-standby'],
      description: `Which host of an HA cluster to back up (default: the policy's backup-from, else primary): primary, standby (a caught-up standby; fails with ${ErrorCodes.StandbyNotConnected.code} when none is connected) or prefer-standby.`,
    },
    {
      name: 'wait',
      type: 'boolean',
      cliOnly: true,
      description: 'Follow the job, printing progress to stderr, until it ends; exit non-zero if it fails.',
    },
    {
      name: 'resume',
      type: 'boolean',
      cliOnly: true,
      description: `Continue an interrupted backup of the same type (and prior backup) whatever its age; fail with ${ErrorCodes.NothingToResume.code} when the repository holds none. Default: continue one within the agent's --resume-window, else start fresh.`,
    },
    {
      name: 'no-resume',
      type: 'boolean',
      cliOnly: true,
      description:
        'Start a fresh backup even when an interrupted one could be continued (its files stay until an expire removes them).',
    },
    {
      name: 'to',
      type: 'string',
      cliOnly: true,
      description:
        "Absolute path of the (empty or new) directory to restore into, on the restoring agent's host (with --delta: an existing data directory).",
    },
    {
      name: 'tablespace-dir',
      type: 'string',
      cliOnly: true,
      description:
        "Absolute directory on the agent's host for the restored tablespaces, one <oid> directory each, new or empty (default: <--to>.tablespaces). Never the source's tablespace locations.",
    },
    {
      name: 'delta',
      type: 'boolean',
      cliOnly: true,
      description:
        'Restore over an existing data directory (PostgreSQL stopped): keep files whose checksum matches, fetch the rest, remove files the backup does not hold.',
    },
    {
      name: 'target-time',
      type: 'string',
      cliOnly: true,
      description:
        "Recover up to this time: ISO-8601 or PostgreSQL's 'YYYY-MM-DD HH:MM:SS[.ffffff][+TZ]' (no zone = this machine's local time).",
    },
    { name: 'target-lsn', type: 'string', cliOnly: true, description: 'Recover up to this LSN, e.g. 0/3000060.' },
    {
      name: 'target-name',
      type: 'string',
      cliOnly: true,
      description: 'Recover up to this restore point (pg_create_restore_point).',
    },
    { name: 'target-xid', type: 'string', cliOnly: true, description: 'Recover up to this transaction id.' },
    {
      name: 'before-xid',
      type: 'string',
      cliOnly: true,
      description:
        'Recover to just before this transaction: its changes are not replayed, every transaction that committed before it is (--target-xid X --target-exclusive). For undoing a bad statement whose xid you know (txid_current(), pgfleet wal search).',
    },
    {
      name: 'before-lsn',
      type: 'string',
      cliOnly: true,
      description:
        'Recover to just before this LSN: the WAL record starting there is not replayed (--target-lsn L --target-exclusive).',
    },
    {
      name: 'target',
      type: 'string',
      cliOnly: true,
      choices: ['immediate', 'latest'],
      description: 'immediate: stop as soon as the backup is consistent; latest: replay all archived WAL.',
    },
    {
      name: 'target-action',
      type: 'string',
      cliOnly: true,
      choices: ['promote', 'pause', 'shutdown'],
      description: "What PostgreSQL does at the target (recovery_target_action; PostgreSQL's default is pause).",
    },
    {
      name: 'target-exclusive',
      type: 'boolean',
      cliOnly: true,
      description: 'Stop just before the target instead of just after it (recovery_target_inclusive = off).',
    },
    {
      name: 'backup',
      type: 'string',
      cliOnly: true,
      description: 'Restore this backup label instead of the one the controller picks.',
    },
    {
      name: 'table',
      type: 'string',
      cliOnly: true,
      list: true,
      description:
        'recover-table: a table to bring back, schema.name (quote mixed case: \'"Sales"."Orders"\'); repeat the flag or separate names with commas.',
    },
    {
      name: 'into',
      type: 'string',
      cliOnly: true,
      list: true,
      description:
        "recover-table: the new name in schema pgfleet_recovered, one per --table in the same order (default: the table's own name).",
    },
    {
      name: 'database',
      type: 'string',
      cliOnly: true,
      description: "recover-table: the tables' database (default: the database the cluster's agent connects to).",
    },
    {
      name: 'target-timeline',
      type: 'integer',
      cliOnly: true,
      min: 1,
      max: 0xffffffff,
      description:
        'Follow this timeline (recovery_target_timeline). Default: the timeline the cluster ran on at --target-time, else the one it runs on now, chosen from the archived timeline histories (never a timeline another copy pushed).',
    },
    {
      name: 'archive',
      type: 'string',
      cliOnly: true,
      choices: ['off', 'preserve'],
      description:
        "Whether the restored server archives WAL: off = archive_mode off, so a copy never writes into the cluster's repository; preserve = keep archive_mode/archive_command (in-place recovery: the copy becomes the cluster). Default: preserve over the agent's own data directory, off anywhere else.",
    },
    {
      name: 'agent',
      type: 'string',
      cliOnly: true,
      description: "Restore on this agent (e.g. a fresh host) instead of the cluster's own.",
    },
    {
      name: 'cluster',
      type: 'string',
      format: 'cluster-name',
      cliOnly: true,
      description: 'Only jobs of this cluster.',
    },
    LIMIT_OPTION,
    {
      name: 'follow',
      type: 'boolean',
      cliOnly: true,
      description: 'events: keep printing new events as they are committed, until Ctrl-C.',
    },
    {
      name: 'fleet',
      type: 'boolean',
      cliOnly: true,
      description: 'policy: the fleet default (every cluster without its own value) instead of one cluster.',
    },
    {
      name: 'full',
      type: 'string',
      cliOnly: true,
      description:
        "Full backup schedule: 5-field cron in UTC, e.g. '0 1 * * 0'; '' = not scheduled (overrides the fleet default).",
    },
    {
      name: 'diff',
      type: 'string',
      cliOnly: true,
      description: "Differential backup schedule (cron, UTC); '' = not scheduled.",
    },
    {
      name: 'incr',
      type: 'string',
      cliOnly: true,
      description: "Incremental backup schedule (cron, UTC); '' = not scheduled.",
    },
    {
      name: 'spread-minutes',
      type: 'integer',
      cliOnly: true,
      min: 0,
      max: 10_080,
      description:
        'Spread scheduled starts over this many minutes per cluster (a fixed offset from the name), so a fleet does not start at one instant.',
    },
    {
      name: 'backup-from',
      type: 'string',
      cliOnly: true,
      choices: ['primary', 'standby', 'prefer-standby'],
      description:
        'Which host of an HA cluster backups run on: primary (default), standby (a caught-up standby only) or prefer-standby (a caught-up standby when one is connected, else the primary).',
    },
    {
      name: 'catch-up',
      type: 'string',
      cliOnly: true,
      choices: ['on', 'off'],
      description:
        'on: a schedule that never ran starts its latest due backup at once; off (default): its first run is the next cron time.',
    },
    {
      name: 'auto-expire',
      type: 'string',
      cliOnly: true,
      choices: ['on', 'off'],
      description:
        "on: the controller expires backups and WAL by the retention policy on its own, announcing each expiry (retention.planned) a grace period ahead; off (default): only 'pgfleet retention apply' expires.",
    },
    {
      name: 'expire-grace',
      type: 'string',
      cliOnly: true,
      description:
        "How long an automatic expiry waits after retention.planned (e.g. 30m, 1h, 2d; default 1h): 'pgfleet pin' in that time keeps a backup.",
    },
    {
      name: 'pitr-window-days',
      type: 'integer',
      cliOnly: true,
      min: 0,
      max: 36_500,
      description: 'Days back to which point-in-time recovery stays possible (0 = from the newest full backup on).',
    },
    {
      name: 'daily',
      type: 'integer',
      cliOnly: true,
      min: 0,
      max: 100_000,
      description: 'Keep the newest full backup of each of the last N days that have one (0 = off).',
    },
    {
      name: 'weekly',
      type: 'integer',
      cliOnly: true,
      min: 0,
      max: 100_000,
      description: 'Keep the newest full backup of each of the last N ISO weeks (0 = off).',
    },
    {
      name: 'monthly',
      type: 'integer',
      cliOnly: true,
      min: 0,
      max: 100_000,
      description: 'Keep the newest full backup of each of the last N months (0 = off).',
    },
    {
      name: 'yearly',
      type: 'integer',
      cliOnly: true,
      min: 0,
      max: 100_000,
      description: 'Keep the newest full backup of each of the last N years (0 = off).',
    },
    {
      name: 'min-full',
      type: 'integer',
      cliOnly: true,
      min: 0,
      max: 100_000,
      description: 'Always keep at least the N newest full backups.',
    },
    {
      name: 'drill',
      type: 'string',
      cliOnly: true,
      description: "Restore drill schedule: 5-field cron (UTC); '' turns an inherited one off.",
    },
    {
      name: 'logical',
      type: 'string',
      cliOnly: true,
      description:
        "Logical dump schedule (pg_dump of every database, docs/logical.md): 5-field cron (UTC); '' turns an inherited one off.",
    },
    {
      name: 'dump-drill',
      type: 'string',
      cliOnly: true,
      description:
        "Dump drill schedule: a drill of the cluster's newest complete logical dump (pgfleet drill --dump latest), 5-field cron (UTC); '' turns an inherited one off. A cluster without a dump yet is skipped for that fire time (the controller logs why).",
    },
    ...(
      [
        ['logical-daily', 'Keep the newest dump of each of the last N days that have one (0 = off).'],
        ['logical-weekly', 'Keep the newest dump of each of the last N ISO weeks (0 = off).'],
        ['logical-monthly', 'Keep the newest dump of each of the last N months (0 = off).'],
        ['logical-yearly', 'Keep the newest dump of each of the last N years (0 = off).'],
        [
          'logical-min',
          'Always keep at least the N newest dumps. Logical tiers count dumps only; with none set anywhere every dump is kept.',
        ],
      ] as const
    ).map(([name, description]) => ({
      name,
      type: 'integer' as const,
      cliOnly: true,
      min: 0,
      max: 100_000,
      description,
    })),
    {
      name: 'stale-dump-threshold',
      type: 'integer',
      cliOnly: true,
      min: 1,
      max: 365 * 24 * 3600,
      description:
        "Seconds: dump.stale when no complete logical dump is newer (default: derived from --logical, else the controller's --stale-dump-threshold).",
    },
    {
      name: 'rpo-threshold',
      type: 'integer',
      cliOnly: true,
      min: 1,
      max: 365 * 24 * 3600,
      description:
        "Seconds: rpo.breached when the newest WAL safely in the repository is older (default: the controller's --rpo-threshold).",
    },
    {
      name: 'stale-backup-threshold',
      type: 'integer',
      cliOnly: true,
      min: 1,
      max: 365 * 24 * 3600,
      description:
        "Seconds: backup.stale when no successful backup is newer (default: the controller's --stale-backup-threshold).",
    },
    {
      name: 'agent-silence-threshold',
      type: 'integer',
      cliOnly: true,
      min: 1,
      max: 24 * 3600,
      description:
        "Seconds: agent.silent after this long without a heartbeat (default: the controller's --agent-silence-threshold).",
    },
    {
      name: 'reset',
      type: 'boolean',
      cliOnly: true,
      description:
        'policy set: drop the stored values of the cluster (or fleet) first, so unset ones are inherited again.',
    },
    { name: 'unpin', type: 'boolean', cliOnly: true, description: 'Remove the pin instead of setting it.' },
    {
      name: 'file',
      short: 'f',
      type: 'string',
      cliOnly: true,
      description:
        'apply: the fleet file (YAML: a fleet section and per-cluster sections with the policy set keys; see deploy/config/fleet.yaml).',
    },
    {
      name: 'prune',
      type: 'boolean',
      cliOnly: true,
      description: 'apply: also drop the policy overrides of clusters the file does not list.',
    },
    { name: 'dry-run', type: 'boolean', cliOnly: true, description: 'apply: show what would change, change nothing.' },
    {
      name: 'role',
      type: 'string',
      cliOnly: true,
      choices: ['viewer', 'operator', 'admin'],
      description:
        'token create: viewer (read), operator (+ backup, restore, retention apply, pin, verify, drill, check) or admin (+ policy, tokens, enrollment).',
    },
    {
      name: 'name',
      type: 'string',
      cliOnly: true,
      description: 'token create: a unique name saying who or what uses the token.',
    },
    {
      name: 'ttl',
      type: 'string',
      cliOnly: true,
      default: '1h',
      description: 'enroll-token: how long the token stays usable, e.g. 30m, 1h, 7d (at most 30d).',
    },
  ],
  commands: [
    {
      name: 'status',
      summary:
        'The fleet at a glance: per cluster its agent, last backup and age, RPO, archive state, next scheduled job, last verify, last drill (RTO of the last good one) and alerts.',
      options: [...CONNECTION, 'output', 'cluster'],
      localOptions: [
        { name: 'cluster', type: 'string', format: 'cluster-name', cliOnly: true, description: 'Only this cluster.' },
      ],
    },
    {
      name: 'clusters',
      summary: 'List clusters with their agent, archiver state and last backup.',
      options: [...CONNECTION, 'output'],
    },
    {
      name: 'backups',
      summary: 'List the backups of a cluster, oldest first.',
      options: [...CONNECTION, 'output'],
      positionals: [{ name: 'cluster', description: 'Cluster name.', required: true }],
    },
    {
      name: 'backup',
      summary: `backup <cluster>: start a backup of a cluster on its agent (HA clusters: on the host --from or the policy names). backup delete <cluster> <label>: delete one backup from the repository and the catalog, manifest first, WAL untouched; refused (${ErrorCodes.BackupHasDependents.code}) when diff/incr backups read from it unless --with-dependents (they go too, newest first), and for pinned backups (${ErrorCodes.BackupPinned.code}) or one a running backup references (${ErrorCodes.BackupHeld.code}). Waits for the deletion.`,
      options: [...CONNECTION, 'output', 'type', 'from', 'resume', 'no-resume', 'wait', 'with-dependents'],
      localOptions: [
        {
          name: 'with-dependents',
          type: 'boolean',
          cliOnly: true,
          description: 'backup delete: also delete the diff/incr backups that read files from it (newest first).',
        },
      ],
      positionals: [
        { name: 'cluster', description: 'Cluster name (or `delete`).', required: true },
        { name: 'delete-cluster', description: 'backup delete: the cluster.' },
        { name: 'delete-label', description: 'backup delete: the label of the backup to delete.' },
      ],
    },
    {
      name: 'info',
      summary:
        "What the repository holds, read from it (not the catalog) on the cluster's agent: every backup with its type, the backups it depends on and that depend on it, sizes (content, own, stored), LSNs and times; the archive's oldest and newest WAL segment per timeline; totals. Without a cluster: every cluster with a connected agent.",
      options: [...CONNECTION, 'output'],
      positionals: [{ name: 'cluster', description: 'Cluster name (default: every cluster).' }],
    },
    {
      name: 'restore-points',
      summary:
        "The named restore points (pg_create_restore_point) in the cluster's archived WAL, with time, LSN and timeline: the names --target-name can use. Read with pg_waldump on the cluster's agent, from the oldest backup's first WAL segment (or --since) to the newest.",
      options: [...CONNECTION, 'output', 'since'],
      localOptions: [
        {
          name: 'since',
          type: 'string',
          cliOnly: true,
          description:
            "Only WAL from the newest backup started at or before this time on (ISO-8601 or PostgreSQL's form, like --target-time): less to read in a long archive.",
        },
      ],
      positionals: [{ name: 'cluster', description: 'Cluster name.', required: true }],
    },
    {
      name: 'restore',
      summary: 'Restore a cluster to a point in time into a directory (give exactly one target).',
      options: [
        ...CONNECTION,
        'output',
        'to',
        'tablespace-dir',
        'delta',
        ...TARGET_FLAGS,
        'target-timeline',
        'archive',
        'backup',
        'agent',
        'wait',
      ],
      positionals: [{ name: 'cluster', description: 'Cluster whose backups to restore.', required: true }],
    },
    { name: 'jobs', summary: 'List jobs, newest first.', options: [...CONNECTION, 'output', 'cluster', 'limit'] },
    {
      name: 'events',
      summary:
        "Show the newest events from the controller's catalog (sent to NATS or not), oldest first; --follow prints new ones until Ctrl-C. --output json: one Event per line, as on NATS.",
      options: [...CONNECTION, 'output', 'cluster', 'limit', 'follow'],
    },
    {
      name: 'job',
      summary:
        'Show one job: state, progress, result or error. With --wait: follow it to its end (progress on stderr), then show it; exits non-zero with its error code when it failed.',
      options: [...CONNECTION, 'output', 'wait'],
      positionals: [{ name: 'id', description: 'Job id.', required: true }],
    },
    {
      name: 'cancel',
      summary:
        'Cancel a job; a cancelled backup leaves nothing behind in the repository (--wait: until the agent confirms).',
      options: [...CONNECTION, 'output', 'wait'],
      positionals: [{ name: 'id', description: 'Job id.', required: true }],
    },
    {
      name: 'policy',
      summary:
        'policy get [<cluster>]: the effective policy and where each value comes from; policy set <cluster>|--fleet [flags]: change it.',
      options: [...CONNECTION, 'output', 'fleet', ...POLICY_FLAGS, 'reset'],
      positionals: [
        { name: 'action', description: 'get or set.', required: true },
        { name: 'cluster', description: 'Cluster name (get without it, or --fleet: the fleet default).' },
      ],
    },
    {
      name: 'retention',
      summary:
        'retention plan <cluster>: what retention would remove now and why (nothing is deleted); retention apply <cluster>: remove it now (an expire job).',
      options: [...CONNECTION, 'output', 'wait'],
      positionals: [
        { name: 'action', description: 'plan or apply.', required: true },
        { name: 'cluster', description: 'Cluster name.', required: true },
      ],
    },
    {
      name: 'verify',
      summary: `Check a cluster's repository on its agent: every backup's files and checksums, manifest references, and WAL continuity per timeline; prints per backup whether and to which range of points it can be restored, and every fault found. With --wait, exits non-zero (${ErrorCodes.VerifyFailed.code}) when anything is not restorable.`,
      options: [...CONNECTION, 'output', 'full', 'wait'],
      localOptions: [
        {
          name: 'full',
          type: 'boolean',
          cliOnly: true,
          description:
            'Decompress every backup file and WAL segment and check content checksums, sizes and WAL page headers (reads and decodes everything); default: hash the stored bytes only.',
        },
      ],
      positionals: [{ name: 'cluster', description: 'Cluster name.', required: true }],
    },
    {
      name: 'check',
      summary: `Prove on the cluster's agent that WAL archiving works end to end before a backup needs it: wal_level, archive_mode, an archive_command that runs pgfleet-agent wal-push for this cluster, max_wal_senders, data checksums, free space under pg_wal, every repository writable, and a WAL segment switched now (after a restore point pgfleet-check-<job>) reaching every repository. Waits for the result and prints one line per check (ok, warn or FAIL, and what to do); exits non-zero (${ErrorCodes.ArchiveCheckFailed.code}) when any check fails.`,
      options: ['controller', 'token', 'ca-cert', 'insecure', 'output', 'timeout'],
      localOptions: [
        {
          name: 'timeout',
          type: 'string',
          cliOnly: true,
          default: '60s',
          description:
            'How long the switched WAL segment may take to reach every repository, e.g. 60s or 2m (a bare number is seconds). Calls to the controller keep their 30 s limit.',
        },
      ],
      positionals: [{ name: 'cluster', description: 'Cluster name.', required: true }],
    },
    {
      name: 'apply',
      summary:
        "apply -f fleet.yaml: make the file's policies the stored ones (the fleet default and each listed cluster's override are replaced; --prune drops the others); prints every change.",
      options: [...CONNECTION, 'output', 'file', 'prune', 'dry-run'],
    },
    {
      name: 'token',
      summary:
        'token create --role R --name N (prints the token once) | token list | token revoke <id|name>: admin API bearer tokens (admin role).',
      options: [...CONNECTION, 'output', 'role', 'name'],
      positionals: [
        { name: 'action', description: 'create, list or revoke.', required: true },
        { name: 'token', description: 'revoke: the token id or name.' },
      ],
    },
    {
      name: 'repo',
      summary: `repo rotate-key <cluster>: re-wrap the cluster's data keys from its agents' previous encryption key to their current one (admin role), on one connected agent; no data is rewritten and the previous key stops working. First put the new key in the agents' --encryption-key-file and the old one in --previous-encryption-key-file, and restart them; drop the previous key afterwards. Refused without a previous key (${ErrorCodes.EncryptionPreviousKeyMissing.code}) or when it is not the repository's (${ErrorCodes.EncryptionPreviousKeyWrong.code}); an interrupted rotation is finished by running it again.`,
      options: [...CONNECTION, 'output', 'wait'],
      positionals: [
        { name: 'action', description: 'rotate-key.', required: true },
        { name: 'cluster', description: 'Cluster name.', required: true },
      ],
    },
    {
      name: 'wal',
      summary: `wal search <cluster>: the committed transactions in the cluster's archived WAL that deleted, updated, truncated or dropped, likely culprits first (truncates and drops, then the most rows deleted + updated), with xid, commit time and LSN, the LSN just before their first change, database, tables (named as they were then) and row counts; decoded from the repository alone on one of the cluster's agents, from the start of the newest backup started at or before --since (its catalog snapshot names the tables). Then \`pgfleet restore <cluster> --before-xid X\` or \`pgfleet recover-table\` (docs/undo.md). Errors: a --table that never existed (${ErrorCodes.WalSearchTableUnknown.code}), --since before the oldest backup (${ErrorCodes.WalSearchBeforeOldestBackup.code}), a missing WAL segment in the range (${ErrorCodes.WalSearchGap.code}), malformed input (${ErrorCodes.WalSearchInvalid.code}).`,
      options: [...CONNECTION, 'output', 'since', 'until', 'table', 'database', 'kind', 'min-rows', 'limit'],
      localOptions: [
        {
          name: 'since',
          type: 'string',
          cliOnly: true,
          description:
            "Transactions committed at or after this time (ISO-8601 or PostgreSQL's form, like --target-time); the WAL is read from the newest backup started at or before it.",
        },
        {
          name: 'until',
          type: 'string',
          cliOnly: true,
          description: 'Transactions committed at or before this time; WAL after it is not read.',
        },
        {
          name: 'table',
          type: 'string',
          cliOnly: true,
          description: 'Only transactions that changed this table: schema.name (a bare name: public.name).',
        },
        { name: 'database', type: 'string', cliOnly: true, description: 'Only changes in this database.' },
        {
          name: 'kind',
          type: 'string',
          cliOnly: true,
          description:
            'What to list, comma-separated: delete, update, truncate, drop or all (inserts too). Default: delete,update,truncate,drop.',
        },
        {
          name: 'min-rows',
          type: 'integer',
          cliOnly: true,
          min: 0,
          description:
            'Only transactions that deleted + updated at least this many rows (truncates and drops always listed).',
        },
        { ...LIMIT_OPTION, description: 'At most this many transactions, likely culprits first.' },
      ],
      positionals: [
        { name: 'action', description: 'search.', required: true },
        { name: 'cluster', description: 'Cluster name.', required: true },
      ],
    },
    {
      name: 'enroll-token',
      summary:
        'Print a one-time token an agent of <cluster> trades for its certificate (pgfleet-agent run --enroll-token); admin role.',
      options: [...CONNECTION, 'output', 'ttl'],
      positionals: [{ name: 'cluster', description: 'The cluster the enrolling agent may speak for.', required: true }],
    },
    {
      name: 'drill',
      summary:
        "Restore drill on an agent: restore a backup into a scratch directory, start PostgreSQL on it, recover and promote, run amcheck on every relation, compare row counts with the source at a fresh restore point (not with a --target-*), record the RTO and remove everything (--keep: leave it for inspection). --dump LABEL|latest drills a logical dump instead: restored into a throwaway PostgreSQL, every table's rows compared with those the dump recorded. With --wait prints the verdict (and, when it failed, what PostgreSQL logged) and exits non-zero when the drill failed.",
      options: [
        ...CONNECTION,
        'output',
        'backup',
        'target-time',
        'target-lsn',
        'target-name',
        'target-xid',
        'target',
        'target-exclusive',
        'on',
        'keep',
        'dump',
        'database',
        'jobs',
        'wait',
      ],
      localOptions: [
        {
          name: 'dump',
          type: 'string',
          cliOnly: true,
          description: `A dump drill instead: restore this dump (a label from \`pgfleet dumps\`, or latest) into a throwaway PostgreSQL of its major version on an agent of the cluster, compare every table's count(*) with the exact rows the dump recorded (a difference fails with ${ErrorCodes.DumpDrillCountsDiffer.code}, naming the tables), record the restore time and remove everything. No --backup or --target-* with it.`,
        },
        {
          name: 'database',
          type: 'string',
          cliOnly: true,
          description: 'With --dump: only this database of the dump (default: all of them).',
        },
        { ...JOBS_OPTION, default: 2, description: 'With --dump: pg_restore --jobs.' },
        {
          name: 'backup',
          type: 'string',
          cliOnly: true,
          description: 'Drill this backup label instead of the newest one before the target.',
        },
        {
          name: 'on',
          type: 'string',
          cliOnly: true,
          description:
            "Run the drill on this agent (e.g. a spare host) instead of the cluster's own; the cluster's agent still counts the source's rows.",
        },
        {
          name: 'keep',
          type: 'boolean',
          cliOnly: true,
          description:
            "Keep the scratch directory (restored data directory and PostgreSQL's log) for inspection: the server is stopped cleanly, the path is reported, and the agent's cleanup leaves it alone; remove it when done (docs/drills.md).",
        },
      ],
      positionals: [{ name: 'cluster', description: 'Cluster whose backup to drill.', required: true }],
    },
    {
      name: 'recover-table',
      summary: `Bring tables back as they were at a target (--before-xid X: just before a bad statement) without touching today's rows (docs/undo.md): the cluster's agent restores a backup into a scratch directory, replays WAL to the target, dumps each table from a throwaway PostgreSQL and loads it into the live cluster as pgfleet_recovered.<name> (never over an existing table: ${ErrorCodes.RecoveredTableExists.code}), then removes the copy. With --wait prints per table the rows recovered, the live table's rows now, the SQL to compare and merge, and the time to recover. A table that did not exist at the target: ${ErrorCodes.RecoverTableNotFound.code}.`,
      options: [
        ...CONNECTION,
        'output',
        'table',
        'into',
        'database',
        ...RECOVERY_TARGET_FLAGS,
        'target-exclusive',
        'backup',
        'wait',
      ],
      positionals: [{ name: 'cluster', description: 'Cluster whose tables to recover.', required: true }],
    },
    {
      name: 'dump',
      summary: `Logical backup of a cluster's databases (docs/logical.md): on its primary's agent, pg_dump of the server's major version in directory format (--jobs in parallel, one snapshot per database) and pg_dumpall --globals-only (roles without passwords unless --with-passwords, tablespaces); every file stored in the cluster's repositories, compressed and checksummed (encrypted when the cluster is). The catalog records each dump: databases, size, duration, tables with row estimates, the pg_dump version; \`pgfleet dumps <cluster>\` lists them. A dump that fails (a lock not granted within --lock-wait-timeout, a database dropped meanwhile: ${ErrorCodes.DumpFailed.code}) keeps nothing and is not listed.`,
      options: [...CONNECTION, 'output', 'database', 'jobs', 'lock-wait-timeout', 'with-passwords', 'wait'],
      localOptions: [
        {
          name: 'database',
          type: 'string',
          cliOnly: true,
          list: true,
          description:
            'A database to dump; repeat the flag or separate names with commas (default: every database that allows connections, templates excluded).',
        },
        { ...JOBS_OPTION, description: 'pg_dump --jobs: tables dumped at once per database (each is a connection).' },
        {
          name: 'lock-wait-timeout',
          type: 'string',
          cliOnly: true,
          default: '60s',
          description:
            "pg_dump --lock-wait-timeout: fail the dump when a table's lock is not granted within this long (30s, 5m), instead of queueing behind DDL (and making later DDL queue behind the dump).",
        },
        {
          name: 'with-passwords',
          type: 'boolean',
          cliOnly: true,
          description: "Keep the roles' password hashes in the dumped globals (left out by default).",
        },
      ],
      positionals: [{ name: 'cluster', description: 'Cluster whose databases to dump.', required: true }],
    },
    {
      name: 'dumps',
      summary:
        'List the complete dumps of a cluster, newest first: label, databases, tables, size, duration and the pg_dump version.',
      options: [...CONNECTION, 'output'],
      positionals: [{ name: 'cluster', description: 'Cluster name.', required: true }],
    },
    {
      name: 'restore-dump',
      summary: `Restore one database of a dump into a new database with pg_restore --jobs, on the primary agent of --to-cluster (the dump's own cluster by default; a newer major version reads older dumps). Every file is checked against the catalog's checksums as it is read from the repository. An existing --to-database is refused (${ErrorCodes.RestoreDumpTargetExists.code}) unless --clean, which drops it first and says so. A failed restore (${ErrorCodes.RestoreDumpFailed.code}) drops the database it created.`,
      options: [
        ...CONNECTION,
        'output',
        'dump',
        'database',
        'to-cluster',
        'to-database',
        'table',
        'schema',
        'jobs',
        'clean',
        'globals',
        'wait',
      ],
      localOptions: [
        {
          name: 'dump',
          type: 'string',
          cliOnly: true,
          description: 'The dump label (pgfleet dumps); default: the newest dump holding --database.',
        },
        { name: 'database', type: 'string', cliOnly: true, description: 'The dumped database to restore (required).' },
        {
          name: 'to-cluster',
          type: 'string',
          format: 'cluster-name',
          cliOnly: true,
          description: "The cluster to restore into (default: the dump's own).",
        },
        {
          name: 'to-database',
          type: 'string',
          cliOnly: true,
          description: 'The new database (default: --database); refused when it exists, unless --clean.',
        },
        {
          name: 'table',
          type: 'string',
          cliOnly: true,
          list: true,
          description:
            'Only this table (pg_restore --table: a table name, any schema unless --schema narrows it), definition and data; repeat or separate with commas.',
        },
        {
          name: 'schema',
          type: 'string',
          cliOnly: true,
          list: true,
          description: 'Only objects of this schema (pg_restore --schema); repeat or separate with commas.',
        },
        { ...JOBS_OPTION, description: 'pg_restore --jobs: tables and indexes loaded at once.' },
        {
          name: 'clean',
          type: 'boolean',
          cliOnly: true,
          description: 'Drop an existing --to-database first (its data is lost), then restore in its place.',
        },
        {
          name: 'globals',
          type: 'boolean',
          cliOnly: true,
          description:
            "First apply the dump's globals (pg_dumpall --globals-only: roles, their settings and memberships, tablespaces) to the target cluster, so the restored objects' owners and grants exist. Roles and tablespaces that already exist are left as they are and reported as skipped; role passwords only when the dump kept them (pgfleet dump --with-passwords). Off by default: the output then says the globals were not applied.",
        },
      ],
      positionals: [{ name: 'cluster', description: 'The cluster the dump was taken of.', required: true }],
    },
    {
      name: 'drills',
      summary: 'Drill history, newest first: verdict, RTO, amcheck and row count results, and why a drill failed.',
      options: [...CONNECTION, 'output', 'limit'],
      positionals: [{ name: 'cluster', description: 'Only this cluster.' }],
    },
    {
      name: 'pin',
      summary: 'Pin a backup so that retention never removes it (--unpin to release it).',
      options: [...CONNECTION, 'output', 'unpin'],
      positionals: [
        { name: 'cluster', description: 'Cluster name.', required: true },
        { name: 'label', description: 'Backup label.', required: true },
      ],
    },
  ],
} as const satisfies ProgramSpec;

export type CliCommand = (typeof cliProgram)['commands'][number]['name'];

/** The typed settings of one `pgfleet` command, from the table above. */
export type CliSettings<N extends CliCommand> = CommandSettings<typeof cliProgram, N>;

/** Resolves the typed settings of `command` from its parsed option values. */
export function cliSettings<N extends CliCommand>(command: N, options: OptionValues): CliSettings<N> {
  return resolveSettings(cliProgram, command, options);
}
