"""Crash test of the annotation server: scripted annotators label over HTTP while the server
process is killed with SIGKILL and restarted; afterwards the store must hold every acknowledged
answer exactly once, every stored answer must have been acknowledged, and every task's counter
and status must agree with its answers. Used by ``tests/test_server_load.py`` and
``benchmarks/server_load.py``; point it at a staging database to check a deployment.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import select

from prefloop.config import preset_text
from prefloop.errors import PrefloopError
from prefloop.feedback.queue import Queue
from prefloop.feedback.store.db import Store, open_store
from prefloop.feedback.store.models import Annotation, AnnotationStatus, Annotator, AnnotatorKind, Task, TaskStatus
from prefloop.sim import Ack, ScoreOracle, SimulationReport, provision_annotators, simulate


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """``prefloop serve`` as a child process on a loopback port, which can be killed and restarted."""

    def __init__(self, project_dir: Path, database_url: str, port: int | None = None) -> None:
        self.project_dir = Path(project_dir)
        self.database_url = database_url
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = self.project_dir / "server.log"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 60) -> float:
        """Start and wait until it answers; returns the seconds that took."""
        import httpx

        env = {**os.environ, "PREFLOOP_DATABASE_URL": self.database_url}
        cmd = [sys.executable, "-m", "prefloop.cli", "serve", "-p", str(self.project_dir),
               "--host", "127.0.0.1", "--port", str(self.port), "--log-level", "warning"]
        started = time.monotonic()
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        while time.monotonic() - started < timeout:
            if self.proc.poll() is not None:
                raise PrefloopError(f"the server exited with code {self.proc.returncode}: {self.log_tail()}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return time.monotonic() - started
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        self.stop()
        raise PrefloopError(f"the server did not answer within {timeout:.0f} s: {self.log_tail()}")

    def kill(self) -> None:
        """SIGKILL: no shutdown, no flushing, in-flight requests die with it."""
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()

    def log_tail(self, chars: int = 2000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else "(no log)"


def fill_tasks(store: Store, *, compare: int, rate: int, overlap: int) -> None:
    """Tasks whose better answer says "good": compare pairs and single outputs to rate."""
    q = Queue(store, overlap=overlap)
    with store.session() as s:
        for i in range(compare):
            ids = q.add_generations(f"load prompt {i}: say something", [f"good answer {i}", f"bad answer {i}"], session=s)
            q.add_task("compare", ids, session=s)
        for i in range(rate):
            ids = q.add_generations(f"load prompt {i}: rate me", [f"good rating {i}" if i % 2 else f"bad rating {i}"], session=s)
            q.add_task("rate", ids, session=s)


LOAD_ORACLE = ScoreOracle(lambda task, gid, text: 1.0 if text.startswith("good") else 0.0)


def check_store(store: Store, acks: list[Ack]) -> list[str]:
    """What is wrong with the store given the acknowledged submissions (empty: nothing)."""
    problems: list[str] = []
    twice = [k for k, n in Counter(a.idempotency_key for a in acks).items() if n > 1]
    if twice:
        problems.append(f"{len(twice)} idempotency key(s) acknowledged twice")
    with store.session() as s:
        rows = s.execute(
            select(Annotation.id, Annotation.task_id, Annotation.status, Annotation.idempotency_key, Annotator.name)
            .join(Annotator, Annotator.id == Annotation.annotator_id)
            .where(Annotator.kind == AnnotatorKind.HUMAN.value)
        ).all()
        tasks = s.execute(select(Task.id, Task.n_done, Task.overlap, Task.status)).all()
    by_key = Counter(r.idempotency_key for r in rows if r.idempotency_key)
    by_id = {r.id: r for r in rows}
    for a in acks:
        if by_key[a.idempotency_key] != 1:
            problems.append(f"acknowledged answer {a.idempotency_key} is stored {by_key[a.idempotency_key]} times")
        row = by_id.get(a.annotation_id)
        if row is None or (row.task_id, row.name, row.idempotency_key) != (a.task_id, a.annotator, a.idempotency_key):
            problems.append(f"receipt {a.annotation_id} does not match the stored row")
    submitted = {r.id for r in rows if r.status == AnnotationStatus.SUBMITTED.value}
    acked = {a.annotation_id for a in acks}
    if submitted - acked:
        problems.append(f"{len(submitted - acked)} stored answer(s) were never acknowledged")
    if acked - submitted:
        problems.append(f"{len(acked - submitted)} acknowledged answer(s) are missing")
    pairs = Counter((r.task_id, r.name) for r in rows)
    if pairs and max(pairs.values()) > 1:
        problems.append("an annotator answered one task twice")
    per_task = Counter(r.task_id for r in rows if r.status == AnnotationStatus.SUBMITTED.value)
    for t in tasks:
        if t.n_done != per_task.get(t.id, 0):
            problems.append(f"task {t.id}: n_done {t.n_done} but {per_task.get(t.id, 0)} stored answers")
        if t.n_done > t.overlap:
            problems.append(f"task {t.id}: {t.n_done} answers for overlap {t.overlap}")
        if (t.status == TaskStatus.COMPLETE.value) != (t.n_done >= t.overlap):
            problems.append(f"task {t.id}: status {t.status} with {t.n_done}/{t.overlap} answers")
    return problems


@dataclass
class LoadResult:
    annotators: int
    tasks: int
    report: SimulationReport
    restarts: list[float] = field(default_factory=list)  # seconds each restart took to answer again
    problems: list[str] = field(default_factory=list)
    unfinished_tasks: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems


def run_load_test(
    database_url: str,
    project_dir: Path,
    *,
    annotators: int = 32,
    compare_tasks: int = 150,
    rate_tasks: int = 50,
    overlap: int = 2,
    kill_at: tuple[float, ...] = (0.35,),
    accuracy: float = 0.8,
    seed: int = 0,
    retry_for: float = 60.0,
) -> LoadResult:
    """Fill an empty store, run ``annotators`` clients until the queue is empty, SIGKILL the
    server when each share in ``kill_at`` of the expected answers is acknowledged, restart it,
    then check the store."""
    project_dir = Path(project_dir)
    project_dir.mkdir(parents=True, exist_ok=True)
    (project_dir / "prefloop.yaml").write_text(preset_text("default"))
    store = open_store(database_url)
    try:
        fill_tasks(store, compare=compare_tasks, rate=rate_tasks, overlap=overlap)
        tokens = provision_annotators(store, annotators, prefix="load")
        expected = (compare_tasks + rate_tasks) * overlap
        server = ServerProcess(project_dir, database_url)
        server.start()
        report = SimulationReport()
        failure: list[BaseException] = []

        def clients() -> None:
            try:
                simulate(server.url, tokens, LOAD_ORACLE, accuracy=accuracy, seed=seed, retry_for=retry_for, report=report)
            except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
                failure.append(exc)

        result = LoadResult(annotators, compare_tasks + rate_tasks, report)
        runner = threading.Thread(target=clients, name="scripted-annotators")
        try:
            runner.start()
            for share in kill_at:
                while runner.is_alive() and len(report.acks) < share * expected:
                    time.sleep(0.01)
                if not runner.is_alive():
                    break
                server.kill()
                time.sleep(0.2)
                result.restarts.append(server.start())
            runner.join()
        finally:
            server.stop()
        if failure:
            raise failure[0]
        result.problems = check_store(store, report.acks)
        with store.session() as s:
            result.unfinished_tasks = len(s.scalars(select(Task.id).where(Task.status == TaskStatus.OPEN.value)).all())
        if result.unfinished_tasks:
            result.problems.append(f"{result.unfinished_tasks} task(s) still open after every client finished")
        return result
    finally:
        store.dispose()
