"""Queue throughput: claim + submit cycles per second on SQLite and PostgreSQL.

Each worker is a separate process with its own connection and its own annotator, started
together behind a barrier, claiming and submitting until the queue is empty, as real
annotators (or several server processes) would. After each run the store is checked: every
task got exactly ``overlap`` answers, no (task, annotator) pair twice, every receipt matches one
stored row with its own idempotency key, nothing lost, nothing duplicated.

    python benchmarks/queue_throughput.py --tasks 2000 --workers 1,8,32 --postgres-url postgresql+psycopg://...

PostgreSQL comes from ``--postgres-url`` or ``PREFLOOP_TEST_POSTGRES_URL``
(``bash scripts/start-postgres.sh`` starts one); without it only SQLite runs.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import multiprocessing as mp
import statistics
import tempfile
import time
from collections import Counter
from dataclasses import dataclass

from rich.console import Console
from rich.progress import Progress
from rich.table import Table
from sqlalchemy import func, select

from prefloop.feedback.queue import Queue
from prefloop.feedback.store.db import Store, open_store, postgres_schema_url
from prefloop.feedback.store.models import Annotation, Lease, Task

BENCH_SCHEMA = "bench_queue"


@dataclass
class RunResult:
    backend: str
    workers: int
    submits: int
    seconds: float
    p50_ms: float
    p99_ms: float
    cpu_ms: float  # client (worker process) CPU per cycle: SQLite's own work included, PostgreSQL's not
    verified: str

    @property
    def per_second(self) -> float:
        return self.submits / self.seconds



def fill(store: Store, n_tasks: int, overlap: int) -> None:
    """Enqueue ``n_tasks`` A/B tasks, each over its own prompt."""
    q = Queue(store, overlap=overlap)
    with store.session() as s:
        for i in range(n_tasks):
            ids = q.add_generations(f"benchmark prompt {i}", [f"answer A{i}", f"answer B{i}"], session=s)
            q.add_task("compare", ids, session=s)


def worker(url: str, index: int, overlap: int, barrier, results) -> None:  # noqa: ANN001
    """One annotator: claim and submit until the queue is empty; report receipts and timings."""
    store = Store(url)
    q = Queue(store, overlap=overlap, lease_seconds=600)
    me = q.ensure_annotator(f"bench-worker-{index}")
    receipts: list[tuple[int, int, int, bool]] = []
    cycles: list[float] = []
    barrier.wait(timeout=300)
    start, cpu = time.perf_counter(), time.process_time()
    while True:
        t0 = time.perf_counter()
        claimed = q.claim(me)
        if claimed is None:
            break
        key = f"w{index}-t{claimed.task_id}"
        r = q.submit(me, claimed.task_id, {"choice": claimed.candidates[0].generation_id}, idempotency_key=key)
        cycles.append(time.perf_counter() - t0)
        receipts.append((claimed.task_id, me, r.annotation_id, r.duplicate))
    end, cpu = time.perf_counter(), time.process_time() - cpu
    store.dispose()
    results.put((start, end, receipts, cycles, cpu))


def verify(store: Store, receipts: list[tuple[int, int, int, bool]], n_tasks: int, overlap: int) -> str:
    """Check the store against the receipts; return "ok" or what is wrong."""
    problems = []
    pairs = Counter((t, a) for t, a, _, _ in receipts)
    if pairs and max(pairs.values()) > 1:
        problems.append("a task served twice to one annotator")
    if any(dup for *_, dup in receipts):
        problems.append("a fresh submit answered as a retry")
    with store.session() as s:
        rows = s.execute(select(Annotation.id, Annotation.task_id, Annotation.idempotency_key)).all()
        tasks = s.execute(select(Task.id, Task.n_done, Task.status)).all()
        leases = s.scalar(select(func.count()).select_from(Lease))
    if len(rows) != n_tasks * overlap:
        problems.append(f"{len(rows)} annotations stored, expected {n_tasks * overlap}")
    if sorted(r.id for r in rows) != sorted(r[2] for r in receipts):
        problems.append("stored annotations differ from the receipts")
    if len({r.idempotency_key for r in rows}) != len(rows):
        problems.append("duplicate idempotency keys")
    if Counter(r.task_id for r in rows) != {t.id: overlap for t in tasks}:
        problems.append("a task has the wrong number of answers")
    if any((t.n_done, t.status) != (overlap, "complete") for t in tasks):
        problems.append("n_done or status disagrees with the answers")
    if leases:
        problems.append(f"{leases} leases left behind")
    return "ok" if not problems else "; ".join(problems)


def run(backend: str, url: str, n_workers: int, n_tasks: int, overlap: int, analyze: bool) -> RunResult:
    store = open_store(url)
    fill(store, n_tasks, overlap)
    if analyze:
        store.analyze()
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(n_workers), ctx.Queue()
    procs = [ctx.Process(target=worker, args=(url, i, overlap, barrier, results)) for i in range(n_workers)]
    for p in procs:
        p.start()
    outcomes = [results.get(timeout=1800) for _ in procs]
    for p in procs:
        p.join()
    start = min(o[0] for o in outcomes)
    end = max(o[1] for o in outcomes)
    receipts = [r for o in outcomes for r in o[2]]
    cycles = sorted(c for o in outcomes for c in o[3])
    cpu = sum(o[4] for o in outcomes)
    verified = verify(store, receipts, n_tasks, overlap)
    store.dispose()
    p99 = cycles[min(len(cycles) - 1, int(0.99 * len(cycles)))] if cycles else 0.0
    return RunResult(
        backend, n_workers, len(receipts), end - start,
        1000 * statistics.median(cycles) if cycles else 0.0, 1000 * p99,
        1000 * cpu / max(1, len(receipts)), verified,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=2000, help="tasks per run (default 2000)")
    parser.add_argument("--overlap", type=int, default=1, help="distinct annotators per task (default 1)")
    parser.add_argument("--workers", default="1,8,32", help="comma-separated worker counts (default 1,8,32)")
    parser.add_argument("--postgres-url", default=os.environ.get("PREFLOOP_TEST_POSTGRES_URL"),
                        help="PostgreSQL server (default: $PREFLOOP_TEST_POSTGRES_URL)")
    parser.add_argument("--backends", default="sqlite,postgresql", help="which databases (default both)")
    parser.add_argument("--analyze", action="store_true",
                        help="call Store.analyze() after filling (PostgreSQL planner statistics, as an import "
                             "should; default: measure straight after the import, without statistics)")
    args = parser.parse_args()
    console = Console(width=None if sys.stdout.isatty() else 110)
    workers = [int(w) for w in args.workers.split(",")]
    if args.overlap > min(workers):
        parser.error(f"--overlap {args.overlap} needs at least that many workers in every run")
    backends = args.backends.split(",")
    if "postgresql" in backends and not args.postgres_url:
        console.print("[yellow]PostgreSQL skipped: no --postgres-url or PREFLOOP_TEST_POSTGRES_URL "
                      "(bash scripts/start-postgres.sh starts one)[/]")
        backends.remove("postgresql")
    results = []
    with tempfile.TemporaryDirectory() as tmp, Progress(console=console, transient=True) as progress:
        bar = progress.add_task("benchmarking", total=len(backends) * len(workers))
        for backend in backends:
            for n in workers:
                progress.update(bar, description=f"{backend}, {n} worker(s)")
                if backend == "sqlite":
                    url = f"sqlite:///{Path(tmp) / f'queue-{n}.db'}"
                else:
                    url = postgres_schema_url(args.postgres_url, BENCH_SCHEMA)
                results.append(run(backend, url, n, args.tasks, args.overlap, args.analyze))
                progress.advance(bar)
    stats = ", PostgreSQL analysed" if args.analyze else ""
    table = Table(title=f"Queue throughput: {args.tasks} tasks, overlap {args.overlap}, one process per worker{stats}")
    columns = ("database", "workers", "submits", "seconds", "claim+submit/s", "p50 ms", "p99 ms", "CPU ms", "verified")
    for col in columns:
        table.add_column(col, justify="left" if col in ("database", "verified") else "right")
    for r in results:
        table.add_row(r.backend, str(r.workers), str(r.submits), f"{r.seconds:.2f}", f"{r.per_second:,.0f}",
                      f"{r.p50_ms:.2f}", f"{r.p99_ms:.2f}", f"{r.cpu_ms:.2f}", r.verified)
    console.print(table)
    console.print("p50/p99: one claim + submit cycle as a worker saw it; CPU ms: worker-process CPU per cycle "
                  "(includes SQLite's work, not the PostgreSQL server's); load average "
                  + " ".join(f"{x:.1f}" for x in os.getloadavg()))
    if any(r.verified != "ok" for r in results):
        raise SystemExit("verification failed: see the table")


if __name__ == "__main__":
    main()
