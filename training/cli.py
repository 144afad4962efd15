"""``prefloop round run|resume|status``, ``prefloop report``, ``prefloop compare`` and ``prefloop demo``.

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
    quiet: bool = QuietOpt,
    verbose: bool = VerboseOpt,
) -> None:
    """Run the next round (the first call also evaluates the base model as round 0)."""
    shown = verbosity(quiet, verbose)
    _threads()
    from .rounds import Orchestrator

    project = _project(project_dir)
    orch = Orchestrator(project, progress=shown.progress, verbose=shown.verbose)
    for _ in range(count):
        orch.run_next()  # each round prints its lines as it goes, its last one when it is done
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
    r = Orchestrator(project, progress=shown.progress, verbose=shown.verbose).resume(number)
    typer.echo(f"round {r.number}: {r.state}")  # the result (stdout), after the round's own lines


@round_app.command("status")
def round_status(project_dir: Optional[Path] = ProjectOpt) -> None:
    """Each round's state, adapter, and the last error of an interrupted one."""
    from rich.console import Console
    from sqlalchemy import select

    from prefloop.feedback.store.models import Round
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
    directory: Optional[Path] = typer.Argument(None, help="Demo project directory (created, or continued; default "
                                               "prefloop-demo, or prefloop-demo-rag with --rag)."),
    rounds: int = typer.Option(3, min=1, help="Rounds after the baseline."),
    rag: bool = typer.Option(False, "--rag", help="The knowledge demo: replies must state Acme's policies; retrieval "
                             "in the loop, then `compare` of base, base+RAG, fine-tuned and fine-tuned+RAG."),
    quiet: bool = QuietOpt,
    verbose: bool = VerboseOpt,
) -> None:
    """3 rounds on CPU, offline: SmolLM2-135M learns a support desk's style guide from scripted humans and a judge."""
    os.environ.setdefault("WANDB_MODE", "offline")
    shown = verbosity(quiet, verbose)
    _threads()
    from rich.console import Console

    console = Console(stderr=True)
    if rag:
        from .demo_rag import run_rag_demo

        project, result, seconds = run_rag_demo(directory or Path("prefloop-demo-rag"), rounds=rounds, progress=shown.progress,
                                                console=console, verbose=shown.verbose)
        _print_report(project)
        print_compare(result, project)
    else:
        from .demo import run_demo

        project, seconds = run_demo(directory or Path("prefloop-demo"), rounds=rounds, progress=shown.progress, console=console,
                                    verbose=shown.verbose)
        _print_report(project)
    typer.echo(f"demo finished in {seconds / 60:.1f} min; wandb runs: {project.runs_dir / 'wandb'} (upload with `wandb sync`)")


def _int_list(text: Optional[str], what: str) -> Optional[list[int]]:
    if text is None:
        return None
    try:
        return [int(x) for x in text.replace(" ", "").split(",") if x]
    except ValueError:
        raise typer.BadParameter(f"{what} must be whole numbers separated by commas, e.g. 0,1,2") from None


def print_compare(result, project, console=None) -> None:  # noqa: ANN001
    """The tables, the PNG and the wandb run of a comparison (what ``prefloop compare`` shows)."""
    from rich.console import Console

    from .compare.display import arms_table, break_even_table, log_wandb, plot

    console = console or Console()
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console = Console(width=180)  # a log file or a pipe: don't squeeze the tables into 80 columns
    console.print(arms_table(result))
    console.print(break_even_table(result))
    png = plot(result, result.path.with_suffix(".png"))
    run = log_wandb(result, project)
    console.print(f"results: {result.path}\nplot: {png}" + (f"\nwandb run: {run}" if run else ""))


def cmd_compare(
    round_number: Optional[int] = typer.Option(None, "--round", "-r", help="The fine-tuned round (default: the last finished one)."),
    seeds: Optional[str] = typer.Option(None, "--seeds", help="Sampling seeds, comma-separated (default: training.generation.seed)."),
    samples: Optional[int] = typer.Option(None, "--samples", "-k", min=1, help="Answers per prompt and seed (default: evaluation.samples_per_prompt)."),
    arms: str = typer.Option("base,base+rag,ft,ft+rag", "--arms", help="Arms to compare, comma-separated (base is required)."),
    project_dir: Optional[Path] = ProjectOpt,
    quiet: bool = QuietOpt,
    verbose: bool = VerboseOpt,
) -> None:
    """Base, base+RAG, fine-tuned and fine-tuned+RAG on the eval prompts: quality with intervals, latency, tokens, cost, break-even."""
    os.environ.setdefault("WANDB_MODE", "offline")
    shown = verbosity(quiet, verbose)
    _threads()
    from .compare import run_compare

    project = _project(project_dir)
    result = run_compare(project, round_number=round_number, seeds=_int_list(seeds, "--seeds"), samples=samples,
                         arms=[a.strip() for a in arms.split(",") if a.strip()], progress=shown.progress)
    print_compare(result, project)


def register(app: typer.Typer) -> None:
    app.add_typer(round_app, name="round")
    app.command("report")(cmd_report)
    app.command("demo")(cmd_demo)
    app.command("compare")(cmd_compare)
