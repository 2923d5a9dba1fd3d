#!/usr/bin/env node
// Prints the installed pgfleet-agent launcher (packages/agent/src/wal/launcher.ts) for a tree
// under LIB run by NODE: `node scripts/agent-launcher.mjs NODE LIB [HEADER-LINE]`. install.sh and
// the tests that run archive_command through the launcher both write it with this.
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

const [node, lib, header] = process.argv.slice(2);
if (!node || !lib) {
  process.stderr.write('usage: agent-launcher.mjs NODE LIB [HEADER-LINE]\n');
  process.exit(2);
}
const agent = join(lib, 'packages/agent/dist');
const { agentLauncherScript } = await import(pathToFileURL(join(agent, 'wal/launcher.js')).href);
process.stdout.write(
  agentLauncherScript({ node, bin: join(agent, 'bin.js'), walPush: join(agent, 'wal/push-main.cjs') }, header ?? ''),
);
