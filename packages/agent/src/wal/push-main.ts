/**
 * The `pgfleet-agent wal-push` process (bin.js runs nothing else for it). The build bundles this
 * module and its static imports (push-client.ts, socket.ts, the option table, core's parser and
 * error registry) into one CommonJS file, dist/wal/push-main.cjs (bundle-push-main.mjs), and
 * bin.js runs that file (the installed launcher execs it directly): archive_command starts a Node
 * process per WAL segment, and loading the same code as a dozen ES modules (resolution through
 * package exports, one compile and link each, then the ES loader's own start) cost ~15 ms of CPU
 * a segment more than the one CommonJS file (docs/performance.md, "wal-push client start-up").
 * The slow path without a daemon (push-direct.ts) stays a separate ES module, loaded only when
 * needed, in the bundle too.
 */
import { exitWith, PgfleetError } from '@pgfleet/core/errors';
import { walPushCommand } from './push-client.js';

const argv = process.argv.slice(2);
exitWith(
  argv[0] === 'wal-push'
    ? walPushCommand(argv)
    : // Run by hand with another command: only bin.js knows the others.
      Promise.reject(
        new PgfleetError(
          'InvalidArgument',
          `this file runs only \`pgfleet-agent wal-push\`; run dist/bin.js for '${argv[0] ?? ''}'`,
        ),
      ),
  'pgfleet-agent: ',
);
