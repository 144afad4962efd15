"""From a round's candidates to queue tasks: compare pairs, and rate/edit tasks for humans.

Two strategies (``training.pairing.strategy``):

- ``all_pairs``: every pair of a prompt's candidates, up to ``max_pairs_per_prompt`` (a seeded
  sample), as compare tasks; candidates with the same text count once (nobody can prefer an
  answer over itself, and the queue refuses such a task);
- ``best_vs_worst``: every candidate becomes a rate task, a pointwise judge scores them all, and
  the best-scored candidate is compared with the worst (a prompt whose candidates all score the
  same gives no pair).

Each step writes all of its tasks in one transaction and is skipped when its tasks exist, so a
round killed at any point neither loses nor duplicates tasks. Task priorities then come from the
judges' verdicts (active selection, :mod:`prefloop.judges.selection`).
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from prefloop.errors import ConfigError

from .config import TrainingConfig

PURPOSE_TRAIN = "train"
PURPOSE_SCORE = "score"


@dataclass
class PairingStats:
    compare: int = 0
    rate: int = 0
    edit: int = 0
    skipped_prompts: int = 0  # best_vs_worst: every candidate scored the same
    created: bool = False  # False when the tasks already existed (a resumed round)


def _count_tasks(store: Any, round_id: int, purpose: str) -> int:
    """How many of the round's tasks a pairing step made (its tasks carry ``meta.purpose``)."""
    from prefloop.feedback.store.models import Task

    with store.session() as s:
        metas = s.scalars(select(Task.meta).where(Task.round_id == round_id)).all()
    return sum(1 for m in metas if (m or {}).get("purpose") == purpose)


def human_overlap(project: Any, cfg: TrainingConfig) -> int:
    return project.config.queue.overlap if cfg.pairing.overlap is None else cfg.pairing.overlap


def _texts(store: Any, ids: list[int]) -> dict[int, str]:
    from prefloop.feedback.store.models import Generation

    with store.session() as s:
        return dict(s.execute(select(Generation.id, Generation.text).where(Generation.id.in_(ids))).tuples().all())


def _pairs(ids: list[int], cap: int, rng: random.Random) -> list[tuple[int, int]]:
    pairs = list(itertools.combinations(ids, 2))
    if len(pairs) > cap:
        pairs = rng.sample(pairs, cap)
    # Show each pair in a random order: position must carry no signal for humans either.
    return [(a, b) if rng.random() < 0.5 else (b, a) for a, b in pairs]


def create_score_tasks(project: Any, cfg: TrainingConfig, round_id: int, candidates: dict[int, list[int]]) -> int:
    """best_vs_worst, step 1: a rate task per candidate (humans rate them too when ``rate_tasks``)."""
    if _count_tasks(project.store, round_id, PURPOSE_SCORE):
        return 0
    overlap = human_overlap(project, cfg) if cfg.pairing.rate_tasks else 0
    queue = project.queue
    n = 0
    with project.store.session() as s:
        for _, gens in sorted(candidates.items()):
            for g in gens:
                queue.add_task("rate", [g], overlap=overlap, round_id=round_id, meta={"purpose": PURPOSE_SCORE}, session=s)
                n += 1
    return n


def scorer_name(project: Any, cfg: TrainingConfig, judges: dict[str, Any]) -> str:
    from prefloop.judges.base import PointwiseJudge

    name = cfg.pairing.scorer
    if name is not None:
        if name not in judges:
            raise ConfigError(f"training.pairing.scorer {name!r} is not a judge in judges.panel", hint=f"known judges: {sorted(judges)}")
        if not isinstance(judges[name], PointwiseJudge):
            raise ConfigError(f"training.pairing.scorer {name!r} cannot score single outputs", hint="pick a judge with a pointwise mode")
        return name
    for n, j in judges.items():
        if isinstance(j, PointwiseJudge):
            return n
    raise ConfigError("pairing strategy best_vs_worst needs a pointwise judge, and judges.panel has none",
                      hint="add a judge to judges.panel, or use strategy: all_pairs")


def judge_scores(store: Any, round_id: int, judge_name: str) -> dict[int, float]:
    """generation id → the judge's score (unrounded when the judge reported it) on the round's rate tasks."""
    from prefloop.feedback.store.models import Annotation, AnnotationStatus, Annotator, Task
    from prefloop.kinds import RATE

    with store.session() as s:
        rows = s.execute(
            select(Task.generation_ids, Annotation.value, Annotation.meta)
            .join(Annotation, Annotation.task_id == Task.id)
            .join(Annotator, Annotator.id == Annotation.annotator_id)
            .where(Task.round_id == round_id, Task.kind == RATE.name, Annotator.name == judge_name,
                   Annotation.status == AnnotationStatus.SUBMITTED.value)
        ).all()
    return {int(r.generation_ids[0]): float((r.meta or {}).get("score", r.value["rating"])) for r in rows}


def create_pair_tasks(
    project: Any, cfg: TrainingConfig, round_id: int, round_number: int, candidates: dict[int, list[int]],
    scores: dict[int, float] | None = None,
) -> PairingStats:
    """Compare tasks (and human rate/edit tasks) for the round, all in one transaction."""
    stats = PairingStats()
    if _count_tasks(project.store, round_id, PURPOSE_TRAIN):
        return stats
    p = cfg.pairing
    overlap = human_overlap(project, cfg)
    queue = project.queue
    texts = _texts(project.store, [g for gens in candidates.values() for g in gens])
    with project.store.session() as s:
        for prompt_id, gens in sorted(candidates.items()):
            rng = random.Random(f"{cfg.generation.seed}:{round_number}:{prompt_id}")
            if p.strategy == "best_vs_worst":
                assert scores is not None
                scored = [g for g in gens if g in scores]
                ranked = sorted(scored, key=lambda g: (-scores[g], g))
                if len(ranked) >= 2 and scores[ranked[0]] > scores[ranked[-1]] and texts[ranked[0]] != texts[ranked[-1]]:
                    a, b = ranked[0], ranked[-1]
                    pair = [(a, b) if rng.random() < 0.5 else (b, a)]
                else:
                    pair = []
                    stats.skipped_prompts += 1
                edit_candidates = ranked or gens
            else:
                first: dict[str, int] = {}
                for g in gens:
                    first.setdefault(texts[g], g)  # of candidates with equal texts, the first
                distinct = list(first.values())
                pair = _pairs(distinct, p.max_pairs_per_prompt, rng) if len(distinct) >= 2 else []
                edit_candidates = gens
                if p.rate_tasks:
                    for g in gens:
                        queue.add_task("rate", [g], overlap=overlap, round_id=round_id, meta={"purpose": PURPOSE_TRAIN}, session=s)
                        stats.rate += 1
            for a, b in pair:
                queue.add_task("compare", [a, b], overlap=overlap, round_id=round_id,
                               meta={"purpose": PURPOSE_TRAIN, "pairing": p.strategy}, session=s)
                stats.compare += 1
            for g in edit_candidates[: p.edit_tasks_per_prompt]:
                queue.add_task("edit", [g], overlap=max(1, overlap), round_id=round_id, priority=p.edit_priority,
                               meta={"purpose": PURPOSE_TRAIN}, session=s)
                stats.edit += 1
    stats.created = True
    return stats
