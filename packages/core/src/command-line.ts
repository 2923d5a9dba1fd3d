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
import { ErrorCodes, PgfleetError } from './errors.js';
import { NAME_FORMATS, quoteInput, type NameFormat } from './names.js';
import { closestMatch } from './suggest.js';

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
  /** `--version` (or `version`) was asked for instead of a command. */
  readonly version?: boolean;
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

export function optionSpec(program: ProgramSpec, name: string, command?: CommandSpec): OptionSpec {
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

/** Where a value came from, so an error can say what to change: a flag, an environment variable or a file. */
interface ValueOrigin {
  /** As shown in the message: `--daily`, `environment variable PGFLEET_TIMEOUT`, `--token-file`. */
  readonly label: string;
  /** What to do about a bad value from there. */
  readonly hint: string;
}

function flagOrigin(program: ProgramSpec, command: CommandSpec, flag: string): ValueOrigin {
  return {
    label: `--${flag}`,
    hint: `Correct --${flag} on the command line; \`${program.name} ${command.name} --help\` lists every option and its allowed values.`,
  };
}

function envOrigin(name: string): ValueOrigin {
  return {
    label: `environment variable ${name}`,
    hint: `Correct or unset ${name} in the environment (it applies to every command that reads it); a flag given on the command line overrides it.`,
  };
}

/** Converts a raw string (from a flag or the environment) to the option's type, or throws naming where it came from. */
function coerce(spec: OptionSpec, raw: string | boolean, origin: ValueOrigin): string | number | boolean {
  const bad = () =>
    new PgfleetError(
      'InvalidConfig',
      `${origin.label}: '${String(raw)}' is not allowed; expected ${describeAllowed(spec)}`,
      { hint: origin.hint },
    );
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
      throw new PgfleetError(f.error, `${origin.label}: ${quoteInput(value)} is not ${f.what} (${f.rule})`);
    }
  }
  return value;
}

/** Every option spec a program knows: its table and each command's local options. */
function allOptionSpecs(program: ProgramSpec): OptionSpec[] {
  return [...program.options, ...program.commands.flatMap((c) => c.localOptions ?? [])];
}

/**
 * Moves the command to the front so options may come before it (`pgfleet --controller X backup
 * shop`): the command is the first word that is neither a flag nor the value of a flag that
 * takes one. Flags are looked up in the whole program, since the command is not known yet.
 */
function commandFirst(program: ProgramSpec, argv: readonly string[]): string[] {
  const specs = allOptionSpecs(program);
  for (let i = 0; i < argv.length; i++) {
    const token = argv[i]!;
    if (token === '--') break;
    if (!token.startsWith('-') || token === '-') {
      return i === 0 ? [...argv] : [token, ...argv.slice(0, i), ...argv.slice(i + 1)];
    }
    if (token.includes('=')) continue;
    const name = token.replace(/^--?/, '');
    const spec = specs.find((s) => (token.startsWith('--') ? s.name === name : s.short === name));
    const secretFile = token.startsWith('--') && specs.some((s) => s.secret && secretFileOption(s) === name);
    if (!spec && !secretFile && !['--help', '-h', '--version'].includes(token)) {
      // Unknown before the command: whether it takes a value cannot be known, so guessing the
      // command would mislead (`--controler x jobs` is not the command 'x').
      const guess = closestMatch(name, [...new Set(specs.map((s) => s.name))]);
      throw new PgfleetError(
        'InvalidArgument',
        `${program.name}: unknown option ${token}${guess ? `; did you mean --${guess}?` : ''}`,
        { hint: `\`${program.name} --help\` lists the commands, \`${program.name} <command> --help\` their options.` },
      );
    }
    if (spec ? spec.type !== 'boolean' : secretFile) i++;
  }
  return [...argv];
}

/**
 * `--daily -1`: node's parser reads `-1` as a flag and calls the value ambiguous. A negative
 * number after a flag that takes a value is that flag's value (the range check then says what
 * is allowed), so it is joined as `--daily=-1`.
 */
function joinNegativeNumbers(args: readonly string[], takesValue: (flag: string) => boolean): string[] {
  const out: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const token = args[i]!;
    const next = args[i + 1];
    if (
      token.startsWith('--') &&
      !token.includes('=') &&
      next !== undefined &&
      /^-\d/.test(next) &&
      takesValue(token.slice(2))
    ) {
      out.push(`${token}=${next}`);
      i++;
    } else out.push(token);
  }
  return out;
}

/** Node's parser errors, said the pgfleet way: what is wrong with which flag, and the closest real flag for a typo. */
function parseError(
  program: ProgramSpec,
  command: CommandSpec,
  specs: readonly OptionSpec[],
  err: Error,
): PgfleetError {
  const where = `${program.name} ${command.name}`;
  const code = (err as { code?: string }).code;
  const flag = /'(--?[^' <]+)/.exec(err.message)?.[1];
  if (code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION' && flag) {
    const known = [...specs.flatMap((s) => (s.secret ? [s.name, secretFileOption(s)] : [s.name])), 'help'];
    const bare = flag.replace(/^--?/, '');
    const elsewhere = program.commands.filter(
      (c) => c !== command && c.options.includes(bare) && !(c.localOptions ?? []).some((o) => o.name === bare),
    );
    const guess = closestMatch(bare, known);
    const message = elsewhere.length
      ? `${where}: ${flag} is not an option of ${command.name} (it is one of: ${elsewhere.map((c) => c.name).join(', ')})`
      : `${where}: unknown option ${flag}${guess ? `; did you mean --${guess}?` : ''}`;
    return new PgfleetError('InvalidArgument', message, {
      cause: err,
      hint: `\`${where} --help\` lists its options.`,
    });
  }
  if (code === 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE' && flag) {
    const spec = specs.find((s) => `--${s.name}` === flag || `-${s.short}` === flag);
    const message = /does not take an argument/.test(err.message)
      ? `${where}: ${flag} is a switch and takes no value`
      : /ambiguous/.test(err.message)
        ? `${where}: ${flag} is followed by another flag instead of its value; to give a value starting with '-', write ${flag}=VALUE`
        : `${where}: ${flag} needs a value${spec ? ` (${describeAllowed(spec)})` : ''}`;
    return new PgfleetError('InvalidArgument', message, { cause: err });
  }
  return new PgfleetError('InvalidArgument', `${where}: ${err.message}`, { cause: err });
}

/**
 * Parses argv (without node and script) against the program's table. The first positional is
 * the command. --config FILE (when the command takes it) is read with `loadConfig`; with `null`
 * the file is not read (its values are left out) and only named in `configFile`, for callers
 * that want flags and environment first and the config file only if they turn out to need it.
 */
export function parseCommandLineWith(
  program: ProgramSpec,
  rawArgv: readonly string[],
  env: NodeJS.ProcessEnv,
  loadConfig: ConfigLoader | null,
): ParsedCommand {
  const argv = commandFirst(program, rawArgv);
  const first = argv[0];
  const noCommand = first === undefined || first.startsWith('-');
  if (first === 'version' || (noCommand && argv.includes('--version'))) {
    return {
      command: { name: '', summary: program.summary, options: [] },
      options: {},
      positionals: [],
      help: false,
      version: true,
    };
  }
  if (first === 'help' || (noCommand && (first === undefined || argv.includes('--help') || argv.includes('-h')))) {
    return { command: { name: '', summary: program.summary, options: [] }, options: {}, positionals: [], help: true };
  }
  const command = program.commands.find((c) => c.name === first);
  if (!command) {
    const names = program.commands.map((c) => c.name);
    const guess = first.startsWith('-') ? undefined : closestMatch(first, names);
    throw new PgfleetError(
      'UnknownCommand',
      first.startsWith('-')
        ? `${program.name}: no command given (only options); commands: ${names.join(', ')}`
        : `${program.name}: unknown command '${first}'${guess ? `; did you mean '${guess}'?` : ''} (commands: ${names.join(', ')})`,
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
      args: joinNegativeNumbers(argv.slice(1), (flag) => {
        const spec = specs.find((s) => s.name === flag);
        return spec !== undefined && spec.type !== 'boolean';
      }),
      options: parseOptions,
      allowPositionals: true,
      strict: true,
    });
  } catch (err) {
    throw parseError(program, command, specs, err as Error);
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
    if (flag !== undefined) options[s.name] = coerce(s, flag as string | boolean, flagOrigin(program, command, s.name));
    else if (secretFile?.flag)
      options[s.name] = coerce(s, secretFile.flag(), flagOrigin(program, command, secretFileOption(s)));
    else if (envValue !== undefined && envValue !== '')
      options[s.name] = coerce(s, envValue, envOrigin(envName(program, s)));
    else if (secretFile?.env) options[s.name] = coerce(s, secretFile.env(), envOrigin(secretFileEnvName(program, s)));
    else if (fromConfig[s.name] !== undefined) options[s.name] = fromConfig[s.name];
    else if (secretFile?.config)
      options[s.name] = coerce(s, secretFile.config(), {
        label: `the file of config key '${secretFileOption(s)}'`,
        hint: ErrorCodes.InvalidConfig.hint,
      });
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
    lines.push(
      '',
      `Run '${program.name} <command> --help' for a command's options, '${program.name} --version' for the version.`,
    );
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

/**
 * What `--version` prints: the binary, its package version (read from the package.json beside
 * its dist/, so it cannot drift from what was installed) and the Node it runs on, which matters
 * because pgfleet needs Node 24.
 */
export function versionText(program: ProgramSpec, packageJson: URL): string {
  const { version } = JSON.parse(readFileSync(packageJson, 'utf8')) as { version?: string };
  return `${program.name} ${version ?? 'unknown'} (node ${process.version})`;
}
