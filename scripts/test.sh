#!/usr/bin/env bash
# Runs every test Tasker has: the Rust workspace (unit, property, conformance and integration
# tests) against SQLite always and against a throwaway PostgreSQL when one can be started, then
# the Python and Ruby worker SDK suites (protocol vectors, worker behaviour, end to end against
# the `tasker` binary built here).
#
#   scripts/test.sh                              # what a developer runs
#   TASKER_REQUIRE_POSTGRES=1 TASKER_REQUIRE_SDKS=1 scripts/test.sh   # CI: nothing may be skipped
#   TASKER_TEST_POSTGRES_URL=postgres://... scripts/test.sh            # use an existing server
set -euo pipefail
cd "$(dirname "$0")/.."

run_rust_tests() {
  # Runs in a fresh `bash -c` (through with-postgres.sh) without this script's `set -e`: every
  # failure is counted explicitly, so a failing test fails the run.
  local status=0
  if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --no-fail-fast || status=1
  else
    echo "note: cargo-nextest not found; using cargo test (slower, same tests)" >&2
    cargo test --workspace --no-fail-fast --lib --bins --tests || status=1
  fi
  cargo test --workspace --doc || status=1
  return $status
}

if [ -x scripts/with-postgres.sh ]; then
  export -f run_rust_tests
  scripts/with-postgres.sh bash -c run_rust_tests
else
  run_rust_tests
fi

# The SDK suites start real `tasker` processes for their end-to-end tests.
cargo build -p tasker-cli
export TASKER_BIN="$PWD/target/debug/tasker"
status=0
for suite in sdk/python/run-tests.sh sdk/ruby/run-tests.sh tests/mixed_fleet/run.sh; do
  if [ -x "$suite" ]; then
    echo "== $suite"
    "$suite" || status=1
  fi
done
exit $status
