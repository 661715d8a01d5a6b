#!/usr/bin/env bash
# Runs a command with TASKER_TEST_POSTGRES_URL pointing at a PostgreSQL server.
#
#   scripts/with-postgres.sh CMD ARGS...
#
# - TASKER_TEST_POSTGRES_URL already set: runs the command as is (your server).
# - Otherwise, when initdb and pg_ctl are installed (on PATH or in /usr/lib/postgresql/*/bin):
#   creates a throwaway cluster in a temporary directory, starts it on a free port on 127.0.0.1
#   (fsync off: it is thrown away; TASKER_PG_FSYNC=on keeps PostgreSQL's durable defaults, for
#   benchmarks), exports the URL, runs the command, then stops and deletes the cluster, whatever
#   happens. As root, the cluster runs as the `postgres` user.
# - Otherwise: says loudly that PostgreSQL is not installed and runs the command without it (the
#   PostgreSQL test cases then skip, or fail when TASKER_REQUIRE_POSTGRES=1).
#
# It never touches a PostgreSQL already running on this machine (such as one on port 5432).
set -euo pipefail

if [ $# -eq 0 ]; then
  echo "usage: $0 CMD [ARGS...]" >&2
  exit 2
fi

if [ -n "${TASKER_TEST_POSTGRES_URL:-}" ]; then
  exec "$@"
fi

find_pg_bin() {
  local name=$1 dir
  if command -v "$name" >/dev/null 2>&1; then
    dirname "$(command -v "$name")"
    return 0
  fi
  for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    if [ -x "$dir/$name" ]; then
      echo "$dir"
      return 0
    fi
  done
  return 1
}

if ! pg_bin=$(find_pg_bin initdb) || [ ! -x "$pg_bin/pg_ctl" ]; then
  {
    echo "================================================================================"
    echo "with-postgres: PostgreSQL (initdb/pg_ctl) is NOT installed and"
    echo "TASKER_TEST_POSTGRES_URL is not set: running WITHOUT PostgreSQL."
    echo "PostgreSQL test cases will be SKIPPED (or fail if TASKER_REQUIRE_POSTGRES=1)."
    echo "Install it (e.g. apt-get install postgresql) or set TASKER_TEST_POSTGRES_URL."
    echo "================================================================================"
  } >&2
  exec "$@"
fi

free_port() {
  python3 - <<'PY' 2>/dev/null || echo $((20000 + RANDOM % 20000))
import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()
PY
}

workdir=$(mktemp -d "${TMPDIR:-/tmp}/tasker-pg.XXXXXX")
datadir="$workdir/data"
logfile="$workdir/postgres.log"
port=$(free_port)

as_pg=()
if [ "$(id -u)" -eq 0 ]; then
  if ! id postgres >/dev/null 2>&1; then
    useradd --system --home-dir "$workdir" --shell /usr/sbin/nologin postgres
  fi
  chown postgres "$workdir"
  chmod 700 "$workdir"
  as_pg=(runuser -u postgres --)
fi

cleanup() {
  local status=$?
  if [ -f "$datadir/postmaster.pid" ]; then
    "${as_pg[@]}" "$pg_bin/pg_ctl" -D "$datadir" -m immediate -w stop >/dev/null 2>&1 || true
  fi
  rm -rf "$workdir"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

"${as_pg[@]}" "$pg_bin/initdb" -D "$datadir" -U postgres --auth=trust --encoding=UTF8 \
  --no-sync >"$workdir/initdb.log" 2>&1 || {
  echo "with-postgres: initdb failed:" >&2
  cat "$workdir/initdb.log" >&2
  exit 1
}

durability="-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
if [ "${TASKER_PG_FSYNC:-off}" = "on" ]; then
  durability=""
fi

"${as_pg[@]}" "$pg_bin/pg_ctl" -D "$datadir" -l "$logfile" -w -t 60 \
  -o "-c listen_addresses=127.0.0.1 -p $port -k $workdir $durability -c max_connections=300" \
  start >/dev/null || {
  echo "with-postgres: PostgreSQL failed to start:" >&2
  cat "$logfile" >&2 || true
  exit 1
}

export TASKER_TEST_POSTGRES_URL="postgres://postgres@127.0.0.1:$port/postgres"
echo "with-postgres: throwaway PostgreSQL on 127.0.0.1:$port ($("$pg_bin/postgres" --version 2>/dev/null || echo unknown version))" >&2

set +e
"$@"
status=$?
set -e
exit "$status"
