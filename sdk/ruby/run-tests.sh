#!/usr/bin/env bash
# Runs every test of the Ruby worker SDK: protocol vectors (docs/protocol/vectors), codec, handlers,
# the worker against a scripted orchestrator over real ZeroMQ sockets, the tasker-worker
# executable, the HTTP client, the examples, and the end-to-end test against a real `tasker serve`
# ($TASKER_BIN, else target/debug/tasker; skipped loudly without one, a failure under
# TASKER_REQUIRE_SDKS=1).
#
#   sdk/ruby/run-tests.sh                          # everything
#   sdk/ruby/run-tests.sh test/client_test.rb      # some files
#   TASKER_REQUIRE_SDKS=1 sdk/ruby/run-tests.sh    # CI: a missing Ruby or ffi-rzmq fails instead of skipping
#
# Needs ruby (>= 3.1), minitest, and the ffi-rzmq gem with libzmq (Debian: ruby ruby-minitest
# ruby-ffi-rzmq libzmq5). No bundler, no gem server.
set -euo pipefail
# The end-to-end tests run $TASKER_BIN from another directory: make a relative path absolute.
if [ -n "${TASKER_BIN:-}" ] && [ "${TASKER_BIN#/}" = "$TASKER_BIN" ]; then
  export TASKER_BIN="$PWD/$TASKER_BIN"
fi
cd "$(dirname "$0")"

skip() {
  echo "" >&2
  echo "######################################################################" >&2
  echo "SKIPPED: Ruby worker SDK tests: $1" >&2
  echo "######################################################################" >&2
  if [ "${TASKER_REQUIRE_SDKS:-}" = "1" ]; then
    echo "FAILED: TASKER_REQUIRE_SDKS=1 forbids skipping the Ruby SDK tests" >&2
    exit 1
  fi
  exit 0
}

command -v ruby >/dev/null 2>&1 || skip "ruby is not installed (apt-get install ruby)"
ruby -e 'require "minitest"' >/dev/null 2>&1 || skip "minitest is missing (apt-get install ruby-minitest)"
ruby -e 'require "ffi-rzmq"; ZMQ::Context.new.terminate' >/dev/null 2>&1 ||
  skip "the ffi-rzmq gem or libzmq is missing (apt-get install ruby-ffi-rzmq libzmq5)"

if [ "$#" -eq 0 ]; then
  set -- test/*_test.rb
fi
exec ruby -Ilib -Itest -e 'files = ARGV.dup; ARGV.clear; files.each { |file| require File.expand_path(file) }' "$@"
