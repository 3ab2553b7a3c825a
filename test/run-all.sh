#!/usr/bin/env bash
# The one test command (README, .ci/run): build, lint, bring up the real servers the
# integration tests need (cached installs), run every test, tear the servers down.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== install and build"
bash scripts/ensure-ready.sh
npm run --silent build

echo "== lint"
npm run --silent lint

echo "== unit and local tests (no servers)"
node --test --test-concurrency=2 dist/test/unit/ dist/test/local/
