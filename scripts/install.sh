#!/usr/bin/env bash
# Installs pgfleet, pgfleet-agent and pgfleet-controller from this checkout, bound to Node 24:
#   PREFIX/lib/pgfleet/       the built workspace (dist/ and package.json of each package), its
#                             production node_modules only, and node/bin/node (the Node 24 the
#                             native addon better-sqlite3 was built against)
#   PREFIX/bin/pgfleet*       small launchers that exec that node with absolute paths, so they
#                             work from archive_command and systemd without any node on PATH
#   PREFIX/share/...          bash and zsh completion (generated from the option tables), the
#                             example configs
#   UNITDIR/*.service         the systemd units, rewritten to run the launchers
#   SYSCONFDIR/*.yaml         the example configs, only where no file exists yet
# and, as root, the pgfleet system user the controller unit runs as.
# Why a copy and not npm pack tarballs or a single executable: the workspace packages are
# private, the native addon must match the node that loads it, and an install that carries its
# own node cannot be broken by the machine's (Debian 12's is older than 24).
set -euo pipefail

usage() {
  cat <<'USAGE'
usage: scripts/install.sh [--prefix DIR] [--sysconfdir DIR] [--unitdir DIR] [--no-user]
  --prefix DIR      where bin/, lib/pgfleet and share/ go (default /usr/local)
  --sysconfdir DIR  where the configs go and the units look for them (default /etc/pgfleet)
  --unitdir DIR     where the systemd units go (default /etc/systemd/system as root,
                    PREFIX/lib/systemd/system otherwise)
  --no-user         do not create the pgfleet system user (it is only created as root)
Builds the checkout first when it is not built (npm ci, npm run build).
USAGE
}

prefix=/usr/local
sysconfdir=/etc/pgfleet
unitdir=''
make_user=1
while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) prefix="${2:?--prefix needs a directory}"; shift 2 ;;
    --prefix=*) prefix="${1#*=}"; shift ;;
    --sysconfdir) sysconfdir="${2:?--sysconfdir needs a directory}"; shift 2 ;;
    --sysconfdir=*) sysconfdir="${1#*=}"; shift ;;
    --unitdir) unitdir="${2:?--unitdir needs a directory}"; shift 2 ;;
    --unitdir=*) unitdir="${1#*=}"; shift ;;
    --no-user) make_user=0; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "install.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
  esac
done
is_root=0
[ "$(id -u)" -eq 0 ] && is_root=1
if [ -z "$unitdir" ]; then
  if [ "$is_root" -eq 1 ]; then unitdir=/etc/systemd/system; else unitdir="$prefix/lib/systemd/system"; fi
fi

# Absolute paths (relative ones are the caller's), since they are written into launchers and units.
mkdir -p "$prefix/bin" "$prefix/lib" "$sysconfdir" "$unitdir"
prefix="$(cd "$prefix" && pwd)"
sysconfdir="$(cd "$sysconfdir" && pwd)"
unitdir="$(cd "$unitdir" && pwd)"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
# shellcheck source=node-env.sh
source scripts/node-env.sh
node_bin="$(command -v node)"
if [ "$("$node_bin" -p 'process.versions.node.split(".")[0]')" -lt 24 ]; then
  echo "install.sh: $node_bin is not Node 24" >&2
  exit 1
fi
[ -d node_modules ] || npm ci --no-audit --no-fund
binaries=(cli/dist/bin.js agent/dist/bin.js controller/dist/bin.js)
for b in "${binaries[@]}"; do
  [ -f "packages/$b" ] || { npm run build; break; }
done

lib="$prefix/lib/pgfleet"
stage="$(mktemp -d "$prefix/lib/.pgfleet.XXXXXX")"
trap 'rm -rf "$stage"' EXIT

# The workspace packages the binaries need (no tests, sources or the test kit).
cp package.json "$stage/"
mkdir -p "$stage/packages"
for dir in packages/*/; do
  name="$(basename "$dir")"
  [ "$name" = testkit ] && continue
  mkdir -p "$stage/packages/$name"
  cp "$dir/package.json" "$stage/packages/$name/"
  cp -a "$dir/dist" "$stage/packages/$name/"
  find "$stage/packages/$name/dist" -type f \( -name '*.test.js' -o -name '*.test.d.ts' -o -name '*.tsbuildinfo' \) -delete
done
# Production dependencies only, as npm itself resolves them for the three binaries (the
# workspaces' own links under node_modules/@pgfleet are relative and stay valid in the copy).
{ npm ls --omit=dev --all --parseable -w packages/cli -w packages/agent -w packages/controller 2>/dev/null || true; } |
  sed -n "s|^$root/||p" | grep '/node_modules/\|^node_modules/' | sort -u |
  while read -r dep; do
    mkdir -p "$stage/$(dirname "$dep")"
    [ -e "$stage/$dep" ] || cp -a "$dep" "$stage/$dep"
  done
mkdir -p "$stage/node_modules/@pgfleet"
for name in "$stage"/packages/*; do
  ln -sfn "../../packages/$(basename "$name")" "$stage/node_modules/@pgfleet/$(basename "$name")"
done
mkdir -p "$stage/node/bin"
cp "$(readlink -f "$node_bin")" "$stage/node/bin/node"
chmod 0755 "$stage" "$stage/node/bin/node"

# Swap the new tree in whole, so a failed install leaves the previous one working.
if [ -d "$lib" ]; then mv "$lib" "$lib.old.$$"; fi
mv "$stage" "$lib"
trap - EXIT
rm -rf "$lib.old.$$"

for pair in pgfleet:cli pgfleet-agent:agent pgfleet-controller:controller; do
  bin="${pair%%:*}"
  tmp="$prefix/bin/.$bin.$$"
  header="installed by pgfleet scripts/install.sh: Node 24 bundled under $lib"
  if [ "$bin" = pgfleet-agent ]; then
    # archive_command runs `pgfleet-agent wal-push` once per WAL segment: the launcher answers it
    # from the agent daemon's markers without Node when it can, else runs the one-file CommonJS
    # bundle without bin.js's ES module start (packages/agent/src/wal/launcher.ts).
    "$lib/node/bin/node" scripts/agent-launcher.mjs "$lib/node/bin/node" "$lib" "$header" >"$tmp"
  else
    printf '#!/bin/sh\n# %s\nexec "%s" "%s" "$@"\n' "$header" "$lib/node/bin/node" "$lib/packages/${pair#*:}/dist/bin.js" >"$tmp"
  fi
  chmod 0755 "$tmp"
  mv -f "$tmp" "$prefix/bin/$bin"
done

# Completion, generated from the installed option tables by the installed node.
mkdir -p "$prefix/share/bash-completion/completions" "$prefix/share/zsh/site-functions"
for bin in pgfleet pgfleet-agent pgfleet-controller; do
  "$lib/node/bin/node" scripts/completion.mjs bash "$bin" >"$prefix/share/bash-completion/completions/$bin"
  "$lib/node/bin/node" scripts/completion.mjs zsh "$bin" >"$prefix/share/zsh/site-functions/_$bin"
done

mkdir -p "$prefix/share/pgfleet/examples"
cp deploy/config/*.yaml "$prefix/share/pgfleet/examples/"
mkdir -p "$sysconfdir"
for f in deploy/config/*.yaml; do
  [ -e "$sysconfdir/$(basename "$f")" ] || cp "$f" "$sysconfdir/"
done

# The units in deploy/systemd name the default locations; point them at this install.
mkdir -p "$unitdir"
for unit in deploy/systemd/*.service; do
  sed -e "s|/usr/local/bin/|$prefix/bin/|g" -e "s|/etc/pgfleet/|$sysconfdir/|g" "$unit" >"$unitdir/$(basename "$unit")"
done

if [ "$is_root" -eq 1 ] && [ "$make_user" -eq 1 ] && ! getent passwd pgfleet >/dev/null; then
  useradd --system --user-group --home-dir /var/lib/pgfleet --no-create-home --shell /usr/sbin/nologin pgfleet
  echo "install.sh: created system user pgfleet"
fi
[ "$is_root" -eq 1 ] && command -v systemctl >/dev/null && [ -d /run/systemd/system ] && systemctl daemon-reload || true

echo "install.sh: installed pgfleet $("$prefix/bin/pgfleet" --version | cut -d' ' -f2-) into $prefix"
echo "  binaries:   $prefix/bin/pgfleet, pgfleet-agent, pgfleet-controller"
echo "  units:      $unitdir/pgfleet-controller.service, pgfleet-agent.service"
echo "  configs:    $sysconfdir (examples in $prefix/share/pgfleet/examples)"
