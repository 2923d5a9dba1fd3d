/**
 * pgfleet: the admin CLI (bin.ts runs this, bundled). Parses against the option table and loads the gRPC machinery only for
 * commands that talk to the controller, so --help and usage errors start instantly. Failures
 * print the PgfleetError's code, message and hint and exit with its registry exit code.
 */
import { exitWith, helpText, parseCommandLine, versionText } from '@pgfleet/core';
import { cliProgram } from './program.js';

async function main(argv: string[]): Promise<number> {
  const parsed = parseCommandLine(cliProgram, argv);
  if (parsed.version) {
    process.stdout.write(`${versionText(cliProgram, new URL('../package.json', import.meta.url))}\n`);
    return 0;
  }
  if (parsed.help) {
    process.stdout.write(`${helpText(cliProgram, parsed.command)}\n`);
    return 0;
  }
  const { runCommand } = await import('./commands.js');
  return runCommand(parsed);
}

exitWith(main(process.argv.slice(2)));
