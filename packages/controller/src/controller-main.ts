/**
 * pgfleet-controller (bin.ts runs this): parses the command line against the option table and runs the server.
 * A PgfleetError is printed as code + message + hint with its registry exit code, never a stack.
 */
import { createLogger, exitWith, helpText, parseCommandLine, versionText } from '@pgfleet/core';
import { controllerProgram, resolveRunConfig } from './options.js';

async function main(argv: string[]): Promise<number> {
  const parsed = parseCommandLine(controllerProgram, argv);
  if (parsed.version) {
    process.stdout.write(`${versionText(controllerProgram, new URL('../package.json', import.meta.url))}\n`);
    return 0;
  }
  if (parsed.help) {
    process.stdout.write(`${helpText(controllerProgram, parsed.command)}\n`);
    return 0;
  }
  switch (parsed.command.name) {
    case 'ca':
    case 'enroll-token':
    case 'token': {
      const { caCommand, enrollTokenCommand, tokenCommand } = await import('./security/commands.js');
      if (parsed.command.name === 'ca') return caCommand(parsed.positionals[0]!, parsed.options);
      if (parsed.command.name === 'enroll-token') return enrollTokenCommand(parsed.positionals[0]!, parsed.options);
      return tokenCommand(parsed.positionals, parsed.options);
    }
    case 'catalog': {
      const { catalogCommand } = await import('./catalog/command.js');
      return catalogCommand(parsed.positionals[0]!, parsed.options);
    }
    default:
      break;
  }
  // `run`; the table rejects unknown commands.
  const config = resolveRunConfig(parsed.options);
  const logger = createLogger({
    level: config.logLevel,
    name: 'pgfleet-controller',
    ...(config.logFormat ? { format: config.logFormat } : {}),
  });
  // The server's modules (gRPC, catalog, NATS, metrics: ~550 of them) only for `run`, not for
  // --help, ca, token or catalog.
  const { startController } = await import('./server.js');
  const controller = await startController(config, { logger });
  await new Promise<void>((resolve) => {
    const stop = (signal: NodeJS.Signals): void => {
      logger.info({ signal }, 'stopping');
      process.off('SIGINT', stop);
      process.off('SIGTERM', stop);
      resolve();
    };
    process.on('SIGINT', stop);
    process.on('SIGTERM', stop);
  });
  await controller.close();
  return 0;
}

exitWith(main(process.argv.slice(2)));
