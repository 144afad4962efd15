#!/usr/bin/env bash
# Start a throwaway PostgreSQL server on loopback for the test suite and print its URL.
# Uses Debian's postgresql package (installed by scripts/test when missing). Idempotent, and
# works for any user, whoever ran it before:
# - a PostgreSQL server already answering on the port (an earlier run's, another user's) is
#   reused: the suite only needs the `prefloop` role and the `prefloop_test` database on it;
# - otherwise the server runs from a directory of the user who owns it: $PREFLOOP_PG_DIR, else
#   ${XDG_RUNTIME_DIR:-/tmp}/prefloop-pg-UID (root runs it as `postgres`, in /tmp).
# Port: $PREFLOOP_PG_PORT (default 55432).
set -euo pipefail
die() { echo "start-postgres: $*" >&2; exit 1; }
PGBIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)
[ -n "$PGBIN" ] || die "PostgreSQL is not installed (apt-get install -y postgresql)"
PORT=${PREFLOOP_PG_PORT:-55432}

if [ "$(id -u)" = 0 ]; then
  OWNER=postgres  # PostgreSQL refuses to run as root
  BASE=${PREFLOOP_PG_DIR:-/tmp/prefloop-pg-$(id -u postgres)}
else
  OWNER=$(id -un)
  RUNTIME=/tmp
  if [ -n "${XDG_RUNTIME_DIR:-}" ] && [ -d "$XDG_RUNTIME_DIR" ] && [ -w "$XDG_RUNTIME_DIR" ]; then RUNTIME=$XDG_RUNTIME_DIR; fi
  BASE=${PREFLOOP_PG_DIR:-$RUNTIME/prefloop-pg-$(id -u)}
fi
DATA=$BASE/data

as_owner() {  # run a command as the server's owner
  if [ "$(id -u)" = 0 ]; then su "$OWNER" -s /bin/bash -c "$(printf '%q ' "$@")"; else "$@"; fi
}

if ! "$PGBIN/pg_isready" -q -h 127.0.0.1 -p "$PORT"; then
  mkdir -p "$BASE"
  if [ "$(id -u)" = 0 ]; then chown "$OWNER:" "$BASE"; fi
  [ "$(stat -c %U "$BASE")" = "$OWNER" ] \
    || die "$BASE belongs to $(stat -c %U "$BASE"), not $OWNER: set PREFLOOP_PG_DIR to a directory of your own"
  chmod 700 "$BASE"
  if [ ! -f "$DATA/PG_VERSION" ]; then
    as_owner "$PGBIN/initdb" -D "$DATA" -A trust -U postgres >/dev/null
  fi
  if ! as_owner "$PGBIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1; then
    as_owner "$PGBIN/pg_ctl" -D "$DATA" -w -l "$BASE/log" \
      -o "-p $PORT -k $BASE -c listen_addresses=127.0.0.1 -c max_connections=300" start >/dev/null 2>&1 \
      || die "the server did not start (is port $PORT taken? set PREFLOOP_PG_PORT); log: $BASE/log: $(tail -n 3 "$BASE/log" 2>/dev/null | tr '\n' ' ')"
  fi
fi

PSQL=("$PGBIN/psql" -h 127.0.0.1 -p "$PORT" -U postgres -v ON_ERROR_STOP=1 -qtA)
"${PSQL[@]}" -c "SELECT 1" >/dev/null 2>&1 \
  || die "the PostgreSQL server on 127.0.0.1:$PORT does not let user postgres in without a password; set PREFLOOP_PG_PORT to a free port"
if [ -z "$("${PSQL[@]}" -c "SELECT 1 FROM pg_roles WHERE rolname='prefloop'")" ]; then
  "${PSQL[@]}" -c "CREATE ROLE prefloop LOGIN PASSWORD 'prefloop' CREATEDB"
fi
if [ -z "$("${PSQL[@]}" -c "SELECT 1 FROM pg_database WHERE datname='prefloop_test'")" ]; then
  "${PSQL[@]}" -c "CREATE DATABASE prefloop_test OWNER prefloop"
fi
echo "postgresql+psycopg://prefloop:prefloop@127.0.0.1:$PORT/prefloop_test"
