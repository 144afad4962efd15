"""CLI commands of the feedback package: init, import, queue add|status, annotate, export, stats."""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeRemainingColumn
from rich.table import Table

from prefloop.errors import DataError, NotFoundError
from prefloop.project import Project, init_project
from prefloop.text import show_number

console = Console()
ProjectOpt = typer.Option(None, "--project", "-p", help="Project directory (default: the nearest one with prefloop.yaml).")
RoundOpt = typer.Option(None, "--round", "-r", help="Only this round number.")


def open_project(path: Optional[Path]) -> Project:
    return Project.find(path)


def round_ids(project: Project, numbers: list[int] | None) -> list[int] | None:
    """Round numbers → round ids; an unknown number is an error."""
    if not numbers:
        return None
    from sqlalchemy import select

    from .models import Round

    with project.store.session() as s:
        found = dict(s.execute(select(Round.number, Round.id).where(Round.number.in_(numbers))).all())
    missing = sorted(set(numbers) - set(found))
    if missing:
        raise NotFoundError(f"no round numbered {missing}", hint="`prefloop round status` lists the rounds")
    return [found[n] for n in numbers]


def _fmt(x: float | None) -> str:
    return show_number(x)


def cmd_init(
    directory: Path = typer.Argument(Path("."), help="Project directory (created if missing)."),
    preset: str = typer.Option("default", help="Config preset: default, offline-cpu, smollm2-135m, qwen2.5-0.5b-qlora."),
    force: bool = typer.Option(False, help="Overwrite an existing prefloop.yaml."),
) -> None:
    """Create a project: prefloop.yaml from a preset and a migrated database."""
    project = init_project(directory, preset=preset, force=force)
    console.print(f"[green]initialised[/] {project.root} (config {project.root / 'prefloop.yaml'}, store {project.store.safe_url})")


QuietOpt = typer.Option(False, "--quiet", "-q", help="No progress bar.")


@contextlib.contextmanager
def bulk_progress(quiet: bool) -> Iterator[Callable[[str, int, int], None] | None]:
    """A progress bar on stderr for a bulk write (nothing when quiet or when stderr is no terminal)."""
    err = Console(stderr=True)
    if quiet or not err.is_terminal:
        yield None
        return
    labels = {"check": "checking records", "wait": "waiting for another import", "write": "writing",
              "publish": "adding to the queue"}
    columns = (TextColumn("{task.description:<26}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=err, transient=True) as bar:
        shown: dict[str, TaskID] = {"check": bar.add_task(labels["check"], total=None)}

        def update(phase: str, done: int, total: int) -> None:
            for other in shown.keys() - {phase}:
                bar.update(shown[other], visible=False)
            if phase not in shown:
                shown[phase] = bar.add_task(labels.get(phase, phase), total=total or None)
            bar.update(shown[phase], completed=done, total=total or None, visible=True)

        yield update


def cmd_import(
    path: Path = typer.Argument(..., help="JSONL, CSV, Parquet file or a saved HF dataset folder."),
    split: str = typer.Option("train", help="Split for records that don't name one: train or eval."),
    tag: list[str] = typer.Option([], "--tag", help="Tag added to every imported prompt (repeatable)."),
    source: Optional[str] = typer.Option(None, help="Source label stored on each prompt (default: file name)."),
    quiet: bool = QuietOpt,
    project_dir: Optional[Path] = ProjectOpt,
) -> None:
    """Import prompts (all or nothing: one bad record imports none; annotators keep working meanwhile)."""
    from .importer import import_prompts

    project = open_project(project_dir)
    with bulk_progress(quiet) as progress:
        result = import_prompts(project.store, path, split=split, tags=tag, source=source, progress=progress)
    console.print(f"[green]imported[/] {result.created} new prompt(s), {result.existing} already present")


queue_app = typer.Typer(help="Add tasks to the annotation queue and see its state.", no_args_is_help=True)


@queue_app.command("add")
def queue_add(
    path: Path = typer.Argument(..., help="JSONL: one object per task with 'prompt' or 'messages' and 'outputs' (a list)."),
    kind: str = typer.Option("compare", help="Task kind for lines without one: compare, rate, rank or edit."),
    overlap: Optional[int] = typer.Option(None, min=0, help="Distinct humans per task (default: queue.overlap)."),
    priority: float = typer.Option(0.0, help="Higher is served first."),
    quiet: bool = QuietOpt,
    project_dir: Optional[Path] = ProjectOpt,
) -> None:
    """Enqueue tasks from a JSONL file of prompts and outputs (all or nothing)."""
    from .bulk import add_tasks
    from .importer import read_tasks
    from .models import TaskKind

    kinds = [k.value for k in TaskKind]
    if kind not in kinds:
        raise DataError(f"--kind {kind!r} is not a task kind", hint=f"use one of {', '.join(kinds)}")
    if not math.isfinite(priority):
        raise DataError(f"--priority {priority} is not a finite number")
    project = open_project(project_dir)
    with bulk_progress(quiet) as progress:
        records = read_tasks(path, kind=kind, priority=priority)
        n = add_tasks(project.queue, records, overlap=overlap, source=path.name, progress=progress)
    console.print(f"[green]queued[/] {n} task(s)")


@queue_app.command("status")
def queue_status(round_number: Optional[int] = RoundOpt, project_dir: Optional[Path] = ProjectOpt) -> None:
    """Tasks by kind and status, open slots, leases and labels."""
    project = open_project(project_dir)
    ids = round_ids(project, [round_number] if round_number is not None else None)
    st = project.queue.status(round_id=ids[0] if ids else None)
    table = Table(title="queue")
    for col in ("kind", "open", "complete", "cancelled"):
        table.add_column(col, justify="right" if col != "kind" else "left")
    for kind in ("compare", "rate", "rank", "edit"):
        row = [st.tasks_by_kind_status.get((kind, s), 0) for s in ("open", "complete", "cancelled")]
        if any(row):
            table.add_row(kind, *map(str, row))
    console.print(table)
    console.print(
        f"open slots {st.open_slots} · active leases {st.active_leases} · human labels {st.human_annotations}"
        f" · judge labels {st.judge_annotations} · skips {st.skips}"
    )


def cmd_annotate(
    annotator: str = typer.Option(..., "--annotator", "-a", help="Your annotator name (created on first use)."),
    round_number: Optional[int] = RoundOpt,
    project_dir: Optional[Path] = ProjectOpt,
) -> None:
    """Label tasks in the terminal with single keys (the web page is `prefloop serve`)."""
    from . import terminal

    project = open_project(project_dir)
    ids = round_ids(project, [round_number] if round_number is not None else None)
    annotator_id = project.queue.ensure_annotator(annotator)
    counts = terminal.run(project.queue, annotator_id, guidelines=project.config.annotation.guidelines,
                          round_id=ids[0] if ids else None, console=console)
    console.print(f"submitted {counts['submitted']} · skipped {counts['skipped']}")


export_app = typer.Typer(help="Export TRL datasets (SFT or DPO) from the labels.", no_args_is_help=True)


def _export(kind: str, out: Path, fmt: str, rounds: list[int], min_confidence: Optional[float], project_dir: Optional[Path]) -> None:
    from prefloop.judges.trust import untrusted_judges

    from .export import build_dpo_dataset, build_sft_dataset, dataset_hash, save_dataset

    project = open_project(project_dir)
    ids = round_ids(project, rounds)
    agg = project.config.aggregation
    skip = untrusted_judges(project.store, project.config.judges.trust)
    ds = (build_dpo_dataset(project.store, round_ids=ids, config=agg, min_confidence=min_confidence, exclude_judges=skip)
          if kind == "dpo" else build_sft_dataset(project.store, round_ids=ids, config=agg, exclude_judges=skip))
    if skip:
        console.print(f"left out the labels of untrusted judges (judges.trust): {', '.join(f'{j} on {k}' for j, k in sorted(skip))}")
    save_dataset(ds, out, fmt)  # type: ignore[arg-type]
    by_source: dict[str, int] = {}
    for s in ds["source"]:
        by_source[s] = by_source.get(s, 0) + 1
    console.print(f"[green]wrote[/] {len(ds)} {kind.upper()} rows to {out} ({fmt}); by source {json.dumps(by_source)}; sha256 {dataset_hash(ds)[:16]}…")


FormatOpt = typer.Option("jsonl", "--format", "-f", help="disk (save_to_disk), jsonl or parquet.")
RoundsOpt = typer.Option([], "--round", "-r", help="Only these round numbers (repeatable).")


@export_app.command("dpo")
def export_dpo(
    out: Path = typer.Argument(..., help="Output file or folder."),
    fmt: str = FormatOpt,
    rounds: list[int] = RoundsOpt,
    min_confidence: Optional[float] = typer.Option(None, help="Override aggregation.min_confidence."),
    project_dir: Optional[Path] = ProjectOpt,
) -> None:
    """Preference pairs as prompt/chosen/rejected (conversational), with provenance."""
    _export("dpo", out, fmt, rounds, min_confidence, project_dir)


@export_app.command("sft")
def export_sft(out: Path = typer.Argument(..., help="Output file or folder."), fmt: str = FormatOpt,
               rounds: list[int] = RoundsOpt, project_dir: Optional[Path] = ProjectOpt) -> None:
    """Human edits and top-rated outputs as chat `messages`, with provenance."""
    _export("sft", out, fmt, rounds, None, project_dir)


def cmd_stats(round_number: Optional[int] = RoundOpt, project_dir: Optional[Path] = ProjectOpt) -> None:
    """Labels, preferences and agreement (between humans, and judges against humans)."""
    from .agreement import inter_annotator, judge_human_agreement
    from .aggregate import preferences

    project = open_project(project_dir)
    ids = round_ids(project, [round_number] if round_number is not None else None)
    queue_status(round_number, project_dir)
    prefs = preferences(project.store, round_ids=ids, config=project.config.aggregation)
    by: dict[tuple[str, str], int] = {}
    for p in prefs:
        by[(p.source, p.method)] = by.get((p.source, p.method), 0) + 1
    t = Table(title="preference pairs")
    t.add_column("source"), t.add_column("method"), t.add_column("pairs", justify="right")
    for (src, method), n in sorted(by.items()):
        t.add_row(src, method, str(n))
    console.print(t)
    for kind in ("compare", "rate"):
        rep = inter_annotator(project.store, kind=kind, round_ids=ids)
        if rep.n_tasks == 0:
            continue
        t = Table(title=f"inter-annotator agreement ({kind}): {rep.n_tasks} shared tasks, Krippendorff's α {_fmt(rep.alpha)}")
        for c in ("annotator A", "annotator B", "shared", "agreement", "Cohen's κ"):
            t.add_column(c)
        for p in rep.pairs:
            t.add_row(p.a, p.b, str(p.n), _fmt(p.observed), _fmt(p.kappa))
        console.print(t)
    judges = judge_human_agreement(project.store, round_ids=ids)
    if judges:
        t = Table(title="judges vs human majority (compare tasks)")
        for c in ("judge", "n", "agreement", "n (no ties)", "agreement (no ties)", "Cohen's κ"):
            t.add_column(c)
        for j in judges:
            t.add_row(j.judge, str(j.n), _fmt(j.agreement), str(j.n_without_ties), _fmt(j.agreement_without_ties), _fmt(j.kappa))
        console.print(t)


def register(app: typer.Typer) -> None:
    app.command("init")(cmd_init)
    app.command("import")(cmd_import)
    app.add_typer(queue_app, name="queue")
    app.command("annotate")(cmd_annotate)
    app.add_typer(export_app, name="export")
    app.command("stats")(cmd_stats)
