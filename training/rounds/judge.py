"""judging: turn the round's candidates into queue tasks and let the configured judges label them.

``best_vs_worst`` pairing first creates a rate task per candidate and scores them with the scorer
judge; then compare (and edit/rate) tasks are created and every labelling judge answers what it
can. Task creation is skipped when the step's tasks exist and verdicts come from the judge cache,
so re-entering this state after a crash redoes nothing.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from sqlalchemy import select

from prefloop.feedback.store.models import Task
from prefloop.judges.reward_model import is_reward_model
from prefloop.judges.runner import JudgeRunStats, judge_round
from prefloop.kinds import RATE

from ..pairing import PURPOSE_SCORE, create_pair_tasks, create_score_tasks, judge_scores, scorer_name
from .context import PURPOSE_TRAIN, RoundContext


def label_judges(ctx: RoundContext) -> list[str]:
    """The judges that label the round's tasks: ``training.judges``, else the default, else the panel
    (a reward-model judge labels later, in the ``reward_model`` state)."""
    if ctx.training.judges is not None:
        return list(ctx.training.judges)
    default = ctx.cfg.judges.get(ctx.cfg.judges.default) if ctx.cfg.judges.default else None
    if default is not None and not is_reward_model(default):
        return [default.name]
    return [j.name for j in ctx.cfg.judges.panel if not is_reward_model(j)]


def _stats(st: JudgeRunStats) -> dict[str, Any]:
    return {"verdicts": st.verdicts, "cached": st.cached, "failed": st.failed, "cost": st.cost}


def run(ctx: RoundContext) -> None:
    t = ctx.training
    gens = ctx.generations(PURPOSE_TRAIN)
    candidates = {pid: [g for g, _ in items] for pid, items in gens.items()}
    judges = ctx.judges()
    stats: dict[str, Any] = {}
    scores = None
    if t.pairing.strategy == "best_vs_worst":
        scorer = scorer_name(ctx.project, t, judges)
        create_score_tasks(ctx.project, t, ctx.round_id, candidates)
        with ctx.store.session() as s:
            ids = [task.id for task in s.scalars(select(Task).where(Task.round_id == ctx.round_id, Task.kind == RATE.name))
                   if (task.meta or {}).get("purpose") == PURPOSE_SCORE]
        st = judge_round(ctx.project, judges[scorer], ctx.round_id, progress=ctx.reporter.enabled, task_ids=ids,
                         console=ctx.reporter.console)
        stats[f"scorer:{scorer}"] = _stats(st)
        scores = judge_scores(ctx.store, ctx.round_id, scorer)
    pairing = create_pair_tasks(ctx.project, t, ctx.round_id, ctx.number, candidates, scores)
    for name in label_judges(ctx):
        st = judge_round(ctx.project, judges[name], ctx.round_id, progress=ctx.reporter.enabled, console=ctx.reporter.console)
        stats[name] = {**_stats(st), "seconds": round(st.seconds, 3)}
    with ctx.store.session() as s:
        tasks = Counter(s.scalars(select(Task.kind).where(Task.round_id == ctx.round_id)))
    ctx.patch_metrics(judging=stats, tasks=dict(tasks),
                      **({"pairing_skipped_prompts": pairing.skipped_prompts} if pairing.created else {}))
