"""What a round shows a person: a transient bar while a state works, then one line per finished state.

The bars (:meth:`Reporter.bar`) vanish when their work is done; what stays on the terminal is one
short line per state, made by :func:`state_line` from what the state stored (so a resumed state
reports the same numbers), and the round's last line ends with ``done`` once the round is finished.
Training feeds its bar from TRL through :func:`training_bar` (step, loss, ETA), the libraries'
own bars being off.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from sqlalchemy import func, select

from prefloop.feedback.store.models import (
    Annotation,
    AnnotationStatus,
    Annotator,
    AnnotatorKind,
    Task,
)

if TYPE_CHECKING:
    from .context import RoundContext

#: how states are named on their line (the state machine's names are for the store).
LABELS = {"generating": "generating", "judging": "judging", "waiting": "human labels", "building_datasets": "datasets",
          "training": "training", "evaluating": "evaluating"}
WIDTH = max(len(v) for v in LABELS.values())


@dataclass
class Reporter:
    """prefloop's own progress lines and bars (silent when ``enabled`` is false); ``verbose``: the
    libraries' output is shown too (it always goes to the round's ``train.log``)."""

    console: Console
    enabled: bool = True
    verbose: bool = False

    def say(self, text: str) -> None:
        if self.enabled:
            self.console.print(text, soft_wrap=True)

    def bar(self, description: str, unit: str = "", *, show_eta: bool = True) -> Progress:
        """A transient bar: ``description``, the bar, done/total ``unit``, a free ``info`` field, elapsed, ETA.
        Library output is already diverted, so the bar does not redirect stdout/stderr itself."""
        columns: list[Any] = [TextColumn(escape(description)), BarColumn(), MofNCompleteColumn(), TextColumn(escape(unit)),
                              TextColumn("{task.fields[info]}"), TimeElapsedColumn()]
        if show_eta:
            columns.append(TimeRemainingColumn())
        shown = self.enabled and self.console.is_terminal  # a pipe or a log file gets the summary lines only
        return Progress(*columns, console=self.console, disable=not shown, transient=True,
                        redirect_stdout=False, redirect_stderr=False)


def _seconds(s: float) -> str:
    return f"{s:.1f} s" if s < 60 else f"{s / 60:.1f} min"


def _pct(value: Any) -> str:
    return "n/a" if value is None else f"{100 * float(value):.1f} %"


def state_line(ctx: RoundContext, state: str, seconds: float, *, done: bool = False) -> str:
    """``round 1 · generating    48 samples of 12 prompts · 21.3 s`` (``· done`` on the round's last line)."""
    what = _what(ctx, state)
    tail = f" · {_seconds(seconds)}" + (" · [bold green]done[/]" if done else "")
    return f"round {ctx.number} · {LABELS.get(state, state):<{WIDTH}}  {escape(what)}{tail}"


def _what(ctx: RoundContext, state: str) -> str:
    m = ctx.metrics()
    if state == "generating":
        gens = ctx.generations("train")
        return f"{sum(len(v) for v in gens.values())} samples of {len(gens)} prompts"
    if state == "judging":
        tasks = m.get("tasks") or {}
        verdicts = sum(int(v.get("verdicts", 0)) for v in (m.get("judging") or {}).values())
        kinds = ", ".join(f"{n} {k}" for k, n in sorted(tasks.items()))
        return f"{sum(tasks.values())} tasks ({kinds or 'none'}) · {verdicts} judge verdicts"
    if state == "waiting":
        if not ctx.training.wait.enabled:
            return "not waited for (training.wait.enabled is false)"
        st = ctx.state()
        wanted = st.wait_tasks or []
        budget = st.wait_budget if st.wait_budget is not None else len(wanted)
        return f"{_human_labels(ctx, wanted)} human labels on {budget} tasks"
    if state == "building_datasets":
        parts = []
        for kind, d in sorted((m.get("datasets") or {}).items(), reverse=True):  # sft, then dpo
            by = d.get("by_source") or {}
            src = " / ".join(f"{n} {s}" for s, n in sorted(by.items()))
            parts.append(f"{kind.upper()} {d.get('rows', 0)} {'pairs' if kind == 'dpo' else 'rows'}" + (f" ({src})" if src else ""))
        return " · ".join(parts) or "no datasets"
    if state == "training":
        t = m.get("training") or {}
        parts = []
        for phase, r in (t.get("phases") or {}).items():
            loss = (r.get("metrics") or {}).get("loss")
            parts.append(f"{phase} {r.get('steps', 0)} steps" + ("" if loss is None else f", loss {loss:.3f}"))
        # the notes' gist ("sft skipped", "no training data"); the whole notes are in the round's metrics
        parts += [note.split(":")[0] for note in t.get("notes") or []]
        return " · ".join(parts) or "nothing trained"
    if state == "evaluating":
        ev = m.get("eval") or {}
        if "oracle_score" not in ev and "vs_base" not in ev:
            return str(ev.get("note") or "not evaluated")
        parts = [f"oracle {ev['oracle_score']:.3f}" if ev.get("oracle_score") is not None else "oracle n/a"]
        if ctx.number > 0:
            prev, base = ev.get("vs_previous") or {}, ev.get("vs_base") or {}
            parts.append(f"win {_pct(prev.get('win_rate'))} vs r{ctx.number - 1}")
            if ctx.number > 1:
                parts.append(f"{_pct(base.get('win_rate'))} vs r0")
        return " · ".join(parts)
    return ""


def _human_labels(ctx: RoundContext, task_ids: list[int]) -> int:
    if not task_ids:
        return 0
    with ctx.store.session() as s:
        return int(s.scalar(
            select(func.count()).select_from(Annotation).join(Annotator, Annotator.id == Annotation.annotator_id)
            .join(Task, Task.id == Annotation.task_id)
            .where(Annotation.task_id.in_(task_ids), Annotator.kind == AnnotatorKind.HUMAN.value,
                   Annotation.status == AnnotationStatus.SUBMITTED.value)
        ) or 0)


@contextlib.contextmanager
def training_bar(reporter: Reporter, number: int, phase: str) -> Iterator[Any]:
    """A transient bar for one training phase and the TrainerCallback that feeds it (steps, loss, ETA)."""
    from transformers import TrainerCallback

    with reporter.bar(f"round {number} · training {phase}", "steps") as progress:
        job: TaskID = progress.add_task(phase, total=None, info="")

        class Feed(TrainerCallback):
            def on_train_begin(self, args, state, control, **kwargs):  # noqa: ANN001, ANN201
                progress.update(job, total=state.max_steps or None, completed=state.global_step)

            def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001, ANN201
                progress.update(job, completed=state.global_step)

            def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: ANN001, ANN201
                with contextlib.suppress(KeyError, TypeError, ValueError):
                    progress.update(job, info=f"loss {float((logs or {})['loss']):.3f}")

        yield Feed()
