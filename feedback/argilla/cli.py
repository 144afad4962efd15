"""``prefloop argilla push|pull|wait``: use an Argilla deployment as the human queue.

The API key comes only from ``ARGILLA_API_KEY``; the URL and workspace from the ``argilla``
section of prefloop.yaml. The SDK is imported inside the package's functions: registering these
commands stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from prefloop.project import Project

from ..cli import round_id
from .pull import PullReport, pull
from .push import push
from .sync import sync_until

console = Console()
argilla_app = typer.Typer(
    help="Send the annotation queue to Argilla and bring the responses back (ARGILLA_API_KEY in the environment).",
    no_args_is_help=True,
)
ProjectOpt = typer.Option(None, "--project", "-p", help="Project directory (default: the nearest one with prefloop.yaml).")
RoundOpt = typer.Option(None, "--round", "-r", help="Only this round number (default: every round).")


def _round_id(project: Project, number: Optional[int]) -> Optional[int]:
    return None if number is None else round_id(project, number)


@argilla_app.command("push")
def cmd_push(round_number: Optional[int] = RoundOpt, project_dir: Optional[Path] = ProjectOpt) -> None:
    """Create or extend one Argilla dataset per round and task kind with the open tasks (only new ones are added)."""
    project = Project.find(project_dir)
    with console.status("pushing to Argilla…"):
        report = push(project, round_id=_round_id(project, round_number))
    if not report.datasets:
        console.print(f"nothing to push: no open task wants human labels (Argilla {report.url}, workspace {report.workspace})")
        return
    table = Table(title=f"Argilla {report.url} · workspace {report.workspace}")
    for col in ("dataset", "new dataset", "records added", "already there"):
        table.add_column(col, justify="right" if col.startswith(("records", "already")) else "left")
    for d in report.datasets:
        table.add_row(d.name, "yes" if d.created else "no", str(d.added), str(d.already_there))
    console.print(table)


@argilla_app.command("pull")
def cmd_pull(round_number: Optional[int] = RoundOpt, project_dir: Optional[Path] = ProjectOpt) -> None:
    """Import submitted responses as annotations (discarded → skip; drafts wait; an answer taken back
    to draft or deleted is withdrawn). Safe to repeat."""
    project = Project.find(project_dir)
    with console.status("pulling from Argilla…"):
        report = pull(project, round_id=_round_id(project, round_number))
    _print_pull(report)


def _print_pull(report: PullReport) -> None:
    console.print(
        f"Argilla {report.url} · workspace {report.workspace} · {len(report.datasets)} dataset(s), {report.records} record(s)",
        highlight=False,
    )
    table = Table()
    table.add_column("responses")
    table.add_column("count", justify="right")
    for label, n in (
        ("new annotations", report.created),
        ("changed (history kept)", report.updated),
        ("unchanged", report.unchanged),
        ("discarded → skips", report.skipped),
        ("withdrawn (back to draft or deleted) → skips", report.withdrawn),
        ("drafts (not imported)", report.drafts),
        ("not importable", len(report.problems)),
    ):
        table.add_row(label, str(n))
    console.print(table)
    if report.new_annotators:
        console.print("new annotators: " + ", ".join(report.new_annotators), highlight=False)
    for p in report.problems:
        console.print(f"[yellow]not imported:[/] {p}", highlight=False)


@argilla_app.command("wait")
def cmd_wait(
    round_number: int = typer.Option(..., "--round", "-r", help="The round whose tasks to wait on."),
    timeout: Optional[float] = typer.Option(None, help="Seconds to wait at most (default: argilla.wait_timeout_s)."),
    interval: Optional[float] = typer.Option(None, help="Seconds between pulls (default: argilla.poll_interval_s)."),
    project_dir: Optional[Path] = ProjectOpt,
) -> None:
    """Push the round, then pull until every task has its overlap of human labels (or the timeout)."""
    project = Project.find(project_dir)

    def show(report, waiting) -> None:  # noqa: ANN001
        console.print(f"pulled: {report.created} new, {report.updated} changed; {len(waiting)} task(s) still short of labels")

    result = sync_until(project, round_id(project, round_number), timeout=timeout, interval=interval, on_pull=show)
    if result.done:
        console.print(f"[green]round {round_number} is fully labelled[/] after {result.pulls} pull(s)")
    else:
        console.print(f"[yellow]timed out[/]: {len(result.waiting_tasks)} task(s) of round {round_number} still short of labels")
        raise typer.Exit(2)


def register(app: typer.Typer) -> None:
    app.add_typer(argilla_app, name="argilla")
