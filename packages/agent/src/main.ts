/**
 * pgfleet-agent commands (bin.ts dispatches here for everything but the wal-push fast path):
 * every command loads core (pino, zod, yaml) here and gRPC/protobuf only for `run`.
 */
import { realpathSync } from 'node:fs';
import { resolve } from 'node:path';
import { exitWith } from '@pgfleet/core/errors';
import { hostname } from 'node:os';
import type { Logger } from '@pgfleet/core';
import type { Codec, RepositorySpec, S3Credentials } from '@pgfleet/storage';
import {
  AGENT_PROGRAM,
  defaultScratchDir,
  defaultSocketPath,
  defaultStreamSpool,
  repositoriesFromOptions,
  repositoryArgs,
  s3CredentialsFromOptions,
  type AgentSettings,
} from './options.js';

/**
 * The detached prefetcher wal-fetch starts: this same binary, every setting on its command line
 * except S3 credentials, which go by environment (a command line is visible to every user).
 */
function spawnPrefetcher(args: {
  cluster: string;
  repositories: readonly RepositorySpec[];
  credentials: S3Credentials | undefined;
  prefetch: number;
  logLevel: string;
}) {
  return (name: string, spool: string) => {
    void import('node:child_process').then(({ spawn }) => {
      const repos = repositoryArgs(args.repositories);
      const env = {
        ...process.env,
        ...(args.credentials
          ? {
              PGFLEET_S3_ACCESS_KEY_ID: args.credentials.accessKeyId,
              PGFLEET_S3_SECRET_ACCESS_KEY: args.credentials.secretAccessKey,
            }
          : {}),
      };
      const child = spawn(
        process.execPath,
        [
          process.argv[1]!,
          'wal-prefetch',
          name,
          spool,
          '--cluster',
          args.cluster,
          ...repos,
          '--prefetch',
          String(args.prefetch),
          '--log-level',
          args.logLevel,
        ],
        { detached: true, stdio: 'ignore', env },
      );
      child.on('error', () => {});
      child.unref();
    });
  };
}

/** The repositories a command needs (--repo or --repo-path, and --repo2); missing: the usual missing-option error. */
function requireRepositories(o: Record<string, unknown>, req: (name: string) => unknown): RepositorySpec[] {
  const specs = repositoriesFromOptions(o as never);
  if (specs.length === 0) req('repo');
  return specs;
}

/** How long SIGTERM/SIGINT waits for running jobs to clean up before the process exits anyway. */
const STOP_GRACE_MS = 30_000;

async function main(argv: string[]): Promise<number> {
  const { createLogger, helpText, parseCommandLine, requireOption } = await import('@pgfleet/core');
  const parsed = parseCommandLine(AGENT_PROGRAM, argv);
  if (parsed.help) {
    process.stdout.write(`${helpText(AGENT_PROGRAM, parsed.command.name ? parsed.command : undefined)}\n`);
    return 0;
  }
  const o = parsed.options;
  const log: Logger = createLogger({ level: String(o['log-level'] ?? 'info') }).child({
    component: parsed.command.name,
  });
  const req = <T extends string | number | boolean>(name: string) => requireOption<T>(AGENT_PROGRAM, o, name);

  switch (parsed.command.name) {
    case 'wal-fetch': {
      const [{ walFetch }, { openRepository }] = await Promise.all([
        import('./wal/archive.js'),
        import('@pgfleet/storage'),
      ]);
      const cluster = req<string>('cluster');
      const repositories = requireRepositories(o, req);
      const credentials = s3CredentialsFromOptions(o);
      const prefetch = Number(o.prefetch ?? 0);
      const repo = await openRepository(repositories, credentials);
      const found = await walFetch(parsed.positionals[0]!, parsed.positionals[1]!, {
        cluster,
        repo,
        log,
        prefetch,
        startPrefetch: spawnPrefetcher({
          cluster,
          repositories,
          credentials,
          prefetch,
          logLevel: String(o['log-level'] ?? 'info'),
        }),
      }).finally(() => repo.close());
      // Exit 1 without noise: PostgreSQL asks for files past the end of the archive by design.
      return found ? 0 : 1;
    }
    case 'wal-prefetch': {
      const [{ prefetchSegments }, { openRepository }] = await Promise.all([
        import('./wal/prefetch.js'),
        import('@pgfleet/storage'),
      ]);
      const repo = await openRepository(requireRepositories(o, req), s3CredentialsFromOptions(o));
      const got = await prefetchSegments(parsed.positionals[0]!, parsed.positionals[1]!, {
        repo,
        cluster: req('cluster'),
        prefetch: Number(o.prefetch ?? 0),
      }).finally(() => repo.close());
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
      const s3Credentials = s3CredentialsFromOptions(o);
      const settings: AgentSettings = {
        controller: String(o.controller),
        cluster,
        agentId: String(o['agent-id'] ?? `${hostname()}-${cluster}`),
        pgdata,
        pg: {
          host: String(o['pg-host']),
          port: Number(o['pg-port']),
          user: String(o['pg-user']),
          database: String(o['pg-database']),
          ...(o['pg-password'] ? { password: String(o['pg-password']) } : {}),
        },
        ...(o['pg-bin-dir'] ? { pgBinDir: String(o['pg-bin-dir']) } : {}),
        repositories: repositoriesFromOptions(o),
        ...(s3Credentials ? { s3Credentials } : {}),
        ...(parsed.configFile ? { configFile: resolve(parsed.configFile) } : {}),
        compress: o.compress as Codec,
        checksumDelta: o['checksum-delta'] === true,
        workers: Number(o.workers),
        archiveTimeoutSec: Number(o['archive-timeout']),
        socket: o.socket ? String(o.socket) : defaultSocketPath(realPgdata),
        archiveAhead: Number(o['archive-ahead'] ?? 0),
        stream: o.stream === true,
        streamSpool: o['stream-spool'] ? String(o['stream-spool']) : defaultStreamSpool(realPgdata),
        scratchDir: o['scratch-dir'] ? String(o['scratch-dir']) : defaultScratchDir(realPgdata),
        ...(o['tls-dir'] ? { tlsDir: String(o['tls-dir']) } : {}),
        ...(o['enroll-token'] ? { enrollToken: String(o['enroll-token']) } : {}),
        ...(o['ca-cert'] ? { caCert: String(o['ca-cert']) } : {}),
      };
      const { AgentDaemon } = await import('./daemon.js');
      const daemon = new AgentDaemon(settings, log);
      const stop = () => {
        log.info('stopping');
        // Aborted jobs clean up before the process goes (a drill stops its throwaway PostgreSQL and
        // removes its copy: seconds): wait for them, at most STOP_GRACE_MS; the WAL services get
        // 2 s as ever. The same signal again ends the process at once.
        void Promise.all([daemon.stop(), new Promise((r) => setTimeout(r, 2000))]).then(() => process.exit(0));
        setTimeout(() => process.exit(0), STOP_GRACE_MS).unref();
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

/** Runs one pgfleet-agent command line (argv without node and script) and exits with its code. */
export function runAgentCommand(argv: string[]): void {
  const run = argv[0] === 'wal-push' ? import('./wal/push-command.js').then((m) => m.walPushCommand(argv)) : main(argv);
  exitWith(run, 'pgfleet-agent: ');
}
