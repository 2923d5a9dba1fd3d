/**
 * wal-push when no agent daemon took the file at the socket its flags name (push-client.ts):
 * read the config file, try the socket it names, else archive the file in this process (archive.ts:
 * same validation, same repository writes as the daemon).
 *
 * This is the slow path, loaded on demand: the way to the daemon must not pay for pino, storage,
 * YAML or zod. It reports its own PgfleetErrors and resolves with the exit code, because
 * push-client.ts also runs bundled (dist/wal/push-main.cjs, see push-main.ts) with its own copy of
 * core's error class: an error of this module's copy must not reach that copy's `instanceof`.
 */
import { dirname } from 'node:path';
import type { LogFormat } from '@pgfleet/core';
import { missingOption, resolveSettings, type ParsedCommand } from '@pgfleet/core/command-line';
import { PgfleetError } from '@pgfleet/core/errors';
import {
  AGENT_PROGRAM,
  keySourceFromSettings,
  repositoriesFromSettings,
  s3CredentialsFromSettings,
} from '../options.js';
import { askDaemon, report } from './push-request.js';

/** This process archives the file itself (the only path that loads pino and storage). */
async function pushDirectly(path: string, parsed: ParsedCommand): Promise<number> {
  const [{ createLogger }, { clusterManifestKeys, keyResolver, openRepository }, { walPush }, clusterKeys] =
    await Promise.all([
      import('@pgfleet/core'),
      import('@pgfleet/storage'),
      import('./archive.js'),
      import('../security/cluster-key.js'),
    ]);
  const settings = resolveSettings(AGENT_PROGRAM, 'wal-push', parsed.options, ['cluster']);
  const format = parsed.options['log-format'] as LogFormat | undefined;
  const log = createLogger({ level: settings.logLevel, ...(format ? { format } : {}) }).child({
    component: 'wal-push',
  });
  const specs = repositoriesFromSettings(settings);
  // Without a daemon there is nowhere else to archive to: the repository must be configured here.
  if (specs.length === 0) throw missingOption(AGENT_PROGRAM, 'repo');
  // WAL names carry a MAC under the cluster's key, which the daemon keeps in its key file: without
  // it nothing is archived (WalKeyMissing), and PostgreSQL keeps the file and retries.
  const keyFile = clusterKeys.clusterKeyFileOf(settings, dirname(dirname(path)));
  const clusterKey = await clusterKeys.requireClusterKeyFile(keyFile, settings.cluster);
  const source = keySourceFromSettings(settings);
  const keys = source ? keyResolver(source, settings.cluster) : undefined;
  const repo = (await openRepository(specs, s3CredentialsFromSettings(settings), keys)).withManifestKeys(
    clusterManifestKeys(settings.cluster, clusterKey),
  );
  try {
    await walPush(path, { cluster: settings.cluster, repo, compress: settings.compress, log });
  } finally {
    repo.close();
  }
  return 0;
}

/**
 * wal-push of `path` (absolute) after no daemon answered at socket `tried`; `argv` is the whole
 * command line, starting with the command name. Resolves with the exit code PostgreSQL sees.
 */
export async function pushWithoutDaemon(argv: readonly string[], path: string, tried: string): Promise<number> {
  try {
    // The config file may name another socket, and pushing directly needs its repositories anyway.
    const core = await import('@pgfleet/core');
    const full = core.parseCommandLine(AGENT_PROGRAM, [...argv]);
    const configured = resolveSettings(AGENT_PROGRAM, 'wal-push', full.options);
    const reply =
      configured.socket && configured.socket !== tried
        ? await askDaemon(configured.socket, path, configured)
        : undefined;
    if (reply) return reply.ok ? 0 : report(PgfleetError.fromCode(reply.code, reply.message, reply.hint));
    return await pushDirectly(path, full);
  } catch (err) {
    if (err instanceof PgfleetError) return report(err);
    throw err;
  }
}
