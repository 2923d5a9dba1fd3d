/** wal-push without a daemon: the process archives the file itself (loaded only on that path). */
import { createLogger, requireOption, type ParsedCommand } from '@pgfleet/core';
import { openRepository, type Codec } from '@pgfleet/storage';
import { AGENT_PROGRAM, repositoriesFromOptions, s3CredentialsFromOptions } from '../options.js';
import { walPush } from './archive.js';

export async function pushDirectly(path: string, parsed: ParsedCommand): Promise<number> {
  const o = parsed.options;
  const log = createLogger({ level: String(o['log-level'] ?? 'info') }).child({ component: 'wal-push' });
  const cluster = requireOption<string>(AGENT_PROGRAM, o, 'cluster');
  const specs = repositoriesFromOptions(o);
  // Without a daemon there is nowhere else to archive to: the repository must be configured here.
  if (specs.length === 0) requireOption(AGENT_PROGRAM, o, 'repo');
  const repo = await openRepository(specs, s3CredentialsFromOptions(o));
  try {
    await walPush(path, { cluster, repo, compress: o.compress as Codec, log });
  } finally {
    repo.close();
  }
  return 0;
}
