/**
 * `pgfleet-controller catalog rebuild`: run on the controller host against its catalog (no
 * running controller needed; SQLite waits for a running one's writes). The report goes to stdout
 * (--output json for scripts); see catalog-rebuild.ts for what is changed and what never is.
 */
import { PgfleetError, requireOption, type OptionValues } from '@pgfleet/core';
import { openRepositoryDriver, repositoriesFromOptions, Repository } from '@pgfleet/storage';
import { describeRebuild, rebuildCatalog } from './rebuild.js';
import { controllerProgram } from '../options.js';
import { processIo, withCatalog, type CommandIo } from '../security/commands.js';

export async function catalogCommand(
  action: string,
  options: OptionValues,
  io: CommandIo = processIo,
): Promise<number> {
  if (action !== 'rebuild')
    throw new PgfleetError(
      'InvalidArgument',
      `catalog: unknown action '${action}'; use: catalog rebuild --catalog URL --repo URL|--repo-path DIR`,
    );
  requireOption<string>(controllerProgram, options, 'catalog');
  const [spec] = repositoriesFromOptions(options);
  if (!spec)
    throw new PgfleetError('InvalidConfig', 'catalog rebuild needs the repository: set --repo URL or --repo-path DIR');
  // S3 credentials come from the environment or the AWS default chain, never from the command line.
  const repo = new Repository(await openRepositoryDriver(spec));
  try {
    const report = await withCatalog(options, (store) =>
      rebuildCatalog(store, repo, {
        ...(options.cluster !== undefined ? { cluster: String(options.cluster) } : {}),
        dryRun: options['dry-run'] === true,
        now: io.now(),
      }),
    );
    io.out(options.output === 'json' ? `${JSON.stringify(report, null, 2)}\n` : `${describeRebuild(report)}\n`);
    return 0;
  } finally {
    repo.close();
  }
}
