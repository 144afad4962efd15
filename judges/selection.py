"""Active selection: from judge verdicts, how much a human label on a task would teach us.

Humans are the scarce resource, so the queue serves first the tasks where the judges cannot
settle the answer. Per task, from its judge annotations (each signal in [0, 1]):

- ``disagreement``: judges (or a panel's members) disagree — 1 − the top choice's share, or the
  spread of their scores;
- ``inconsistency``: the share of verdicts that flipped under position swap;
- ``low_margin``: how close P(A better) is to 0.5 (1 − |2·P(A) − 1|), or 1 − a score's confidence;
- ``failure``: the share of judges that could not answer.

The task's priority becomes its original priority (kept in ``meta.base_priority``) plus the
weighted sum (weights in ``judges.selection``); the signals are kept in ``meta.selection``.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from sqlalchemy import select

from prefloop.kinds import KINDS, get_kind

from .config import SelectionConfig


def signals(kind: str, verdicts: list[dict[str, Any]], scale: tuple[int, int] | None) -> dict[str, float]:
    """The four signals of one task from its judge annotations (``status``, ``value``, ``meta``,
    ``confidence``), as the task's kind reads them (:meth:`prefloop.kinds.TaskKind.signals`)."""
    return get_kind(kind).signals(verdicts, scale)


def judge_priority(sig: dict[str, float], weights: SelectionConfig) -> float:
    return sum(getattr(weights, k) * v for k, v in sig.items())


def update_priorities(
    store: Any,
    *,
    task_ids: list[int] | None = None,
    round_id: int | None = None,
    weights: SelectionConfig | None = None,
) -> int:
    """Recompute the priority of tasks with judge annotations; returns how many changed."""
    from prefloop.feedback.models import Annotation, Annotator, AnnotatorKind, Task

    weights = weights or SelectionConfig()
    changed = 0
    with store.session() as s:
        q = (
            select(Annotation.task_id, Annotation.status, Annotation.value, Annotation.meta, Annotation.confidence)
            .join(Annotator, Annotator.id == Annotation.annotator_id)
            .where(Annotator.kind == AnnotatorKind.JUDGE.value)
        )
        tq = select(Task)
        if task_ids is not None:
            q = q.where(Annotation.task_id.in_(task_ids))
            tq = tq.where(Task.id.in_(task_ids))
        if round_id is not None:
            q = q.join(Task, Task.id == Annotation.task_id).where(Task.round_id == round_id)
            tq = tq.where(Task.round_id == round_id)
        by_task: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for r in s.execute(q):
            by_task[r.task_id].append({"status": r.status, "value": r.value or {}, "meta": r.meta or {}, "confidence": r.confidence})
        for task in s.scalars(tq.where(Task.id.in_(list(by_task)))):
            if task.kind not in KINDS:
                continue  # a plug-in kind that is not loaded: its priority stays
            scale = (task.scale_min, task.scale_max) if task.scale_min is not None else None
            sig = signals(task.kind, by_task[task.id], scale)
            if not sig:
                continue
            score = round(judge_priority(sig, weights), 6)
            meta = dict(task.meta or {})
            base = float(meta.get("base_priority", task.priority))
            new_meta = {**meta, "base_priority": base, "selection": {**{k: round(v, 4) for k, v in sig.items()}, "score": score}}
            if task.priority != base + score or meta != new_meta:
                task.priority = base + score
                task.meta = new_meta
                changed += 1
    return changed
