/**
 * One option table per binary. The same declaration drives command-line flags (node's
 * util.parseArgs), environment variables (PGFLEET_<NAME>), the YAML config file schema (zod, in
 * options.ts) and `--help`, so the four can never disagree. Precedence: flag > environment >
 * config file > default.
 *
 * This module imports neither the YAML parser nor zod (together ~60 ms of start-up):
 * archive_command runs once per WAL segment and parses its flags here before it knows whether it
 * needs the config file at all (`@pgfleet/core/command-line`).
 */
import { parseArgs } from 'node:util';
import { PgfleetError } from './errors.js';

export type OptionType = 'string' | 'integer' | 'boolean';

export interface OptionSpec {
  /** kebab-case: the flag is --name, the config key is name, the env var PGFLEET_NAME. */
  readonly name: string;
  readonly type: OptionType;
  readonly description: string;
  readonly default?: string | number | boolean;
  readonly choices?: readonly string[];
  readonly short?: string;
  /** Only on the command line (e.g. --config, --help, --output). */
  readonly cliOnly?: boolean;
  /** Never printed (help shows "(secret)") and redacted in logs. */
  readonly secret?: boolean;
  readonly min?: number;
  readonly max?: number;
}

export interface PositionalSpec {
  readonly name: string;
  readonly description: string;
  readonly required?: boolean;
}

export interface CommandSpec {
  readonly name: string;
  readonly summary: string;
  /** Names from the program's option table that this command accepts. */
  readonly options: readonly string[];
  readonly positionals?: readonly PositionalSpec[];
  /**
   * Options of this command only, which take precedence over the program's option of the same
   * name (e.g. a boolean `verify --full` next to the `policy set --full <cron>` string). List
   * their names in `options` too.
   */
  readonly localOptions?: readonly OptionSpec[];
}

export interface ProgramSpec {
  readonly name: string;
  readonly summary: string;
  readonly options: readonly OptionSpec[];
  readonly commands: readonly CommandSpec[];
  /** Prefix of environment variables, default PGFLEET_. */
  readonly envPrefix?: string;
}

export type OptionValues = Record<string, string | number | boolean | undefined>;

export interface ParsedCommand {
  readonly command: CommandSpec;
  readonly options: OptionValues;
  readonly positionals: string[];
  readonly help: boolean;
  /** The config file named by --config or the environment (undefined when none). */
  readonly configFile?: string;
}

/** Reads a config file into option values; options.ts provides the YAML + zod one. */
export type ConfigLoader = (path: string, specs: readonly OptionSpec[]) => OptionValues;

export function envName(program: ProgramSpec, option: OptionSpec): string {
  return (program.envPrefix ?? 'PGFLEET_') + option.name.toUpperCase().replace(/-/g, '_');
}

function optionSpec(program: ProgramSpec, name: string, command?: CommandSpec): OptionSpec {
  const spec = command?.localOptions?.find((o) => o.name === name) ?? program.options.find((o) => o.name === name);
  if (!spec) throw new Error(`option table of ${program.name} has no option ${name}`);
  return spec;
}

export function describeAllowed(spec: OptionSpec): string {
  if (spec.choices) return `one of ${spec.choices.join(', ')}`;
  if (spec.type === 'integer') {
    const range =
      spec.min !== undefined || spec.max !== undefined ? ` from ${spec.min ?? '-inf'} to ${spec.max ?? 'inf'}` : '';
    return `an integer${range}`;
  }
  if (spec.type === 'boolean') return 'true or false';
  return 'a string';
}

/** Converts a raw string (from a flag or the environment) to the option's type, or throws naming where it came from. */
function coerce(spec: OptionSpec, raw: string | boolean, origin: string): string | number | boolean {
  const bad = () =>
    new PgfleetError('InvalidConfig', `${origin}: '${String(raw)}' is not allowed; expected ${describeAllowed(spec)}`);
  let value: string | number | boolean;
  if (spec.type === 'boolean') {
    if (typeof raw === 'boolean') value = raw;
    else if (/^(true|1|yes|on)$/i.test(raw)) value = true;
    else if (/^(false|0|no|off)$/i.test(raw)) value = false;
    else throw bad();
  } else if (spec.type === 'integer') {
    if (typeof raw !== 'string' || !/^-?\d+$/.test(raw.trim())) throw bad();
    value = Number.parseInt(raw, 10);
    if ((spec.min !== undefined && value < spec.min) || (spec.max !== undefined && value > spec.max)) throw bad();
  } else {
    value = String(raw);
    if (spec.choices && !spec.choices.includes(value)) throw bad();
  }
  return value;
}

/**
 * Parses argv (without node and script) against the program's table. The first positional is
 * the command. --config FILE (when the command takes it) is read with `loadConfig`; with `null`
 * the file is not read (its values are left out) and only named in `configFile`, for callers
 * that want flags and environment first and the config file only if they turn out to need it.
 */
export function parseCommandLineWith(
  program: ProgramSpec,
  argv: readonly string[],
  env: NodeJS.ProcessEnv,
  loadConfig: ConfigLoader | null,
): ParsedCommand {
  const first = argv[0];
  if (first === undefined || first === '--help' || first === '-h' || first === 'help') {
    return { command: { name: '', summary: program.summary, options: [] }, options: {}, positionals: [], help: true };
  }
  const command = program.commands.find((c) => c.name === first);
  if (!command) {
    throw new PgfleetError(
      'UnknownCommand',
      `${program.name}: unknown command '${first}'; commands: ${program.commands.map((c) => c.name).join(', ')}`,
    );
  }
  const specs = command.options.map((n) => optionSpec(program, n, command));
  const parseOptions: Record<string, { type: 'string' | 'boolean'; short?: string }> = {
    help: { type: 'boolean', short: 'h' },
  };
  for (const s of specs) {
    parseOptions[s.name] = {
      type: s.type === 'boolean' ? 'boolean' : 'string',
      ...(s.short ? { short: s.short } : {}),
    };
  }
  let parsed: ReturnType<typeof parseArgs>;
  try {
    parsed = parseArgs({
      args: argv.slice(1) as string[],
      options: parseOptions,
      allowPositionals: true,
      strict: true,
    });
  } catch (err) {
    throw new PgfleetError('InvalidArgument', `${program.name} ${command.name}: ${(err as Error).message}`, {
      cause: err,
    });
  }
  if (parsed.values.help) return { command, options: {}, positionals: parsed.positionals, help: true };

  const fromConfig: OptionValues = {};
  const configPath =
    (parsed.values.config as string | undefined) ??
    (command.options.includes('config') ? env[envName(program, optionSpec(program, 'config', command))] : undefined);
  // The file is checked against the whole table, not just this command's options: one file
  // serves `run`, archive_command and restore_command; each command takes the keys it knows.
  if (configPath && loadConfig) Object.assign(fromConfig, loadConfig(configPath, program.options));

  const options: OptionValues = {};
  for (const s of specs) {
    const flag = parsed.values[s.name];
    const envValue = s.cliOnly ? undefined : env[envName(program, s)];
    if (flag !== undefined) options[s.name] = coerce(s, flag as string | boolean, `--${s.name}`);
    else if (envValue !== undefined && envValue !== '') options[s.name] = coerce(s, envValue, envName(program, s));
    else if (fromConfig[s.name] !== undefined) options[s.name] = fromConfig[s.name];
    else if (s.default !== undefined) options[s.name] = s.default;
  }

  const positionals = parsed.positionals;
  const wanted = command.positionals ?? [];
  const missing = wanted.filter((p, i) => p.required && positionals[i] === undefined);
  if (missing.length) {
    throw new PgfleetError(
      'InvalidArgument',
      `${program.name} ${command.name}: missing ${missing.map((p) => `<${p.name}>`).join(' ')}`,
    );
  }
  if (positionals.length > wanted.length) {
    throw new PgfleetError(
      'InvalidArgument',
      `${program.name} ${command.name}: unexpected argument '${positionals[wanted.length]}'`,
    );
  }
  return { command, options, positionals, help: false, ...(configPath ? { configFile: configPath } : {}) };
}

/** Requires an option to be set (from any source), naming every way to set it. */
export function requireOption<T extends string | number | boolean>(
  program: ProgramSpec,
  values: OptionValues,
  name: string,
): T {
  const v = values[name];
  if (v === undefined || v === '') {
    const spec = optionSpec(program, name);
    throw new PgfleetError(
      'InvalidConfig',
      `missing required option '${name}': set --${name}${spec.cliOnly ? '' : `, ${envName(program, spec)} or '${name}:' in the config file`}`,
    );
  }
  return v as T;
}

/** `--help` text generated from the table. */
export function helpText(program: ProgramSpec, command?: CommandSpec): string {
  const lines: string[] = [];
  if (!command || command.name === '') {
    lines.push(
      `${program.name}: ${program.summary}`,
      '',
      `Usage: ${program.name} <command> [options]`,
      '',
      'Commands:',
    );
    const w = Math.max(...program.commands.map((c) => c.name.length));
    for (const c of program.commands) lines.push(`  ${c.name.padEnd(w)}  ${c.summary}`);
    lines.push('', `Run '${program.name} <command> --help' for a command's options.`);
    return lines.join('\n');
  }
  const pos = (command.positionals ?? []).map((p) => (p.required ? `<${p.name}>` : `[${p.name}]`)).join(' ');
  lines.push(
    `${program.name} ${command.name}: ${command.summary}`,
    '',
    `Usage: ${program.name} ${command.name}${pos ? ` ${pos}` : ''} [options]`,
  );
  if (command.positionals?.length) {
    lines.push('', 'Arguments:');
    for (const p of command.positionals) lines.push(`  ${p.name.padEnd(22)}  ${p.description}`);
  }
  lines.push('', 'Options:');
  for (const name of command.options) {
    const s = optionSpec(program, name, command);
    const flag = `--${s.name}${s.type === 'boolean' ? '' : ' <' + (s.choices ? s.choices.join('|') : s.type === 'integer' ? 'n' : 'value') + '>'}`;
    const extra: string[] = [];
    if (s.default !== undefined && !s.secret) extra.push(`default ${String(s.default)}`);
    if (!s.cliOnly) extra.push(`env ${envName(program, s)}`);
    lines.push(`  ${(s.short ? `-${s.short}, ` : '') + flag}`);
    lines.push(`      ${s.description}${extra.length ? ` (${extra.join('; ')})` : ''}`);
  }
  lines.push(`  -h, --help`, '      Show this help.');
  return lines.join('\n');
}
