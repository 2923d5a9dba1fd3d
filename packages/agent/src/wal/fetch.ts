/**
 * restore_command's side: `pgfleet-agent wal-fetch %f %p` and the detached `wal-prefetch` it
 * starts. wal-fetch writes to a temp name and renames, so PostgreSQL never reads a half-written
 * segment, and takes segments the prefetcher already downloaded (prefetch.ts); the prefetcher
 * is this same binary, so downloads of the next segments overlap replay. Unlike wal-push it has
 * no daemon to talk to: it reads the repository itself.
 */
import { createWriteStream } from 'node:fs';
import { rename, rm } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { missingOption, resolveSettings, type Logger, type OptionValues } from '@pgfleet/core';
import {
  clusterManifestKeys,
  keyResolver,
  openRepository,
  type KeySource,
  type Repository,
  type RepositorySettings,
  type RepositorySpec,
  type S3Credentials,
} from '@pgfleet/storage';
// Not the package index: that loads the PostgreSQL client (node-postgres, ~40 modules), which
// restore_command, started once per WAL segment, never uses.
import { walFileKind } from '@pgfleet/pg/wal-segment-name';
import {
  AGENT_PROGRAM,
  keySourceArgs,
  keySourceFromSettings,
  repositoriesFromSettings,
  repositoryArgs,
  s3CredentialsFromSettings,
} from '../options.js';
import { clusterKeyFileOf, requireClusterKeyFile } from '../security/cluster-key.js';
import { afterFetch, prefetchSegments, prefetchSpoolFor, takeFromSpool } from './prefetch.js';

export interface WalFetchOptions {
  cluster: string;
  /** the cluster's repositories: a segment is read from the first that holds it */
  repo: Repository;
  log: Logger;
  /** segments to download ahead of recovery (0 = off) */
  prefetch?: number;
  /** starts the background download of the segments after `name` into `spool` (spawnPrefetcher below) */
  startPrefetch?: (name: string, spool: string) => void;
}

/**
 * Returns false when the file is not archived (restore_command then exits 1, which PostgreSQL
 * expects at the end of WAL). Only an authenticated copy is ever written to `dest`: when every
 * copy fails its MAC (planted, renamed, copied from another cluster) it fails with
 * WalUnauthenticated, which ends recovery there rather than replaying it.
 */
export async function walFetch(name: string, destArg: string, opts: WalFetchOptions): Promise<boolean> {
  const dest = resolve(destArg);
  const repo = opts.repo;
  const found = await repo.findWal(opts.cluster, name);
  const wal = found.find((w) => w.authentic);
  if (!wal && found.length === 0) return false;
  const prefetch = opts.prefetch ?? 0;
  const spool = prefetchSpoolFor(dest);
  const segment = walFileKind(name) === 'segment';
  if (wal && segment && prefetch > 0 && (await takeFromSpool(spool, name, wal.sha256, dest))) {
    opts.log.debug({ wal: name }, 'restored WAL file from the prefetch spool');
  } else {
    const tmp = `${dest}.pgfleet-tmp`;
    try {
      await repo.fetchWal(opts.cluster, name, createWriteStream(tmp));
      await rename(tmp, dest);
    } catch (err) {
      await rm(tmp, { force: true });
      throw err;
    }
    opts.log.debug({ wal: name }, 'restored WAL file');
  }
  if (segment) await afterFetch(spool, name, prefetch, opts.startPrefetch, repo, opts.cluster);
  return true;
}

/**
 * The detached prefetcher wal-fetch starts: this same binary, every setting on its command line
 * except S3 credentials, which go by environment (a command line is visible to every user).
 */
function spawnPrefetcher(args: {
  cluster: string;
  repositories: readonly RepositorySpec[];
  credentials: S3Credentials | undefined;
  keySource: KeySource | undefined;
  clusterKeyFile: string;
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
          ...keySourceArgs(args.keySource),
          '--cluster-key-file',
          args.clusterKeyFile,
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

/** The repositories, opened with the cluster's key from its key file (WalKeyMissing without one: no WAL is trusted). */
async function openWithClusterKey(
  repositories: readonly RepositorySpec[],
  credentials: S3Credentials | undefined,
  keySource: KeySource | undefined,
  cluster: string,
  clusterKeyFile: string,
): Promise<Repository> {
  const key = await requireClusterKeyFile(clusterKeyFile, cluster);
  const repo = await openRepository(repositories, credentials, keySource && keyResolver(keySource, cluster));
  return repo.withManifestKeys(clusterManifestKeys(cluster, key));
}

/** The repositories a command needs (--repo or --repo-path, and --repo2); missing: the usual missing-option error. */
function requireRepositories(settings: RepositorySettings): RepositorySpec[] {
  const specs = repositoriesFromSettings(settings);
  if (specs.length === 0) throw missingOption(AGENT_PROGRAM, 'repo');
  return specs;
}

/**
 * `wal-fetch <name> <path>`: exit 0 with the file written, 1 when the archive does not hold it.
 * `logger` makes the command's logger at the level its settings name.
 */
export async function walFetchCommand(
  o: OptionValues,
  positionals: readonly string[],
  logger: (level: string) => Logger,
): Promise<number> {
  const settings = resolveSettings(AGENT_PROGRAM, 'wal-fetch', o, ['cluster']);
  const { cluster, prefetch } = settings;
  const log = logger(settings.logLevel);
  const repositories = requireRepositories(settings);
  const credentials = s3CredentialsFromSettings(settings);
  const keySource = keySourceFromSettings(settings);
  // %p is pg_wal/RECOVERYXLOG relative to PGDATA; restore writes --cluster-key-file into restore_command.
  const clusterKeyFile = clusterKeyFileOf(settings, dirname(dirname(resolve(positionals[1]!))));
  const repo = await openWithClusterKey(repositories, credentials, keySource, cluster, clusterKeyFile);
  const found = await walFetch(positionals[0]!, positionals[1]!, {
    cluster,
    repo,
    log,
    prefetch,
    startPrefetch: spawnPrefetcher({
      cluster,
      repositories,
      credentials,
      keySource,
      clusterKeyFile,
      prefetch,
      logLevel: settings.logLevel,
    }),
  }).finally(() => repo.close());
  // Exit 1 without noise: PostgreSQL asks for files past the end of the archive by design.
  return found ? 0 : 1;
}

/** `wal-prefetch <name> <spool>`, started by wal-fetch: downloads the segments after `name`. */
export async function walPrefetchCommand(
  o: OptionValues,
  positionals: readonly string[],
  logger: (level: string) => Logger,
): Promise<number> {
  const settings = resolveSettings(AGENT_PROGRAM, 'wal-prefetch', o, ['cluster']);
  const log = logger(settings.logLevel);
  const repo = await openWithClusterKey(
    requireRepositories(settings),
    s3CredentialsFromSettings(settings),
    keySourceFromSettings(settings),
    settings.cluster,
    clusterKeyFileOf(settings, dirname(dirname(resolve(positionals[1]!)))),
  );
  const got = await prefetchSegments(positionals[0]!, positionals[1]!, {
    repo,
    cluster: settings.cluster,
    prefetch: settings.prefetch,
  }).finally(() => repo.close());
  log.debug({ wal: got }, 'prefetched WAL segments');
  return 0;
}
