/**
 * Shell completion for bash and zsh, generated from a program's option table so it cannot drift
 * from what the parser accepts: the same commands, the same flags per command (local options
 * included), the same choices, and `--<name>-file` for secrets, which are never flags themselves.
 * scripts/completion.mjs prints these for the three binaries; scripts/install.sh installs them.
 */
import { optionSpec, secretFileOption, type CommandSpec, type OptionSpec, type ProgramSpec } from './command-line.js';

export type CompletionShell = 'bash' | 'zsh';

interface Flag {
  readonly flag: string;
  readonly takesValue: boolean;
  readonly choices?: readonly string[];
  readonly description: string;
}

function flagsOf(program: ProgramSpec, command: CommandSpec): Flag[] {
  const flags = command.options.map((name) => toFlag(optionSpec(program, name, command)));
  return [...flags, { flag: '--help', takesValue: false, description: 'Show this help.' }];
}

function toFlag(spec: OptionSpec): Flag {
  if (spec.secret) return { flag: `--${secretFileOption(spec)}`, takesValue: true, description: spec.description };
  return {
    flag: `--${spec.name}`,
    takesValue: spec.type !== 'boolean',
    ...(spec.choices ? { choices: spec.choices } : {}),
    description: spec.description,
  };
}

/** A shell function name from the binary's name (pgfleet-agent -> _pgfleet_agent). */
function functionName(program: ProgramSpec): string {
  return `_${program.name.replace(/[^A-Za-z0-9]/g, '_')}`;
}

export function completionScript(program: ProgramSpec, shell: CompletionShell): string {
  return shell === 'bash' ? bashScript(program) : zshScript(program);
}

function bashScript(program: ProgramSpec): string {
  const fn = functionName(program);
  // Flags taking a value anywhere in the program: the word after one is not the command.
  const valueFlags = new Set<string>();
  for (const c of program.commands) for (const f of flagsOf(program, c)) if (f.takesValue) valueFlags.add(f.flag);
  const optionCases = program.commands
    .map((c) => {
      const flags = flagsOf(program, c);
      const values = flags.filter((f) => f.takesValue).map((f) => f.flag);
      return `    ${c.name}) opts='${flags.map((f) => f.flag).join(' ')}'; values=' ${values.join(' ')} ' ;;`;
    })
    .join('\n');
  const choiceCases = program.commands
    .flatMap((c) =>
      flagsOf(program, c)
        .filter((f) => f.choices)
        .map((f) => `    '${c.name}:${f.flag}') COMPREPLY=($(compgen -W '${f.choices!.join(' ')}' -- "$cur")) ;;`),
    )
    .join('\n');
  return `# bash completion for ${program.name}, generated from its option table (scripts/completion.mjs)
${fn}() {
  local cur prev cmd i opts values
  COMPREPLY=()
  cur="\${COMP_WORDS[COMP_CWORD]}"
  prev="\${COMP_WORDS[COMP_CWORD-1]}"
  # Before the command, a flag taking a value anywhere in the program: the next word is its value.
  values=' ${[...valueFlags].sort().join(' ')} '
  opts='--help --version'
  cmd=''
  for ((i = 1; i < COMP_CWORD; i++)); do
    case "\${COMP_WORDS[i]}" in
      --*=*) ;;
      -*) [[ "$values" == *" \${COMP_WORDS[i]} "* ]] && ((i++)) ;;
      *) cmd="\${COMP_WORDS[i]}"; break ;;
    esac
  done
  case "$cmd" in
${optionCases}
  esac
  if [[ "$prev" == -* && "$values" == *" $prev "* ]]; then
    case "$cmd:$prev" in
${choiceCases}
    esac
    return  # a free value: -o default offers file names
  fi
  if [[ -z "$cmd" && "$cur" != -* ]]; then
    COMPREPLY=($(compgen -W '${program.commands.map((c) => c.name).join(' ')} help version' -- "$cur"))
  elif [[ "$cur" == -* ]]; then
    COMPREPLY=($(compgen -W "$opts" -- "$cur"))
  fi
}
complete -o default -F ${fn} ${program.name}
`;
}

/** Text inside a single-quoted zsh _arguments spec: no quote, brackets or colons to misparse. */
function zshText(text: string): string {
  return text
    .replace(/\s+/g, ' ')
    .replace(/'/g, '')
    .replace(/\[/g, '(')
    .replace(/\]/g, ')')
    .replace(/:/g, ' -')
    .replace(/\\/g, '');
}

function zshScript(program: ProgramSpec): string {
  const fn = functionName(program);
  const commands = program.commands.map((c) => `    '${c.name}:${zshText(c.summary)}'`).join('\n');
  const cases = program.commands
    .map((c) => {
      const specs = flagsOf(program, c).map((f) => {
        const action = f.choices ? `(${f.choices.join(' ')})` : '_files';
        return f.takesValue
          ? `'${f.flag}=[${zshText(f.description)}]:value:${action}'`
          : `'${f.flag}[${zshText(f.description)}]'`;
      });
      return `      ${c.name}) _arguments ${[...specs, "'*: :_files'"].join(' \\\n        ')} ;;`;
    })
    .join('\n');
  return `#compdef ${program.name}
# zsh completion for ${program.name}, generated from its option table (scripts/completion.mjs)
${fn}() {
  local curcontext="$curcontext" state line
  local -a commands
  commands=(
${commands}
  )
  _arguments -C '(- *)--version[print the version]' '(- *)--help[show help]' '1: :->command' '*:: :->args'
  case $state in
    command) _describe -t commands '${program.name} command' commands ;;
    args)
      case $line[1] in
${cases}
      esac
      ;;
  esac
}
${fn} "$@"
`;
}
