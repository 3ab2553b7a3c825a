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

echo "== native kernel: Rust unit tests"
bash scripts/build-native.sh --test

echo "== unit and local tests (no servers)"
node --test --test-concurrency=2 dist/test/unit/ dist/test/local/

echo "== real servers: Kafka, Cassandra, S3, Kubernetes control plane, Prometheus"
# Torn down however this script ends (test/env/README.md).
trap 'npm run --silent test-env -- down || true' EXIT
npm run --silent test-env -- up
# shellcheck disable=SC1091
source .test-env/env

echo "== integration and end-to-end tests (real servers)"
server_test_dirs=()
for d in dist/test/integration dist/test/e2e; do
  if [[ -d "$d" ]]; then server_test_dirs+=("$d/"); fi
done
node --test --test-concurrency=1 "${server_test_dirs[@]}"
