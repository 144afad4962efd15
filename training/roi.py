"""What a round cost, by source: human time, judge tokens, compute time.

Every label carries its cost: a human annotation its ``duration_s`` (× the configured hourly
rate, unless it carries an explicit ``cost``), a judge annotation the ``cost`` its judge computed
from tokens × price. Compute is the round's machine time (generation, judging with local models,
training, evaluation — everything but waiting for people) × ``cost.compute_hourly_rate``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import select

from prefloop.config import CostConfig
from prefloop.feedback.store.db import Store
from prefloop.feedback.store.models import Annotation, AnnotationStatus, Annotator, AnnotatorKind, Task
from prefloop.text import finite_or_none

#: round states whose wall time is machine time (waiting for humans is not).
COMPUTE_STATES = ("generating", "judging", "reward_model", "building_datasets", "training", "evaluating")


@dataclass
class RoundCost:
    human_labels: int = 0
    judge_labels: int = 0
    human_seconds: float = 0.0
    human_cost: float = 0.0
    judge_cost: float = 0.0
    judge_tokens: int = 0
    compute_seconds: float = 0.0
    compute_cost: float = 0.0

    @property
    def total(self) -> float:
        return self.human_cost + self.judge_cost + self.compute_cost

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "total": self.total}


def round_cost(store: Store, round_id: int, cost_config: CostConfig, *, seconds: Mapping[str, float],
               eval_judge_cost: float = 0.0) -> RoundCost:
    """Labels and spend of one round: its tasks' annotations, what its evaluation's judge spent
    (``eval_judge_cost``), and its machine time (``seconds`` per state, from the round state)."""
    out = RoundCost()
    with store.session() as s:
        rows = s.execute(
            select(Annotator.kind, Annotation.status, Annotation.duration_s, Annotation.cost,
                   Annotation.prompt_tokens, Annotation.completion_tokens)
            .join(Annotator, Annotator.id == Annotation.annotator_id)
            .join(Task, Task.id == Annotation.task_id)
            .where(Task.round_id == round_id)
        ).all()
    per_second = cost_config.human_hourly_rate / 3600.0
    for r in rows:
        submitted = r.status == AnnotationStatus.SUBMITTED.value
        # A float column may hold NaN (PostgreSQL stores it): an unknown time or cost counts as none.
        duration, spent = finite_or_none(r.duration_s), finite_or_none(r.cost)
        if r.kind == AnnotatorKind.HUMAN.value:
            out.human_labels += int(submitted)
            out.human_seconds += float(duration or 0.0)
            out.human_cost += float(spent) if spent is not None else float(duration or 0.0) * per_second
        else:
            out.judge_labels += int(submitted)
            out.judge_cost += float(spent or 0.0)
            out.judge_tokens += int(r.prompt_tokens or 0) + int(r.completion_tokens or 0)
    out.judge_cost += float(eval_judge_cost or 0.0)
    out.compute_seconds = sum(float(seconds.get(k, 0.0)) for k in COMPUTE_STATES)
    out.compute_cost = out.compute_seconds * cost_config.compute_hourly_rate / 3600.0
    return out


def cost_per_point(cost: float, win_rate: float | None) -> float | None:
    """What one point of win rate above 50 % (against the previous round) cost; None without a gain."""
    if win_rate is None:
        return None
    points = 100.0 * (win_rate - 0.5)
    return cost / points if points > 0 else None
