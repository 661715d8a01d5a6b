#!/usr/bin/env bash
# The mixed-fleet test: one workflow (examples/mixed_fleet/template.yaml) whose steps run on a
# Rust (`tasker worker`), a Python and a Ruby worker at once, against a real `tasker serve`.
#
#   tests/mixed_fleet/run.sh                        # from anywhere; extra arguments go to pytest
#   TASKER_BIN=target/debug/tasker tests/mixed_fleet/run.sh
#   TASKER_REQUIRE_SDKS=1 tests/mixed_fleet/run.sh  # CI: a missing python3 or ruby is a failure
#
# The tasker binary is $TASKER_BIN, else target/debug/tasker (scripts/test.sh builds it and sets
# TASKER_BIN). Python runs in the Python SDK's virtualenv: this script hands the test directory to
# sdk/python/run-tests.sh, which creates or reuses that virtualenv (and skips or fails when
# python3 is missing, the same way).
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"

skip() {
  echo "=================================================================="
  echo "SKIPPED: mixed-fleet test: $1"
  echo "=================================================================="
  if [ "${TASKER_REQUIRE_SDKS:-}" = "1" ]; then
    echo "TASKER_REQUIRE_SDKS=1: the mixed-fleet test must run" >&2
    exit 1
  fi
  exit 0
}

command -v python3 >/dev/null 2>&1 || skip "python3 not found"
command -v ruby >/dev/null 2>&1 || skip "ruby not found (apt-get install ruby)"
ruby -e 'require "ffi-rzmq"; ZMQ::Context.new.terminate' >/dev/null 2>&1 ||
  skip "the ffi-rzmq gem or libzmq is missing (apt-get install ruby-ffi-rzmq libzmq5)"

exec "$repo/sdk/python/run-tests.sh" "$repo/tests/mixed_fleet" -ra -p no:cacheprovider "$@"
