/**
 * `pgfleet-controller catalog rebuild`: run on the controller host against its catalog (no
 * running controller needed; SQLite waits for a running one's writes). The report goes to stdout
 * (--output json for scripts); see rebuild.ts for what is changed and what never is.
 */
import { missingOption, PgfleetError, resolveSettings, type OptionValues } from '@pgfleet/core';
import {
  keyResolver,
  openRepositoryDriver,
  repositoriesFromSettings,
  Repository,
  secretManifestKeys,
} from '@pgfleet/storage';
import { describeRebuild, describeSigning, rebuildCatalog, signManifests } from './rebuild.js';
import { controllerProgram } from '../options.js';
import { processIo, withCatalog, type CommandIo } from '../security/commands.js';
import { loadManifestSecret, manifestSecretPath } from '../security/manifest-secret.js';

export async function catalogCommand(
  action: string,
  options: OptionValues,
  io: CommandIo = processIo,
): Promise<number> {
  if (action !== 'rebuild' && action !== 'sign-manifests')
    throw new PgfleetError(
      'InvalidArgument',
      `catalog: unknown action '${action}'; use: catalog rebuild|sign-manifests --catalog URL --repo URL|--repo-path DIR`,
    );
  const settings = resolveSettings(controllerProgram, 'catalog', options);
  if (!settings.catalog) throw missingOption(controllerProgram, 'catalog');
  const [spec] = repositoriesFromSettings(settings);
  if (!spec)
    throw new PgfleetError('InvalidConfig', 'catalog rebuild needs the repository: set --repo URL or --repo-path DIR');
  // Derived from the running controller's secret, never created here: a new secret would trust nothing.
  const secret = await loadManifestSecret(
    manifestSecretPath({
      catalog: settings.catalog,
      ...(settings.manifestSecret ? { manifestSecret: settings.manifestSecret } : {}),
      ...(settings.tlsDir ? { tlsDir: settings.tlsDir } : {}),
    }),
    false,
  );
  // S3 credentials come from the environment or the AWS default chain, never from the command line.
  // Encrypted clusters: one key source for all of them (%c names each cluster).
  const keys = keyResolver({
    file: settings.encryptionKeyFile,
    command: settings.encryptionKeyCommand,
    previousFile: settings.previousEncryptionKeyFile,
    previousCommand: settings.previousEncryptionKeyCommand,
  });
  const repo = new Repository(await openRepositoryDriver(spec), secretManifestKeys(secret), keys);
  try {
    if (action === 'sign-manifests') {
      const signing = await signManifests(repo, {
        ...(settings.cluster !== undefined ? { cluster: settings.cluster } : {}),
        dryRun: settings.dryRun,
      });
      io.out(settings.output === 'json' ? `${JSON.stringify(signing, null, 2)}\n` : `${describeSigning(signing)}\n`);
      return signing.refused.length > 0 || signing.walRefused.length > 0 ? 1 : 0;
    }
    const report = await withCatalog(settings, (store) =>
      rebuildCatalog(store, repo, {
        ...(settings.cluster !== undefined ? { cluster: settings.cluster } : {}),
        dryRun: settings.dryRun,
        now: io.now(),
      }),
    );
    io.out(settings.output === 'json' ? `${JSON.stringify(report, null, 2)}\n` : `${describeRebuild(report)}\n`);
    return 0;
  } finally {
    repo.close();
  }
}
