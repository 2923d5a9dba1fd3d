/**
 * pgfleet-agent commands (bin.ts dispatches here for everything but the wal-push fast path):
 * every command loads core (pino, zod, yaml) here and gRPC/protobuf only for `run`.
 */
import { realpathSync } from 'node:fs';
import { resolve } from 'node:path';
import { exitWith } from '@pgfleet/core/errors';
import { hostname } from 'node:os';
import type { Logger } from '@pgfleet/core';
import type { RepositorySettings, RepositorySpec, S3Credentials } from '@pgfleet/storage';
import {
  AGENT_PROGRAM,
  defaultScratchDir,
  defaultSocketPath,
  defaultStreamSpool,
  repositoriesFromSettings,
  repositoryArgs,
  s3CredentialsFromSettings,
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
function requireRepositories(settings: RepositorySettings, missing: (name: string) => Error): RepositorySpec[] {
  const specs = repositoriesFromSettings(settings);
  if (specs.length === 0) throw missing('repo');
  return specs;
}

/** How long SIGTERM/SIGINT waits for running jobs to clean up before the process exits anyway. */
const STOP_GRACE_MS = 30_000;

async function main(argv: string[]): Promise<number> {
  const { createLogger, helpText, missingOption, parseCommandLine, resolveSettings, sleep } =
    await import('@pgfleet/core');
  const parsed = parseCommandLine(AGENT_PROGRAM, argv);
  if (parsed.help) {
    process.stdout.write(`${helpText(AGENT_PROGRAM, parsed.command.name ? parsed.command : undefined)}\n`);
    return 0;
  }
  const o = parsed.options;
  const logger = (level: string): Logger => createLogger({ level }).child({ component: parsed.command.name });
  const missing = (name: string) => missingOption(AGENT_PROGRAM, name);

  switch (parsed.command.name) {
    case 'wal-fetch': {
      const [{ walFetch }, { openRepository }] = await Promise.all([
        import('./wal/archive.js'),
        import('@pgfleet/storage'),
      ]);
      const settings = resolveSettings(AGENT_PROGRAM, 'wal-fetch', o, ['cluster']);
      const { cluster, prefetch } = settings;
      const log = logger(settings.logLevel);
      const repositories = requireRepositories(settings, missing);
      const credentials = s3CredentialsFromSettings(settings);
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
          logLevel: settings.logLevel,
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
      const settings = resolveSettings(AGENT_PROGRAM, 'wal-prefetch', o, ['cluster']);
      const log = logger(settings.logLevel);
      const repo = await openRepository(requireRepositories(settings, missing), s3CredentialsFromSettings(settings));
      const got = await prefetchSegments(parsed.positionals[0]!, parsed.positionals[1]!, {
        repo,
        cluster: settings.cluster,
        prefetch: settings.prefetch,
      }).finally(() => repo.close());
      log.debug({ wal: got }, 'prefetched WAL segments');
      return 0;
    }
    case 'run': {
      const run = resolveSettings(AGENT_PROGRAM, 'run', o, ['cluster', 'pgdata']);
      const { cluster, pgdata } = run;
      const log = logger(run.logLevel);
      // archive_command derives the default socket from its working directory, which is a real path.
      const realPgdata = (() => {
        try {
          return realpathSync(pgdata);
        } catch {
          return pgdata; // start() reports the missing PGDATA with its error code
        }
      })();
      const s3Credentials = s3CredentialsFromSettings(run);
      const settings: AgentSettings = {
        controller: run.controller,
        cluster,
        agentId: run.agentId ?? `${hostname()}-${cluster}`,
        pgdata,
        pg: {
          host: run.pgHost,
          port: run.pgPort,
          user: run.pgUser,
          database: run.pgDatabase,
          ...(run.pgPassword ? { password: run.pgPassword } : {}),
        },
        ...(run.pgBinDir ? { pgBinDir: run.pgBinDir } : {}),
        repositories: repositoriesFromSettings(run),
        ...(s3Credentials ? { s3Credentials } : {}),
        ...(parsed.configFile ? { configFile: resolve(parsed.configFile) } : {}),
        compress: run.compress,
        checksumDelta: run.checksumDelta,
        workers: run.workers,
        archiveTimeoutSec: run.archiveTimeout,
        socket: run.socket || defaultSocketPath(realPgdata),
        archiveAhead: run.archiveAhead,
        stream: run.stream,
        streamSpool: run.streamSpool || defaultStreamSpool(realPgdata),
        scratchDir: run.scratchDir || defaultScratchDir(realPgdata),
        ...(run.tlsDir ? { tlsDir: run.tlsDir } : {}),
        ...(run.enrollToken ? { enrollToken: run.enrollToken } : {}),
        ...(run.caCert ? { caCert: run.caCert } : {}),
      };
      const { AgentDaemon } = await import('./daemon.js');
      const daemon = new AgentDaemon(settings, log);
      const stop = () => {
        log.info('stopping');
        // Aborted jobs clean up before the process goes (a drill stops its throwaway PostgreSQL and
        // removes its copy: seconds): wait for them, at most STOP_GRACE_MS; the WAL services get
        // 2 s as ever. The same signal again ends the process at once.
        void Promise.all([daemon.stop(), sleep(2000)]).then(() => process.exit(0));
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
