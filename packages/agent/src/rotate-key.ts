/**
 * `pgfleet-agent rotate-key`: re-wraps every data key of the cluster's encrypted repository with
 * a new key-encryption key (storage repository-keys.ts rotateClusterKey). It lives in the agent
 * because the agent is what holds a cluster's repositories, their credentials and its key; the
 * controller never holds repository credentials and the admin CLI talks only to the controller.
 * Only small key objects are rewritten, each atomically, so an interruption is finished by
 * running it again with the same two keys.
 */
import { resolveSettings, type Logger, type OptionValues } from '@pgfleet/core';
import { PgfleetError } from '@pgfleet/core/errors';
import { keyResolver, openRepository } from '@pgfleet/storage';
import {
  AGENT_PROGRAM,
  keySourceFromSettings,
  repositoriesFromSettings,
  s3CredentialsFromSettings,
} from './options.js';

export async function rotateKeyCommand(o: OptionValues, logger: (level: string) => Logger): Promise<number> {
  const settings = resolveSettings(AGENT_PROGRAM, 'rotate-key', o, ['cluster']);
  const { cluster } = settings;
  const log = logger(settings.logLevel);
  const oldSource = keySourceFromSettings(settings);
  const newSource = keySourceFromSettings({
    encryptionKeyFile: settings.newEncryptionKeyFile,
    encryptionKeyCommand: settings.newEncryptionKeyCommand,
  });
  if (!oldSource || !newSource) {
    throw new PgfleetError(
      'InvalidArgument',
      'rotate-key needs the current key (--encryption-key-file or --encryption-key-command) and the new one (--new-encryption-key-file or --new-encryption-key-command)',
    );
  }
  const specs = repositoriesFromSettings(settings);
  if (specs.length === 0) throw new PgfleetError('InvalidArgument', 'rotate-key needs the repository: --repo');
  const [oldKek, newKek] = await Promise.all([keyResolver(oldSource)!(cluster), keyResolver(newSource)!(cluster)]);
  const repo = await openRepository(specs, s3CredentialsFromSettings(settings));
  try {
    const r = await repo.rotateKey(cluster, oldKek!, newKek!);
    log.info({ cluster, repository: repo.location, ...r }, 'data keys re-wrapped with the new key');
    process.stdout.write(
      `cluster ${cluster}: ${r.rewrapped} data key(s) re-wrapped, ${r.alreadyNew} already under the new key; the old key no longer opens this repository\n`,
    );
  } finally {
    repo.close();
  }
  return 0;
}
