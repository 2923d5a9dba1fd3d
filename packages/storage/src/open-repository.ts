/**
 * Opens drivers and repositories from specs (repository-url.ts). The S3 SDK is loaded only when
 * an S3 spec is opened (createS3Driver imports it lazily).
 */
// The light entry of core: copy worker threads open repositories with this module.
import { PgfleetError } from '@pgfleet/core/errors';
import type { RepositoryDriver } from './driver.js';
import { MirroredDriver } from './mirrored-driver.js';
import { PosixDriver } from './posix-driver.js';
import { Repository } from './repository.js';
import type { KeyResolver } from './repository-keys.js';
import type { RepositorySpec, S3Credentials } from './repository-url.js';
import { createS3Driver } from './s3-driver.js';

/**
 * The driver for one repository. S3 uses `credentials` when given, otherwise the AWS default
 * chain (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, instance or task role).
 */
export async function openRepositoryDriver(
  spec: RepositorySpec,
  credentials?: S3Credentials,
): Promise<RepositoryDriver> {
  if (spec.case === 'posix') return new PosixDriver(spec.value.path);
  const s = spec.value;
  return createS3Driver({
    bucket: s.bucket,
    prefix: s.prefix,
    ...(s.endpoint ? { endpoint: s.endpoint } : {}),
    ...(s.region ? { region: s.region } : {}),
    ...(s.forcePathStyle ? { forcePathStyle: true } : {}),
    ...(credentials ? { accessKeyId: credentials.accessKeyId, secretAccessKey: credentials.secretAccessKey } : {}),
  });
}

/**
 * The repository of a cluster: one spec opens its driver, several open a mirror (backups and
 * WAL to every one, reads from the first that has what they need, in the given order).
 */
export async function openRepository(
  specs: readonly RepositorySpec[],
  credentials?: S3Credentials,
  keys?: KeyResolver,
): Promise<Repository> {
  if (specs.length === 0) throw new PgfleetError('Internal', 'openRepository needs at least one repository');
  const drivers: RepositoryDriver[] = [];
  try {
    for (const spec of specs) drivers.push(await openRepositoryDriver(spec, credentials));
  } catch (err) {
    for (const d of drivers) d.close?.();
    throw err;
  }
  return new Repository(drivers.length === 1 ? drivers[0]! : new MirroredDriver(drivers), undefined, keys);
}

export { fixedKeys } from './key-source.js';
