"""Annotation server under load: scripted annotators over HTTP against a real server process,
on SQLite and PostgreSQL, once undisturbed and once with the server killed (SIGKILL) and
restarted mid-run. Prints submissions/s and p50/p99 latencies; after each run the store is
checked (every acknowledged answer stored exactly once, nothing unacknowledged, task counts
consistent).

    python benchmarks/server_load.py --annotators 32 --tasks 800 --postgres-url postgresql+psycopg://...

PostgreSQL comes from ``--postgres-url`` or ``PREFLOOP_TEST_POSTGRES_URL``
(``bash scripts/start-postgres.sh`` starts one); without it only SQLite runs.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from prefloop.feedback.store.db import postgres_schema_url

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the load-test harness is test code, not shipped
from loadkit import LoadResult, run_load_test  # noqa: E402

BENCH_SCHEMA = "bench_server_load"



def ms(seconds: float) -> str:
    return "–" if math.isnan(seconds) else f"{seconds * 1000:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--annotators", type=int, default=32, help="concurrent scripted annotators (default 32)")
    parser.add_argument("--tasks", type=int, default=800, help="tasks per run, 3/4 compare and 1/4 rate (default 800)")
    parser.add_argument("--overlap", type=int, default=2, help="distinct annotators per task (default 2)")
    parser.add_argument("--postgres-url", default=os.environ.get("PREFLOOP_TEST_POSTGRES_URL"),
                        help="PostgreSQL server (default: $PREFLOOP_TEST_POSTGRES_URL)")
    parser.add_argument("--backends", default="sqlite,postgresql", help="which databases (default both)")
    args = parser.parse_args()
    console = Console(width=None if sys.stdout.isatty() else 150)
    backends = args.backends.split(",")
    if "postgresql" in backends and not args.postgres_url:
        console.print("[yellow]PostgreSQL skipped: no --postgres-url or PREFLOOP_TEST_POSTGRES_URL "
                      "(bash scripts/start-postgres.sh starts one)[/]")
        backends.remove("postgresql")
    scenarios = {"steady": (), "SIGKILL@50%": (0.5,)}
    compare = args.tasks * 3 // 4
    rows: list[tuple[str, str, LoadResult]] = []
    with tempfile.TemporaryDirectory() as tmp, Progress(console=console, transient=True) as progress:
        bar = progress.add_task("benchmarking", total=len(backends) * len(scenarios))
        for backend in backends:
            for i, (name, kill_at) in enumerate(scenarios.items()):
                progress.update(bar, description=f"{backend}, {name}")
                project = Path(tmp) / f"{backend}-{i}"
                url = f"sqlite:///{project / 'store.db'}" if backend == "sqlite" else postgres_schema_url(args.postgres_url, BENCH_SCHEMA)
                result = run_load_test(url, project, annotators=args.annotators, compare_tasks=compare,
                                       rate_tasks=args.tasks - compare, overlap=args.overlap, kill_at=kill_at)
                rows.append((backend, name, result))
                progress.advance(bar)
    table = Table(title=f"Annotation server: {args.annotators} scripted annotators over HTTP, {args.tasks} tasks × "
                        f"overlap {args.overlap}, one uvicorn process")
    for col in ("database", "run", "answers", "seconds", "answers/s", "submit p50", "submit p99",
                "claim p50", "claim p99", "retries", "restart s", "store check"):
        table.add_column(col, justify="left" if col in ("database", "run", "store check") else "right")
    table.caption = "latencies in ms, per HTTP request; seconds and answers/s include the downtime of a kill"
    for backend, name, r in rows:
        rep = r.report
        table.add_row(
            backend, name, str(rep.submissions), f"{rep.elapsed_s:.1f}", f"{rep.per_second:.0f}",
            ms(rep.latency(50)), ms(rep.latency(99)), ms(rep.latency(50, which="claim")), ms(rep.latency(99, which="claim")),
            str(rep.retries), ", ".join(f"{s:.1f}" for s in r.restarts) or "–",
            "ok" if r.ok else "; ".join(r.problems)[:200],
        )
    console.print(table)
    if any(not r.ok for *_, r in rows):
        raise SystemExit("the store check failed: see the table")


if __name__ == "__main__":
    main()
