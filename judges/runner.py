"""Run a judge over a round's tasks and write its verdicts to the store, as annotations on the
same tasks humans answer.

compare → pairwise verdict; rate → pointwise score mapped onto the task's scale; rank → pairwise
verdicts over every pair, ordered by wins. Each verdict is recorded through ``Queue.record`` by a
judge annotator named after the judge, with its identity, tokens, cost and latency. A failed
verdict is recorded too (status ``skipped``, the reason in ``rationale`` and ``meta.error``), but
never replaces an earlier successful one. Verdicts come from the cache when the same judge has
seen the same inputs, so a re-run costs nothing. Finally task priorities are updated for active
selection (:mod:`prefloop.judges.selection`).
"""

from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import select, update

from prefloop.errors import ConfigError, NotFoundError

from .base import Judge, PairwiseJudge, PairwiseVerdict, PointwiseJudge, PointwiseVerdict

if TYPE_CHECKING:
    from prefloop.feedback.db import Store


@dataclass
class JudgeRunStats:
    judge: str
    tasks: int = 0  # tasks considered
    recorded: int = 0  # tasks with a verdict written (new or changed)
    unchanged: int = 0  # tasks whose stored verdict was already this one
    failed: int = 0  # tasks the judge could not judge (recorded with the reason)
    unsupported: int = 0  # tasks of a kind this judge cannot answer (edit, or a missing capability)
    verdicts: int = 0  # single judgements made this run (a rank task makes several)
    cached: int = 0  # judgements served from the cache
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0  # spent this run (cached verdicts cost nothing again)
    seconds: float = 0.0
    priorities_changed: int = 0
    errors: list[str] = field(default_factory=list)  # the first few failure reasons

    @property
    def pairs_per_second(self) -> float:
        return self.verdicts / self.seconds if self.seconds else 0.0


@dataclass
class _Task:
    id: int
    kind: str
    gens: list[int]
    texts: list[str]
    prompt: list[dict[str, str]]
    reference: str | None
    scale: tuple[int, int] | None
    allow_tie: bool


def _load_tasks(store: Any, round_id: int | None, task_ids: list[int] | None) -> list[_Task]:
    from prefloop.feedback.models import Generation, Task, TaskStatus

    with store.session() as s:
        q = select(Task).where(Task.status != TaskStatus.CANCELLED.value)
        if round_id is not None:
            q = q.where(Task.round_id == round_id)
        if task_ids is not None:
            q = q.where(Task.id.in_(task_ids))
        tasks = list(s.scalars(q.order_by(Task.id)))
        gen_ids = sorted({int(g) for t in tasks for g in t.generation_ids})
        texts: dict[int, str] = {}
        for i in range(0, len(gen_ids), 500):
            chunk = gen_ids[i : i + 500]
            texts.update(dict(s.execute(select(Generation.id, Generation.text).where(Generation.id.in_(chunk))).all()))
        return [
            _Task(
                t.id, t.kind, [int(g) for g in t.generation_ids], [texts[int(g)] for g in t.generation_ids],
                t.prompt.as_messages(), t.prompt.reference,
                (t.scale_min, t.scale_max) if t.scale_min is not None else None,
                bool((t.meta or {}).get("allow_tie", True)),
            )
            for t in tasks
        ]


def _pair_meta(v: PairwiseVerdict) -> dict[str, Any]:
    m: dict[str, Any] = {"winner": v.winner, "consistent": v.consistent, "prob_a": v.prob_a if v.ok else None, "cached": v.cached}
    if v.orders is not None:
        m["orders"] = list(v.orders)
    if v.disagreement is not None:
        m["disagreement"] = v.disagreement
    if v.members:
        m["members"] = v.members
    return m


def _spend(vs: list[PairwiseVerdict] | list[PointwiseVerdict]) -> dict[str, Any]:
    return {
        "prompt_tokens": sum(v.prompt_tokens for v in vs),
        "completion_tokens": sum(v.completion_tokens for v in vs),
        "cost": sum(v.cost for v in vs),
        "duration_s": sum(v.latency_s for v in vs),
    }


def _round_half_up(x: float) -> int:
    return int(math.floor(x + 0.5))


def compare_record(t: _Task, v: PairwiseVerdict) -> dict[str, Any]:
    """The annotation for a compare task: the winner's generation id or "tie" (an inconsistent verdict is a tie)."""
    meta = {**_pair_meta(v), "positions": {"A": t.gens[0], "B": t.gens[1]}}
    rec: dict[str, Any] = {"meta": meta, "rationale": v.rationale, "confidence": v.confidence, **_spend([v])}
    if not v.ok:
        return {**rec, "status": "skipped", "value": None, "rationale": v.error, "meta": {**meta, "error": v.error}, "confidence": None}
    winner = v.winner
    if winner == "tie" and not t.allow_tie:
        if not v.consistent:
            reason = "inconsistent under position swap, and this task allows no tie"
            return {**rec, "status": "skipped", "value": None, "rationale": reason, "meta": {**meta, "error": reason}}
        winner = "A" if v.prob_a >= 0.5 else "B"  # the judge leaned this way, with low confidence
    choice: int | str = "tie" if winner == "tie" else t.gens[0 if winner == "A" else 1]
    return {**rec, "status": "submitted", "value": {"choice": choice}}


def rate_record(t: _Task, v: PointwiseVerdict) -> dict[str, Any]:
    """The annotation for a rate task: the judge's score mapped onto the task's scale, rounded."""
    rec: dict[str, Any] = {"rationale": v.rationale, "confidence": v.confidence, **_spend([v])}
    if not v.ok:
        return {**rec, "status": "skipped", "value": None, "rationale": v.error, "meta": {"error": v.error, "cached": v.cached}}
    lo, hi = t.scale or (1, 5)
    jlo, jhi = v.scale
    score = lo + (float(v.score) - jlo) / (jhi - jlo) * (hi - lo)
    meta: dict[str, Any] = {"score": score, "judge_score": v.score, "judge_scale": list(v.scale), "cached": v.cached}
    if v.distribution:
        meta["distribution"] = v.distribution
    if v.disagreement is not None:
        meta["disagreement"] = v.disagreement
    if v.members:
        meta["members"] = v.members
    rating = min(hi, max(lo, _round_half_up(score)))
    return {**rec, "status": "submitted", "value": {"rating": rating}, "meta": meta}


def rank_record(t: _Task, pairs: list[tuple[int, int]], vs: list[PairwiseVerdict]) -> dict[str, Any]:
    """The annotation for a rank task: outputs ordered by pairwise wins (a tie is half a win)."""
    pair_meta = [{"a": t.gens[i], "b": t.gens[j], **_pair_meta(v)} for (i, j), v in zip(pairs, vs, strict=True)]
    rec: dict[str, Any] = {**_spend(vs), "rationale": None}
    failed = [v.error for v in vs if not v.ok]
    if failed:
        return {**rec, "status": "skipped", "value": None, "rationale": "; ".join(failed), "confidence": None,
                "meta": {"error": "; ".join(failed), "pairs": pair_meta}}
    wins = {g: 0.0 for g in t.gens}
    strength = {g: 0.0 for g in t.gens}
    for (i, j), v in zip(pairs, vs, strict=True):
        a, b = t.gens[i], t.gens[j]
        wins[a] += 1.0 if v.winner == "A" else 0.5 if v.winner == "tie" else 0.0
        wins[b] += 1.0 if v.winner == "B" else 0.5 if v.winner == "tie" else 0.0
        strength[a] += v.prob_a
        strength[b] += 1.0 - v.prob_a
    ranking = sorted(t.gens, key=lambda g: (-wins[g], -strength[g], t.gens.index(g)))
    return {
        **rec, "status": "submitted", "value": {"ranking": ranking},
        "confidence": sum(v.confidence for v in vs) / len(vs),
        "meta": {"consistent": all(v.consistent for v in vs), "pairs": pair_meta, "cached": all(v.cached for v in vs)},
    }


def use_store_cache(judge: Judge, store: Store) -> None:
    """Give a judge without a cache the store's verdict cache, so that re-judging (a resumed round,
    evaluation) costs nothing; a judge that already has a cache keeps it."""
    from .cache import StoreCache

    if getattr(judge, "cache", None) is None:
        if hasattr(judge, "set_cache"):
            judge.set_cache(StoreCache(store))
        else:
            judge.cache = StoreCache(store)


_ensure_cache = use_store_cache  # the old private name, kept for one release


def judge_round(
    project: Any,
    judge: Judge | str,
    round_id: int | None = None,
    *,
    progress: bool = True,
    chunk_size: int = 64,
    task_ids: list[int] | None = None,
) -> JudgeRunStats:
    """Judge every task of a round (all tasks when ``round_id`` is None) that this judge can answer."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from prefloop.feedback.models import Annotation, Annotator, AnnotatorKind

    if isinstance(judge, str):
        from . import judges_from_config

        judges = judges_from_config(project.config, base_dir=project.root)
        if judge not in judges:
            raise NotFoundError(f"no judge named {judge!r} in the config", hint=f"configured judges: {', '.join(judges) or 'none (add judges.panel)'}")
        judge = judges[judge]
    store, queue = project.store, project.queue
    use_store_cache(judge, store)
    judge.check()  # e.g. a missing API key: fail before any work
    identity = judge.identity
    stats = JudgeRunStats(judge.name)
    t_start = time.perf_counter()
    try:
        annotator_id = queue.ensure_annotator(judge.name, kind=AnnotatorKind.JUDGE.value, meta=identity)
    except Exception as exc:  # a human already uses this name
        raise ConfigError(f"cannot record judge {judge.name!r}: {exc}", hint="give the judge another name") from None

    with store.session() as s:  # the annotator shows the judge's current identity; each verdict keeps its own
        s.execute(update(Annotator).where(Annotator.id == annotator_id).values(meta=identity))
    tasks = _load_tasks(store, round_id, task_ids)
    can_pair, can_score = isinstance(judge, PairwiseJudge), isinstance(judge, PointwiseJudge)
    runnable = []
    for t in tasks:
        if (t.kind in ("compare", "rank") and can_pair) or (t.kind == "rate" and can_score):
            runnable.append(t)
        else:
            stats.unsupported += 1
    stats.tasks = len(tasks)
    with store.session() as s:
        prior = dict(s.execute(select(Annotation.task_id, Annotation.status).where(Annotation.annotator_id == annotator_id)).all())

    touched: list[int] = []
    console = Console(stderr=True)
    columns = [TextColumn(f"judge {judge.name}"), BarColumn(), MofNCompleteColumn(), TextColumn("tasks"), TimeElapsedColumn(), TimeRemainingColumn()]
    with Progress(*columns, console=console, disable=not progress, transient=False) as bar:
        job = bar.add_task("judging", total=len(runnable))
        for start in range(0, len(runnable), chunk_size):
            chunk = runnable[start : start + chunk_size]
            # Gather every pairwise and pointwise question of the chunk into one batched call each.
            pair_q: list[tuple[_Task, int, int]] = []
            score_q: list[_Task] = []
            for t in chunk:
                if t.kind == "compare":
                    pair_q.append((t, 0, 1))
                elif t.kind == "rank":
                    pair_q.extend((t, i, j) for i, j in itertools.combinations(range(len(t.gens)), 2))
                else:
                    score_q.append(t)
            pair_v = judge.compare(
                [t.prompt for t, _, _ in pair_q], [t.texts[i] for t, i, _ in pair_q], [t.texts[j] for t, _, j in pair_q],
                references=[t.reference for t, _, _ in pair_q],
            ) if pair_q else []
            score_v = judge.score([t.prompt for t in score_q], [t.texts[0] for t in score_q], references=[t.reference for t in score_q]) if score_q else []
            for v in [*pair_v, *score_v]:
                stats.verdicts += 1
                if v.cached:
                    stats.cached += 1
                else:
                    stats.prompt_tokens += v.prompt_tokens
                    stats.completion_tokens += v.completion_tokens
                    stats.cost += v.cost
            records: list[tuple[_Task, dict[str, Any]]] = []
            by_task: dict[int, list[tuple[tuple[int, int], PairwiseVerdict]]] = {}
            for (t, i, j), v in zip(pair_q, pair_v, strict=True):
                by_task.setdefault(t.id, []).append(((i, j), v))
            for t in chunk:
                if t.kind == "compare":
                    records.append((t, compare_record(t, by_task[t.id][0][1])))
                elif t.kind == "rank":
                    got = by_task[t.id]
                    records.append((t, rank_record(t, [p for p, _ in got], [v for _, v in got])))
            for t, v in zip(score_q, score_v, strict=True):
                records.append((t, rate_record(t, v)))
            with store.session() as s:
                for t, rec in records:
                    failed = rec["status"] == "skipped" and "error" in rec["meta"]
                    if failed:
                        stats.failed += 1
                        if len(stats.errors) < 5:
                            stats.errors.append(f"task {t.id}: {rec['meta']['error']}")
                        if prior.get(t.id) == "submitted":
                            continue  # never replace a good verdict with a failure
                    meta = {**identity, **rec["meta"]}
                    _, changed = queue.record(
                        annotator_id, t.id, rec["value"], status=rec["status"], rationale=rec["rationale"],
                        confidence=rec["confidence"], duration_s=rec["duration_s"], prompt_tokens=rec["prompt_tokens"],
                        completion_tokens=rec["completion_tokens"], cost=rec["cost"], meta=meta, session=s,
                    )
                    if changed:
                        stats.recorded += 1
                    elif not failed:
                        stats.unchanged += 1
                    touched.append(t.id)
            bar.advance(job, len(chunk))
    if touched:
        from .selection import update_priorities

        stats.priorities_changed = update_priorities(store, task_ids=touched, weights=project.config.judges.selection,
                                                   trust=project.config.judges.trust)
    stats.seconds = time.perf_counter() - t_start
    return stats
