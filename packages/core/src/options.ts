/**
 * Config files for the option tables of command-line.ts: YAML, validated with a zod schema built
 * from the same table, so an unknown key or a bad value is an error naming the key.
 */
import { readFileSync } from 'node:fs';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { describeAllowed, parseCommandLineWith, type OptionSpec, type OptionValues, type ParsedCommand, type ProgramSpec } from './command-line.js';
import { PgfleetError } from './errors.js';

export * from './command-line.js';

/** The zod schema of a config file holding the given options (unknown keys are errors). */
export function configSchema(specs: readonly OptionSpec[]) {
  const shape: Record<string, z.ZodType> = {};
  for (const s of specs) {
    if (s.cliOnly) continue;
    let t: z.ZodType;
    if (s.type === 'boolean') t = z.boolean();
    else if (s.type === 'integer') {
      let n = z.number().int();
      if (s.min !== undefined) n = n.min(s.min);
      if (s.max !== undefined) n = n.max(s.max);
      t = n;
    } else if (s.choices) t = z.enum(s.choices as [string, ...string[]]);
    else t = z.string();
    shape[s.name] = t.optional();
  }
  return z.strictObject(shape);
}

/** Reads and validates a YAML config file; errors name the file, the key and what is allowed. */
export function loadConfigFile(path: string, specs: readonly OptionSpec[]): OptionValues {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new PgfleetError('InvalidConfig', `config file ${path} cannot be read: ${(err as Error).message}`, { cause: err });
  }
  let doc: unknown;
  try {
    doc = parseYaml(text) ?? {};
  } catch (err) {
    throw new PgfleetError('InvalidConfig', `config file ${path} is not valid YAML: ${(err as Error).message}`, { cause: err });
  }
  const result = configSchema(specs).safeParse(doc);
  if (!result.success) {
    const issue = result.error.issues[0]!;
    const key = issue.path.length ? issue.path.join('.') : (issue as { keys?: string[] }).keys?.join(', ') ?? '(top level)';
    const spec = specs.find((s) => s.name === key);
    const allowed = spec ? `; expected ${describeAllowed(spec)}` : issue.code === 'unrecognized_keys' ? `; known keys: ${specs.filter((s) => !s.cliOnly).map((s) => s.name).join(', ')}` : '';
    throw new PgfleetError('InvalidConfig', `config file ${path}: key '${key}': ${issue.message}${allowed}`);
  }
  return result.data as OptionValues;
}

/** Parses argv against the program's table, reading --config FILE when given. */
export function parseCommandLine(program: ProgramSpec, argv: readonly string[], env: NodeJS.ProcessEnv = process.env): ParsedCommand {
  return parseCommandLineWith(program, argv, env, loadConfigFile);
}
