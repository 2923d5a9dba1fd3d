/**
 * fsync of a path (`@pgfleet/core/fsync`, no dependencies: copy worker threads load it). A file's
 * fsync makes its data durable; a directory's makes the entries created or renamed in it durable,
 * which is what the temp-file + rename pattern relies on after the rename.
 */
import { open } from 'node:fs/promises';

/** Opens `path` (a file or a directory) read-only, fsyncs it and closes it. */
export async function fsyncPath(path: string): Promise<void> {
  const fh = await open(path, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}
