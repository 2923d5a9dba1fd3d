/**
 * The repositories a job reads and writes, and how restore_command's wal-fetch finds them again:
 * settled per job from what the controller sent and the agent's own configuration.
 */
import { PgfleetError, type Logger } from '@pgfleet/core';
import { repositorySpecFromMessage, type Job } from '@pgfleet/proto';
import { parseRepositoryUrl, repositoryUrl, type RepositorySpec } from '@pgfleet/storage';
import { keySourceArgs, repositoryArgs, type AgentSettings } from '../options.js';
import { CLUSTER_KEY_BYTES, jobClusterKeyFile, writeClusterKeyFile } from '../security/cluster-key.js';

/**
 * The job's repositories (Job.repositories, else Job.repository), else the agent's own, in
 * restore preference order. An agent with repositories of its own is pinned to them: a controller
 * naming others is refused (RepositoriesNotPinned), so a rogue or misconfigured controller cannot
 * make the agent read another cluster's backups or write this cluster's data elsewhere. A named
 * repository goes through the URL syntax, so it is checked like a --repo value.
 */
export function jobRepositories(s: AgentSettings, job: Job, log: Logger): RepositorySpec[] {
  const named = (job.repositories.length > 0 ? job.repositories : job.repository ? [job.repository] : []).flatMap(
    (r) => {
      const spec = repositorySpecFromMessage(r);
      return spec ? [parseRepositoryUrl(repositoryUrl(spec), "the job's repositories")] : [];
    },
  );
  if (named.length > 0 && s.repositories.length > 0) requirePinned(named, s.repositories, log);
  const specs = named.length > 0 ? named : s.repositories;
  if (specs.length === 0)
    throw new PgfleetError('InvalidConfig', 'no repository: the controller sent none and the agent has no --repo');
  // wal-fetch (restore_command) takes --repo and --repo2.
  if (specs.length > 2)
    throw new PgfleetError('InvalidArgument', `the job names ${specs.length} repositories; a cluster has at most two`);
  return specs;
}

/** The same repositories in any order (the order only says which one a restore reads first). */
function requirePinned(named: readonly RepositorySpec[], own: readonly RepositorySpec[], log: Logger): void {
  const controller = named.map(repositoryUrl);
  const agent = own.map(repositoryUrl);
  const same = controller.length === agent.length && controller.every((u) => agent.includes(u));
  if (same) return;
  log.error({ controller, agent }, "job refused: the controller names repositories other than this agent's own");
  throw new PgfleetError(
    'RepositoriesNotPinned',
    `the controller names the repositories [${controller.join(', ')}] but this agent is pinned to its own [${agent.join(', ')}] (--repo/--repo2)`,
  );
}

/**
 * What restore_command's wal-fetch needs to find the same repositories (credentials come from the
 * config file or the environment, never the command line) and to trust their WAL: the path of a
 * key file holding the job's cluster key, written here (0600, outside the restored directory:
 * security/cluster-key.ts jobClusterKeyFile), never the key itself.
 */
export async function walFetchArgs(
  s: AgentSettings,
  specs: readonly RepositorySpec[],
  log: Logger,
  job: Job,
): Promise<string[]> {
  const keyFile = await jobKeyFile(s, job);
  if (specs.some((spec) => spec.case === 's3') && s.s3Credentials && !s.configFile) {
    log.warn(
      "restore_command gets no S3 credentials (they came from flags or the environment, not --config): PostgreSQL's wal-fetch uses the AWS default chain of its own environment",
    );
  }
  // A key file's path or a key command, never a key: restore_command can name them on its command line.
  const repos = [...repositoryArgs(specs), ...keySourceArgs(s.encryption), '--cluster-key-file', keyFile];
  if (!s.configFile) return repos;
  // The config file is there for the credentials; empty values clear its repository keys (flags win over the file, key by key).
  return [...repos, '--repo-path', '', ...(specs.length < 2 ? ['--repo2', ''] : []), '--config', s.configFile];
}

/** Writes the job's cluster key (Job.manifest_key) where restore_command reads it; WalKeyMissing when the job has none. */
async function jobKeyFile(s: AgentSettings, job: Job): Promise<string> {
  if (job.manifestKey.length !== CLUSTER_KEY_BYTES || !job.manifestCluster)
    throw new PgfleetError(
      'WalKeyMissing',
      `the job carries no key for its cluster: restore_command could trust no archived WAL (upgrade the controller)`,
    );
  const file = jobClusterKeyFile(
    { file: s.clusterKeyFile, cluster: s.cluster },
    job.manifestCluster,
    job.kind.case === 'drill' ? job.jobId : undefined,
  );
  await writeClusterKeyFile(file, Buffer.from(job.manifestKey));
  return file;
}
