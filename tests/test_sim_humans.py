"""Scripted humans are reproducible: an answer (and its mistake and simulated seconds) is a function of
(seed, annotator, task), and in round-robin order who answers which task is the same from run to
run — on SQLite and PostgreSQL, through the real server."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import drop_postgres_schema, fresh_postgres_url
from serverkit import serve_project
from sqlalchemy import select

from prefloop.feedback.store.models import Annotation, Annotator, Generation
from prefloop.sim import ScoreOracle, SimulatedSeconds, SimulationError, provision_annotators, simulate


@pytest.fixture(params=["sqlite", "postgresql"])
def two_db_urls(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """Two fresh, empty databases of one backend (two runs of the same thing)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'a.db'}", f"sqlite:///{tmp_path / 'b.db'}"
        return
    urls = fresh_postgres_url(), fresh_postgres_url()
    yield urls
    for url in urls:
        drop_postgres_schema(url)


def _fill(served: Any, *, reverse_priority: bool = False) -> None:
    """The same 12 tasks in every store (same ids): compare pairs with oracle scores, edits, rates."""
    q = served.queue
    with served.store.session() as s:
        for i in range(12):
            kind = ("compare", "compare", "edit", "rate")[i % 4]
            priority = float(i if reverse_priority else -i)
            texts = [f"answer {i}a", f"answer {i}b"] if kind == "compare" else [f"answer {i}"]
            ids = q.add_generations(f"question {i}", texts, session=s)
            for k, gid in enumerate(ids):
                s.get(Generation, gid).meta = {"oracle_score": (i * 7 + k * 3) % 10 / 10}
            q.add_task(kind, ids, priority=priority, session=s)


@contextlib.contextmanager
def _served(root: Path, url: str, *, reverse_priority: bool = False) -> Iterator[Any]:
    with serve_project(root, url, queue={"overlap": 1}) as served:
        _fill(served, reverse_priority=reverse_priority)
        yield served


def _rows(served: Any) -> list[tuple[str, int, dict, float]]:
    return _rows_of(served.project)


def _run(served: Any, names: int, **kw: Any) -> list[tuple[str, int, dict, float]]:
    from prefloop.sim import store_oracle

    tokens = provision_annotators(served.store, names, prefix="h")
    oracle = store_oracle(served.store)
    oracle.reference = lambda task: "a careful correction"
    report = simulate(served.url, tokens, oracle, accuracy=0.5, seed=7, seconds=SimulatedSeconds({"compare": 25, "edit": 60}), **kw)
    assert {a.correct for a in report.acks} == {True, False}  # right sometimes, wrong sometimes
    return _rows(served)


def test_an_answer_depends_on_seed_annotator_and_task_not_on_what_came_before(tmp_path: Path, two_db_urls) -> None:  # noqa: ANN001
    """One annotator answers the same 12 tasks in opposite orders (priorities reversed): each task gets
    the same answer and the same simulated seconds. (With one random stream per annotator, the k-th
    task drew the k-th numbers, so the order changed the answers.)"""
    first_url, second_url = two_db_urls
    with _served(tmp_path / "a", first_url) as served:
        first = _run(served, 1)
    with _served(tmp_path / "b", second_url, reverse_priority=True) as served:
        second = _run(served, 1)
    assert len(first) == 12
    assert first == second
    assert len({d for *_, d in first}) == 12  # seconds are drawn per task, not one constant


def test_round_robin_annotators_label_identically_in_every_run(tmp_path: Path, two_db_urls) -> None:  # noqa: ANN001
    """Three annotators taking turns, two runs on two fresh stores: the same annotator answers the
    same task the same way, with the same simulated seconds."""
    first_url, second_url = two_db_urls
    runs = []
    for name, url in (("a", first_url), ("b", second_url)):
        with _served(tmp_path / name, url) as served:
            runs.append(_run(served, 3, order="round-robin", think_s=0.001))
    assert runs[0] == runs[1]
    assert len(runs[0]) == 12
    assert {name for name, *_ in runs[0]} == {"h-1", "h-2", "h-3"}
    assert [name for name, *_ in runs[0]] == ["h-1", "h-2", "h-3"] * 4  # turns, in priority order


def test_a_shared_budget_caps_the_answers_of_all_annotators(tmp_path: Path, sqlite_url: str) -> None:
    with _served(tmp_path / "a", sqlite_url) as served:
        for order in ("round-robin", "concurrent"):
            before = len(_rows(served))
            tokens = provision_annotators(served.store, 3, prefix=f"budget-{order}")
            simulate(served.url, tokens, ScoreOracle(lambda task, gid, text: 0.5), total_tasks=4, order=order)
            assert len(_rows(served)) - before == 4


def test_simulated_seconds_parse_and_refuse() -> None:
    secs = SimulatedSeconds.parse("compare=25, edit=60")
    assert secs.per_kind == {"compare": 25.0, "edit": 60.0}
    for bad in ("compare", "compare=fast", "=3", "edit=-1", "edit=inf", "compare=25,,"):
        with pytest.raises(SimulationError, match="--seconds"):
            SimulatedSeconds.parse(bad)


@pytest.mark.slow
def test_follow_waits_for_the_round_and_reports_simulated_seconds(tmp_path: Path, db_url: str) -> None:
    """`simulate-annotators --follow` started before any round exists waits for round 1's tasks,
    labels them, and stops once round 1 is done; `--seconds` prices its time for the ROI report."""
    import os
    import subprocess
    import sys
    import time

    from roundkit import make_project

    from prefloop.feedback.server import create_app, serve_in_background
    from prefloop.feedback.store.models import Task
    from prefloop.training.roi import round_cost
    from prefloop.training.rounds import Orchestrator

    project = make_project(tmp_path / "p", db_url, prompts=4, patch={"training": {"wait": {"deadline_minutes": 10}}})
    try:
        with serve_in_background(create_app(project)) as url:
            sim = subprocess.Popen(
                [sys.executable, "-m", "prefloop.cli", "simulate-annotators", "--n", "2", "--accuracy", "1.0", "--oracle",
                 "support-desk", "--seconds", "compare=25,edit=60", "--follow", "--until-round", "1", "--poll", "0.2",
                 "--deadline", "15", "--url", url, "-p", str(project.root)],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "COLUMNS": "200"})
            try:
                deadline = time.monotonic() + 120
                while not _annotator_exists(project, "sim-2"):  # it is up (and finds an empty queue)
                    assert sim.poll() is None, sim.communicate()
                    assert time.monotonic() < deadline
                    time.sleep(0.1)
                orch = Orchestrator(project, progress=False)
                done = orch.run_next()  # round 0, then round 1, which waits for the humans
                stdout, stderr = sim.communicate(timeout=120)
            finally:
                if sim.poll() is None:
                    sim.kill()
        assert sim.returncode == 0, stderr
        assert [r.state for r in done] == ["done", "done"]
        one = done[1]
        with project.store.session() as s:
            kinds = dict(s.execute(select(Task.id, Task.kind).where(Task.round_id == one.id)).all())
        rows = [r for r in _rows_of(project) if r[0].startswith("sim-") and r[1] in kinds]
        assert len(rows) >= 6  # the 6 waited-for tasks at least (the queue's other open tasks may follow)
        for _, task_id, _, seconds in rows:
            base = {"compare": 25, "edit": 60}[kinds[task_id]]
            assert 0.7 * base <= seconds <= 1.3 * base
        cost = round_cost(project.store, one.id, project.config.cost, seconds=one.control.seconds)
        assert cost.human_seconds == pytest.approx(sum(r[3] for r in rows))
        assert cost.human_cost == pytest.approx(cost.human_seconds * project.config.cost.human_hourly_rate / 3600)
        assert str(len(rows)) in stdout
    finally:
        project.store.dispose()


def _annotator_exists(project: Any, name: str) -> bool:
    with project.store.session() as s:
        return s.scalar(select(Annotator.id).where(Annotator.name == name)) is not None


def _rows_of(project: Any) -> list[tuple[str, int, dict, float]]:
    with project.store.session() as s:
        return [tuple(r) for r in s.execute(
            select(Annotator.name, Annotation.task_id, Annotation.value, Annotation.duration_s)
            .join(Annotator, Annotator.id == Annotation.annotator_id).order_by(Annotation.task_id))]
