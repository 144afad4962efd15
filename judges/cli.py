"""``prefloop judge``: list the configured judges, run one over a round, report agreement with humans."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from prefloop.verbosity import QuietOpt, VerboseOpt, verbosity

judge_app = typer.Typer(help="LLM and rule judges: run them over tasks, compare them with humans.", no_args_is_help=True)

ProjectOpt = typer.Option(None, "--project", "-p", help="Project directory (default: found from the current directory).")


def _project(path: Path | None):  # noqa: ANN202 - prefloop.project.Project
    from prefloop.project import Project

    return Project.find(path) if path is not None else Project.find()


def _round_id(project, number: int | None) -> int | None:  # noqa: ANN001
    return None if number is None else _numbered_round_id(project, number)


def _numbered_round_id(project, number: int) -> int:  # noqa: ANN001
    from sqlalchemy import select

    from prefloop.errors import NotFoundError
    from prefloop.feedback.store.models import Round

    with project.store.session() as s:
        rid = s.scalar(select(Round.id).where(Round.number == number))
        if rid is None:
            known = sorted(s.scalars(select(Round.number)))
            raise NotFoundError(f"no round {number} in the store", hint=f"rounds: {known or 'none yet'}; omit --round to judge every task")
        return rid


@judge_app.command("list")
def list_judges(project_dir: Path | None = ProjectOpt) -> None:
    """The judges in the config, with how many verdicts each has stored and what they cost."""
    from rich.console import Console
    from sqlalchemy import func, select

    from prefloop.feedback.store.models import Annotation, Annotator, AnnotatorKind, JudgeCache
    from prefloop.tables import fit, table

    from . import judges_from_config

    project = _project(project_dir)
    cfg = project.config.judges
    console = Console()
    if not cfg.panel:
        console.print("No judges configured. Add a [bold]judges.panel[/] list to prefloop.yaml (see the README's Judges section).")
        return
    judges = judges_from_config(project.config, base_dir=project.root)
    with project.store.session() as s:
        rows = s.execute(
            select(Annotator.name, Annotation.status, func.count(), func.coalesce(func.sum(Annotation.cost), 0.0))
            .join(Annotation, Annotation.annotator_id == Annotator.id)
            .where(Annotator.kind == AnnotatorKind.JUDGE.value)
            .group_by(Annotator.name, Annotation.status)
        ).all()
        cached = dict(s.execute(select(JudgeCache.judge, func.count()).group_by(JudgeCache.judge)).all())
    done: dict[str, dict[str, float]] = {}
    for name, status, n, cost in rows:
        d = done.setdefault(name, {"submitted": 0, "skipped": 0, "cost": 0.0})
        d[status] = n
        d["cost"] += float(cost)
    default = cfg.default or cfg.panel[0].name
    t = table("Judges", [("name", "text"), ("backend", "text"), ("model", "text"), ("template", "id"), ("verdicts", "number"),
                         ("failed", "number"), ("cached", "number"), (f"cost\n{project.config.cost.currency}", "number")],
              caption="* the default judge; template: hash of template, rubric and examples")
    for spec in cfg.panel:
        ident = judges[spec.name].identity
        d = done.get(spec.name, {})
        t.add_row(
            spec.name + (" *" if spec.name == default else ""), spec.backend, str(ident.get("model", "")),
            ident.get("template_hash", "")[:8], str(int(d.get("submitted", 0))), str(int(d.get("skipped", 0))),
            str(cached.get(spec.name, 0)), f"{d.get('cost', 0.0):.4f}",
        )
    console.print(fit(t))


@judge_app.command("run")
def run(
    judge: str | None = typer.Option(None, "--judge", "-j", help="Judge name from judges.panel (default: judges.default, else the first)."),
    round_number: int | None = typer.Option(None, "--round", "-r", help="Round number (default: every task)."),
    project_dir: Path | None = ProjectOpt,
    quiet: bool = QuietOpt,
    verbose: bool = VerboseOpt,
    progress: bool | None = typer.Option(None, "--progress/--no-progress", hidden=True,
                                         help="Deprecated: -q replaces --no-progress (kept for one release)."),
) -> None:
    """Judge the tasks of a round and store the verdicts (cached verdicts are reused)."""
    from rich.console import Console
    from rich.markup import escape

    from prefloop.errors import ConfigError
    from prefloop.tables import fit, table

    from .runner import judge_round

    if progress is not None:
        Console(stderr=True).print(f"[yellow]note:[/] --{'' if progress else 'no-'}progress is deprecated and goes in the "
                                   "next release; the progress bar is on by default and -q/--quiet turns it off",
                                   highlight=False, soft_wrap=True)
        quiet = quiet or not progress
    shown = verbosity(quiet, verbose)
    project = _project(project_dir)
    cfg = project.config.judges
    if not cfg.panel:
        raise ConfigError("no judges configured", hint="add a judges.panel list to prefloop.yaml (see the README's Judges section)")
    name = judge or cfg.default or cfg.panel[0].name
    stats = judge_round(project, name, _round_id(project, round_number), progress=shown.progress)
    console = Console()
    t = table(f"judge {name}" + (f", round {round_number}" if round_number is not None else ""), [("", "text"), ("", "number")],
              show_header=False)
    for label, value in (
        ("tasks", stats.tasks), ("recorded (new or changed)", stats.recorded), ("unchanged", stats.unchanged),
        ("failed (recorded with reason)", stats.failed), ("not judgeable by this judge", stats.unsupported),
        ("judgements", stats.verdicts), ("from cache", stats.cached),
        ("prompt tokens", stats.prompt_tokens), ("completion tokens", stats.completion_tokens),
        (f"cost ({project.config.cost.currency})", f"{stats.cost:.4f}"), ("seconds", f"{stats.seconds:.1f}"),
        ("task priorities changed", stats.priorities_changed),
    ):
        t.add_row(label, str(value))
    console.print(fit(t))
    for e in stats.errors:
        console.print(f"[yellow]failed:[/] {escape(e)}", highlight=False)


@judge_app.command("agreement")
def agreement(
    round_number: list[int] | None = typer.Option(None, "--round", "-r", help="Only these rounds (repeatable)."),
    png: Path | None = typer.Option(None, "--png", help="Where to write the bar chart (default: runs/judge-agreement.png)."),
    as_json: bool = typer.Option(False, "--json", help="Print the rows as JSON instead of a table."),
    project_dir: Path | None = ProjectOpt,
) -> None:
    """Each judge against the human labels on the same tasks: agreement, κ, position consistency."""
    from rich.console import Console

    from .report import agreement_report, agreement_table, plot_agreement

    project = _project(project_dir)
    round_ids = [_numbered_round_id(project, n) for n in round_number] if round_number else None
    rows = agreement_report(project.store, round_ids=round_ids)
    if as_json:
        typer.echo(json.dumps([r.as_dict() for r in rows], indent=2))
        return
    console = Console()
    if not rows:
        console.print("No judge verdicts yet: run `prefloop judge run` first.")
        return
    console.print(agreement_table(rows))
    out = plot_agreement(rows, png or project.runs_dir / "judge-agreement.png")
    console.print(f"chart: {out}")


def register(app: typer.Typer) -> None:
    app.add_typer(judge_app, name="judge")
