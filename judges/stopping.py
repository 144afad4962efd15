"""Cost-aware stopping: ask a person about a task only while the label is worth its price.

The rule (off by default, ``judges.stopping``): the value of a human label on task t is

    P(the label changes t's training pair) × pair_value

and it is worth asking while that value is at least the price of one human label,
``cost.human_hourly_rate`` × the mean seconds of this project's human labels (or
``label_seconds`` before any) / 3600. P(change) comes from judge trust (:mod:`.trust`), per verdict
on the task: where a measured judge chose a side, the share of its choices humans overturned;
where it said tie, the share of its ties humans decided. The lowest over the task's measured
verdicts is taken (the best-checked judge settles it); a task without a measured verdict has
P(change) = 1 (nothing is known: a person decides it). The round's wait leaves out the waited-for
tasks below the price, and stops once every task still short of labels is below it; the decision
is recorded in the round's ``metrics.stopping``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select

from .config import StoppingConfig
from .trust import UNMEASURED, TrustTable, is_tie

RULE = "ask while P(label changes the pair) x pair_value >= price of a human label"


def p_change(kind: str, verdicts: list[dict[str, Any]], trust: TrustTable) -> float:
    """P(a human label changes the task's training pair), from its judges' measured error rates."""
    ps = []
    for v in verdicts:
        t = trust.get((v["judge"], kind))
        if v["status"] != "submitted" or t is None or t.status == UNMEASURED:
            continue
        tie_agree = t.ties - t.blind_ties
        if is_tie(kind, v):
            if t.ties:
                ps.append(t.blind_ties / t.ties)
        elif t.n - t.ties:
            ps.append(1.0 - (t.agree - tie_agree) / (t.n - t.ties))
    return min(ps) if ps else 1.0


def label_price(store: Any, hourly_rate: float, cfg: StoppingConfig) -> float:
    """The price of one human label: the hourly rate × the mean observed seconds per label."""
    from prefloop.feedback.store.models import Annotation, AnnotationStatus, Annotator, AnnotatorKind

    with store.session() as s:
        mean = s.scalar(select(func.avg(Annotation.duration_s)).join(Annotator, Annotator.id == Annotation.annotator_id)
                        .where(Annotator.kind == AnnotatorKind.HUMAN.value, Annotation.duration_s.is_not(None),
                               Annotation.status == AnnotationStatus.SUBMITTED.value))
    seconds = float(mean) if mean else cfg.label_seconds
    return hourly_rate * seconds / 3600.0


@dataclass
class Decision:
    worth: list[int]  # the tasks still worth a human label, in the given order
    below: list[int]  # the tasks whose next label is worth less than its price
    price: float
    values: dict[int, float]  # task → expected value of its next human label

    def to_metrics(self, **extra: Any) -> dict[str, Any]:
        return {"rule": RULE, "price": round(self.price, 6), "asked": len(self.worth), "not_asked": len(self.below),
                "max_value_not_asked": round(max((self.values[t] for t in self.below), default=0.0), 6), **extra}


def decide(store: Any, judges_config: Any, hourly_rate: float, task_ids: list[int]) -> Decision:
    """Split ``task_ids`` into those worth a human label and those below its price."""
    from prefloop.feedback.store.models import Annotation, Annotator, AnnotatorKind, Task

    from .trust import measure_trust

    cfg: StoppingConfig = judges_config.stopping
    trust = measure_trust(store, judges_config.trust)
    price = label_price(store, hourly_rate, cfg)
    with store.session() as s:
        kinds = dict(s.execute(select(Task.id, Task.kind).where(Task.id.in_(task_ids))).all())
        verdicts: dict[int, list[dict[str, Any]]] = {t: [] for t in task_ids}
        for r in s.execute(select(Annotation.task_id, Annotation.status, Annotation.value, Annotation.meta, Annotator.name)
                           .join(Annotator, Annotator.id == Annotation.annotator_id)
                           .where(Annotator.kind == AnnotatorKind.JUDGE.value, Annotation.task_id.in_(task_ids))):
            verdicts[r.task_id].append({"judge": r.name, "status": r.status, "value": r.value or {}, "meta": r.meta or {}})
    values = {t: p_change(kinds[t], verdicts[t], trust) * cfg.pair_value for t in task_ids if t in kinds}
    worth = [t for t in task_ids if t in values and values[t] >= price]
    return Decision(worth, [t for t in task_ids if t in values and values[t] < price], price, values)
