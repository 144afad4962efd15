"""Bulk writes (`prefloop import`, `prefloop queue add`) on SQLite and PostgreSQL.

- linear in rows whatever the table's history: the statements issued do not grow with the rows
  of a batch, nor after a first small import (issue 9 item 14: a per-row lookup turned into
  30,000 sequential scans on PostgreSQL);
- annotators keep being served: on SQLite no write transaction of a bulk writer holds more than
  one batch of rows, and a claim + submit completes between every two steps of a bulk write on
  both databases (issue 9 item 13) — checked with events, not clocks;
- all or nothing: a failed or SIGKILLed bulk write leaves nothing visible, and the next one
  cleans up; one killed after its commit point is finished by whoever opens the store next.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue as stdlib_queue
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from serverkit import make_project
from sqlalchemy import event, func, select
from sqlalchemy.engine import Engine
from typer.testing import CliRunner

from prefloop.cli import app
from prefloop.errors import DataError
from prefloop.feedback import bulk
from prefloop.feedback.importer import import_prompts, read_tasks
from prefloop.feedback.prompts import visible_prompts
from prefloop.feedback.queue import Queue
from prefloop.feedback.store.db import Store, open_store
from prefloop.feedback.store.models import BulkWrite, Generation, Prompt, StagedTask, Task


def write_prompts(path: Path, start: int, n: int) -> Path:
    path.write_text("".join(json.dumps({"prompt": f"What is {i} + {i}?", "reference": str(2 * i)}) + "\n"
                            for i in range(start, start + n)))
    return path


def write_tasks(path: Path, start: int, n: int) -> Path:
    rows = []
    for i in range(start, start + n):
        kind = ("compare", "rate", "rank", "edit")[i % 4]
        outputs = {"compare": [f"{2 * i}", f"{2 * i + 1}"], "rate": [f"{2 * i}"], "rank": ["a", f"b{i}", f"c{i}"],
                   "edit": [f"teh {i}"]}[kind]
        rows.append({"prompt": f"Question {i}?", "outputs": outputs, "kind": kind, "priority": i % 3})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def n_rows(store: Store, model) -> int:  # noqa: ANN001
    with store.session() as s:
        return s.scalar(select(func.count()).select_from(model))


def n_visible(store: Store) -> int:
    with store.session() as s:
        return len(s.scalars(visible_prompts()).all())


@contextlib.contextmanager
def statements() -> Iterator[list[str]]:
    """Every SQL statement any engine sends to its database while the block runs."""
    seen: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany):  # noqa: ANN001
        seen.append(statement)

    event.listen(Engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(Engine, "before_cursor_execute", record)


def cli(*args: str) -> None:
    res = CliRunner().invoke(app, list(args))
    assert res.exit_code == 0, res.output


@pytest.fixture
def project_dir(tmp_path: Path, db_url: str) -> Path:
    project = make_project(tmp_path / "proj", db_url)
    project.store.dispose()
    return project.root


# ------------------------------------------------------------------ item 14: linear whatever the history
def test_import_statements_depend_neither_on_rows_nor_on_history(project_dir: Path, tmp_path: Path) -> None:
    small, large = write_prompts(tmp_path / "small.jsonl", 0, 20), write_prompts(tmp_path / "large.jsonl", 1000, 400)
    pilot = write_prompts(tmp_path / "pilot.jsonl", 5000, 10)
    with statements() as into_empty:
        cli("import", str(small), "-q", "--project", str(project_dir))
    cli("import", str(pilot), "-q", "--project", str(project_dir))
    with statements() as after_pilot:
        cli("import", str(large), "-q", "--project", str(project_dir))
    assert len(after_pilot) == len(into_empty), (
        f"20 rows into an empty table took {len(into_empty)} statements, 400 after a pilot import {len(after_pilot)}:"
        " the import looks rows up one by one"
    )
    store = open_store(make_project_url(project_dir))
    assert n_rows(store, Prompt) == 430
    store.dispose()


def test_queue_add_statements_do_not_depend_on_rows(project_dir: Path, tmp_path: Path) -> None:
    with statements() as few:
        cli("queue", "add", str(write_tasks(tmp_path / "few.jsonl", 0, 8)), "-q", "--project", str(project_dir))
    with statements() as many:
        cli("queue", "add", str(write_tasks(tmp_path / "many.jsonl", 100, 400)), "-q", "--project", str(project_dir))
    assert len(many) == len(few), f"8 tasks took {len(few)} statements, 400 tasks {len(many)}"


def make_project_url(root: Path) -> str:
    from prefloop.project import Project

    return Project(root).database_url


# ------------------------------------------------------------------ item 13: annotators keep being served
def test_sqlite_bulk_writes_hold_the_write_lock_for_one_batch_at_most(sqlite_url: str, tmp_path: Path) -> None:
    """Deterministic form of "no annotator waits for a whole import": rows changed per transaction."""
    store = open_store(sqlite_url)
    per_transaction: list[int] = []
    start: dict[int, int] = {}

    @event.listens_for(store.engine, "begin")
    def _begin(conn) -> None:  # noqa: ANN001
        start[id(conn)] = conn.connection.dbapi_connection.total_changes

    @event.listens_for(store.engine, "commit")
    def _commit(conn) -> None:  # noqa: ANN001
        per_transaction.append(conn.connection.dbapi_connection.total_changes - start.pop(id(conn), 0))

    batch = 300
    result = import_prompts(store, write_prompts(tmp_path / "p.jsonl", 0, 2000), batch_rows=batch)
    assert result.created == 2000
    n = bulk.add_tasks(Queue(store), read_tasks(write_tasks(tmp_path / "t.jsonl", 0, 1000)), batch_rows=batch)
    assert n == 1000
    assert per_transaction, "no transaction was observed"
    assert max(per_transaction) <= batch, f"a transaction changed {max(per_transaction)} rows"
    assert len(per_transaction) >= 2000 // batch + 1000 * 4 // batch
    store.dispose()


class Annotator:
    """A scripted annotator in its own thread with its own connections: claims and submits on request."""

    def __init__(self, url: str) -> None:
        self.store = Store(url)
        self.queue = Queue(self.store, lease_seconds=600)
        self.me = self.queue.ensure_annotator("ada")
        self.requests: stdlib_queue.Queue = stdlib_queue.Queue()
        self.acks: stdlib_queue.Queue = stdlib_queue.Queue()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while self.requests.get() is not None:
            try:
                task = self.queue.claim(self.me)
                ids = [c.generation_id for c in task.candidates]
                answer = {"compare": {"choice": "tie"}, "rate": {"rating": task.scale[0] if task.scale else 1},
                          "rank": {"ranking": ids}, "edit": {"text": "fixed"}}[task.kind]
                receipt = self.queue.submit(self.me, task.task_id, answer)
                self.acks.put(receipt.task_id)
            except Exception as exc:  # noqa: BLE001 - reported to the test thread
                self.acks.put(exc)

    def claim_and_submit(self) -> int:
        """One answered task; fails if the annotator is not served within the deadline."""
        self.requests.put(1)
        try:
            ack = self.acks.get(timeout=30)
        except stdlib_queue.Empty:
            pytest.fail("an annotator waited 30 s for a claim + submit while the bulk write was running")
        if isinstance(ack, Exception):
            raise ack
        return ack

    def close(self) -> None:
        self.requests.put(None)
        self.thread.join(timeout=30)
        self.store.dispose()


@pytest.mark.parametrize("what", ["import", "queue add"])
def test_annotators_are_served_between_every_two_steps_of_a_bulk_write(db_url: str, tmp_path: Path, what: str) -> None:
    store = open_store(db_url)
    q = Queue(store, overlap=1)
    for i in range(60):
        q.add_comparison(f"warm-up {i}", ["a", "b"])
    ada = Annotator(db_url)
    steps: list[tuple[str, int, int]] = []
    answered: list[int] = []

    def between_steps(phase: str, done: int, total: int) -> None:
        steps.append((phase, done, total))
        answered.append(ada.claim_and_submit())

    try:
        if what == "import":
            res = import_prompts(store, write_prompts(tmp_path / "p.jsonl", 0, 1000), batch_rows=100, progress=between_steps)
            assert res.created == 1000
        else:
            specs = read_tasks(write_tasks(tmp_path / "t.jsonl", 0, 500))
            assert bulk.add_tasks(q, specs, batch_rows=50, progress=between_steps) == 500
    finally:
        ada.close()
    writes = [s for s in steps if s[0] == "write"]
    assert len(writes) >= 10 and writes[-1][1] == writes[-1][2]
    assert len(set(answered)) == len(answered) == len(steps)
    store.dispose()


# ------------------------------------------------------------------ all or nothing
KILLABLE = """
import sys
from prefloop.feedback import bulk
from prefloop.feedback.store.db import open_store
from prefloop.feedback.importer import import_prompts, read_tasks
from prefloop.feedback.queue import Queue

url, what, path, stop_phase, stop_at = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
store = open_store(url)

def progress(phase, done, total):
    if phase == stop_phase and done >= stop_at:
        print("ready", flush=True)
        sys.stdin.readline()  # wait here until killed

if what == "import":
    import_prompts(store, path, batch_rows=50, progress=progress)
else:
    bulk.add_tasks(Queue(store), read_tasks(path), batch_rows=50, progress=progress)
print("finished", flush=True)
"""


def run_until_killed(url: str, what: str, path: Path, phase: str, at: int) -> None:
    proc = subprocess.Popen([sys.executable, "-c", KILLABLE, url, what, str(path), phase, str(at)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)})
    try:
        line = proc.stdout.readline()
        assert line.strip() == "ready", f"the bulk writer ended before the kill point: {line!r}"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("what", ["import", "queue add"])
def test_a_killed_bulk_write_leaves_nothing_visible_and_the_next_one_cleans_up(db_url: str, tmp_path: Path, what: str) -> None:
    store = open_store(db_url)
    q = Queue(store)
    q.add_comparison("already here", ["x", "y"])
    before = (n_visible(store), n_rows(store, Generation), n_rows(store, Task))
    src = write_prompts(tmp_path / "p.jsonl", 0, 400) if what == "import" else write_tasks(tmp_path / "t.jsonl", 0, 400)
    run_until_killed(db_url, what, src, "write", 150)
    assert (n_visible(store), n_rows(store, Task)) == (before[0], before[2]), "a killed bulk write left rows visible"
    assert q.claim(q.ensure_annotator("bo")).prompt_text == "already here"

    res = import_prompts(store, write_prompts(tmp_path / "next.jsonl", 10_000, 30))
    assert (res.created, res.existing) == (30, 0)
    assert n_rows(store, Prompt) == before[0] + 30, "the next bulk write did not delete the killed one's rows"
    assert n_rows(store, Generation) == before[1]
    assert n_rows(store, StagedTask) == 0
    with store.session() as s:
        assert s.scalar(select(func.count()).where(BulkWrite.state != "done")) == 0
    store.dispose()


def test_a_queue_add_killed_after_its_commit_point_is_finished_by_the_next_open(sqlite_url: str, tmp_path: Path) -> None:
    store = open_store(sqlite_url)
    run_until_killed(sqlite_url, "queue add", write_tasks(tmp_path / "t.jsonl", 0, 300), "publish", 100)
    assert 0 < n_rows(store, Task) < 300, "the kill was meant to land while the tasks are being published"
    store.dispose()
    reopened = open_store(sqlite_url)  # as any later command or the server would
    assert n_rows(reopened, Task) == 300 and n_rows(reopened, StagedTask) == 0
    with reopened.session() as s:
        assert s.scalars(select(BulkWrite.state)).all() == ["done"]
        prompts = [p.text for p in s.scalars(select(Prompt).join(Task, Task.prompt_id == Prompt.id).order_by(Task.id))]
    assert prompts == [f"Question {i}?" for i in range(300)], "tasks must be published once each, in file order"
    reopened.dispose()


def test_a_failing_bulk_write_rolls_back_at_once(store: Store, tmp_path: Path) -> None:
    q = Queue(store)
    q.add_rating("kept", "fine")

    def fail(phase: str, done: int, total: int) -> None:
        if done >= 100:
            raise DataError("stop here")

    with pytest.raises(DataError, match="stop here"):
        bulk.add_tasks(q, read_tasks(write_tasks(tmp_path / "t.jsonl", 0, 300)), batch_rows=50, progress=fail)
    assert (n_rows(store, Prompt), n_rows(store, Generation), n_rows(store, Task), n_rows(store, StagedTask)) == (1, 1, 1, 0)
    with pytest.raises(DataError, match="stop here"):
        import_prompts(store, write_prompts(tmp_path / "p.jsonl", 0, 300), batch_rows=50, progress=fail)
    assert n_rows(store, Prompt) == 1


def test_staged_prompts_are_invisible_until_the_commit_point(store: Store, tmp_path: Path) -> None:
    seen: list[int] = []
    import_prompts(store, write_prompts(tmp_path / "p.jsonl", 0, 200), batch_rows=50,
                   progress=lambda phase, done, total: seen.append(n_visible(store)))
    assert seen[:4] == [0, 0, 0, 0] and n_visible(store) == 200


def test_a_prompt_created_elsewhere_during_an_import_survives_its_failure(sqlite_url: str, tmp_path: Path) -> None:
    """The queue's own path adopts a staged prompt it needs: it is no longer the import's to delete."""
    store = open_store(sqlite_url)
    q = Queue(store)
    other = Queue(Store(sqlite_url))

    def meanwhile(phase: str, done: int, total: int) -> None:
        if done == 100:
            other.add_comparison("What is 3 + 3?", ["6", "7"])  # staged by the import's first batch
        if done == 150:
            raise DataError("import fails")

    with pytest.raises(DataError):
        import_prompts(store, write_prompts(tmp_path / "p.jsonl", 0, 300), batch_rows=50, progress=meanwhile)
    with store.session() as s:
        assert [p.text for p in s.scalars(visible_prompts())] == ["What is 3 + 3?"]
    assert q.claim(q.ensure_annotator("cy")).prompt_text == "What is 3 + 3?"
    other.store.dispose()
    store.dispose()


# ------------------------------------------------------------------ what is written
def test_bulk_queue_add_writes_what_the_one_by_one_path_writes(db_url: str, tmp_path: Path) -> None:
    """Same prompts (de-duplicated, file order), outputs, tasks, kinds, scales and priorities."""
    store = open_store(db_url)
    q = Queue(store, overlap=2, rating_scale=(1, 7))
    q.add_rating("Question 2?", "already stored")  # an existing prompt is reused, not duplicated
    src = write_tasks(tmp_path / "t.jsonl", 0, 12)
    with src.open("a") as f:  # the same prompt twice in one file
        f.write(json.dumps({"prompt": "Question 5?", "outputs": ["again", "and again"]}) + "\n")
    assert bulk.add_tasks(q, read_tasks(src), batch_rows=5) == 13
    with store.session() as s:
        prompts = s.scalars(select(Prompt.text).order_by(Prompt.id)).all()
        tasks = s.scalars(select(Task).order_by(Task.id)).all()[1:]
        texts = dict(s.execute(select(Generation.id, Generation.text)).all())
        gen_prompt = dict(s.execute(select(Generation.id, Generation.prompt_id)).all())
    assert prompts == ["Question 2?"] + [f"Question {i}?" for i in range(12) if i != 2]
    assert len(tasks) == 13
    for i, t in enumerate(tasks[:12]):
        kind = ("compare", "rate", "rank", "edit")[i % 4]
        assert (t.kind, t.priority, t.overlap, t.n_done, t.status) == (kind, float(i % 3), 2, 0, "open")
        assert t.prompt.text == f"Question {i}?"
        assert {gen_prompt[g] for g in t.generation_ids} == {t.prompt_id}
        assert (t.scale_min, t.scale_max) == ((1, 7) if kind == "rate" else (None, None))
        assert t.meta == {"allow_tie": True}
    assert [texts[g] for g in tasks[0].generation_ids] == ["0", "1"]
    assert [texts[g] for g in tasks[2].generation_ids] == ["a", "b2", "c2"]
    assert tasks[12].prompt_id == tasks[5].prompt_id and tasks[12].kind == "compare"
    store.dispose()


def test_import_counts_created_and_existing_within_and_across_files(store: Store, tmp_path: Path) -> None:
    f = tmp_path / "p.jsonl"
    f.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in ["a", "b", "a", "c", "b"]))
    res = import_prompts(store, f, batch_rows=2)
    assert (res.created, res.existing) == (3, 2)
    with store.session() as s:
        assert s.scalars(select(Prompt.text).order_by(Prompt.id)).all() == ["a", "b", "c"]
    res = import_prompts(store, write_prompts(tmp_path / "q.jsonl", 0, 3), batch_rows=2)
    assert (res.created, res.existing) == (3, 0)
    f.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in ["c", "d", "What is 1 + 1?"]))
    res = import_prompts(store, f)
    assert (res.created, res.existing) == (1, 2)


# ------------------------------------------------------------------ exports
def _labelled(store: Store, n: int) -> None:
    q = Queue(store)
    for i in range(n):
        q.add_comparison(f"Which is right: {i} + {i}?", [str(2 * i), str(2 * i + 1)])
    me = q.ensure_annotator("ada")
    while (task := q.claim(me)) is not None:
        q.submit(me, task.task_id, {"choice": task.candidates[0].generation_id})


def test_an_export_reads_while_a_writer_holds_the_sqlite_lock(sqlite_url: str) -> None:
    """Exports read a snapshot: they never wait for the write lock, so they never make a submit wait."""
    import sqlite3

    from prefloop.feedback.export import build_dpo_dataset, build_sft_dataset

    store = open_store(sqlite_url)
    _labelled(store, 5)
    assert len(build_dpo_dataset(store, min_confidence=0)) == 5  # imports datasets before the clock matters
    writer = sqlite3.connect(store.url.database, isolation_level=None, timeout=0)
    writer.execute("BEGIN IMMEDIATE")  # an annotator's submit in the middle of its transaction
    writer.execute("UPDATE tasks SET priority = 1")
    try:
        with ThreadPoolExecutor(1) as pool:
            done = pool.submit(lambda: len(build_dpo_dataset(store, min_confidence=0)))
            assert done.result(timeout=60) == 5, "the export waited for the writer's lock"
            assert len(pool.submit(build_sft_dataset, store).result(timeout=60)) == 0
    finally:
        writer.execute("ROLLBACK")
        writer.close()
    store.dispose()


def test_export_prints_no_library_progress_bars(store: Store, tmp_path: Path, capfd: pytest.CaptureFixture) -> None:
    from prefloop.feedback.export import build_dpo_dataset, save_dataset

    _labelled(store, 3)
    ds = build_dpo_dataset(store, min_confidence=0)
    for fmt in ("jsonl", "parquet", "disk"):
        save_dataset(ds, tmp_path / f"dpo.{fmt}", fmt)
    out, err = capfd.readouterr()
    assert (out, err) == ("", ""), f"an export printed: {err[:200]!r}"
    assert [json.loads(x)["chosen"][0]["content"] for x in (tmp_path / "dpo.jsonl").read_text().splitlines()] == ["0", "2", "4"]


def test_the_fast_prompt_hash_is_the_stored_one() -> None:
    """Text prompts are hashed without building a dict; the hash must equal what earlier versions stored."""
    import hashlib

    from prefloop.feedback.prompts import prompt_hash

    for text in ["hi", 'a "quoted" \\ back\\slash', "ünïcödé 😀\n\t", "\u2028 line separator", "  spaced  "]:
        payload = json.dumps({"text": text, "messages": None}, sort_keys=True, ensure_ascii=False)
        assert prompt_hash(text, None) == hashlib.sha256(payload.encode()).hexdigest()


# ------------------------------------------------------------------ the command line
PREFLOOP = str(Path(sys.executable).parent / "prefloop")


def run_in_terminal(args: list[str], cwd: Path) -> str:
    """What a person sees: the command on a pseudo-terminal, stdout and stderr together."""
    import pty

    controller, terminal = pty.openpty()
    env = {**os.environ, "COLUMNS": "120", "TERM": "xterm-256color"}
    env.pop("NO_COLOR", None)
    proc = subprocess.Popen([PREFLOOP, *args], cwd=cwd, stdin=terminal, stdout=terminal, stderr=terminal, env=env)
    os.close(terminal)
    chunks = []
    while True:
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # the terminal closed: the process ended
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(controller)
    shown = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", b"".join(chunks).decode(errors="replace"))  # colours, cursor
    assert proc.wait(timeout=300) == 0, shown
    return shown


def test_import_and_queue_add_show_progress_on_a_terminal_only(tmp_path: Path) -> None:
    project = make_project(tmp_path / "proj", f"sqlite:///{tmp_path / 'proj' / 'store.db'}")
    project.store.dispose()
    write_prompts(tmp_path / "p.jsonl", 0, 3000)
    write_tasks(tmp_path / "t.jsonl", 0, 3000)
    seen = run_in_terminal(["import", str(tmp_path / "p.jsonl")], project.root)
    assert "writing" in seen and "imported 3000 new prompt(s), 0 already present" in seen
    assert "adding to the queue" in run_in_terminal(["queue", "add", str(tmp_path / "t.jsonl")], project.root)
    quiet = run_in_terminal(["import", "-q", str(tmp_path / "p.jsonl")], project.root)
    assert "writing" not in quiet and "imported 0 new prompt(s), 3000 already present" in quiet
    piped = subprocess.run([PREFLOOP, "queue", "add", str(tmp_path / "t.jsonl")], cwd=project.root, capture_output=True,
                           text=True, timeout=300, env={**os.environ, "COLUMNS": "200"}, check=False)
    assert piped.returncode == 0 and piped.stderr == "" and piped.stdout.strip() == "queued 3000 task(s)"
