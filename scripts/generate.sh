#!/usr/bin/env bash
# Regenerates packages/proto/src/gen from proto/ with buf + protoc-gen-es (both from npm).
# --check regenerates into a temp dir and fails when the committed code differs, so a .proto
# change without its regenerated code (or a hand edit of generated code) cannot land.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/node-env.sh
export PATH="$PWD/node_modules/.bin:$PATH"
(cd proto && buf lint)
if [ "${1:-}" = "--check" ]; then
  tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
  # same plugin options as buf.gen.yaml, only the output directory differs
  (cd proto && buf generate --template "$(sed "s#out: .*#out: $tmp/gen#" buf.gen.yaml)")
  gen="$tmp/gen"
  if ! diff -r "$gen" packages/proto/src/gen >/dev/null; then
    echo "generated code is stale: run 'npm run generate' and commit packages/proto/src/gen" >&2
    diff -r "$gen" packages/proto/src/gen | head -n 40 >&2
    exit 1
  fi
  echo "generated code is up to date"
else
  rm -rf packages/proto/src/gen
  (cd proto && buf generate --template buf.gen.yaml)
fi
