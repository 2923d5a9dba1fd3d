/** wal-push without a daemon: the process archives the file itself (loaded only on that path). */
import { createLogger, requireOption, type ParsedCommand } from '@pgfleet/core';
import type { Codec } from '@pgfleet/storage';
import { AGENT_PROGRAM } from './options.js';
import { walPush } from './wal.js';

export async function pushDirectly(path: string, parsed: ParsedCommand): Promise<number> {
  const o = parsed.options;
  const log = createLogger({ level: String(o['log-level'] ?? 'info') }).child({ component: 'wal-push' });
  await walPush(path, { cluster: requireOption(AGENT_PROGRAM, o, 'cluster'), repoPath: requireOption(AGENT_PROGRAM, o, 'repo-path'), compress: o.compress as Codec, log });
  return 0;
}
