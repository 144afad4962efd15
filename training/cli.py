"""``prefloop round run|resume|status``, ``prefloop report`` and ``prefloop demo``.

Heavy libraries (torch, transformers, trl, wandb) load inside the commands, so ``prefloop --help``
stays fast.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer

from prefloop.verbosity import QuietOpt, VerboseOpt, verbosity

ProjectOpt = typer.Option(None, "--project", "-p", help="Project directory (default: the nearest one with prefloop.yaml).")
round_app = typer.Typer(help="Rounds of the loop: generate, label, train, evaluate — resumable.", no_args_is_help=True)


def _project(path: Optional[Path]):  # noqa: ANN202 - prefloop.project.Project
    from prefloop.project import Project

    return Project.find(path)


def _threads() -> None:
    """One thread per process unless asked otherwise: on small CPUs OpenMP spinning costs 10–50×."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


def _print_report(project, plot_path: Optional[Path] = None) -> Path:  # noqa: ANN001
    from rich.console import Console

    from .report import collect, plot, roi_table, rounds_table

    console = Console()
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console = Console(width=140)  # a log file or a pipe: don't squeeze the tables into 80 columns
    rows = collect(project)
    currency = project.config.cost.currency
    console.print(rounds_table(rows, currency))
    console.print(roi_table(rows, currency))
    out = plot(rows, plot_path or project.runs_dir / "report.png", currency)
    console.print(f"plot: {out}")
    return out


@round_app.command("run")
def round_run(
    project_dir: Optional[Path] = ProjectOpt,
    count: int = typer.Option(1, "--count", "-n", min=1, help="How many rounds to run, one after another."),
    quiet: bool = QuietOpt,
    verbose: bool = VerboseOpt,
) -> None:
    """Run the next round (the first call also evaluates the base model as round 0)."""
    shown = verbosity(quiet, verbose)
    _threads()
    from .rounds import Orchestrator

    project = _project(project_dir)
    orch = Orchestrator(project, progress=shown.progress)
    for _ in range(count):
        for r in orch.run_next():
            typer.echo(f"round {r.number}: {r.state}")
    _print_report(project)


@round_app.command("resume")
def round_resume(
    number: Optional[int] = typer.Argument(None, help="Round number (default: the unfinished one)."),
    project_dir: Optional[Path] = ProjectOpt,
    quiet: bool = QuietOpt,
    verbose: bool = VerboseOpt,
) -> None:
    """Finish an interrupted round from where it stopped (nothing done is redone)."""
    shown = verbosity(quiet, verbose)
    _threads()
    from .rounds import Orchestrator

    project = _project(project_dir)
    r = Orchestrator(project, progress=shown.progress).resume(number)
    typer.echo(f"round {r.number}: {r.state}")


@round_app.command("status")
def round_status(project_dir: Optional[Path] = ProjectOpt) -> None:
    """Each round's state, adapter, and the last error of an interrupted one."""
    from rich.console import Console
    from sqlalchemy import select

    from prefloop.feedback.models import Round
    from prefloop.tables import fit, table

    project = _project(project_dir)
    t = table("rounds", [("round", "number"), ("state", "text"), ("adapter", "text"), ("updated (UTC)", "id"), ("error", "text")])
    with project.store.session() as s:
        for r in s.scalars(select(Round).order_by(Round.number)):
            t.add_row(str(r.number), r.state, r.adapter_path or "–", f"{r.updated_at:%Y-%m-%d %H:%M}", _cut(r.error or "", 160))
    Console().print(fit(t))


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def cmd_report(
    project_dir: Optional[Path] = ProjectOpt,
    plot_path: Optional[Path] = typer.Option(None, "--plot", help="Where to write the PNG (default: runs/report.png)."),
) -> None:
    """The per-round table (oracle score, win rates, labels by source, cost), the ROI table and a PNG plot."""
    _print_report(_project(project_dir), plot_path)


def cmd_demo(
    directory: Path = typer.Argument(Path("prefloop-demo"), help="Demo project directory (created, or continued)."),
    rounds: int = typer.Option(3, min=1, help="Rounds after the baseline."),
    quiet: bool = QuietOpt,
    verbose: bool = VerboseOpt,
) -> None:
    """3 rounds on CPU, offline: SmolLM2-135M learns a support desk's style guide from scripted humans and a judge."""
    os.environ.setdefault("WANDB_MODE", "offline")
    shown = verbosity(quiet, verbose)
    _threads()
    from rich.console import Console

    from .demo import run_demo

    console = Console(stderr=True)
    project, seconds = run_demo(directory, rounds=rounds, progress=shown.progress, console=console)
    _print_report(project)
    typer.echo(f"demo finished in {seconds / 60:.1f} min; wandb runs: {project.runs_dir / 'wandb'} (upload with `wandb sync`)")


def register(app: typer.Typer) -> None:
    app.add_typer(round_app, name="round")
    app.command("report")(cmd_report)
    app.command("demo")(cmd_demo)
