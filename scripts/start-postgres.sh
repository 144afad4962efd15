#!/usr/bin/env bash
# Start a throwaway PostgreSQL server on loopback for the test suite and print its URL.
# Uses Debian's postgresql package (installed by scripts/test when missing). Idempotent.
set -euo pipefail
PGBIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)
[ -n "$PGBIN" ] || { echo "PostgreSQL is not installed (apt-get install -y postgresql)" >&2; exit 1; }
PORT=${PREFLOOP_PG_PORT:-55432}
BASE=${PREFLOOP_PG_DIR:-/tmp/prefloop-pg}
DATA=$BASE/data
mkdir -p "$BASE"
chown postgres:postgres "$BASE" 2>/dev/null || true
as_pg() { if [ "$(id -u)" = 0 ]; then su postgres -s /bin/bash -c "$*"; else bash -c "$*"; fi; }
if [ ! -f "$DATA/PG_VERSION" ]; then
  as_pg "$PGBIN/initdb -D $DATA -A trust -U postgres" >/dev/null
fi
if ! as_pg "$PGBIN/pg_ctl -D $DATA status" >/dev/null 2>&1; then
  as_pg "$PGBIN/pg_ctl -D $DATA -w -o \"-p $PORT -k $BASE -c listen_addresses=127.0.0.1 -c max_connections=300\" -l $BASE/log start" >/dev/null
fi
PSQL="$PGBIN/psql -h 127.0.0.1 -p $PORT -U postgres -v ON_ERROR_STOP=1 -qtA"
if [ -z "$($PSQL -c "SELECT 1 FROM pg_roles WHERE rolname='prefloop'")" ]; then
  $PSQL -c "CREATE ROLE prefloop LOGIN PASSWORD 'prefloop' CREATEDB"
fi
if [ -z "$($PSQL -c "SELECT 1 FROM pg_database WHERE datname='prefloop_test'")" ]; then
  $PSQL -c "CREATE DATABASE prefloop_test OWNER prefloop"
fi
echo "postgresql+psycopg://prefloop:prefloop@127.0.0.1:$PORT/prefloop_test"
