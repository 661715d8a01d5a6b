#!/usr/bin/env bash
# Tasker beside Celery + Redis on the same workloads, one system after the other.
#
#   benchmarks/compare/run.sh [--tasks M] [--latency-tasks N] [--clients C] [--json PATH]
#                             [--only tasker|celery] [--tasker-worker rust|python] [--warmup W]
#                             [--tasker-wait auto|poll] [--keep-logs]
#
# Sets up benchmarks/compare/.venv (Celery, redis-py, the Python worker SDK) when missing, builds
# target/release/tasker when TASKER_BIN is unset and the binary is missing, then runs compare.py.
# Every process it starts (redis-server, the Celery worker, tasker serve and its workers) is
# stopped at the end, also on failure or Ctrl-C. Exits non-zero when any task failed.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
venv="$here/.venv"
python="${PYTHON:-python3}"

if ! command -v redis-server >/dev/null 2>&1; then
  case " $* " in
    *" --only tasker "*|*" --only=tasker "*) ;;
    *) echo "run.sh: redis-server is not installed; on Debian/Ubuntu: apt-get install redis-server" >&2
       exit 2 ;;
  esac
fi

# The venv: Celery and redis-py pinned in requirements.txt, and the Python worker SDK (for
# --tasker-worker python) built from a copy of sdk/python, so no build files land in the tree.
install_sdk() {
  local copy
  copy="$(mktemp -d)"
  mkdir "$copy/python"
  cp -r "$repo/sdk/python/pyproject.toml" "$repo/sdk/python/README.md" "$repo/sdk/python/src" \
    "$copy/python/"
  rm -rf "$copy/python/src/"*.egg-info
  "$venv/bin/pip" install --quiet --disable-pip-version-check "$copy/python"
  rm -rf "$copy"
}
if [ ! -x "$venv/bin/celery" ] || ! "$venv/bin/python" -c 'import tasker_worker' 2>/dev/null; then
  echo "run.sh: setting up $venv" >&2
  "$python" -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt"
  install_sdk
else
  case " $* " in
    # The SDK may have changed since the venv was made: use the working tree's.
    *" python "*|*"=python "*) install_sdk ;;
  esac
fi

if [ -z "${TASKER_BIN:-}" ]; then
  export TASKER_BIN="$repo/target/release/tasker"
  if [ ! -x "$TASKER_BIN" ]; then
    case " $* " in
      *" --only celery "*|*" --only=celery "*) ;;
      *) echo "run.sh: building $TASKER_BIN" >&2
         (cd "$repo" && cargo build --release -p tasker-cli) ;;
    esac
  fi
fi

# compare.py stops what it starts; this trap is the safety net should it die without doing so
# (it writes the process-group id of each child it starts to this file).
export BENCH_PIDFILE
BENCH_PIDFILE="$(mktemp)"
child=""
cleanup() {
  local status=$?
  if [ -n "$child" ] && kill -0 "$child" 2>/dev/null; then
    kill -TERM "$child" 2>/dev/null || true
    wait "$child" 2>/dev/null || true
  fi
  while read -r pgid; do
    [ -n "$pgid" ] && kill -KILL -- "-$pgid" 2>/dev/null || true
  done <"$BENCH_PIDFILE"
  rm -f "$BENCH_PIDFILE"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

cd "$repo"
"$venv/bin/python" "$here/compare.py" "$@" &
child=$!
wait "$child"
