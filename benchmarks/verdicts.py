"""Judge verdicts recorded per second: one write per verdict vs one statement per batch.

A judge run ends with one annotation per task (new verdicts are inserted, changed ones updated
with their previous value kept in ``history``). Three ways to store the same rows, same result
(checked after each run):

- ``per-verdict``: ``Queue.record`` once per verdict, one session per chunk — how the judge runner
  wrote verdicts before the bulk writer;
- ``bulk``: ``Queue.record_many`` once per chunk (validation, history and ``n_done`` as
  ``record`` does them, one INSERT and one UPDATE batch per chunk);
- ``executemany``: a plain SQLAlchemy ``executemany`` INSERT of the finished rows in one
  transaction, no validation and no read: the floor the other two are measured against.

Each way runs twice over the same tasks: ``new`` (no verdict stored yet: inserts) and
``changed`` (every verdict differs: updates; not for ``executemany``); the ways take turns on
one filled store per run, its verdicts cleared in between.

    python benchmarks/verdicts.py --tasks 20000 --chunk 64 --repeat 3
    python benchmarks/verdicts.py --backends sqlite --modes per-verdict   # on a tree without record_many

PostgreSQL comes from ``--postgres-url`` or ``PREFLOOP_TEST_POSTGRES_URL``; without it only SQLite runs.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from sqlalchemy import delete, func, insert, select

from prefloop.feedback.queue import Queue
from prefloop.feedback.store.db import Store, open_store, postgres_schema_url
from prefloop.feedback.store.models import Annotation, Task, utcnow

BENCH_SCHEMA = "bench_verdicts"
IDENTITY = {"name": "bench-judge", "backend": "rules", "model": "bench", "template_hash": "0123456789abcdef"}
MODES = ("per-verdict", "bulk", "executemany")


def fill(store: Store, n_tasks: int) -> tuple[list[tuple[int, list[int]]], int]:
    """``n_tasks`` compare tasks over their own prompts, and the judge annotator."""
    q = Queue(store)
    tasks = []
    with store.session() as s:
        for i in range(n_tasks):
            ids = q.add_generations(f"benchmark prompt {i}", [f"answer A{i}", f"answer B{i}"], session=s)
            tasks.append((q.add_task("compare", ids, session=s), ids))
    return tasks, q.ensure_annotator("bench-judge", kind="judge", meta=IDENTITY)


def verdict(task_id: int, gens: list[int], flip: bool) -> dict[str, Any]:
    """What the runner records for a compare verdict (value, spend, identity and pair meta)."""
    winner = "B" if flip else "A"
    return {
        "task_id": task_id, "value": {"choice": gens[1 if flip else 0]}, "status": "submitted",
        "rationale": f"{winner} answers the question", "confidence": 0.8, "duration_s": 0.01,
        "prompt_tokens": 120, "completion_tokens": 3, "cost": 0.0002,
        "meta": {**IDENTITY, "winner": winner, "consistent": True, "prob_a": 0.1 if flip else 0.9, "cached": False,
                 "positions": {"A": gens[0], "B": gens[1]}},
    }


def per_verdict(q: Queue, judge: int, verdicts: list[dict[str, Any]], chunk: int) -> None:
    for start in range(0, len(verdicts), chunk):
        with q.store.session() as s:
            for v in verdicts[start : start + chunk]:
                v = dict(v)
                q.record(judge, v.pop("task_id"), v.pop("value"), session=s, **v)


def bulk(q: Queue, judge: int, verdicts: list[dict[str, Any]], chunk: int) -> None:
    from prefloop.feedback.writer import NewAnnotation

    for start in range(0, len(verdicts), chunk):
        q.record_many([NewAnnotation(annotator_id=judge, **v) for v in verdicts[start : start + chunk]])


def executemany(q: Queue, judge: int, verdicts: list[dict[str, Any]], chunk: int) -> None:
    now = utcnow()
    rows = [{**v, "annotator_id": judge, "late": False, "idempotency_key": None, "history": [],
             "created_at": now, "updated_at": now} for v in verdicts]
    with q.store.transaction() as conn:
        conn.execute(insert(Annotation), rows)


WAYS: dict[str, Callable[[Queue, int, list[dict[str, Any]], int], None]] = {
    "per-verdict": per_verdict, "bulk": bulk, "executemany": executemany,
}


def check(store: Store, verdicts: list[dict[str, Any]], updated: bool) -> str:
    with store.session() as s:
        rows = {r.task_id: r for r in s.execute(select(Annotation.task_id, Annotation.value, Annotation.history))}
        n_done = s.scalar(select(func.sum(Task.n_done)))
    if len(rows) != len(verdicts):
        return f"{len(rows)} rows, expected {len(verdicts)}"
    if any(rows[v["task_id"]].value != v["value"] for v in verdicts):
        return "a stored value differs"
    if updated and any(len(r.history) != 1 for r in rows.values()):
        return "history not kept"
    if n_done:
        return "a judge verdict counted towards overlap"
    return "ok"


def run_modes(url: str, modes: list[str], n_tasks: int, chunk: int) -> list[tuple[str, str, float, float, str]]:
    """Every way over the same tasks (the verdicts cleared between ways): (way, pass, seconds,
    client CPU seconds, verified) per pass."""
    store = open_store(url)
    tasks, judge = fill(store, n_tasks)
    q = Queue(store)
    out = []
    for mode in modes:
        passes = [("new", False)] + ([("changed", True)] if mode != "executemany" else [])
        for name, flip in passes:
            verdicts = [verdict(t, gens, flip) for t, gens in tasks]
            t0, c0 = time.perf_counter(), time.process_time()
            WAYS[mode](q, judge, verdicts, chunk)
            seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
            out.append((mode, name, seconds, cpu, check(store, verdicts, flip)))
        with store.transaction() as conn:
            conn.execute(delete(Annotation))
    store.dispose()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=20000, help="verdicts per run (default 20000)")
    parser.add_argument("--chunk", type=int, default=64, help="verdicts per batch, as judge_round's chunk_size (default 64)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per cell (default 3)")
    parser.add_argument("--modes", default=",".join(MODES), help=f"comma-separated, of {', '.join(MODES)}")
    parser.add_argument("--backends", default="sqlite,postgresql", help="which databases (default both)")
    parser.add_argument("--postgres-url", default=os.environ.get("PREFLOOP_TEST_POSTGRES_URL"),
                        help="PostgreSQL server (default: $PREFLOOP_TEST_POSTGRES_URL)")
    args = parser.parse_args()
    console = Console(width=None if sys.stdout.isatty() else 120)
    backends = args.backends.split(",")
    if "postgresql" in backends and not args.postgres_url:
        console.print("[yellow]PostgreSQL skipped: no --postgres-url or PREFLOOP_TEST_POSTGRES_URL[/]")
        backends.remove("postgresql")
    loads = [os.getloadavg()[0]]
    modes = args.modes.split(",")
    wall: dict[tuple[str, str, str], list[float]] = {}
    cpu: dict[tuple[str, str, str], list[float]] = {}
    verified: dict[tuple[str, str, str], str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for backend in backends:
            for i in range(args.repeat):
                if backend == "sqlite":
                    url = f"sqlite:///{Path(tmp) / f'verdicts-{i}.db'}"
                else:
                    url = postgres_schema_url(args.postgres_url, BENCH_SCHEMA)
                order = modes[i % len(modes):] + modes[: i % len(modes)]  # each way first in turn
                for mode, name, seconds, cpu_s, ok in run_modes(url, order, args.tasks, args.chunk):
                    key = (backend, mode, name)
                    wall.setdefault(key, []).append(args.tasks / seconds)
                    cpu.setdefault(key, []).append(args.tasks / cpu_s)
                    verified[key] = ok if verified.get(key, "ok") == "ok" else verified[key]
                loads.append(os.getloadavg()[0])
    table = Table(title=f"Judge verdicts recorded: {args.tasks} compare tasks, chunks of {args.chunk}, {args.repeat} runs each")
    for col in ("database", "way", "pass", "verdicts/s (median)", "min – max", "vs executemany", "per CPU-second", "verified"):
        table.add_column(col, justify="left" if col in ("database", "way", "pass", "verified") else "right")
    for key in sorted(wall, key=lambda k: (backends.index(k[0]), MODES.index(k[1]), k[2] != "new")):
        backend, mode, name = key
        rates = wall[key]
        floor = wall.get((backend, "executemany", "new"))
        ratio = f"{statistics.median(rates) / statistics.median(floor):.2f}" if floor else "–"
        table.add_row(backend, mode, name, f"{statistics.median(rates):,.0f}", f"{min(rates):,.0f} – {max(rates):,.0f}",
                      ratio, f"{statistics.median(cpu[key]):,.0f}", verified[key])
    console.print(table)
    console.print("per CPU-second: verdicts per second of this process's CPU (SQLite's work included, the "
                  "PostgreSQL server's not); load does not inflate it. Load average (1 min) during the runs: "
                  f"{min(loads):.1f} – {max(loads):.1f}")
    if any(v != "ok" for v in verified.values()):
        raise SystemExit("verification failed: see the table")


if __name__ == "__main__":
    main()
