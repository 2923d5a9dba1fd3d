#!/usr/bin/env node
/**
 * pgfleet-agent entry point. wal-push runs once per WAL segment from PostgreSQL, so it goes
 * straight to its process (wal/push-main.ts), built into one CommonJS file with everything its
 * way to the daemon needs (the socket protocol, core's argument parser and the option table):
 * start-up time is most of an archive_command's cost. Everything else goes through main.ts.
 */
import { createRequire } from 'node:module';

const argv = process.argv.slice(2);
if (argv[0] === 'wal-push') {
  try {
    createRequire(import.meta.url)('./wal/push-main.cjs');
  } catch (err) {
    // A build that skipped the bundle step (tsc alone): the same code as ES modules, only slower to load.
    if ((err as NodeJS.ErrnoException).code !== 'MODULE_NOT_FOUND') throw err;
    await import('./wal/push-main.js');
  }
} else {
  // Node's compile cache for the rest (core's compile-cache.ts): wal-push above is one bundled
  // file, for which it measured no gain (docs/performance.md), and takes no more module loads.
  (await import('@pgfleet/core/compile-cache')).enableUserCompileCache();
  // The daemon's allocator settings are read at process start: set them, then start again (malloc-tuning.ts).
  if (argv[0] === 'run') (await import('./malloc-tuning.js')).reexecWithMallocTuning();
  (await import('./main.js')).runAgentCommand(argv);
}
