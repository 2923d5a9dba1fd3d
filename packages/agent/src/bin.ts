#!/usr/bin/env node
/**
 * pgfleet-agent entry point. wal-push runs once per WAL segment from PostgreSQL, so its way to
 * the daemon (wal-push-fast.ts) loads only the socket protocol: start-up time is most of an
 * archive_command's cost. Everything else, and wal-push when the daemon cannot take the file,
 * goes through agent-main.ts.
 */
const argv = process.argv.slice(2);
const fast = argv[0] === 'wal-push' ? await (await import('./wal/push-fast.js')).walPushFast(argv) : undefined;
if (fast !== undefined) process.exitCode = fast;
else (await import('./main.js')).runAgentCommand(argv);
