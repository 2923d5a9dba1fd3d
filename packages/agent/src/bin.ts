#!/usr/bin/env node
/**
 * pgfleet-agent entry point. wal-push and wal-fetch run once per WAL segment from PostgreSQL,
 * so their path imports only what they need: start-up time is most of an archive_command's
 * cost. wal-push is dispatched before anything else is loaded (wal-push-command.ts loads only
 * node builtins, the option table and the flag parser on its way to the daemon); every other
 * command loads core (pino, zod, yaml) here and gRPC/protobuf only for `run`.
 */
import { realpathSync } from 'node:fs';
// The light entry (no pino/zod/yaml): wal-push must start fast.
import { exitWith } from '@pgfleet/core/errors';
import { hostname } from 'node:os';
import type { Logger } from '@pgfleet/core';
import type { Codec } from '@pgfleet/storage';
import { AGENT_PROGRAM, defaultSocketPath, defaultStreamSpool, type AgentSettings } from './options.js';

/** The detached prefetcher wal-fetch starts: this same binary, every setting on its command line. */
function spawnPrefetcher(args: { cluster: string; repoPath: string; prefetch: number; logLevel: string }) {
  return (name: string, spool: string) => {
    void import('node:child_process').then(({ spawn }) => {
      const child = spawn(process.execPath, [process.argv[1]!, 'wal-prefetch', name, spool, '--cluster', args.cluster, '--repo-path', args.repoPath, '--prefetch', String(args.prefetch), '--log-level', args.logLevel], { detached: true, stdio: 'ignore' });
      child.on('error', () => {});
      child.unref();
    });
  };
}

async function main(argv: string[]): Promise<number> {
  const { createLogger, helpText, parseCommandLine, requireOption } = await import('@pgfleet/core');
  const parsed = parseCommandLine(AGENT_PROGRAM, argv);
  if (parsed.help) {
    process.stdout.write(`${helpText(AGENT_PROGRAM, parsed.command.name ? parsed.command : undefined)}\n`);
    return 0;
  }
  const o = parsed.options;
  const log: Logger = createLogger({ level: String(o['log-level'] ?? 'info') }).child({ component: parsed.command.name });
  const req = <T extends string | number | boolean>(name: string) => requireOption<T>(AGENT_PROGRAM, o, name);

  switch (parsed.command.name) {
    case 'wal-fetch': {
      const { walFetch } = await import('./wal.js');
      const cluster = req<string>('cluster');
      const repoPath = req<string>('repo-path');
      const prefetch = Number(o.prefetch ?? 0);
      const found = await walFetch(parsed.positionals[0]!, parsed.positionals[1]!, {
        cluster,
        repoPath,
        log,
        prefetch,
        startPrefetch: spawnPrefetcher({ cluster, repoPath, prefetch, logLevel: String(o['log-level'] ?? 'info') }),
      });
      // Exit 1 without noise: PostgreSQL asks for files past the end of the archive by design.
      return found ? 0 : 1;
    }
    case 'wal-prefetch': {
      const [{ prefetchSegments }, { PosixDriver, Repository }] = await Promise.all([import('./wal-prefetch.js'), import('@pgfleet/storage')]);
      const repo = new Repository(new PosixDriver(req('repo-path')));
      const got = await prefetchSegments(parsed.positionals[0]!, parsed.positionals[1]!, { repo, cluster: req('cluster'), prefetch: Number(o.prefetch ?? 0) });
      log.debug({ wal: got }, 'prefetched WAL segments');
      return 0;
    }
    case 'run': {
      const cluster = req<string>('cluster');
      const pgdata = req<string>('pgdata');
      // archive_command derives the default socket from its working directory, which is a real path.
      const realPgdata = (() => {
        try {
          return realpathSync(pgdata);
        } catch {
          return pgdata; // start() reports the missing PGDATA with its error code
        }
      })();
      const settings: AgentSettings = {
        controller: String(o.controller),
        cluster,
        agentId: String(o['agent-id'] ?? `${hostname()}-${cluster}`),
        pgdata,
        pg: { host: String(o['pg-host']), port: Number(o['pg-port']), user: String(o['pg-user']), database: String(o['pg-database']), ...(o['pg-password'] ? { password: String(o['pg-password']) } : {}) },
        ...(o['pg-bin-dir'] ? { pgBinDir: String(o['pg-bin-dir']) } : {}),
        ...(o['repo-path'] ? { repoPath: String(o['repo-path']) } : {}),
        compress: o.compress as Codec,
        checksumDelta: o['checksum-delta'] === true,
        workers: Number(o.workers),
        archiveTimeoutSec: Number(o['archive-timeout']),
        socket: o.socket ? String(o.socket) : defaultSocketPath(realPgdata),
        archiveAhead: Number(o['archive-ahead'] ?? 0),
        stream: o.stream === true,
        streamSpool: o['stream-spool'] ? String(o['stream-spool']) : defaultStreamSpool(realPgdata),
        ...(o['tls-dir'] ? { tlsDir: String(o['tls-dir']) } : {}),
        ...(o['enroll-token'] ? { enrollToken: String(o['enroll-token']) } : {}),
        ...(o['ca-cert'] ? { caCert: String(o['ca-cert']) } : {}),
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

const argv = process.argv.slice(2);
const run = argv[0] === 'wal-push' ? import('./wal-push-command.js').then((m) => m.walPushCommand(argv)) : main(argv);
exitWith(run, 'pgfleet-agent: ');
