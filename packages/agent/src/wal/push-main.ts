/**
 * The `pgfleet-agent wal-push` process (bin.js runs nothing else for it). The build bundles this
 * module and its static imports (push-client.ts, socket.ts, the option table, core's parser and
 * error registry) into one CommonJS file, dist/wal/push-main.cjs (bundle-push-main.mjs), and
 * bin.js runs that file: archive_command starts a Node process per WAL segment, and loading the
 * same code as a dozen ES modules (resolution through package exports, one compile and link each,
 * then the ES loader's own start) cost ~15 ms of CPU a segment more than the one CommonJS file
 * (docs/benchmarks.md, "wal-push client start-up"). The slow path without a daemon
 * (push-direct.ts) stays a separate ES module, loaded only when needed, in the bundle too.
 */
import { exitWith } from '@pgfleet/core/errors';
import { walPushCommand } from './push-client.js';

exitWith(walPushCommand(process.argv.slice(2)), 'pgfleet-agent: ');
