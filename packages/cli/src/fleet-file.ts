/**
 * The declarative fleet file of `pgfleet apply -f fleet.yaml` (example: deploy/config/fleet.yaml):
 *
 *   fleet:                       # the fleet default: every cluster inherits what it does not set
 *     full: "0 1 * * 0"
 *     incr: "0 1 * * 1-6"
 *     pitr-window-days: 7
 *     daily: 7
 *   clusters:                    # per-cluster overrides (any subset of the same keys)
 *     orders:
 *       pitr-window-days: 14
 *     reporting:
 *       incr: ""                 # '' = not scheduled, overriding the fleet's incr
 *
 * The keys are the `pgfleet policy set` flags and are validated by the same option table entries
 * (type, range), so the file, the flags and `--help` can never disagree; errors name the key as a
 * path (clusters.orders.daily) and say what is allowed. The controller checks cron syntax again
 * and names the key the same way.
 */
import type { MessageInitShape } from '@bufbuild/protobuf';
import {
  CLUSTER_NAME_RULE,
  PgfleetError,
  isClusterName,
  pickOptions,
  quoteInput,
  readYamlFile,
  validateOptionValues,
  type OptionSpec,
} from '@pgfleet/core';
import type { PolicySettingsSchema } from '@pgfleet/proto';
import { policySettingsFromOptions } from './policy-commands.js';
import { cliProgram, POLICY_FLAGS } from './program.js';

export type PolicySettingsInit = MessageInitShape<typeof PolicySettingsSchema>;

export interface FleetFile {
  /** Absent: the fleet default is left as it is. */
  fleet?: PolicySettingsInit;
  clusters: Record<string, PolicySettingsInit>;
}

const TOP_LEVEL_KEYS = ['fleet', 'clusters'] as const;

/** The `policy set` flags as config keys: the same specs, accepted in a file. */
const POLICY_SPECS: readonly OptionSpec[] = pickOptions(cliProgram.options, POLICY_FLAGS).map((spec) => ({
  ...spec,
  cliOnly: false,
}));

const isMapping = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v);

/** Validates a parsed fleet document; `where` names it in errors (e.g. 'fleet file fleet.yaml'). */
export function parseFleetDocument(doc: unknown, where: string): FleetFile {
  if (doc === null || doc === undefined)
    throw new PgfleetError('InvalidConfig', `${where} is empty; it needs a 'fleet' and/or a 'clusters' section`);
  if (!isMapping(doc))
    throw new PgfleetError('InvalidConfig', `${where}: expected a mapping with the keys ${TOP_LEVEL_KEYS.join(', ')}`);
  const unknown = Object.keys(doc).filter((k) => !(TOP_LEVEL_KEYS as readonly string[]).includes(k));
  if (unknown.length)
    throw new PgfleetError(
      'InvalidConfig',
      `${where}: unknown key '${unknown[0]}'; the top level holds ${TOP_LEVEL_KEYS.join(' and ')}`,
    );
  const section = (value: unknown, path: string): PolicySettingsInit => {
    if (value !== null && value !== undefined && !isMapping(value)) {
      throw new PgfleetError(
        'InvalidConfig',
        `${where}: key '${path}': expected a mapping of policy keys (${POLICY_FLAGS.join(', ')})`,
      );
    }
    try {
      return policySettingsFromOptions(validateOptionValues(value ?? {}, POLICY_SPECS, where, `${path}.`));
    } catch (err) {
      // The cron shape check of policy set names the flag; in a file, name the key path instead.
      if (PgfleetError.is(err, 'InvalidArgument')) {
        throw new PgfleetError(
          'InvalidConfig',
          `${where}: ${err.message.replace(/^--([a-z-]+) /, (_, key: string) => `key '${path}.${key}': `)}`,
          { cause: err },
        );
      }
      throw err;
    }
  };
  const clusters: Record<string, PolicySettingsInit> = {};
  if (doc.clusters !== null && doc.clusters !== undefined) {
    if (!isMapping(doc.clusters))
      throw new PgfleetError(
        'InvalidConfig',
        `${where}: key 'clusters': expected a mapping of cluster name -> policy keys`,
      );
    for (const [name, value] of Object.entries(doc.clusters)) {
      // The rule agents register under (core's names.ts), so a policy can never name a cluster no agent can be.
      if (!isClusterName(name))
        throw new PgfleetError(
          'InvalidClusterName',
          `${where}: a key under 'clusters': ${quoteInput(name)} is not a cluster name (${CLUSTER_NAME_RULE})`,
        );
      clusters[name] = section(value, `clusters.${name}`);
    }
  }
  return { ...(doc.fleet !== undefined ? { fleet: section(doc.fleet, 'fleet') } : {}), clusters };
}

export function loadFleetFile(path: string): FleetFile {
  return parseFleetDocument(readYamlFile(path, 'fleet file'), `fleet file ${path}`);
}
