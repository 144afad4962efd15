"""Bulk paths: `prefloop import`, `prefloop queue add` and `prefloop export dpo` against the database's own speed.

    python benchmarks/bulk_paths.py --rows 100000 --runs 3 [--postgres-url URL] [--annotators 4]

For each database, several runs, each on a fresh store:

- **import** / **queue add**: the prefloop path as the commands run it (read and check the file,
  prepare, write in batches, publish), in rows per second, and the same rows written by a plain
  ``executemany`` in one transaction (already prepared: no reading, no checks, no staging) as the
  database's speed; the ratio says what prefloop's guarantees cost. On SQLite also the longest
  write transaction of the bulk writer, which is the longest a claim or submit can wait for it;
- **import after a pilot**: the same import after a 10-prompt one (issue 9 item 14: PostgreSQL
  used to plan a per-row lookup on the tiny table and scan it 30,000 times);
- **annotators** (``--annotators N``): N annotator processes claim and submit without pause while
  the import runs, then while the plain one-transaction ``executemany`` runs (what the old importer
  did); the longest time between two acknowledged submits in each window;
- **export**: ``rows`` compare tasks with one human answer each → DPO pairs → JSON lines.

PostgreSQL comes from ``--postgres-url`` or ``PREFLOOP_TEST_POSTGRES_URL``; without it only SQLite runs.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import hashlib
import itertools
import json
import multiprocessing as mp
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.table import Table
from sqlalchemy import event, insert, select, update

from prefloop.feedback import bulk
from prefloop.feedback.export import build_dpo_dataset, save_dataset
from prefloop.feedback.importer import import_prompts, read_tasks
from prefloop.feedback.queue import Queue
from prefloop.feedback.store.db import Store, open_store, postgres_schema_url
from prefloop.feedback.store.models import Annotation, Task, utcnow

BENCH_SCHEMA = "bench_bulk"


@dataclass
class Runs:
    """Seconds of several runs of one measurement."""

    seconds: list[float] = field(default_factory=list)

    def rate(self, rows: int) -> str:
        if not self.seconds:
            return "–"
        rates = sorted(rows / s for s in self.seconds)
        spread = f" ({rates[0]:,.0f}–{rates[-1]:,.0f})" if len(rates) > 1 else ""
        return f"{statistics.median(rates):,.0f}{spread}"

    def median(self) -> float:
        return statistics.median(self.seconds) if self.seconds else float("nan")


# ------------------------------------------------------------------ inputs
def prompts_file(path: Path, n: int, start: int = 0) -> Path:
    path.write_text("".join(json.dumps({"prompt": f"Question {i}: what is {i} + {i}? Explain briefly.",
                                        "reference": str(2 * i), "tags": ["arith"]}) + "\n"
                            for i in range(start, start + n)))
    return path


def tasks_file(path: Path, n: int, start: int = 0) -> Path:
    path.write_text("".join(json.dumps({"prompt": f"Question {i}: what is {i} + {i}? Explain briefly.",
                                        "outputs": [f"It is {2 * i}.", f"It is {2 * i + 1}."]}) + "\n"
                            for i in range(start, start + n)))
    return path


def fresh(backend: str, tmp: Path, name: str, pg_url: str | None) -> str:
    if backend == "sqlite":
        for f in tmp.glob(f"{name}.db*"):
            f.unlink()
        return f"sqlite:///{tmp / name}.db"
    return postgres_schema_url(pg_url, BENCH_SCHEMA)


# ------------------------------------------------------------------ the database's speed
def plain_import(store: Store, path: Path) -> None:
    """The prompts of ``path`` by one ``executemany`` in one transaction, hashes computed beforehand."""
    rows = []
    for line in path.read_text().splitlines():
        rec = json.loads(line)
        payload = json.dumps({"text": rec["prompt"], "messages": None}, sort_keys=True, ensure_ascii=False)
        rows.append((rec["prompt"], "null", path.name, "train", json.dumps(rec["tags"]),
                     json.dumps({}), rec["reference"], hashlib.sha256(payload.encode()).hexdigest()))
    now = _db_now(store)
    mark = "%s" if store.dialect == "postgresql" else "?"
    cast = "::json" if store.dialect == "postgresql" else ""
    sql = (f"INSERT INTO prompts (text, messages, source, split, tags, meta, reference, content_hash, created_at) "
           f"VALUES ({mark}, {mark}{cast}, {mark}, {mark}, {mark}{cast}, {mark}{cast}, {mark}, {mark}, {mark})")
    with store.transaction() as conn:
        conn.exec_driver_sql(sql, [(*r, now) for r in rows])


def plain_queue_add(store: Store, path: Path) -> None:
    """Prompts, outputs and tasks of ``path`` by three ``executemany`` in one transaction, ids precomputed."""
    p_rows, g_rows, t_rows = [], [], []
    with store.transaction() as conn:
        base_p = conn.exec_driver_sql("SELECT coalesce(max(id), 0) FROM prompts").scalar() + 1
        base_g = conn.exec_driver_sql("SELECT coalesce(max(id), 0) FROM generations").scalar() + 1
    for i, line in enumerate(path.read_text().splitlines()):
        rec = json.loads(line)
        payload = json.dumps({"text": rec["prompt"], "messages": None}, sort_keys=True, ensure_ascii=False)
        p_rows.append((base_p + i, rec["prompt"], "null", path.name, "train", "[]", "{}",
                       hashlib.sha256(payload.encode()).hexdigest()))
        ids = [base_g + 2 * i, base_g + 2 * i + 1]
        g_rows += [(g, base_p + i, o, "import", "{}", "{}") for g, o in zip(ids, rec["outputs"], strict=True)]
        t_rows.append(("compare", base_p + i, json.dumps(ids), 1, 0, 0.0, "open", '{"allow_tie": true}'))
    now = _db_now(store)
    pg = store.dialect == "postgresql"
    m, j = ("%s", "%s::json") if pg else ("?", "?")
    with store.transaction() as conn:
        conn.exec_driver_sql(
            f"INSERT INTO prompts (id, text, messages, source, split, tags, meta, content_hash, created_at) "
            f"VALUES ({m}, {m}, {j}, {m}, {m}, {j}, {j}, {m}, {m})", [(*r, now) for r in p_rows])
        conn.exec_driver_sql(f"INSERT INTO generations (id, prompt_id, text, model, params, meta, created_at) "
                             f"VALUES ({m}, {m}, {m}, {m}, {j}, {j}, {m})", [(*r, now) for r in g_rows])
        conn.exec_driver_sql(
            f"INSERT INTO tasks (kind, prompt_id, generation_ids, overlap, n_done, priority, status, meta, created_at) "
            f"VALUES ({m}, {m}, {j}, {m}, {m}, {m}, {m}, {j}, {m})", [(*r, now) for r in t_rows])
        if pg:  # explicit ids: move the sequences past them, as a real writer would have to
            for table in ("prompts", "generations"):
                conn.exec_driver_sql(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                                     f"(SELECT max(id) FROM {table}))")


def _db_now(store: Store):  # noqa: ANN202 - the driver's form of a timestamp
    now = utcnow()
    return now if store.dialect == "postgresql" else now.isoformat(sep=" ", timespec="microseconds")


# ------------------------------------------------------------------ prefloop's paths
def prefloop_import(store: Store, path: Path) -> None:
    import_prompts(store, path)


def prefloop_queue_add(store: Store, path: Path) -> None:
    bulk.add_tasks(Queue(store), read_tasks(path), source=path.name)


def longest_transaction(store: Store, write: Callable[[Store, Path], None], path: Path) -> float:
    """Run ``write``; the longest time one of its transactions was open (SQLite: held the write lock)."""
    opened: dict[int, float] = {}
    longest = [0.0]

    def began(conn) -> None:  # noqa: ANN001
        opened[id(conn)] = time.perf_counter()

    def ended(conn) -> None:  # noqa: ANN001
        t0 = opened.pop(id(conn), None)
        if t0 is not None:
            longest[0] = max(longest[0], time.perf_counter() - t0)

    event.listen(store.engine, "begin", began)
    event.listen(store.engine, "commit", ended)
    try:
        write(store, path)
    finally:
        event.remove(store.engine, "begin", began)
        event.remove(store.engine, "commit", ended)
    return longest[0]


def timed(backend: str, tmp: Path, pg_url: str | None, write: Callable[[Store, Path], None], path: Path,
          pilot: Path | None = None) -> tuple[float, float, float]:
    """Seconds and CPU seconds of this process for ``write`` into a fresh store (after ``pilot`` if
    given), and its longest transaction. On SQLite the CPU seconds include the database's work, and
    other load on the machine hardly changes them."""
    store = open_store(fresh(backend, tmp, "bench", pg_url))
    if pilot is not None:
        import_prompts(store, pilot)
    t0, c0 = time.perf_counter(), time.process_time()
    longest = longest_transaction(store, write, path)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    store.dispose()
    return seconds, cpu, longest


# ------------------------------------------------------------------ annotators meanwhile
def annotator(url: str, index: int, working, stop, acks) -> None:  # noqa: ANN001
    """Claim and submit without pause until told to stop; report each acknowledgement's time."""
    store = Store(url)
    q = Queue(store, lease_seconds=3600)
    me = q.ensure_annotator(f"bench-annotator-{index}")
    times: list[float] = []
    while not stop.is_set():
        task = q.claim(me)
        if task is None:
            break
        q.submit(me, task.task_id, {"choice": "tie"})
        times.append(time.monotonic())
        if len(times) == 20:
            working.release()
    store.dispose()
    acks.put(times)


def longest_gap(backend: str, tmp: Path, pg_url: str | None, write: Callable[[Store, Path], None], path: Path,
                n_annotators: int) -> tuple[float, int]:
    """The longest time between two acknowledged submits while ``write`` runs, and how many there were."""
    url = fresh(backend, tmp, "gap", pg_url)
    store = open_store(url)
    bulk.add_tasks(Queue(store), read_tasks(tasks_file(tmp / "busywork.jsonl", 30_000, start=10_000_000)))
    ctx = mp.get_context("spawn")
    working, stop, acks = ctx.Semaphore(0), ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=annotator, args=(url, i, working, stop, acks)) for i in range(n_annotators)]
    for p in procs:
        p.start()
    for _ in procs:  # every annotator has had 20 answers acknowledged: all are at their working pace
        if not working.acquire(timeout=300):
            raise SystemExit("an annotator did not start working within 5 minutes")
    start = time.monotonic()
    write(store, path)
    end = time.monotonic()
    stop.set()
    times = sorted(t for _ in procs for t in acks.get(timeout=600))
    for p in procs:
        p.join()
    store.dispose()
    inside = [start, *(t for t in times if start <= t <= end), end]
    return max(b - a for a, b in itertools.pairwise(inside)), len(inside) - 2


# ------------------------------------------------------------------ export
def export_store(backend: str, tmp: Path, pg_url: str | None, n: int) -> str:
    url = fresh(backend, tmp, "export", pg_url)
    store = open_store(url)
    q = Queue(store)
    bulk.add_tasks(q, read_tasks(tasks_file(tmp / "export.jsonl", n)))
    me, now = q.ensure_annotator("ada"), utcnow()
    with store.transaction() as conn:
        answers = [{"task_id": t, "annotator_id": me, "status": "submitted", "value": {"choice": g[0]}, "late": False,
                    "meta": {}, "history": [], "created_at": now, "updated_at": now}
                   for t, g in conn.execute(select(Task.id, Task.generation_ids))]
        conn.execute(insert(Annotation), answers)
        conn.execute(update(Task).values(n_done=1, status="complete"))
    store.dispose()
    return url


def timed_export(url: str, out: Path) -> tuple[float, float, int]:
    store = open_store(url)
    t0 = time.perf_counter()
    ds = build_dpo_dataset(store, min_confidence=0)
    t1 = time.perf_counter()
    save_dataset(ds, out, "jsonl")
    t2 = time.perf_counter()
    store.dispose()
    return t1 - t0, t2 - t1, len(ds)


# ------------------------------------------------------------------ main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000, help="prompts / tasks / pairs per run (default 100000)")
    parser.add_argument("--runs", type=int, default=3, help="runs of each measurement (default 3)")
    parser.add_argument("--annotators", type=int, default=4, help="annotator processes for the gap measurement (0: skip)")
    parser.add_argument("--paths", default="import,queue-add,export", help="which paths (default all three)")
    parser.add_argument("--backends", default="sqlite,postgresql", help="which databases (default both)")
    parser.add_argument("--postgres-url", default=os.environ.get("PREFLOOP_TEST_POSTGRES_URL"),
                        help="PostgreSQL server (default: $PREFLOOP_TEST_POSTGRES_URL)")
    args = parser.parse_args()
    console = Console(width=None if sys.stdout.isatty() else 140)
    backends, paths = args.backends.split(","), args.paths.split(",")
    if "postgresql" in backends and not args.postgres_url:
        console.print("[yellow]PostgreSQL skipped: no --postgres-url or PREFLOOP_TEST_POSTGRES_URL[/]")
        backends.remove("postgresql")
    load_before = os.getloadavg()
    n = args.rows
    writes = {"import": (prefloop_import, plain_import, prompts_file), "queue-add": (prefloop_queue_add, plain_queue_add,
                                                                                     tasks_file)}
    table = Table(title=f"Bulk paths, {n:,} rows, {args.runs} runs: rows/s median (min–max)")
    for col in ("database", "path", "prefloop rows/s", "plain executemany rows/s", "ratio",
                "rows per CPU-s: prefloop / plain", "longest write txn",
                f"longest gap, {args.annotators} annotators: prefloop / plain"):
        table.add_column(col, justify="left" if col in ("database", "path") else "right")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        pilot = prompts_file(tmp / "pilot.jsonl", 10, start=50_000_000)
        for backend in backends:
            for path_name in paths:
                if path_name == "export":
                    url = export_store(backend, tmp, args.postgres_url, n)
                    build, write = Runs(), Runs()
                    for _ in range(args.runs):
                        b, w, rows = timed_export(url, tmp / "dpo.jsonl")
                        build.seconds.append(b)
                        write.seconds.append(w)
                        console.print(f"  {backend} export: build {b:.2f} s, write {w:.2f} s, {rows} pairs")
                    total = Runs([b + w for b, w in zip(build.seconds, write.seconds, strict=False)])
                    table.add_row(backend, f"export DPO ({total.median():.1f} s: build {build.median():.1f} + "
                                  f"JSONL {write.median():.1f})", total.rate(n), "", "", "", "", "")
                    continue
                ours, plain = writes[path_name][0], writes[path_name][1]
                src = writes[path_name][2](tmp / f"{path_name}.jsonl", n)
                variants = [("", None)] + ([(" after a 10-prompt pilot", pilot)] if path_name == "import" else [])
                for label, before in variants:
                    mine, base, mine_cpu, base_cpu, held = Runs(), Runs(), Runs(), Runs(), []
                    for _ in range(args.runs):
                        seconds, cpu, longest = timed(backend, tmp, args.postgres_url, ours, src, before)
                        mine.seconds.append(seconds)
                        mine_cpu.seconds.append(cpu)
                        held.append(longest)
                        seconds, cpu, _ = timed(backend, tmp, args.postgres_url, plain, src, before)
                        base.seconds.append(seconds)
                        base_cpu.seconds.append(cpu)
                        console.print(f"  {backend} {path_name}{label}: prefloop {mine.seconds[-1]:.2f} s "
                                      f"({mine_cpu.seconds[-1]:.2f} s CPU, longest transaction {longest * 1000:.0f} ms), "
                                      f"plain {seconds:.2f} s ({cpu:.2f} s CPU)")
                    gaps = ""
                    if args.annotators and not label:
                        ours_gap, ours_acks = longest_gap(backend, tmp, args.postgres_url, ours, src, args.annotators)
                        plain_gap, plain_acks = longest_gap(backend, tmp, args.postgres_url, plain, src, args.annotators)
                        gaps = f"{ours_gap * 1000:,.0f} ms / {plain_gap * 1000:,.0f} ms"
                        console.print(f"  {backend} {path_name} with annotators: longest gap {gaps} "
                                      f"({ours_acks} / {plain_acks} submits acknowledged meanwhile)")
                    txn = f"{max(held) * 1000:,.0f} ms" if backend == "sqlite" else "one (no blocking lock)"
                    per_cpu = (f"{n / mine_cpu.median():,.0f} / {n / base_cpu.median():,.0f}"
                               if backend == "sqlite" else "")
                    table.add_row(backend, path_name + label, mine.rate(n), base.rate(n),
                                  f"{mine.median() / base.median():.1f}×", per_cpu, txn, gaps)
    console.print(table)
    load_after = os.getloadavg()
    console.print("load average before " + " ".join(f"{x:.1f}" for x in load_before)
                  + ", after " + " ".join(f"{x:.1f}" for x in load_after) + f"; {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
