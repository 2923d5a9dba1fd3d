#!/usr/bin/env node
/**
 * pgfleet-agent entry point. wal-push runs once per WAL segment from PostgreSQL, so it goes
 * straight to its client (wal/push-client.ts), whose way to the daemon loads only the socket
 * protocol, core's argument parser and the option table: start-up time is most of an
 * archive_command's cost. Everything else goes through main.ts.
 */
const argv = process.argv.slice(2);
if (argv[0] === 'wal-push') {
  const [{ walPushCommand }, { exitWith }] = await Promise.all([
    import('./wal/push-client.js'),
    import('@pgfleet/core/errors'),
  ]);
  exitWith(walPushCommand(argv), 'pgfleet-agent: ');
} else {
  // The daemon's allocator settings are read at process start: set them, then start again (malloc-tuning.ts).
  if (argv[0] === 'run') (await import('./malloc-tuning.js')).reexecWithMallocTuning();
  (await import('./main.js')).runAgentCommand(argv);
}
