/**
 * `pgfleet apply -f fleet.yaml [--prune] [--dry-run]`: makes the fleet file's policies the
 * stored ones (ApplyFleet). The file is validated here first (fleet-file.ts), so a typo fails
 * before any connection; the controller then validates everything again and writes nothing
 * unless the whole file is valid. Prints each change as scope, key, old and new value.
 */
import { PgfleetError, type OptionValues } from '@pgfleet/core';
import { ApplyFleetResponseSchema, type ApplyFleetResponse } from '@pgfleet/proto';
import { loadFleetFile, type FleetFile } from './fleet-file.js';
import { formatTable } from './format.js';
import { out, printJson, type Admin } from './output.js';
import { KEY_FLAGS } from './policy-commands.js';
import { cliSettings } from './program.js';

/** Reads and validates the file named by -f (before the CLI connects). */
export function fleetFileFromOptions(options: OptionValues): FleetFile {
  const path = cliSettings('apply', options).file ?? '';
  if (!path)
    throw new PgfleetError(
      'InvalidArgument',
      'pgfleet apply needs -f FILE: the fleet file to apply (see deploy/config/fleet.yaml)',
    );
  return loadFleetFile(path);
}

export async function applyCommand(
  admin: Admin,
  file: FleetFile,
  options: OptionValues,
  json: boolean,
): Promise<number> {
  const { prune, dryRun } = cliSettings('apply', options);
  const response = await admin.applyFleet({ fleet: file.fleet, clusters: file.clusters, prune, dryRun });
  if (json) printJson(ApplyFleetResponseSchema, response);
  else out(describeApply(response));
  return 0;
}

export function describeApply(r: ApplyFleetResponse): string {
  const lines: string[] = [];
  if (r.changes.length === 0) lines.push("no changes: the stored policies already are the file's");
  else {
    lines.push(
      formatTable(
        ['SCOPE', 'KEY', 'OLD', 'NEW'],
        r.changes.map((c) => [c.scope, KEY_FLAGS[c.key] ?? c.key, c.oldValue || '-', c.newValue || '-']),
      ),
    );
    const scopes = new Set(r.changes.map((c) => c.scope)).size;
    lines.push(
      `${r.dryRun ? 'dry run: would change' : 'changed'} ${r.changes.length} value(s) in ${scopes} scope(s) ('-' = not set, inherited; off = not scheduled)`,
    );
  }
  if (r.unknownClusters.length) {
    lines.push(`not connected yet: ${r.unknownClusters.join(', ')} (their policies apply once their agents connect)`);
  }
  return lines.join('\n');
}
