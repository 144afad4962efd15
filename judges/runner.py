"""Run a judge over a round's tasks and write its verdicts to the store, as annotations on the
same tasks humans answer.

Each task's kind says how a judge answers it (:mod:`prefloop.kinds`): compare → a pairwise
verdict; rate → a pointwise score mapped onto the task's scale; rank → pairwise verdicts over
every pair, ordered by wins; edit → not at all. The verdicts of each chunk of tasks become
annotations of a judge annotator named after the judge, with its identity, tokens, cost and
latency, written in one batch (:mod:`.verdicts`). Verdicts come from the cache when the same
judge has seen the same inputs, so a re-run costs nothing. Finally task priorities are updated
for active selection (:mod:`prefloop.judges.selection`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import select, update

from prefloop.errors import ConfigError, NotFoundError
from prefloop.kinds import KINDS, PAIRWISE, POINTWISE

from . import verdicts
from .base import Judge, PairwiseJudge, PairwiseVerdict, PointwiseJudge, PointwiseVerdict
from .verdicts import JudgedTask

if TYPE_CHECKING:
    from prefloop.feedback.store.db import Store


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


def _load_tasks(store: Any, round_id: int | None, task_ids: list[int] | None, include_cancelled: bool = False) -> list[JudgedTask]:
    from prefloop.feedback.passages import first_prompted, generation_metas
    from prefloop.feedback.store.models import Generation, Task, TaskStatus

    with store.session() as s:
        q = select(Task)
        if not include_cancelled:
            q = q.where(Task.status != TaskStatus.CANCELLED.value)
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
        metas = generation_metas(s, gen_ids)  # a judge sees the prompt as the model saw it (passages placed)
        return [
            JudgedTask(
                t.id, t.kind, [int(g) for g in t.generation_ids], [texts[int(g)] for g in t.generation_ids],
                first_prompted(t.prompt.as_messages(), (metas.get(int(g)) for g in t.generation_ids)), t.prompt.reference,
                (t.scale_min, t.scale_max) if t.scale_min is not None else None,
                bool((t.meta or {}).get("allow_tie", True)),
            )
            for t in tasks
        ]


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
    include_cancelled: bool = False,
    console: Any = None,
) -> JudgeRunStats:
    """Judge every task of a round (all tasks when ``round_id`` is None) that this judge can answer.
    The bar (on ``console``, default stderr) is transient: the caller prints what was done.

    ``include_cancelled``: also the tasks taken off the human queue (a round's unlabelled tasks after
    its wait), whose judge labels still become training pairs."""
    from rich.console import Console
    from rich.markup import escape
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from prefloop.feedback.store.models import Annotation, Annotator, AnnotatorKind

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
    tasks = _load_tasks(store, round_id, task_ids, include_cancelled)
    can: dict[str | None, bool] = {PAIRWISE: isinstance(judge, PairwiseJudge), POINTWISE: isinstance(judge, PointwiseJudge)}
    runnable = []
    for t in tasks:
        if t.kind in KINDS and can.get(KINDS[t.kind].judge_mode):
            runnable.append(t)
        else:
            stats.unsupported += 1
    stats.tasks = len(tasks)
    with store.session() as s:
        prior = dict(s.execute(select(Annotation.task_id, Annotation.status).where(Annotation.annotator_id == annotator_id)).all())

    touched: list[int] = []
    own = console is None  # a caller's console (a round) has already diverted the libraries' output: leave stdout alone
    console = console or Console(stderr=True)
    columns = [TextColumn(f"judge {escape(judge.name)}"), BarColumn(), MofNCompleteColumn(), TextColumn("tasks"), TimeElapsedColumn(),
               TimeRemainingColumn()]
    with Progress(*columns, console=console, disable=not (progress and console.is_terminal), transient=True, redirect_stdout=own,
                  redirect_stderr=own) as bar:
        job = bar.add_task("judging", total=len(runnable))
        for start in range(0, len(runnable), chunk_size):
            chunk = runnable[start : start + chunk_size]
            # Every pairwise and every pointwise question of the chunk goes to the judge in one batched call each.
            pair_q, score_q = verdicts.questions(chunk)
            pair_v: list[PairwiseVerdict] = []
            score_v: list[PointwiseVerdict] = []
            if pair_q:
                assert isinstance(judge, PairwiseJudge)  # runnable holds only the kinds this judge can do
                pair_v = judge.compare(
                    [t.prompt for t, _, _ in pair_q], [t.texts[i] for t, i, _ in pair_q], [t.texts[j] for t, _, j in pair_q],
                    references=[t.reference for t, _, _ in pair_q],
                )
            if score_q:
                assert isinstance(judge, PointwiseJudge)  # runnable holds only the kinds this judge can do
                score_v = judge.score([t.prompt for t in score_q], [t.texts[0] for t in score_q], references=[t.reference for t in score_q])
            for v in [*pair_v, *score_v]:
                stats.verdicts += 1
                if v.cached:
                    stats.cached += 1
                else:
                    stats.prompt_tokens += v.prompt_tokens
                    stats.completion_tokens += v.completion_tokens
                    stats.cost += v.cost
            records = verdicts.answers(chunk, pair_q, pair_v, score_q, score_v)
            touched += verdicts.record(queue, annotator_id, identity, records, prior, stats)
            bar.advance(job, len(chunk))
    if touched:
        from .selection import update_priorities

        stats.priorities_changed = update_priorities(store, task_ids=touched, weights=project.config.judges.selection,
                                                   trust=project.config.judges.trust)
    stats.seconds = time.perf_counter() - t_start
    return stats
