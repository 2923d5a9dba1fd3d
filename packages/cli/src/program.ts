/**
 * The `pgfleet` option table: every command and flag, with the environment variables that can
 * set the shared ones. --help is generated from it. Per-command flags are cliOnly so a stray
 * PGFLEET_TARGET_TIME in the environment can never steer a restore.
 */
import type { ProgramSpec } from '@pgfleet/core';

const CONNECTION = ['controller', 'timeout'] as const;
const TARGET_FLAGS = ['target-time', 'target-lsn', 'target-name', 'target-xid', 'target', 'target-action', 'target-exclusive'] as const;

export const cliProgram: ProgramSpec = {
  name: 'pgfleet',
  summary: 'admin CLI of a pgfleet controller: clusters, backups, restores and jobs',
  options: [
    { name: 'controller', type: 'string', default: '127.0.0.1:7420', description: 'host:port of the controller.' },
    { name: 'timeout', type: 'integer', default: 30, min: 1, max: 86_400, description: 'Seconds to wait for each call to the controller (not for --wait).' },
    { name: 'output', type: 'string', default: 'table', choices: ['table', 'json'], description: 'Output format: aligned columns or JSON.' },
    { name: 'type', type: 'string', cliOnly: true, default: 'full', choices: ['full', 'diff', 'incr'], description: 'Backup type.' },
    { name: 'wait', type: 'boolean', cliOnly: true, description: 'Follow the job, printing progress to stderr, until it ends; exit non-zero if it fails.' },
    { name: 'to', type: 'string', cliOnly: true, description: 'Absolute path of the (empty or new) directory to restore into, on the restoring agent\'s host.' },
    { name: 'target-time', type: 'string', cliOnly: true, description: "Recover up to this time: ISO-8601 or PostgreSQL's 'YYYY-MM-DD HH:MM:SS[.ffffff][+TZ]' (no zone = this machine's local time)." },
    { name: 'target-lsn', type: 'string', cliOnly: true, description: 'Recover up to this LSN, e.g. 0/3000060.' },
    { name: 'target-name', type: 'string', cliOnly: true, description: 'Recover up to this restore point (pg_create_restore_point).' },
    { name: 'target-xid', type: 'string', cliOnly: true, description: 'Recover up to this transaction id.' },
    { name: 'target', type: 'string', cliOnly: true, choices: ['immediate', 'latest'], description: 'immediate: stop as soon as the backup is consistent; latest: replay all archived WAL.' },
    { name: 'target-action', type: 'string', cliOnly: true, choices: ['promote', 'pause', 'shutdown'], description: "What PostgreSQL does at the target (recovery_target_action; PostgreSQL's default is pause)." },
    { name: 'target-exclusive', type: 'boolean', cliOnly: true, description: 'Stop just before the target instead of just after it (recovery_target_inclusive = off).' },
    { name: 'backup', type: 'string', cliOnly: true, description: 'Restore this backup label instead of the one the controller picks.' },
    { name: 'agent', type: 'string', cliOnly: true, description: 'Restore on this agent (e.g. a fresh host) instead of the cluster\'s own.' },
    { name: 'cluster', type: 'string', cliOnly: true, description: 'Only jobs of this cluster.' },
    { name: 'limit', type: 'integer', cliOnly: true, default: 50, min: 1, max: 10_000, description: 'At most this many jobs, newest first.' },
  ],
  commands: [
    { name: 'clusters', summary: 'List clusters with their agent, archiver state and last backup.', options: [...CONNECTION, 'output'] },
    {
      name: 'backups',
      summary: 'List the backups of a cluster, oldest first.',
      options: [...CONNECTION, 'output'],
      positionals: [{ name: 'cluster', description: 'Cluster name.', required: true }],
    },
    {
      name: 'backup',
      summary: 'Start a backup of a cluster on its agent.',
      options: [...CONNECTION, 'output', 'type', 'wait'],
      positionals: [{ name: 'cluster', description: 'Cluster name.', required: true }],
    },
    {
      name: 'restore',
      summary: 'Restore a cluster to a point in time into a directory (give exactly one target).',
      options: [...CONNECTION, 'output', 'to', ...TARGET_FLAGS, 'backup', 'agent', 'wait'],
      positionals: [{ name: 'cluster', description: 'Cluster whose backups to restore.', required: true }],
    },
    { name: 'jobs', summary: 'List jobs, newest first.', options: [...CONNECTION, 'output', 'cluster', 'limit'] },
    {
      name: 'job',
      summary: 'Show one job: state, progress, result or error.',
      options: [...CONNECTION, 'output'],
      positionals: [{ name: 'id', description: 'Job id.', required: true }],
    },
  ],
};
