"""``prefloop round run|resume|status``, ``prefloop report`` and ``prefloop demo``.

Heavy libraries (torch, transformers, trl, wandb) load inside the commands, so ``prefloop --help``
stays fast.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer

ProjectOpt = typer.Option(None, "--project", "-p", help="Project directory (default: the nearest one with prefloop.yaml).")
round_app = typer.Typer(help="Rounds of the loop: generate, label, train, evaluate — resumable.", no_args_is_help=True)


def _quiet_libraries() -> None:
    """Keep library chatter (deprecation notes, HF hub hints) out of the round's output."""
    import warnings

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module="transformers")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
    except ImportError:
        pass


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

    from .report import collect, plot, roi_table, rounds_table, stopping_lines, trust_table

    console = Console()
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console = Console(width=140)  # a log file or a pipe: don't squeeze the tables into 80 columns
    rows = collect(project)
    currency = project.config.cost.currency
    console.print(rounds_table(rows, currency))
    console.print(roi_table(rows, currency))
    if any(r.trust for r in rows):
        console.print(trust_table(rows))
    for line in stopping_lines(rows):
        console.print(line, markup=False, highlight=False)
    out = plot(rows, plot_path or project.runs_dir / "report.png", currency)
    console.print(f"plot: {out}")
    return out


@round_app.command("run")
def round_run(
    project_dir: Optional[Path] = ProjectOpt,
    count: int = typer.Option(1, "--count", "-n", min=1, help="How many rounds to run, one after another."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Run the next round (the first call also evaluates the base model as round 0)."""
    _quiet_libraries()
    _threads()
    from .rounds import Orchestrator

    project = _project(project_dir)
    orch = Orchestrator(project, progress=not quiet)
    for _ in range(count):
        for r in orch.run_next():
            typer.echo(f"round {r.number}: {r.state}")
    _print_report(project)


@round_app.command("resume")
def round_resume(
    number: Optional[int] = typer.Argument(None, help="Round number (default: the unfinished one)."),
    project_dir: Optional[Path] = ProjectOpt,
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Finish an interrupted round from where it stopped (nothing done is redone)."""
    _quiet_libraries()
    _threads()
    from .rounds import Orchestrator

    project = _project(project_dir)
    r = Orchestrator(project, progress=not quiet).resume(number)
    typer.echo(f"round {r.number}: {r.state}")


@round_app.command("status")
def round_status(project_dir: Optional[Path] = ProjectOpt) -> None:
    """Each round's state, adapter, and the last error of an interrupted one."""
    from rich.console import Console
    from rich.table import Table
    from sqlalchemy import select

    from prefloop.feedback.models import Round

    project = _project(project_dir)
    table = Table(title="rounds")
    for col in ("round", "state", "adapter", "updated", "error"):
        table.add_column(col)
    with project.store.session() as s:
        for r in s.scalars(select(Round).order_by(Round.number)):
            table.add_row(str(r.number), r.state, r.adapter_path or "–", r.updated_at.isoformat(timespec="seconds"),
                          (r.error or "")[:80])
    Console().print(table)


def cmd_report(
    project_dir: Optional[Path] = ProjectOpt,
    plot_path: Optional[Path] = typer.Option(None, "--plot", help="Where to write the PNG (default: runs/report.png)."),
) -> None:
    """The per-round table (oracle score, win rates, labels by source, cost), the ROI table and a PNG plot."""
    _print_report(_project(project_dir), plot_path)


def cmd_demo(
    directory: Path = typer.Argument(Path("prefloop-demo"), help="Demo project directory (created, or continued)."),
    rounds: int = typer.Option(3, min=1, help="Rounds after the baseline."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """3 rounds on CPU, offline: SmolLM2-135M learns a support desk's style guide from scripted humans and a judge."""
    os.environ.setdefault("WANDB_MODE", "offline")
    _quiet_libraries()
    _threads()
    from rich.console import Console

    from .demo import run_demo

    console = Console(stderr=True)
    project, seconds = run_demo(directory, rounds=rounds, progress=not quiet, console=console)
    _print_report(project)
    typer.echo(f"demo finished in {seconds / 60:.1f} min; wandb runs: {project.runs_dir / 'wandb'} (upload with `wandb sync`)")


def register(app: typer.Typer) -> None:
    app.add_typer(round_app, name="round")
    app.command("report")(cmd_report)
    app.command("demo")(cmd_demo)
