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

import statistics
from collections import Counter, defaultdict
from typing import Any

from sqlalchemy import select

from .config import SelectionConfig


def signals(kind: str, verdicts: list[dict[str, Any]], scale: tuple[int, int] | None) -> dict[str, float]:
    """The four signals of one task from its judge annotations (``status``, ``value``, ``meta``, ``confidence``)."""
    if not verdicts:
        return {}
    ok = [v for v in verdicts if v["status"] == "submitted"]
    failed = [v for v in verdicts if v["status"] != "submitted" and (v["meta"] or {}).get("error")]
    # A panel's members count as verdicts of their own for position flips.
    flags = []
    for v in verdicts:
        members = (v["meta"] or {}).get("members") or {}
        if members and kind != "rate":
            flags += [m.get("consistent") for m in members.values() if m.get("error") is None]
        else:
            flags.append((v["meta"] or {}).get("consistent"))
    out = {
        "failure": len(failed) / len(verdicts),
        "inconsistency": sum(f is False for f in flags) / len(flags) if kind != "rate" and flags else 0.0,
        "disagreement": 0.0,
        "low_margin": 0.0,
    }
    panel = [float(v["meta"]["disagreement"]) for v in ok if (v["meta"] or {}).get("disagreement") is not None]
    if kind == "compare":
        choices = [str(v["value"].get("choice")) for v in ok]
        if len(choices) >= 2:
            out["disagreement"] = 1.0 - Counter(choices).most_common(1)[0][1] / len(choices)
        margins = [1.0 - abs(2.0 * float(v["meta"]["prob_a"]) - 1.0) for v in ok if (v["meta"] or {}).get("prob_a") is not None]
        if margins:
            out["low_margin"] = statistics.fmean(margins)
    elif kind == "rate":
        lo, hi = scale or (1, 5)
        unit = [(float((v["meta"] or {}).get("score", v["value"].get("rating"))) - lo) / (hi - lo) for v in ok]
        if len(unit) >= 2:
            out["disagreement"] = min(1.0, 2.0 * statistics.pstdev(unit))
        confs = [float(v["confidence"]) for v in ok if v["confidence"] is not None]
        if confs:
            out["low_margin"] = 1.0 - statistics.fmean(confs)
    elif kind == "rank":
        tops = [str(v["value"]["ranking"][0]) for v in ok if v["value"].get("ranking")]
        if len(tops) >= 2:
            out["disagreement"] = 1.0 - Counter(tops).most_common(1)[0][1] / len(tops)
        margins = [
            1.0 - abs(2.0 * float(p["prob_a"]) - 1.0)
            for v in ok for p in (v["meta"] or {}).get("pairs", []) if p.get("prob_a") is not None
        ]
        if margins:
            out["low_margin"] = statistics.fmean(margins)
    if panel:
        out["disagreement"] = max(out["disagreement"], statistics.fmean(panel))
    return out


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
