#!/usr/bin/env bash
# Makes a fresh clone runnable: installs the locked dependencies when node_modules is missing
# or older than package-lock.json, compiles the TypeScript when dist/ is missing or older
# than any source file, and builds the native counting kernel when it is missing or older
# than its sources (scripts/build-native.sh: cargo, cached under ~/.cache/abacus/cargo).
# Used by `npm run demo`, `npm run bench` and `npm test` so that each works alone.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "abacus: installing dependencies (npm ci)..." >&2
  npm ci --no-audit --no-fund >&2
fi
stamp=dist/.build-stamp
if [ ! -f "$stamp" ] || [ -n "$(find common worker operator test bench scripts types tsconfig.json -newer "$stamp" \( -name '*.ts' -o -name 'tsconfig.json' \) -print -quit 2>/dev/null)" ]; then
  echo "abacus: compiling TypeScript..." >&2
  npx tsc -p tsconfig.json >&2
  touch "$stamp"
fi
bash scripts/build-native.sh
