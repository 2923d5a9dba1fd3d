/**
 * Config files for the option tables of command-line.ts: YAML, validated with a zod schema built
 * from the same table, so an unknown key or a bad value is an error naming the key.
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import type { parse as ParseYaml } from 'yaml';
import type { z as Zod } from 'zod';
import {
  describeAllowed,
  fitsFormat,
  parseCommandLineWith,
  secretFileOption,
  type OptionSpec,
  type OptionValues,
  type ParsedCommand,
  type ProgramSpec,
} from './command-line.js';
import { PgfleetError } from './errors.js';

export * from './command-line.js';

// yaml (72 modules) and zod (95) are loaded when a config file is read, not when core is imported:
// most command lines name no --config, and every binary imports core at start (the end-to-end
// tests start them hundreds of times). require() keeps these functions synchronous.
const requireHere = createRequire(import.meta.url);
const zod = (): typeof Zod => (requireHere('zod') as { z: typeof Zod }).z;
const parseYaml = (text: string): unknown => (requireHere('yaml') as { parse: typeof ParseYaml }).parse(text);

/** The zod schema of a config file holding the given options (unknown keys are errors). */
export function configSchema(specs: readonly OptionSpec[]) {
  const z = zod();
  const shape: Record<string, Zod.ZodType> = {};
  for (const s of specs) {
    if (s.cliOnly) continue;
    let t: Zod.ZodType;
    if (s.type === 'boolean') t = z.boolean();
    else if (s.type === 'integer') {
      let n = z.number().int();
      if (s.min !== undefined) n = n.min(s.min);
      if (s.max !== undefined) n = n.max(s.max);
      t = n;
    } else if (s.choices) t = z.enum(s.choices as [string, ...string[]]);
    else t = z.string().refine((v) => fitsFormat(s, v), { message: `not ${describeAllowed(s)}` });
    shape[s.name] = t.optional();
    if (s.secret) shape[secretFileOption(s)] = z.string().optional();
  }
  return z.strictObject(shape);
}

/** Reads and parses a YAML file; InvalidConfig naming the file (as `what`) when it cannot be read or parsed. */
export function readYamlFile(path: string, what = 'config file'): unknown {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new PgfleetError('InvalidConfig', `${what} ${path} cannot be read: ${(err as Error).message}`, {
      cause: err,
    });
  }
  try {
    return parseYaml(text);
  } catch (err) {
    throw new PgfleetError('InvalidConfig', `${what} ${path} is not valid YAML: ${(err as Error).message}`, {
      cause: err,
    });
  }
}

/**
 * Validates a mapping of option values (a config file, or one section of a larger file) against
 * the specs: an unknown key or a bad value is InvalidConfig naming `where`, the key (after
 * `keyPrefix`, e.g. 'clusters.db1.') and what is allowed.
 */
export function validateOptionValues(
  doc: unknown,
  specs: readonly OptionSpec[],
  where: string,
  keyPrefix = '',
): OptionValues {
  const result = configSchema(specs).safeParse(doc ?? {});
  if (!result.success) {
    const issue = result.error.issues[0]!;
    const key = issue.path.length ? issue.path.join('.') : ((issue as { keys?: string[] }).keys?.join(', ') ?? '');
    const spec = specs.find((s) => s.name === key);
    const allowed = spec
      ? `; expected ${describeAllowed(spec)}`
      : issue.code === 'unrecognized_keys'
        ? `; known keys: ${specs
            .filter((s) => !s.cliOnly)
            .map((s) => s.name)
            .join(', ')}`
        : '';
    const shown = key ? `${keyPrefix}${key}` : keyPrefix ? keyPrefix.replace(/\.$/, '') : '(top level)';
    throw new PgfleetError('InvalidConfig', `${where}: key '${shown}': ${issue.message}${allowed}`);
  }
  return result.data as OptionValues;
}

/** Reads and validates a YAML config file; errors name the file, the key and what is allowed. */
export function loadConfigFile(path: string, specs: readonly OptionSpec[]): OptionValues {
  return validateOptionValues(readYamlFile(path), specs, `config file ${path}`);
}

/** Parses argv against the program's table, reading --config FILE when given. */
export function parseCommandLine(
  program: ProgramSpec,
  argv: readonly string[],
  env: NodeJS.ProcessEnv = process.env,
): ParsedCommand {
  return parseCommandLineWith(program, argv, env, loadConfigFile);
}
