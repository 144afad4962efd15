"""waiting: give people time to label the round's top tasks, on the built-in queue or in Argilla.

The waited-for tasks and the start time are stored in the round state when the wait first
starts, so a resumed round waits for the same tasks and its deadline does not restart. While
people label, every ``judges.selection.recompute_every`` new human labels recompute the open
tasks' priorities (the server does the same as submits arrive). With ``judges.stopping`` on, only
the tasks whose next label is worth its price are waited for, and the wait ends once none is left. Tasks
nobody labelled are then taken off the human queue (``wait.cancel_unlabelled``); the judges'
labels stand in for them.
"""

from __future__ import annotations

import time

from sqlalchemy import func, select, update

from prefloop.feedback.argilla import sync_until
from prefloop.feedback.store.models import Annotation, AnnotationStatus, Annotator, AnnotatorKind, Task, TaskStatus
from prefloop.judges.selection import human_labels, refresh_round
from prefloop.judges.stopping import decide

from .context import RoundContext
from .state import ArgillaSync

#: "no deadline" for the Argilla wait, which takes a timeout: ten years.
FOREVER_S = 10 * 365 * 86400.0


def run(ctx: RoundContext) -> None:
    if not ctx.training.wait.enabled:
        return
    if ctx.cfg.queue.human_queue == "argilla":
        _wait_argilla(ctx)
    else:
        _wait_builtin(ctx)
    _close_unlabelled(ctx)


def _targets(ctx: RoundContext) -> tuple[list[int], int, float]:
    """The tasks humans may label (in priority order), how many of them need their labels (the
    human budget, ``wait.max_tasks``), and when the wait started — fixed the first time.

    With a budget, people label whichever tasks the queue serves them, and priorities move as
    labels arrive (``judges.selection``), so the wait counts labelled tasks, not a fixed subset."""
    st = ctx.state()
    if st.wait_tasks is not None:
        ids = list(st.wait_tasks)
        budget = st.wait_budget if st.wait_budget is not None else len(ids)
        return ids, budget, float(st.wait_started_at if st.wait_started_at is not None else time.time())
    with ctx.store.session() as s:
        ids = list(s.scalars(
            select(Task.id).where(Task.round_id == ctx.round_id, Task.overlap > 0, Task.status == TaskStatus.OPEN.value)
            .order_by(Task.priority.desc(), Task.id)
        ))
    if ctx.cfg.judges.stopping.enabled:  # only the tasks whose label is worth its price (judges.stopping)
        decision = decide(ctx.store, ctx.cfg.judges, ctx.cfg.cost.human_hourly_rate, ids)
        ids = decision.worth
        ctx.patch_metrics(stopping=decision.to_metrics(stopped=not ids, at_labels=0))
    budget = len(ids) if ctx.training.wait.max_tasks is None else min(len(ids), ctx.training.wait.max_tasks)
    started = time.time()
    ctx.patch_state(wait_tasks=ids, wait_budget=budget, wait_started_at=started)
    return ids, budget, started


def _short_of_labels(ctx: RoundContext, task_ids: list[int]) -> list[int]:
    if not task_ids:
        return []
    with ctx.store.session() as s:
        counts = dict(s.execute(
            select(Annotation.task_id, func.count()).join(Annotator, Annotator.id == Annotation.annotator_id)
            .where(Annotation.task_id.in_(task_ids), Annotator.kind == AnnotatorKind.HUMAN.value,
                   Annotation.status == AnnotationStatus.SUBMITTED.value)
            .group_by(Annotation.task_id)
        ).all())
        overlap = dict(s.execute(select(Task.id, Task.overlap).where(Task.id.in_(task_ids))).all())
    k = ctx.training.wait.labels_per_task
    return [t for t in task_ids if counts.get(t, 0) < (k if k is not None else overlap[t])]


def _wait_builtin(ctx: RoundContext) -> None:
    w = ctx.training.wait
    targets, budget, started = _targets(ctx)
    srv = ctx.cfg.server
    if ctx.humans is not None:  # scripted annotators (the demo, tests): nobody needs to be told where to go
        ctx.humans(ctx.project, ctx.round_id, targets[:budget])  # the budget's worth of labels, served by priority
    else:
        ctx.say(f"waiting for human labels on {budget} task(s): annotate at [link]http://{srv.host}:{srv.port}/[/link]"
                " (`prefloop serve`), or in the terminal with `prefloop annotate`")
    deadline = started + w.deadline_minutes * 60 if w.deadline_minutes else None
    every = ctx.cfg.judges.selection.recompute_every
    seen = human_labels(ctx.store, ctx.round_id)
    with ctx.reporter.bar(f"round {ctx.number} · human labels", "tasks", show_eta=False) as bar:
        job = bar.add_task("waiting", total=budget, info="")
        while True:
            short = _short_of_labels(ctx, targets)
            labelled = len(targets) - len(short)
            bar.update(job, completed=min(budget, labelled))
            if labelled >= budget:
                break
            now_seen = human_labels(ctx.store, ctx.round_id) if every else seen
            if now_seen - seen >= every > 0:
                seen = now_seen
                refresh_round(ctx.store, ctx.cfg.judges, ctx.round_id)  # labels arrived: the queue's order follows
                if _not_worth_asking(ctx, short, seen):
                    break
            if deadline is not None and time.time() >= deadline:
                ctx.say(f"[yellow]deadline reached[/]: {len(short)} task(s) still short of human labels; judges' labels stand in")
                break
            time.sleep(w.poll_seconds)


def _not_worth_asking(ctx: RoundContext, short: list[int], labels: int) -> bool:
    """The stopping rule (judges.stopping): True, recorded in the metrics, once no task still short
    of labels is worth the price of a human label."""
    if not ctx.cfg.judges.stopping.enabled:
        return False
    decision = decide(ctx.store, ctx.cfg.judges, ctx.cfg.cost.human_hourly_rate, short)
    if decision.worth:
        return False
    ctx.patch_metrics(stopping=decision.to_metrics(stopped=True, at_labels=labels))
    ctx.say(f"[yellow]stopping rule[/]: the next human label is worth less than its price "
            f"({ctx.cfg.cost.currency} {decision.price:.4f}) on all {len(short)} task(s) still waiting; judges' labels stand in")
    return True


def _wait_argilla(ctx: RoundContext) -> None:
    w = ctx.training.wait
    st = ctx.state()
    started = float(st.wait_started_at or time.time())
    ctx.patch_state(wait_started_at=started)
    timeout = max(0.0, started + w.deadline_minutes * 60 - time.time()) if w.deadline_minutes else FOREVER_S
    ctx.say(f"waiting for human labels in Argilla ({ctx.cfg.argilla.api_url})")
    result = sync_until(ctx.project, ctx.round_id, min_submitted=w.labels_per_task, timeout=timeout, interval=w.poll_seconds)
    ctx.patch_state(argilla=ArgillaSync(done=result.done, pulls=result.pulls, waiting=len(result.waiting_tasks)))


def _close_unlabelled(ctx: RoundContext) -> None:
    """Take the round's tasks nobody labelled off the human queue (their judge labels remain)."""
    if not ctx.training.wait.cancel_unlabelled:
        return
    with ctx.store.session() as s:
        s.execute(update(Task).where(Task.round_id == ctx.round_id, Task.status == TaskStatus.OPEN.value, Task.n_done == 0)
                  .values(status=TaskStatus.CANCELLED.value))
