#!/usr/bin/env node
// Prints the bash or zsh completion of one pgfleet binary, generated from its option table in the
// built workspace (npm run build first), so completion cannot drift from the parser.
// Usage: node scripts/completion.mjs bash|zsh pgfleet|pgfleet-agent|pgfleet-controller
import { completionScript } from '../packages/core/dist/index.js';

const programs = {
  pgfleet: async () => (await import('../packages/cli/dist/program.js')).cliProgram,
  'pgfleet-agent': async () => (await import('../packages/agent/dist/options.js')).AGENT_PROGRAM,
  'pgfleet-controller': async () => (await import('../packages/controller/dist/options.js')).controllerProgram,
};

const [shell, binary] = process.argv.slice(2);
if ((shell !== 'bash' && shell !== 'zsh') || !(binary in programs)) {
  process.stderr.write(`usage: completion.mjs bash|zsh ${Object.keys(programs).join('|')}\n`);
  process.exit(2);
}
process.stdout.write(completionScript(await programs[binary](), shell));
