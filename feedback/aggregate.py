"""From annotations to preferences and SFT targets, with provenance.

Rules (DESIGN.md): human labels outrank judge labels whenever a task has both; several humans
are combined by majority, and a split vote stays visible as a disagreement rather than being
resolved silently; judges alone count only position-consistent verdicts. Ratings of several
outputs of one prompt yield a pair (best vs worst) when the gap reaches a margin.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import TypeVar

from sqlalchemy import case, select

from prefloop.feedback.config import AggregationConfig
from prefloop.kinds import KINDS, TaskKind
from prefloop.kinds.base import (
    HUMAN,
    JUDGE,
    MIXED,
    Label,
    Preference,
    SFTTarget,
    TaskLabels,
)
from prefloop.kinds.compare import COMPARE, Outcome

from .store.db import Store, rows_by_id
from .store.models import Annotation, AnnotationStatus, Annotator, AnnotatorKind, Generation, Round, Task

T = TypeVar("T", Preference, SFTTarget)

__all__ = [
    "HUMAN", "JUDGE", "MIXED", "Label", "Outcome", "Preference", "SFTTarget", "TaskLabels", "compare_outcome",
    "load_task_labels", "preferences", "sft_targets",
]


def load_task_labels(store: Store, *, round_ids: list[int] | None = None, kinds: list[str] | None = None,
                     exclude_judges: Collection[tuple[str, str]] = ()) -> list[TaskLabels]:
    """Every task (optionally of some rounds / kinds) with its submitted annotations.

    ``exclude_judges``: (judge, task kind) pairs whose labels are left out (untrusted judges:
    :mod:`prefloop.judges.trust`). Reads without taking SQLite's write lock (:meth:`Store.read`):
    annotators keep working.
    """
    def only_these(q):  # noqa: ANN001, ANN202 - the same filter on tasks and on their annotations
        if round_ids is not None:
            q = q.where(Task.round_id.in_(round_ids))
        if kinds is not None:
            q = q.where(Task.kind.in_(kinds))
        return q

    with store.read() as conn:
        q = select(Task.id, Task.kind, Task.prompt_id, Task.round_id, Task.generation_ids, Task.scale_min, Task.scale_max, Round.number).outerjoin(
            Round, Round.id == Task.round_id
        )
        tasks = {
            r.id: TaskLabels(
                r.id, r.kind, r.prompt_id, r.round_id, r.number, [int(g) for g in r.generation_ids],
                (r.scale_min, r.scale_max) if r.scale_min is not None else None,
            )
            for r in conn.execute(only_these(q).order_by(Task.id))
        }
        if not tasks:
            return []
        judge_meta = case((Annotator.kind == AnnotatorKind.JUDGE.value, Annotation.meta))  # humans' is never read
        aq = (
            select(Annotation.task_id, Annotation.value, Annotation.confidence, judge_meta.label("meta"), Annotator.name,
                   Annotator.kind)
            .join(Annotator, Annotator.id == Annotation.annotator_id)
            .where(Annotation.status == AnnotationStatus.SUBMITTED.value)
            .order_by(Annotation.id)
        )
        if round_ids is not None or kinds is not None:
            aq = only_these(aq.join(Task, Task.id == Annotation.task_id))
        for r in conn.execute(aq):
            if r.task_id in tasks:
                if exclude_judges and r.kind == AnnotatorKind.JUDGE.value and (r.name, tasks[r.task_id].kind) in exclude_judges:
                    continue
                consistent = (r.meta or {}).get("consistent", True) is not False
                tasks[r.task_id].labels.append(Label(r.name, r.kind, r.value, r.confidence, consistent))
    return list(tasks.values())


def compare_outcome(t: TaskLabels) -> Outcome:
    """Majority of humans if any answered, else the position-consistent judges' vote (see :mod:`prefloop.kinds.compare`)."""
    return COMPARE.outcome(t)


def _each_kind(tasks: list[TaskLabels], make: Callable[[TaskKind, list[TaskLabels]], list[T]]) -> list[T]:
    """``make`` over each registered kind's tasks: the products of kinds that answer task by task
    in task order, then those of kinds that combine their tasks (ratings), in registry order.
    Tasks of a kind no longer registered (a plug-in not loaded) yield nothing."""
    groups: dict[str, list[TaskLabels]] = {}
    for t in tasks:
        groups.setdefault(t.kind, []).append(t)
    single: list[T] = []
    combined: list[T] = []
    for name, kind in KINDS.items():
        if name in groups:
            (combined if kind.combines_tasks else single).extend(make(kind, groups[name]))
    return sorted(single, key=lambda p: p.task_ids[0]) + combined


def preferences(store: Store, *, round_ids: list[int] | None = None, config: AggregationConfig | None = None,
                exclude_judges: Collection[tuple[str, str]] = ()) -> list[Preference]:
    """All preference pairs, each kind's own way: compare majorities, ranking tops/bottoms, rating
    best-vs-worst (without the labels of ``exclude_judges``: (judge, task kind) pairs)."""
    cfg = config or AggregationConfig()
    tasks = load_task_labels(store, round_ids=round_ids, exclude_judges=exclude_judges)
    return _each_kind(tasks, lambda kind, ts: kind.preferences(ts, cfg) if kind.makes_pairs else [])


def sft_targets(store: Store, *, round_ids: list[int] | None = None, config: AggregationConfig | None = None,
                exclude_judges: Collection[tuple[str, str]] = ()) -> list[SFTTarget]:
    """Each kind's SFT targets: human (or judge) edits, outputs whose mean rating reaches ``sft_min_rating``."""
    cfg = config or AggregationConfig()
    tasks = load_task_labels(store, round_ids=round_ids, kinds=[k.name for k in KINDS.values() if k.makes_sft],
                             exclude_judges=exclude_judges)
    return _each_kind(tasks, lambda kind, ts: kind.sft_targets(ts, cfg, lambda ids: _texts(store, ids)))


def _texts(store: Store, generation_ids: list[int]) -> dict[int, str]:
    """The texts of these outputs, read without taking SQLite's write lock."""
    with store.read() as conn:
        return dict(rows_by_id(conn, (Generation.id, Generation.text), generation_ids))
