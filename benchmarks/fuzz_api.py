"""Figures of the API fuzzing (schemathesis, ``tests/feedback/server/test_server_fuzz.py``): per database, how many
operations were fuzzed, how many requests were sent, how many answers were 5xx, and the
statuses seen. Runs the pytest module with a report file and tabulates it.

    python benchmarks/fuzz_api.py [--examples 25] [--count-only]

``--count-only`` sends the same generated requests without validating the answers: use it on
older code (whose schema would fail the checks at the first request) to count its 5xx.
PostgreSQL comes from ``PREFLOOP_TEST_POSTGRES_URL``, as for the tests.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=25, help="hypothesis examples per operation and auth (default 25)")
    parser.add_argument("--count-only", action="store_true", help="send and count, validate nothing (older code)")
    args = parser.parse_args()
    console = Console(width=None if sys.stdout.isatty() else 150)
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "fuzz.jsonl"
        env = {**os.environ, "PREFLOOP_FUZZ_REPORT": str(report), "PREFLOOP_FUZZ_EXAMPLES": str(args.examples),
               "PREFLOOP_FUZZ_COUNT_ONLY": "1" if args.count_only else "0", "OMP_NUM_THREADS": "1"}
        started = time.monotonic()
        run = subprocess.run(
            [sys.executable, "-m", "pytest", "tests/feedback/server/test_server_fuzz.py", "-q", "-p", "no:cacheprovider"],
            cwd=ROOT, env=env, capture_output=True, text=True,
        )
        seconds = time.monotonic() - started
        rows = [json.loads(line) for line in report.read_text().splitlines()] if report.exists() else []
    summary = run.stdout.strip().splitlines()[-1] if run.stdout.strip() else "(no output)"
    console.print(f"pytest: {summary} ({seconds:.0f} s; exit {run.returncode})")
    table = Table("database", "operations", "requests", "5xx", "statuses", title="schemathesis against a live server")
    for database in sorted({r["database"] for r in rows}):
        mine = [r for r in rows if r["database"] == database]
        statuses = collections.Counter(r["status"] for r in mine)
        table.add_row(
            database, str(len({r["operation"] for r in mine})), str(len(mine)),
            str(sum(n for s, n in statuses.items() if s >= 500)),
            ", ".join(f"{s}: {n}" for s, n in sorted(statuses.items())),
        )
    console.print(table)
    fives = collections.Counter((r["database"], r["operation"]) for r in rows if r["status"] >= 500)
    for (database, operation), n in sorted(fives.items()):
        console.print(f"  5xx on {database}: {operation} × {n}")


if __name__ == "__main__":
    main()
