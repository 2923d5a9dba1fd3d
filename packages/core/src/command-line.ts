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
import { readFileSync, statSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { PgfleetError } from './errors.js';
import { NAME_FORMATS, quoteInput, type NameFormat } from './names.js';

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
  /**
   * A credential: never printed, redacted in logs, and never taken from a flag (every user of the
   * host reads command lines in ps or /proc/<pid>/cmdline). It comes from the environment, the
   * config file, or a file named by `--<name>-file` / PGFLEET_<NAME>_FILE / `<name>-file:`.
   */
  readonly secret?: boolean;
  readonly min?: number;
  readonly max?: number;
  /** A string that must follow one of the name rules of names.ts (e.g. every --cluster). */
  readonly format?: NameFormat;
  /**
   * A list flag (string, cliOnly): it may be given several times, and its values are joined with
   * commas, so `--table a --table b` reads as `--table a,b` instead of keeping only the last.
   */
  readonly list?: boolean;
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

/** The option naming the file a secret option is read from ('pg-password' -> 'pg-password-file'). */
export function secretFileOption(option: OptionSpec): string {
  return `${option.name}-file`;
}

function secretFileEnvName(program: ProgramSpec, option: OptionSpec): string {
  return `${envName(program, option)}_FILE`;
}

/** Every way a secret option may be given, for messages and --help. */
function secretSources(program: ProgramSpec, option: OptionSpec): string {
  const file = `--${secretFileOption(option)}`;
  return option.cliOnly
    ? file
    : `${envName(program, option)}, ${file} (or ${secretFileEnvName(program, option)}), or '${option.name}:' in the config file`;
}

function secretOnCommandLine(program: ProgramSpec, option: OptionSpec): PgfleetError {
  return new PgfleetError(
    'SecretOnCommandLine',
    `--${option.name} is a secret and is not taken from the command line, where every user of this host can read it`,
    { hint: `Give it through ${secretSources(program, option)}.` },
  );
}

/**
 * Reads a secret from a file: its first line, trimmed. A file other users can read is refused:
 * the point of the file is that only its owner (and perhaps a group) sees the secret.
 */
export function readSecretFile(origin: string, path: string): string {
  let text: string;
  try {
    if ((statSync(path).mode & 0o004) !== 0) {
      throw new PgfleetError('SecretFileUnsafe', `${origin}: ${path} is readable by every user of this host`, {
        hint: `chmod o-r ${path} (mode 600, or 640 for a trusted group).`,
      });
    }
    text = readFileSync(path, 'utf8');
  } catch (err) {
    if (err instanceof PgfleetError) throw err;
    throw new PgfleetError('InvalidConfig', `${origin}: cannot read ${path}: ${(err as Error).message}`, {
      cause: err,
    });
  }
  const value = text.split(/\r?\n/)[0]!.trim();
  if (!value) throw new PgfleetError('InvalidConfig', `${origin}: ${path} is empty`);
  return value;
}

function optionSpec(program: ProgramSpec, name: string, command?: CommandSpec): OptionSpec {
  const spec = command?.localOptions?.find((o) => o.name === name) ?? program.options.find((o) => o.name === name);
  if (!spec) throw new PgfleetError('Internal', `option table of ${program.name} has no option ${name}`);
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
  if (spec.format) return `${NAME_FORMATS[spec.format].what}: ${NAME_FORMATS[spec.format].rule}`;
  return 'a string';
}

/** Whether a string value fits the option's named format (always, for options without one). */
export function fitsFormat(spec: OptionSpec, value: string): boolean {
  return spec.format === undefined || NAME_FORMATS[spec.format].test(value);
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
    if (spec.format && !fitsFormat(spec, value)) {
      const f = NAME_FORMATS[spec.format];
      throw new PgfleetError(f.error, `${origin}: ${quoteInput(value)} is not ${f.what} (${f.rule})`);
    }
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
  const parseOptions: Record<string, { type: 'string' | 'boolean'; short?: string; multiple?: boolean }> = {
    help: { type: 'boolean', short: 'h' },
  };
  for (const s of specs) {
    parseOptions[s.name] = {
      type: s.type === 'boolean' ? 'boolean' : 'string',
      ...(s.short ? { short: s.short } : {}),
      ...(s.list ? { multiple: true } : {}),
    };
    if (s.secret) parseOptions[secretFileOption(s)] = { type: 'string' };
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
    const given = parsed.values[s.name];
    const flag = Array.isArray(given) ? given.join(',') : given;
    if (s.secret && flag !== undefined) throw secretOnCommandLine(program, s);
    const envValue = s.cliOnly ? undefined : env[envName(program, s)];
    const secretFile = s.secret ? secretFileValue(program, s, parsed.values, env, fromConfig) : undefined;
    if (flag !== undefined) options[s.name] = coerce(s, flag as string | boolean, `--${s.name}`);
    else if (secretFile?.flag) options[s.name] = coerce(s, secretFile.flag(), `--${secretFileOption(s)}`);
    else if (envValue !== undefined && envValue !== '') options[s.name] = coerce(s, envValue, envName(program, s));
    else if (secretFile?.env) options[s.name] = coerce(s, secretFile.env(), secretFileEnvName(program, s));
    else if (fromConfig[s.name] !== undefined) options[s.name] = fromConfig[s.name];
    else if (secretFile?.config) options[s.name] = coerce(s, secretFile.config(), `'${secretFileOption(s)}'`);
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

/** Readers of a secret's file for each place that may name it (flag, environment, config file), read only when used. */
function secretFileValue(
  program: ProgramSpec,
  spec: OptionSpec,
  flags: Record<string, unknown>,
  env: NodeJS.ProcessEnv,
  fromConfig: OptionValues,
): { flag?: () => string; env?: () => string; config?: () => string } {
  const name = secretFileOption(spec);
  const flag = flags[name];
  const envPath = spec.cliOnly ? undefined : env[secretFileEnvName(program, spec)];
  const configPath = fromConfig[name];
  return {
    ...(typeof flag === 'string' ? { flag: () => readSecretFile(`--${name}`, flag) } : {}),
    ...(envPath ? { env: () => readSecretFile(secretFileEnvName(program, spec), envPath) } : {}),
    ...(typeof configPath === 'string' && configPath
      ? { config: () => readSecretFile(`config key '${name}'`, configPath) }
      : {}),
  };
}

/** The error for a required option that is not set (from any source), naming every way to set it. */
export function missingOption(program: ProgramSpec, name: string): PgfleetError {
  const spec = optionSpec(program, name);
  return new PgfleetError(
    'InvalidConfig',
    `missing required option '${name}': set --${name}${spec.cliOnly ? '' : `, ${envName(program, spec)} or '${name}:' in the config file`}`,
  );
}

/** Requires an option to be set (from any source), naming every way to set it. */
export function requireOption<T extends string | number | boolean>(
  program: ProgramSpec,
  values: OptionValues,
  name: string,
): T {
  const v = values[name];
  if (v === undefined || v === '') throw missingOption(program, name);
  return v as T;
}

/*
 * Typed settings. A table declared `as const satisfies ProgramSpec` keeps every option's name,
 * type, choices and default in its type, so the settings a command runs with are typed from the
 * table alone: `pg-port` (integer, default 5432) is `settings.pgPort: number`, `compress` (choices)
 * the union of its codecs, an option without a default `string | undefined`. Call sites read
 * fields; nothing is cast or converted twice.
 */

/** The settings key of an option: its kebab-case name in camelCase ('pg-port' -> 'pgPort'). */
export type SettingKey<N extends string> = N extends `${infer Head}-${infer Tail}`
  ? `${Head}${Capitalize<SettingKey<Tail>>}`
  : N;

/** The value type one option declares: boolean, number, one of its choices, or string. */
export type OptionValueType<S extends OptionSpec> = S['type'] extends 'boolean'
  ? boolean
  : S['type'] extends 'integer'
    ? number
    : S extends { readonly choices: readonly (infer C extends string)[] }
      ? C
      : string;

/** Options that always have a value: those with a default, and flags (false when not given). */
type AlwaysSet<S extends OptionSpec> = S extends { readonly default: string | number | boolean }
  ? true
  : S['type'] extends 'boolean'
    ? true
    : false;

/** The settings of a set of options (a union of specs), keyed by SettingKey. */
export type Settings<S extends OptionSpec> = {
  readonly [K in S as SettingKey<K['name']>]: AlwaysSet<K> extends true
    ? OptionValueType<K>
    : OptionValueType<K> | undefined;
};

export type CommandName<P extends ProgramSpec> = P['commands'][number]['name'];

type CommandNamed<P extends ProgramSpec, N extends string> = Extract<P['commands'][number], { readonly name: N }>;

/** The names of the options a command takes. */
export type CommandOptionName<P extends ProgramSpec, N extends string> = CommandNamed<P, N>['options'][number];

/** The spec a command reads for one option name: its local option of that name, else the program's. */
type CommandOptionSpec<P extends ProgramSpec, C extends CommandSpec, O extends string> = [
  Extract<NonNullable<C['localOptions']>[number], { readonly name: O }>,
] extends [never]
  ? Extract<P['options'][number], { readonly name: O }>
  : Extract<NonNullable<C['localOptions']>[number], { readonly name: O }>;

/** The settings of one command of a program, with `R` (option names) required to be set. */
export type CommandSettings<P extends ProgramSpec, N extends string, R extends string = never> = Settings<
  {
    [O in CommandOptionName<P, N>]: CommandOptionSpec<P, CommandNamed<P, N>, O>;
  }[CommandOptionName<P, N>]
> & { readonly [K in R as SettingKey<K>]: string | number | boolean };

/** The settings key of an option name at run time (the SettingKey type's twin). */
export function settingKey(name: string): string {
  return name.replace(/-([^-])/g, (_, c: string) => c.toUpperCase());
}

/**
 * Settings of the given options from parsed (or config-file) values: every option under its
 * SettingKey, its default when unset, a flag false when not given. Values are not converted:
 * the parser and the config schema already checked them against the same specs.
 */
export function settingsOf<S extends OptionSpec>(specs: readonly S[], values: OptionValues): Settings<S> {
  const settings: Record<string, string | number | boolean | undefined> = {};
  for (const s of specs)
    settings[settingKey(s.name)] = values[s.name] ?? s.default ?? (s.type === 'boolean' ? false : undefined);
  return settings as Settings<S>;
}

/** The specs named `names` from a table, in that order, with their literal types (settings of a group of options). */
export function pickOptions<S extends OptionSpec, N extends S['name']>(
  specs: readonly S[],
  names: readonly N[],
): Extract<S, { readonly name: N }>[] {
  return names.map((name) => {
    const spec = specs.find((s) => s.name === name);
    if (!spec) throw new PgfleetError('Internal', `option table has no option ${name}`);
    return spec as Extract<S, { readonly name: N }>;
  });
}

/**
 * The typed settings of `command` from its parsed option values. `required` names options the
 * command cannot run without: each is checked in order and, when unset or empty, fails with
 * InvalidConfig naming every way to set it (the settings type then has them set).
 */
export function resolveSettings<
  P extends ProgramSpec,
  N extends CommandName<P>,
  R extends CommandOptionName<P, N> = never,
>(program: P, command: N, values: OptionValues, required: readonly R[] = []): CommandSettings<P, N, R> {
  const spec = program.commands.find((c) => c.name === command);
  if (!spec) throw new PgfleetError('Internal', `option table of ${program.name} has no command ${command}`);
  for (const name of required) requireOption(program, values, name);
  return settingsOf(
    spec.options.map((n) => optionSpec(program, n, spec)),
    values,
  ) as unknown as CommandSettings<P, N, R>;
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
    const flag = s.secret
      ? `--${secretFileOption(s)} <path>`
      : `--${s.name}${s.type === 'boolean' ? '' : ' <' + (s.choices ? s.choices.join('|') : s.type === 'integer' ? 'n' : 'value') + '>'}`;
    const extra: string[] = [];
    if (s.default !== undefined && !s.secret) extra.push(`default ${String(s.default)}`);
    if (s.secret) extra.push(`secret, never a flag: ${secretSources(program, s)}`);
    else if (!s.cliOnly) extra.push(`env ${envName(program, s)}`);
    lines.push(`  ${(s.short ? `-${s.short}, ` : '') + flag}`);
    lines.push(`      ${s.description}${extra.length ? ` (${extra.join('; ')})` : ''}`);
  }
  lines.push(`  -h, --help`, '      Show this help.');
  return lines.join('\n');
}
