/** wal-push without a daemon: the process archives the file itself (loaded only on that path). */
import { createLogger, missingOption, resolveSettings, type ParsedCommand } from '@pgfleet/core';
import { openRepository } from '@pgfleet/storage';
import { AGENT_PROGRAM, repositoriesFromSettings, s3CredentialsFromSettings } from '../options.js';
import { walPush } from './archive.js';

export async function pushDirectly(path: string, parsed: ParsedCommand): Promise<number> {
  const settings = resolveSettings(AGENT_PROGRAM, 'wal-push', parsed.options, ['cluster']);
  const log = createLogger({ level: settings.logLevel }).child({ component: 'wal-push' });
  const specs = repositoriesFromSettings(settings);
  // Without a daemon there is nowhere else to archive to: the repository must be configured here.
  if (specs.length === 0) throw missingOption(AGENT_PROGRAM, 'repo');
  const repo = await openRepository(specs, s3CredentialsFromSettings(settings));
  try {
    await walPush(path, { cluster: settings.cluster, repo, compress: settings.compress, log });
  } finally {
    repo.close();
  }
  return 0;
}
