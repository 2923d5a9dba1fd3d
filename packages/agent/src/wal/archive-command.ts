/**
 * What archive_command does, read the way /bin/sh would split it: does it run pgfleet's wal-push
 * for this cluster? PostgreSQL counts every archive_command that exits 0 as archived ('/bin/true'
 * included), so pg_stat_archiver looks healthy while no WAL reaches pgfleet's repository, and the
 * first sign would be a backup failing after its WAL wait. The command text is the only place to
 * see it early: `pgfleet check`, the agent's start-up check and the heartbeat's ArchiveSetup all
 * judge it here.
 *
 * wal-push's own arguments are parsed with the agent's option table (options.ts), so every form
 * wal-push accepts (`--cluster x`, `--cluster=x`, a `--config` file naming the cluster) is judged
 * exactly as wal-push would read it.
 */
import { basename, resolve } from 'node:path';
import { parseCommandLineWith, resolveSettings, type ConfigLoader } from '@pgfleet/core/command-line';
import { AGENT_PROGRAM } from '../options.js';

export type CheckVerdictName = 'ok' | 'warn' | 'fail';

/** The simple commands of a shell command line (argv each) and whether operators joined several. */
export interface ShellWords {
  commands: string[][];
  /** ;, &&, ||, | or & joined commands: PostgreSQL then sees the exit status of the last one. */
  compound: boolean;
}

const OPERATOR_CHARS = new Set([';', '&', '|', '\n', '(', ')']);

/**
 * Splits a command line into words as /bin/sh does for the simple cases archive_command uses:
 * single quotes keep everything, double quotes keep everything but \", \\, \$ and \`, a backslash
 * outside quotes escapes the next character; ; & | && || and newlines separate commands.
 * Expansions ($VAR, $(...)) are kept as text: nothing is run.
 */
export function splitShellWords(text: string): ShellWords {
  const commands: string[][] = [];
  let current: string[] = [];
  let word: string | undefined;
  let operators = 0;
  const endWord = () => {
    if (word !== undefined) current.push(word);
    word = undefined;
  };
  const endCommand = () => {
    endWord();
    if (current.length > 0) commands.push(current);
    current = [];
  };
  for (let i = 0; i < text.length; i++) {
    const c = text[i]!;
    if (c === "'") {
      const close = text.indexOf("'", i + 1);
      const end = close === -1 ? text.length : close;
      word = (word ?? '') + text.slice(i + 1, end);
      i = end;
    } else if (c === '"') {
      let s = '';
      let j = i + 1;
      for (; j < text.length && text[j] !== '"'; j++) {
        if (text[j] === '\\' && j + 1 < text.length && '"\\$`'.includes(text[j + 1]!)) j++;
        s += text[j];
      }
      word = (word ?? '') + s;
      i = j;
    } else if (c === '\\') {
      if (i + 1 < text.length && text[i + 1] !== '\n') word = (word ?? '') + text[i + 1];
      i++;
    } else if (c === ' ' || c === '\t') {
      endWord();
    } else if (OPERATOR_CHARS.has(c)) {
      operators++;
      endCommand();
    } else {
      word = (word ?? '') + c;
    }
  }
  endCommand();
  return { commands, compound: operators > 0 && commands.length > 1 };
}

/**
 * A program path that is pgfleet's agent: the installed `pgfleet-agent`, the agent package's
 * dist/bin.js, or dist/wal/push-main.cjs, the wal-push bundle bin.js and the launcher run.
 */
function isAgentProgram(path: string): boolean {
  return basename(path) === 'pgfleet-agent' || /(^|\/)agent\/dist\/(bin\.js|wal\/push-main\.cjs)$/.test(path);
}

const NODE_RE = /^node(js)?(\d+)?$/;

/**
 * wal-push's arguments (from 'wal-push' on) when `argv` runs pgfleet-agent wal-push: directly,
 * through node (`node [flags] .../agent/dist/bin.js wal-push ...`, or dist/wal/push-main.cjs), after `exec`, `env` or
 * VAR=value prefixes. Undefined for any other program or subcommand.
 */
export function walPushArgs(argv: readonly string[]): string[] | undefined {
  let i = 0;
  while (i < argv.length && (argv[i] === 'exec' || argv[i] === 'env' || /^[A-Za-z_][A-Za-z0-9_]*=/.test(argv[i]!))) i++;
  const program = argv[i];
  if (program === undefined) return undefined;
  let sub: number;
  if (isAgentProgram(program)) sub = i + 1;
  else if (NODE_RE.test(basename(program))) {
    let j = i + 1;
    while (argv[j]?.startsWith('-')) j++;
    if (argv[j] === undefined || !isAgentProgram(argv[j]!)) return undefined;
    sub = j + 1;
  } else return undefined;
  return argv[sub] === 'wal-push' ? argv.slice(sub) : undefined;
}

export interface ArchiveCommandJudgement {
  verdict: CheckVerdictName;
  /** archive_command runs wal-push for this cluster (maybe with a warning); false: WAL does not reach pgfleet. */
  viaPgfleet: boolean;
  /** What was found and, unless ok, what to do. */
  message: string;
}

export interface JudgeOptions {
  /** This agent's cluster. */
  cluster: string;
  /** archive_command runs in PGDATA: a relative --config is relative to it. */
  pgdata: string;
  /** Reads wal-push's --config file (options.ts's YAML loader; tests pass their own). */
  loadConfig: ConfigLoader;
}

const SET_IT =
  "set archive_command = 'pgfleet-agent wal-push %p --config FILE' (or --cluster <cluster> --repo ...) and reload PostgreSQL";

/** Judges archive_command for the agent of `o.cluster` (see the module header). */
export function judgeArchiveCommand(command: string, o: JudgeOptions): ArchiveCommandJudgement {
  const text = command.trim();
  if (text === '' || text === '(disabled)') {
    return {
      verdict: 'fail',
      viaPgfleet: false,
      message: `archive_command is empty: PostgreSQL archives no WAL at all; ${SET_IT}`,
    };
  }
  const { commands, compound } = splitShellWords(text);
  const pushes = commands.map(walPushArgs).filter((a): a is string[] => a !== undefined);
  const args = pushes[0];
  if (!args) {
    return {
      verdict: 'fail',
      viaPgfleet: false,
      message: `archive_command '${text}' does not run pgfleet-agent wal-push: PostgreSQL counts its exit status 0 as archived, but the WAL never reaches pgfleet's repository and backups cannot be restored (a wrapper script is not recognised: call wal-push directly); ${SET_IT}`,
    };
  }
  let parsed;
  let configError: string | undefined;
  const loadConfig: ConfigLoader = (path, specs) => {
    try {
      return o.loadConfig(resolve(o.pgdata, path), specs);
    } catch (err) {
      configError = (err as Error).message;
      return {};
    }
  };
  try {
    // Only flags and the config file: PostgreSQL's environment (PGFLEET_*) is not visible from here.
    parsed = parseCommandLineWith(AGENT_PROGRAM, args, {}, loadConfig);
  } catch (err) {
    return {
      verdict: 'fail',
      viaPgfleet: false,
      message: `archive_command runs wal-push with arguments it refuses (${(err as Error).message}): every segment fails to archive; ${SET_IT}`,
    };
  }
  const path = parsed.positionals[0] ?? '';
  if (!/%[pf]/.test(path)) {
    return {
      verdict: 'fail',
      viaPgfleet: false,
      message: `archive_command runs wal-push on '${path}' instead of %p (the segment PostgreSQL asks to archive); ${SET_IT}`,
    };
  }
  const named = resolveSettings(AGENT_PROGRAM, 'wal-push', parsed.options).cluster;
  const from =
    parsed.configFile && !args.some((a) => a === '--cluster' || a.startsWith('--cluster='))
      ? ` (from its config file ${parsed.configFile})`
      : '';
  if (named !== undefined && named !== o.cluster) {
    return {
      verdict: 'fail',
      viaPgfleet: false,
      message: `archive_command pushes WAL as cluster '${named}'${from}, but this agent is cluster '${o.cluster}': this cluster's WAL lands under another cluster's name (or is refused as foreign); name --cluster ${o.cluster} and reload PostgreSQL`,
    };
  }
  if (named === undefined && configError !== undefined) {
    return {
      verdict: 'warn',
      viaPgfleet: true,
      message: `archive_command runs wal-push with --config ${parsed.configFile}, which the agent cannot read (${configError}): which cluster it archives as is unknown; make the file readable by PostgreSQL's OS user`,
    };
  }
  if (named === undefined) {
    return {
      verdict: 'warn',
      viaPgfleet: true,
      message: `archive_command runs wal-push without naming a cluster (no --cluster, no cluster key in a --config file): it depends on PGFLEET_CLUSTER in PostgreSQL's environment, which the agent cannot see; add --cluster ${o.cluster} or --config FILE`,
    };
  }
  if (compound || pushes.length > 1) {
    return {
      verdict: 'warn',
      viaPgfleet: true,
      message: `archive_command runs more than wal-push ('${text}'): PostgreSQL sees the exit status of the whole line, so a failed push may count as archived; make wal-push the whole command`,
    };
  }
  return {
    verdict: 'ok',
    viaPgfleet: true,
    message: `archive_command runs pgfleet-agent wal-push for cluster ${o.cluster}${from}`,
  };
}
