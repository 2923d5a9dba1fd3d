#!/usr/bin/env bash
# Quickstart: installs what is missing (Node 24 locally, npm packages), builds, then starts a
# controller, an agent and, unless you point it at your own cluster, a throwaway PostgreSQL;
# takes a full backup and shows it. Everything lives under one temp dir and stops on Ctrl-C.
#   bash scripts/quickstart.sh            # throwaway PostgreSQL, stays up until Ctrl-C
#   bash scripts/quickstart.sh --once     # same, but stop after showing the backup
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/node-env.sh
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  echo "quickstart: PostgreSQL server binaries not found; install them with: apt-get install -y postgresql" >&2
  exit 1
fi
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci
fi
if [ "$(id -u)" = 0 ] && id postgres >/dev/null 2>&1 && ! runuser -u postgres -- test -r "$PWD/package.json"; then
  echo "quickstart: giving the postgres user search (x) permission on the parents of $PWD so PostgreSQL can run the agent"
  d="$PWD"; while [ "$d" != / ]; do chmod o+x "$d"; d=$(dirname "$d"); done
fi
npx turbo run build --output-logs=errors-only
exec node scripts/quickstart.mjs "$@"
