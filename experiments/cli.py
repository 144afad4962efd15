"""``prefloop experiment run SPEC.yaml`` and ``prefloop experiment report DIR``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from prefloop.verbosity import QuietOpt, VerboseOpt, verbosity

experiment_app = typer.Typer(help="Arms × seeds × rounds on one task: one table, one plot, one wandb group.",
                             no_args_is_help=True)


@experiment_app.command("run")
def cmd_run(
    spec: Path = typer.Argument(..., help="The experiment spec (YAML)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Experiment folder (default: prefloop-experiments/NAME)."),
    jobs: Optional[int] = typer.Option(None, "--jobs", "-j", min=1, max=64, help="Runs at once, one process each (default: the spec's)."),
    quiet: bool = QuietOpt,
    verbose: bool = VerboseOpt,
) -> None:
    """Run (or finish) every (arm, seed) of SPEC, then print the table and write the results."""
    shown = verbosity(quiet, verbose)
    from .api import run_experiment

    run_experiment(spec, out, jobs=jobs, quiet=not shown.progress)


@experiment_app.command("report")
def cmd_report(directory: Path = typer.Argument(..., help="An experiment folder.")) -> None:
    """Re-aggregate the finished rounds of DIR's runs: tables, results.json/CSV, experiment.png, wandb."""
    from .api import report

    report(directory)


def register(app: typer.Typer) -> None:
    app.add_typer(experiment_app, name="experiment")
