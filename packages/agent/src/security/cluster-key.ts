/**
 * The cluster key on an agent's host: the key of its own cluster (the controller's manifest key
 * for it) under which archived WAL is named with a MAC (storage wal-auth.ts). The controller
 * sends it with every Welcome; the daemon keeps it in the cluster key file, because archiving
 * must not depend on the controller: it goes on while the controller is down or restarting, and
 * wal-push without a daemon and restore_command's wal-fetch read the key from there.
 *
 * The file holds the key as 64 hex digits, mode 0600, written atomically (temp file, fsync,
 * rename, directory fsync). Only its path ever appears on a command line (ps shows those). By
 * default it lives beside the data directory, like the wal-push socket, so wal-push and wal-fetch
 * (which PostgreSQL runs in PGDATA) find it without a config file; never inside PGDATA, which is
 * backed up into the repository.
 *
 * Light on purpose: wal-push's direct path loads it (node:fs and core's errors only).
 */
import { randomBytes } from 'node:crypto';
import { lstat, mkdir, open, readFile, rename, rm } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { PgfleetError } from '@pgfleet/core/errors';
import { fsyncPath } from '@pgfleet/core/fsync';
import type { ManifestKeys } from '@pgfleet/storage/manifest-auth';

/** HMAC-SHA256 keys the controller derives are 32 bytes. */
export const CLUSTER_KEY_BYTES = 32;

/** Where the key lives when --cluster-key-file is not set: <pgdata>.pgfleet-cluster.key, beside the data directory. */
export function defaultClusterKeyFile(pgdata: string): string {
  return join(dirname(pgdata), `${basename(pgdata)}.pgfleet-cluster.key`);
}

/** The key file a command uses: --cluster-key-file, else the default for the data directory `pgdata`. */
export function clusterKeyFileOf(settings: { readonly clusterKeyFile: string | undefined }, pgdata: string): string {
  return resolve(settings.clusterKeyFile || defaultClusterKeyFile(pgdata));
}

/**
 * The key file restore_command reads for a restore or drill of `cluster` run by this agent: its
 * own file for its own cluster, a sibling named after the cluster for another (a restore of
 * another cluster onto this host), never inside the restored directory. `drillJobId`: a drill's
 * recovery ends with its job, so its file is its own (removed then: removeJobClusterKeyFile),
 * and two drills of one cluster on this host never remove each other's.
 */
export function jobClusterKeyFile(
  own: { file: string; cluster: string },
  cluster: string,
  drillJobId?: string,
): string {
  if (cluster === own.cluster) return own.file;
  return join(dirname(own.file), drillJobId ? `cluster-${cluster}.drill-${drillJobId}.key` : `cluster-${cluster}.key`);
}

/**
 * After a drill of another cluster (success or failure): its key file goes, so another cluster's
 * key stays on this host no longer than the job that needed it. The agent's own file is never
 * touched. A cross-host restore keeps its file: the restored server's restore_command reads it
 * after the job, during its recovery.
 */
export async function removeJobClusterKeyFile(
  own: { file: string; cluster: string },
  cluster: string,
  drillJobId: string,
): Promise<string | undefined> {
  if (!cluster || cluster === own.cluster) return undefined;
  const file = jobClusterKeyFile(own, cluster, drillJobId);
  await rm(file, { force: true });
  return file;
}

function invalid(path: string, why: string, cause?: unknown): PgfleetError {
  return new PgfleetError(
    'ClusterKeyFileInvalid',
    `cluster key file ${path} ${why}`,
    cause === undefined ? undefined : { cause },
  );
}

/** The key in `path`; undefined when there is no such file. Refuses a link, a file others may read, anything but a key. */
export async function readClusterKeyFile(path: string): Promise<Buffer | undefined> {
  let info;
  try {
    info = await lstat(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw invalid(path, `cannot be read: ${(err as Error).message}`, err);
  }
  if (!info.isFile()) throw invalid(path, 'is not a regular file');
  if ((info.mode & 0o077) !== 0)
    throw invalid(
      path,
      `has mode ${(info.mode & 0o777).toString(8).padStart(4, '0')}: other users could read it; it must be 0600`,
    );
  const text = (await readFile(path, 'utf8')).trim();
  if (!/^[0-9a-f]{64}$/.test(text)) throw invalid(path, `does not hold a key (${CLUSTER_KEY_BYTES * 2} hex digits)`);
  return Buffer.from(text, 'hex');
}

/** The key or WalKeyMissing naming the file: WAL is neither archived nor trusted without it. */
export async function requireClusterKeyFile(path: string, cluster: string): Promise<Buffer> {
  const key = await readClusterKeyFile(path);
  if (!key)
    throw new PgfleetError(
      'WalKeyMissing',
      `no key for cluster ${cluster}: cluster key file ${path} does not exist (the agent daemon writes it when the controller welcomes it)`,
    );
  return key;
}

/** Stores `key` in `path` (0600, atomically) unless it holds it already; true when written. */
export async function writeClusterKeyFile(path: string, key: Buffer): Promise<boolean> {
  const current = await readClusterKeyFile(path).catch(() => undefined);
  if (current?.equals(key)) return false;
  await mkdir(dirname(path), { recursive: true, mode: 0o700 });
  // A temp name of its own per call ('wx': never an existing file): the Welcome handler and a
  // restore job of the agent's own cluster can write the same key file at the same moment.
  const tmp = `${path}.tmp-${process.pid}-${randomBytes(6).toString('hex')}`;
  const fh = await open(tmp, 'wx', 0o600);
  try {
    await fh.writeFile(`${key.toString('hex')}\n`);
    await fh.sync();
  } finally {
    await fh.close();
  }
  await rename(tmp, path);
  await fsyncPath(dirname(path));
  return true;
}

/**
 * The daemon's key of its own cluster: loaded from the file at start, replaced (and the file
 * rewritten) when a Welcome brings another. The WAL services' repository asks it for every push.
 */
export class ClusterKey implements ManifestKeys {
  private key: Buffer | undefined;

  constructor(
    readonly cluster: string,
    readonly file: string,
  ) {}

  /** Reads the file (nothing yet on a first start); a bad file fails the start. */
  async load(): Promise<boolean> {
    this.key = await readClusterKeyFile(this.file);
    return this.key !== undefined;
  }

  /** A key from the controller's Welcome: kept, and written to the file when it is new. True when it changed. */
  async received(key: Uint8Array): Promise<boolean> {
    if (key.length !== CLUSTER_KEY_BYTES) return false;
    const k = Buffer.from(key);
    const changed = !this.key?.equals(k);
    this.key = k;
    await writeClusterKeyFile(this.file, k);
    return changed;
  }

  keyFor(cluster: string): Buffer | undefined {
    return cluster === this.cluster ? this.key : undefined;
  }
}
