/**
 * The controller's option table: one declaration drives flags, PGFLEET_* environment variables,
 * the YAML --config file and --help (see @pgfleet/core options). resolveRunConfig turns parsed
 * values into the typed configuration the server takes, failing with PGF-1002 naming the key.
 */
import { isAbsolute } from 'node:path';
import { PgfleetError, requireOption, type OptionValues, type ProgramSpec } from '@pgfleet/core';

export const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'] as const;

export const controllerProgram: ProgramSpec = {
  name: 'pgfleet-controller',
  summary: 'the pgfleet controller: catalog, schedules, retention, job dispatch and the admin API',
  options: [
    { name: 'config', type: 'string', cliOnly: true, description: 'YAML file holding any of the options below (flags and environment win over it).' },
    { name: 'listen', type: 'string', default: '127.0.0.1:7420', description: 'host:port of the gRPC server for agents and the admin CLI (port 0 picks a free port).' },
    { name: 'catalog', type: 'string', description: 'Catalog: a SQLite file path (created with its schema when missing) or a postgres://user@host/db URL for several controllers (required).' },
    { name: 'repo-path', type: 'string', description: 'Absolute path of the posix repository the agents write backups to (required).' },
    { name: 'heartbeat-interval', type: 'integer', default: 5, min: 1, max: 3600, description: 'Seconds between agent heartbeats, sent to every agent on connect.' },
    { name: 'log-level', type: 'string', default: 'info', choices: LOG_LEVELS, description: 'Log level of the JSON log on stderr.' },
    { name: 'schedule-interval', type: 'integer', default: 30, min: 1, max: 3600, description: 'Seconds between scheduler rounds (due backups, retention). Cron times have minute resolution; a round runs what became due since the last one.' },
    { name: 'max-backups-per-repository', type: 'integer', default: 8, min: 1, max: 100_000, description: 'Scheduled backups start only while fewer than this many backups and expire jobs run on their repository; the others stay due for the next round.' },
    { name: 'max-backups-per-host', type: 'integer', default: 2, min: 1, max: 1000, description: 'Scheduled backups start only while fewer than this many backups and expire jobs run on their agent host.' },
  ],
  commands: [
    {
      name: 'run',
      summary: 'Run the controller (gRPC server for agents and admins) until SIGINT/SIGTERM.',
      options: ['config', 'listen', 'catalog', 'repo-path', 'heartbeat-interval', 'log-level', 'schedule-interval', 'max-backups-per-repository', 'max-backups-per-host'],
    },
  ],
};

export interface ControllerConfig {
  listen: string;
  catalogPath: string;
  repoPath: string;
  heartbeatIntervalSeconds: number;
  logLevel: string;
  /** Seconds between scheduler rounds; default 30. */
  scheduleIntervalSeconds?: number;
  /** Concurrency limits of scheduled jobs; defaults 8 per repository, 2 per host. */
  maxBackupsPerRepository?: number;
  maxBackupsPerHost?: number;
}

export function resolveRunConfig(values: OptionValues): ControllerConfig {
  const listen = requireOption<string>(controllerProgram, values, 'listen');
  if (!/^(\[[0-9a-fA-F:.]+\]|[^\s:]+):\d{1,5}$/.test(listen)) {
    throw new PgfleetError('InvalidConfig', `option 'listen': '${listen}' is not host:port (e.g. 127.0.0.1:7420 or [::]:7420)`);
  }
  const repoPath = requireOption<string>(controllerProgram, values, 'repo-path');
  // Agents on other hosts resolve the path themselves, so a relative one would mean something
  // different on each host.
  if (!isAbsolute(repoPath)) {
    throw new PgfleetError('InvalidConfig', `option 'repo-path': '${repoPath}' is not an absolute path`);
  }
  return {
    listen,
    catalogPath: requireOption<string>(controllerProgram, values, 'catalog'),
    repoPath,
    heartbeatIntervalSeconds: requireOption<number>(controllerProgram, values, 'heartbeat-interval'),
    logLevel: requireOption<string>(controllerProgram, values, 'log-level'),
    scheduleIntervalSeconds: requireOption<number>(controllerProgram, values, 'schedule-interval'),
    maxBackupsPerRepository: requireOption<number>(controllerProgram, values, 'max-backups-per-repository'),
    maxBackupsPerHost: requireOption<number>(controllerProgram, values, 'max-backups-per-host'),
  };
}
