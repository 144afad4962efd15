#!/usr/bin/env bash
# Build the separate venv that runs a real argilla-server 2.8 for the Argilla bridge tests.
#
# argilla-server pins pydantic 2.9 and an old typer, which clash with prefloop's own venv, so it
# lives in its own venv at <repo>/.venv-argilla-server (gitignored; CI caches it). Idempotent:
# a venv that already imports argilla_server 2.8.0 is left alone.
#
#   bash tests/argilla_server/setup.sh            # build or reuse
#   PYTHON=python3.11 bash tests/argilla_server/setup.sh
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="${ARGILLA_SERVER_VENV:-$ROOT/.venv-argilla-server}"
PY="${PYTHON:-python3.11}"
VERSION="2.8.0"

if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" - <<PYEOF 2>/dev/null
import importlib.metadata as m, sys
sys.exit(0 if m.version("argilla-server") == "$VERSION" else 1)
PYEOF
then
  echo "argilla-server $VERSION venv ready at $VENV"
  exit 0
fi

command -v redis-server >/dev/null || {
  echo "redis-server is missing: apt-get install -y redis-server" >&2
  exit 1
}

start=$(date +%s)
rm -rf "$VENV"
"$PY" -m venv "$VENV"
"$VENV/bin/pip" install --quiet --upgrade pip
# pydantic 2.9 is what argilla-server 2.8 pins; click < 8.2 keeps its old typer working.
"$VENV/bin/pip" install --quiet "argilla-server==$VERSION" "pydantic>=2.9,<2.10" "click<8.2"
"$VENV/bin/python" -c "import argilla_server, pydantic; print('argilla-server', '$VERSION', 'pydantic', pydantic.VERSION)"
echo "built $VENV in $(( $(date +%s) - start )) s"
