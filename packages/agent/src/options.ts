/**
 * The agent's one option table: flags, PGFLEET_* environment variables, the YAML config file
 * (--config, the same file archive_command and restore_command point at) and --help.
 */
import type { ProgramSpec } from '@pgfleet/core';
import { CODECS } from '@pgfleet/storage';

export const AGENT_PROGRAM: ProgramSpec = {
  name: 'pgfleet-agent',
  summary: 'pgfleet agent: backups, WAL archiving and restores on a PostgreSQL host',
  options: [
    { name: 'config', type: 'string', description: 'YAML config file with any of the options below', cliOnly: true },
    { name: 'controller', type: 'string', description: 'controller gRPC address host:port', default: '127.0.0.1:7420' },
    { name: 'cluster', type: 'string', description: 'cluster name, unique in the fleet and in the repository' },
    { name: 'agent-id', type: 'string', description: 'agent identity (default: <hostname>-<cluster>)' },
    { name: 'pgdata', type: 'string', description: "the cluster's data directory" },
    { name: 'pg-host', type: 'string', description: 'PostgreSQL host or socket directory', default: '/var/run/postgresql' },
    { name: 'pg-port', type: 'integer', description: 'PostgreSQL port', default: 5432, min: 1, max: 65535 },
    { name: 'pg-user', type: 'string', description: 'PostgreSQL user (superuser or pg_backup role holder)', default: 'postgres' },
    { name: 'pg-database', type: 'string', description: 'database to connect to', default: 'postgres' },
    { name: 'pg-password', type: 'string', description: 'PostgreSQL password (prefer a .pgpass file)', secret: true },
    { name: 'pg-bin-dir', type: 'string', description: 'directory of PostgreSQL binaries (pg_waldump); default /usr/lib/postgresql/<major>/bin' },
    { name: 'repo-path', type: 'string', description: 'posix repository directory used by wal-push/wal-fetch (jobs use the controller\'s repository)' },
    { name: 'compress', type: 'string', description: 'compression codec for backups and WAL', default: 'zstd', choices: CODECS },
    { name: 'workers', type: 'integer', description: 'parallel file copies in backups and restores', default: 2, min: 1, max: 64 },
    { name: 'archive-timeout', type: 'integer', description: 'seconds a backup waits for its WAL to reach the repository', default: 120, min: 1 },
    { name: 'log-level', type: 'string', description: 'log level', default: 'info', choices: ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'] },
  ],
  commands: [
    { name: 'run', summary: 'run the agent daemon: connect to the controller and run its jobs', options: ['config', 'controller', 'cluster', 'agent-id', 'pgdata', 'pg-host', 'pg-port', 'pg-user', 'pg-database', 'pg-password', 'pg-bin-dir', 'repo-path', 'compress', 'workers', 'archive-timeout', 'log-level'] },
    {
      name: 'wal-push',
      summary: "archive one WAL file (archive_command = 'pgfleet-agent wal-push %p --config FILE')",
      options: ['config', 'cluster', 'repo-path', 'compress', 'log-level'],
      positionals: [{ name: 'path', description: 'path of the WAL file (%p), relative to PGDATA', required: true }],
    },
    {
      name: 'wal-fetch',
      summary: "restore one archived WAL file (restore_command = 'pgfleet-agent wal-fetch %f %p --config FILE')",
      options: ['config', 'cluster', 'repo-path', 'log-level'],
      positionals: [
        { name: 'name', description: 'WAL file name (%f)', required: true },
        { name: 'path', description: 'where to write it (%p)', required: true },
      ],
    },
  ],
};

export interface AgentSettings {
  controller: string;
  cluster: string;
  agentId: string;
  pgdata: string;
  pg: { host: string; port: number; user: string; database: string; password?: string };
  pgBinDir?: string;
  repoPath?: string;
  compress: (typeof CODECS)[number];
  workers: number;
  archiveTimeoutSec: number;
}
