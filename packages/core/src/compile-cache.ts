/**
 * Node's compile cache (V8 code cache of every module loaded, kept on disk between runs) for the
 * binaries. Each of them starts many times: the CLI once per command, the agent once per
 * restore_command call, and the end-to-end tests start them hundreds of times, so compiling the
 * same modules again each time is CPU spent for nothing.
 *
 * The cache is one directory per OS user (root, and the postgres user that runs archive_command
 * and restore_command), in the temporary directory, used only when it is a real directory owned
 * by this user and writable by no one else: another local user who could write code cache there
 * could have it run by ours. A stale entry (another build of a module) is recompiled by Node,
 * which checks each entry against the source's hash; an unwritable or full disk only loses the
 * cache. Import this module before any other (it imports node builtins only): a module compiled
 * before the cache is on is not cached.
 */
import { lstatSync, mkdirSync } from 'node:fs';
import { enableCompileCache } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** The directory enabled, or undefined when caching stays off (see above; also NODE_DISABLE_COMPILE_CACHE). */
export function enableUserCompileCache(): string | undefined {
  const uid = process.getuid?.();
  if (uid === undefined) return undefined;
  try {
    const dir = join(tmpdir(), `pgfleet-compile-cache-${uid}`);
    try {
      mkdirSync(dir, { mode: 0o700 });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') return undefined;
    }
    const st = lstatSync(dir);
    if (!st.isDirectory() || st.uid !== uid || (st.mode & 0o022) !== 0) return undefined;
    const r = enableCompileCache(dir);
    return r.directory;
  } catch {
    return undefined; // a cache is an optimisation: never a reason for a command to fail
  }
}
