#!/usr/bin/env bash
# Runs the Python worker SDK's tests: protocol vectors, worker behaviour against a scripted
# orchestrator, the HTTP client, and end to end against a real `tasker serve` ($TASKER_BIN, else
# target/debug/tasker; skipped loudly without one, a failure under TASKER_REQUIRE_SDKS=1).
#
#   sdk/python/run-tests.sh                  # from anywhere; extra arguments go to pytest
#   TASKER_REQUIRE_SDKS=1 sdk/python/run-tests.sh   # CI: a missing python3 is a failure
#
# The virtualenv lives in sdk/python/.venv (gitignored; TASKER_PYTHON_VENV overrides) and is
# reinstalled only when pyproject.toml changes.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"

# The end-to-end tests run $TASKER_BIN from another directory: make a relative path absolute.
if [ -n "${TASKER_BIN:-}" ] && [ "${TASKER_BIN#/}" = "$TASKER_BIN" ]; then
  export TASKER_BIN="$PWD/$TASKER_BIN"
fi

skip() {
  echo "=================================================================="
  echo "SKIPPED: $1"
  echo "=================================================================="
  if [ "${TASKER_REQUIRE_SDKS:-}" = "1" ]; then
    echo "TASKER_REQUIRE_SDKS=1: the Python SDK suite must run" >&2
    exit 1
  fi
  exit 0
}

command -v python3 >/dev/null 2>&1 || skip "python3 not found"

venv="${TASKER_PYTHON_VENV:-$here/.venv}"
python="$venv/bin/python"
if [ ! -x "$python" ] || ! "$python" -c "import sys; sys.exit(sys.version_info < (3, 10))" 2>/dev/null; then
  rm -rf "$venv"
  python3 -c "import sys; sys.exit(sys.version_info < (3, 10))" || skip "python3 is older than 3.10"
  python3 -m venv "$venv" || skip "python3 cannot create a virtualenv (install python3-venv)"
fi

stamp="$venv/.tasker-installed"
wanted="$(cat "$here/pyproject.toml" | cksum)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$wanted" ] || ! "$python" -c "import tasker_worker, zmq, pytest, jsonschema" 2>/dev/null; then
  "$python" -m pip install --quiet --disable-pip-version-check -e "$here" pytest jsonschema
  echo "$wanted" > "$stamp"
fi

cd "$here"
exec "$python" -m pytest -q "$@"
