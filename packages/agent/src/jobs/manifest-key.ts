/**
 * The manifest key a job carries (Job.manifest_key): the only key this agent holds, for the one
 * cluster whose backups the job writes or reads. The job's repository is opened with it, so
 * every manifest the job writes is signed and every manifest it reads is checked under it
 * (storage manifest-auth.ts); a job without one can neither write nor trust a manifest.
 */
import type { Job } from '@pgfleet/proto';
import { clusterManifestKeys, type Repository } from '@pgfleet/storage';

/** HMAC-SHA256 keys are 32 bytes (HKDF output); anything else is not a key the controller derived. */
const KEY_BYTES = 32;

export function withJobManifestKey(repo: Repository, job: Job): Repository {
  const key = job.manifestKey.length === KEY_BYTES ? Buffer.from(job.manifestKey) : undefined;
  return repo.withManifestKeys(
    key && job.manifestCluster ? clusterManifestKeys(job.manifestCluster, key) : { keyFor: () => undefined },
  );
}
