"""``prefloop simulate-annotators``: scripted humans against a running annotation server."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from prefloop.errors import PrefloopError
from prefloop.feedback.cli import ProjectOpt

console = Console()
err = Console(stderr=True)


def load_human_oracle(spec: str, project: Any) -> Any:
    """What the scripted humans know, from ``--oracle``: ``store`` (generation ``oracle_score`` /
    prompt reference), a task (a shipped name or ``package.module:NAME`` of a TaskSpec), or
    ``package.module:factory`` (called with the project, returns an oracle)."""
    from .humans import store_oracle
    from .task import TaskSpec, load_task, resolve, takes_no_arguments

    if spec == "store":
        return store_oracle(project.store)
    obj = resolve(spec, "oracle")
    if isinstance(obj, TaskSpec) or takes_no_arguments(obj) or not callable(obj):
        return load_task(spec).human_oracle(project.store)
    return obj(project)


def _round_done(project: Any, number: int) -> bool:
    from sqlalchemy import select

    from prefloop.feedback.store.models import Round

    with project.store.session() as s:
        return s.scalar(select(Round.state).where(Round.number == number)) == "done"


def cmd_simulate(
    n: int = typer.Option(8, "--n", min=1, max=512, help="How many annotators run at once."),
    accuracy: float = typer.Option(0.8, min=0.0, max=1.0, help="Chance that an answer matches the oracle."),
    url: Optional[str] = typer.Option(None, help="Server URL (default: http://server.host:server.port)."),
    oracle: str = typer.Option("store", help="'store' (generation meta oracle_score / prompt reference), a task "
                                             "(support-desk, arithmetic, package.module:TASK) or package.module:factory."),
    max_tasks: Optional[int] = typer.Option(None, help="Stop each annotator after this many answers."),
    think: float = typer.Option(0.0, help="Mean seconds each annotator thinks per task (exponential)."),
    skip_rate: float = typer.Option(0.0, min=0.0, max=1.0, help="Chance of skipping a task."),
    seed: int = typer.Option(0, help="Random seed: an annotator's answer to a task depends on (seed, annotator, task) only."),
    prefix: str = typer.Option("sim", help="Annotators are named PREFIX-1 … PREFIX-N."),
    round_number: Optional[int] = typer.Option(None, "--round", "-r", help="Only tasks of this round."),
    seconds: Optional[str] = typer.Option(None, help="Simulated time on task per kind, e.g. compare=25,edit=60,rate=12,rank=40 "
                                                     "(±30 %); the ROI report prices it. Default: the real time taken."),
    order: str = typer.Option("concurrent", help="concurrent (annotators race) or round-robin (one request at a time, "
                                                 "in turn: who answers what is reproducible)."),
    follow: bool = typer.Option(False, "--follow", help="When the queue is empty, wait for new tasks instead of stopping."),
    until_round: Optional[int] = typer.Option(None, "--until-round", help="With --follow: stop once this round is done "
                                                                          "(the loop's last round)."),
    deadline: Optional[float] = typer.Option(None, min=0.0, help="With --follow: stop after this many minutes."),
    poll: float = typer.Option(2.0, min=0.05, help="With --follow: seconds between looks at an empty queue."),
    project_dir: Optional[Path] = ProjectOpt,
) -> None:
    """Run N scripted annotators against a running server, over HTTP, until the queue is empty
    (with --follow: until --until-round is done, or --deadline)."""
    from prefloop.feedback.cli import open_project, round_id

    from .humans import ORDERS, SimulatedSeconds, provision_annotators, simulate

    if order not in ORDERS:
        raise PrefloopError(f"--order {order!r}: use one of {', '.join(ORDERS)}")
    if (until_round is not None or deadline is not None) and not follow:
        raise PrefloopError("--until-round and --deadline only apply with --follow")
    time_on_task = SimulatedSeconds.parse(seconds) if seconds else None
    project = open_project(project_dir)
    url = url or f"http://{project.config.server.host}:{project.config.server.port}"
    rid = round_id(project, round_number) if round_number is not None else None
    human_oracle = load_human_oracle(oracle, project)
    stop_at = time.monotonic() + deadline * 60 if deadline is not None else None

    def keep_following() -> bool:
        if stop_at is not None and time.monotonic() >= stop_at:
            return False
        return until_round is None or not _round_done(project, until_round)

    tokens = provision_annotators(project.store, n, prefix=prefix)
    waiting = f", following the queue{f' until round {until_round} is done' if until_round is not None else ''}" if follow else ""
    err.print(f"{n} scripted annotator(s) of accuracy {accuracy:.0%} labelling at {url}{waiting} …")
    report = simulate(url, tokens, human_oracle, accuracy=accuracy, seed=seed, max_tasks=max_tasks, think_s=think,
                      skip_rate=skip_rate, round_id=rid, seconds=time_on_task, order=order,
                      follow=keep_following if follow else None, poll_s=poll)
    table = Table("submissions", "skips", "retries", "per second", "p50 ms", "p99 ms", "oracle agreement", title="scripted annotators")
    acc = report.accuracy
    table.add_row(
        str(report.submissions), str(report.skips), str(report.retries), f"{report.per_second:.1f}",
        _ms(report.latency(50)), _ms(report.latency(99)), "–" if acc is None else f"{acc:.0%}",
    )
    console.print(table)


def _ms(seconds: float) -> str:
    return "–" if math.isnan(seconds) else f"{seconds * 1000:.1f}"


def register(app: typer.Typer) -> None:
    app.command("simulate-annotators")(cmd_simulate)
