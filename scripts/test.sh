#!/usr/bin/env bash
# Runs every check and test of pgfleet: generated-code freshness, build, lint (dependency walls,
# ESLint, Prettier), then all unit, integration and end-to-end tests (real PostgreSQL,
# nats-server and S3 server processes; nothing is mocked). Works on a fresh Debian 12 machine
# once PostgreSQL and nats-server are installed (.ci/run installs them); fetches Node 24 when the
# machine's is older.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/node-env.sh

if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci
fi

# archive_command and restore_command run the agent from this checkout as the postgres OS user
# (tests run server binaries as postgres when root), so that user must be able to reach it.
if [ "$(id -u)" = 0 ] && id postgres >/dev/null 2>&1 && ! runuser -u postgres -- test -r "$PWD/package.json"; then
  echo "test.sh: giving the postgres user search (x) permission on the parents of $PWD so PostgreSQL can run the agent"
  d="$PWD"
  while [ "$d" != / ]; do chmod o+x "$d"; d=$(dirname "$d"); done
fi

npm run check:generated
npx turbo run build --output-logs=errors-only
# dependency walls, ESLint (type-aware: after the build) and Prettier
npm run lint
# The files that ran longest in CI (its test-times list; keep these names in step with it) start
# first, so that none of them starts late and keeps one of the two slots busy alone at the end
# of the run while the many short ones fill the other slot. node --test runs files in the sorted
# order of their paths whatever the order of its patterns (runner.js createTestFileList), and an
# absolute path sorts before every relative one: these are named by absolute path and left out
# of the relative glob (a name no longer found is simply run by the glob again).
LONGEST_FIRST=(resume-random-kill backup-chain block-incremental leaderkill encryption timelines)
longest=()
for f in "${LONGEST_FIRST[@]}"; do longest+=("$PWD/test/dist/$f.test.js"); done
others="test/dist/**/!($(IFS='|' && echo "${LONGEST_FIRST[*]}")).test.js"

# One node --test run over every package so the summary at the end counts all tests. Beside the
# default report on stdout (spec, named because naming any reporter replaces the default),
# scripts/test-times.mjs prints each file's wall time on stderr at the end, the longest first,
# and keeps the list in test-artifacts/test-times.txt.
node --test --test-concurrency=2 --test-timeout=900000 \
  --test-reporter=spec --test-reporter-destination=stdout \
  --test-reporter=./scripts/test-times.mjs --test-reporter-destination=stderr \
  "${longest[@]}" 'packages/*/dist/**/*.test.js' "$others"
