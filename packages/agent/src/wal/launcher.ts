/**
 * The installed `pgfleet-agent` launcher, a /bin/sh script (scripts/install.sh writes it from
 * here). archive_command starts it once per WAL segment; when the agent daemon already pushed that
 * segment ahead and stored it, the daemon left a hard link to the very file in its marker
 * directory (archive-server.ts, "Markers"), and the script answers 0 from that link without
 * starting Node: a dash start and a few builtins (~1 ms) instead of a Node process (~25-60 ms of
 * CPU), which is what lets wal-push beat pgBackRest's C archive-push per segment. When the daemon
 * is storing the segment at that moment (it starts on the .ready file, as archive_command does),
 * the script waits for the outcome (`<name>.pending`). Anything else
 * (no marker, another file under that name, other options, --help) runs the Node client as before,
 * which parses the command line with the one option table: the script recognises only the forms
 * the client would send unchanged to the default socket (`wal-push %p`, `wal-push %p --config F`),
 * and steps aside when the environment sets any other wal-push option (cluster, socket,
 * repositories: they could name another destination than the daemon's).
 */
import { envName, optionSpec } from '@pgfleet/core/command-line';
import { AGENT_PROGRAM } from '../options.js';

/** Options that leave a wal-push request to the default socket unchanged (the daemon decides). */
const NEUTRAL_OPTIONS = new Set(['config', 'log-level', 'log-format']);

/** Environment variables that change where wal-push would archive (the launcher then runs Node). */
export function walPushRoutingEnv(): string[] {
  const command = AGENT_PROGRAM.commands.find((c) => c.name === 'wal-push')!;
  const names: string[] = [];
  for (const name of command.options) {
    if (NEUTRAL_OPTIONS.has(name)) continue;
    const spec = optionSpec(AGENT_PROGRAM, name, command);
    names.push(envName(AGENT_PROGRAM, spec));
    if (spec.secret) names.push(`${envName(AGENT_PROGRAM, spec)}_FILE`);
  }
  return names;
}

export interface LauncherPaths {
  /** the node binary */
  node: string;
  /** the agent's dist/bin.js */
  bin: string;
  /** the agent's dist/wal/push-main.cjs, run for wal-push without bin.js's ES module start */
  walPush: string;
}

const quote = (s: string): string => `'${s.replace(/'/g, `'\\''`)}'`;

export function agentLauncherScript(p: LauncherPaths, header = ''): string {
  // A comment line: a newline in it (an odd install prefix) must not become a command.
  header = header.replace(/[\r\n]+/g, ' ');
  if (header !== '' && !header.startsWith('#')) header = `# ${header}`;
  if (header !== '') header += '\n';
  const routing = walPushRoutingEnv()
    .map((n) => `\${${n}-}`)
    .join('');
  return `#!/bin/sh
${header}if [ "$1" = wal-push ]; then
  # archive_command's fast path: a segment the agent daemon already stored is linked in its marker
  # directory beside PGDATA (archive_command runs in PGDATA); the link must be this very file.
  if [ -z "${routing}" ]; then
    case "$#:$3" in
      2:|3:--config=?*) p=$2 ;;
      4:--config) case "$4" in '' | -*) p= ;; *) p=$2 ;; esac ;;
      *) p= ;;
    esac
    case "$p" in
      pg_wal/*/*) ;;
      pg_wal/?*)
        # Markers count only while the daemon that made them (pid in .pid) lives and listens on
        # this PGDATA's default socket (.sock is a link to it), in a directory of this user.
        if cd -P . 2>/dev/null && dir="$PWD.pgfleet-agent.pushed" && [ -O "$dir" ] &&
          read -r d <"$dir/.pid" 2>/dev/null && kill -0 "$d" 2>/dev/null &&
          [ "$dir/.sock" -ef "$PWD.pgfleet-agent.sock" ]; then
          m="$dir/\${p#pg_wal/}"
          # The daemon is storing it right now: wait for its marker, at most ~10 s and while the
          # daemon lives, rather than start Node only to wait for the same push over the socket.
          i=0
          while [ $i -lt 1000 ] && [ -f "$m.pending" ] && kill -0 "$d" 2>/dev/null; do
            sleep 0.01
            i=$((i + 1))
          done
          [ ! -L "$m" ] && [ -f "$m" ] && [ "$m" -ef "$p" ] && { rm -f "$m" 2>/dev/null; exit 0; }
        fi ;;
    esac
  fi
  exec ${quote(p.node)} ${quote(p.walPush)} "$@"
fi
exec ${quote(p.node)} ${quote(p.bin)} "$@"
`;
}
