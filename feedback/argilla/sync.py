"""Waiting on Argilla (the round orchestrator with ``queue.human_queue = "argilla"``): push, then
pull until every task of the round has its k human labels."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select

from ..store.models import Annotation, AnnotationStatus, Annotator, AnnotatorKind, Task, TaskStatus
from .pull import PullReport, pull
from .push import push

if TYPE_CHECKING:
    from prefloop.project import Project


@dataclass
class SyncResult:
    done: bool  # every task of the round has its k human labels
    pulls: int
    waiting_tasks: list[int]  # tasks still short of labels when it returned
    elapsed_s: float
    last_pull: PullReport | None = None


def tasks_short_of_labels(project: Project, round_id: int, min_submitted: int | None = None) -> list[int]:
    """Ids of the round's human tasks with fewer than k submitted human labels (k: the task's overlap)."""
    with project.store.session() as s:
        counts = (
            select(Annotation.task_id, func.count().label("n"))
            .join(Annotator, Annotator.id == Annotation.annotator_id)
            .where(Annotator.kind == AnnotatorKind.HUMAN.value, Annotation.status == AnnotationStatus.SUBMITTED.value)
            .group_by(Annotation.task_id)
            .subquery()
        )
        rows = s.execute(
            select(Task.id, Task.overlap, func.coalesce(counts.c.n, 0))
            .outerjoin(counts, counts.c.task_id == Task.id)
            .where(Task.round_id == round_id, Task.overlap > 0, Task.status != TaskStatus.CANCELLED.value)
            .order_by(Task.id)
        ).all()
    return [tid for tid, k, n in rows if n < (min_submitted if min_submitted is not None else k)]


def sync_until(
    project: Project,
    round_id: int,
    min_submitted: int | None = None,
    timeout: float | None = None,
    *,
    interval: float | None = None,
    push_first: bool = True,
    on_pull: Any = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> SyncResult:
    """Push the round's tasks, then pull every ``interval`` seconds until each task has
    ``min_submitted`` (default: its overlap) human labels or ``timeout`` seconds pass.

    Defaults come from the ``argilla`` config section. ``on_pull(report, waiting)`` is called
    after each pull (progress display). Returns whether the round is fully labelled.
    ``clock`` and ``sleep`` let a test run the waiting on a simulated clock.
    """
    cfg = project.config.argilla
    timeout = cfg.wait_timeout_s if timeout is None else timeout
    interval = cfg.poll_interval_s if interval is None else interval
    start = clock()
    if push_first:
        push(project, round_id=round_id)
    pulls = 0
    while True:
        report = pull(project, round_id=round_id)
        pulls += 1
        waiting = tasks_short_of_labels(project, round_id, min_submitted)
        if on_pull is not None:
            on_pull(report, waiting)
        elapsed = clock() - start
        if not waiting or elapsed + interval > timeout:
            return SyncResult(not waiting, pulls, waiting, elapsed, report)
        sleep(interval)
