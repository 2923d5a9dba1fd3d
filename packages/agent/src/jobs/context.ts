/**
 * The repositories a job reads and writes, and how restore_command's wal-fetch finds them again:
 * settled per job from what the controller sent and the agent's own configuration.
 */
import { PgfleetError, type Logger } from '@pgfleet/core';
import type { Job } from '@pgfleet/proto';
import { repositoryUrl, type RepositorySpec } from '@pgfleet/storage';
import { keySourceArgs, repositoryArgs, type AgentSettings } from '../options.js';

/** The job's repositories (Job.repositories, else Job.repository), else the agent's own, in restore preference order. */
export function jobRepositories(s: AgentSettings, job: Job, log: Logger): RepositorySpec[] {
  const named = (job.repositories.length > 0 ? job.repositories : job.repository ? [job.repository] : []).flatMap(
    (r) => (r.kind.case ? [r.kind as RepositorySpec] : []),
  );
  const specs = named.length > 0 ? named : s.repositories;
  const own = s.repositories.map(repositoryUrl).join(' ');
  if (named.length > 0 && own !== '' && named.map(repositoryUrl).join(' ') !== own) {
    // WAL goes where this agent's --repo says, backups where the controller says: a backup waits for WAL that never arrives there.
    log.warn(
      { controller: named.map(repositoryUrl), agent: s.repositories.map(repositoryUrl) },
      "the controller's repositories differ from this agent's --repo/--repo2: configure the same on both",
    );
  }
  if (specs.length === 0)
    throw new PgfleetError('InvalidConfig', 'no repository: the controller sent none and the agent has no --repo');
  // wal-fetch (restore_command) takes --repo and --repo2.
  if (specs.length > 2)
    throw new PgfleetError('InvalidArgument', `the job names ${specs.length} repositories; a cluster has at most two`);
  return specs;
}

/** What restore_command's wal-fetch needs to find the same repositories (credentials come from the config file or the environment, never the command line). */
export function walFetchArgs(s: AgentSettings, specs: readonly RepositorySpec[], log: Logger): string[] {
  if (specs.some((spec) => spec.case === 's3') && s.s3Credentials && !s.configFile) {
    log.warn(
      "restore_command gets no S3 credentials (they came from flags or the environment, not --config): PostgreSQL's wal-fetch uses the AWS default chain of its own environment",
    );
  }
  // A key file's path or a key command, never a key: restore_command can name them on its command line.
  const repos = [...repositoryArgs(specs), ...keySourceArgs(s.encryption)];
  if (!s.configFile) return repos;
  // The config file is there for the credentials; empty values clear its repository keys (flags win over the file, key by key).
  return [...repos, '--repo-path', '', ...(specs.length < 2 ? ['--repo2', ''] : []), '--config', s.configFile];
}
