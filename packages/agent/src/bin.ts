#!/usr/bin/env node
/**
 * pgfleet-agent entry point. wal-push and wal-fetch run once per WAL segment from PostgreSQL,
 * so their path imports only what they need (no gRPC, no protobuf): start-up time is most of an
 * archive_command's cost.
 */
import { hostname } from 'node:os';
import { asPgfleetError, createLogger, helpText, parseCommandLine, requireOption, type Logger } from '@pgfleet/core';
import type { Codec } from '@pgfleet/storage';
import { AGENT_PROGRAM, type AgentSettings } from './options.js';

async function main(argv: string[]): Promise<number> {
  const parsed = parseCommandLine(AGENT_PROGRAM, argv);
  if (parsed.help) {
    process.stdout.write(`${helpText(AGENT_PROGRAM, parsed.command.name ? parsed.command : undefined)}\n`);
    return 0;
  }
  const o = parsed.options;
  const log: Logger = createLogger({ level: String(o['log-level'] ?? 'info') }).child({ component: parsed.command.name });
  const req = <T extends string | number | boolean>(name: string) => requireOption<T>(AGENT_PROGRAM, o, name);

  switch (parsed.command.name) {
    case 'wal-push': {
      const { walPush } = await import('./wal.js');
      await walPush(parsed.positionals[0]!, { cluster: req('cluster'), repoPath: req('repo-path'), compress: o.compress as Codec, log });
      return 0;
    }
    case 'wal-fetch': {
      const { walFetch } = await import('./wal.js');
      const found = await walFetch(parsed.positionals[0]!, parsed.positionals[1]!, { cluster: req('cluster'), repoPath: req('repo-path'), log });
      // Exit 1 without noise: PostgreSQL asks for files past the end of the archive by design.
      return found ? 0 : 1;
    }
    case 'run': {
      const cluster = req<string>('cluster');
      const settings: AgentSettings = {
        controller: String(o.controller),
        cluster,
        agentId: String(o['agent-id'] ?? `${hostname()}-${cluster}`),
        pgdata: req('pgdata'),
        pg: { host: String(o['pg-host']), port: Number(o['pg-port']), user: String(o['pg-user']), database: String(o['pg-database']), ...(o['pg-password'] ? { password: String(o['pg-password']) } : {}) },
        ...(o['pg-bin-dir'] ? { pgBinDir: String(o['pg-bin-dir']) } : {}),
        ...(o['repo-path'] ? { repoPath: String(o['repo-path']) } : {}),
        compress: o.compress as Codec,
        workers: Number(o.workers),
        archiveTimeoutSec: Number(o['archive-timeout']),
      };
      const { AgentDaemon } = await import('./daemon.js');
      const daemon = new AgentDaemon(settings, log);
      const stop = () => {
        log.info('stopping');
        daemon.stop();
        setTimeout(() => process.exit(0), 2000).unref();
      };
      process.once('SIGINT', stop);
      process.once('SIGTERM', stop);
      await daemon.start();
      return 0;
    }
    default:
      return 2;
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    const e = asPgfleetError(err);
    process.stderr.write(`pgfleet-agent: ${e.format()}\n`);
    if (e.errorName === 'Internal' && err instanceof Error && err.stack) process.stderr.write(`${err.stack}\n`);
    process.exitCode = e.exitCode;
  },
);
