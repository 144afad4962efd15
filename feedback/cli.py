"""CLI commands of the feedback package: init, import, queue add|status, annotate, export, stats."""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Callable, Iterator
from enum import Enum
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeRemainingColumn

from prefloop.config import PRESETS
from prefloop.errors import DataError, NotFoundError
from prefloop.kinds import KINDS, kind_names
from prefloop.project import Project, init_project
from prefloop.tables import fit, table
from prefloop.text import show_number
from prefloop.verbosity import QuietOpt, VerboseOpt, verbosity

console = Console()
ProjectOpt = typer.Option(None, "--project", "-p", help="Project directory (default: the nearest one with prefloop.yaml).")
RoundOpt = typer.Option(None, "--round", "-r", help="Only this round number.")


def open_project(path: Optional[Path]) -> Project:
    return Project.find(path)


def round_ids(project: Project, numbers: list[int] | None) -> list[int] | None:
    """Round numbers → round ids (None for no numbers: every round); an unknown number is an error."""
    return _known_round_ids(project, numbers) if numbers else None


def round_id(project: Project, number: int) -> int:
    """A round number → its round id; an unknown number is an error."""
    return _known_round_ids(project, [number])[0]


def _known_round_ids(project: Project, numbers: list[int]) -> list[int]:
    from sqlalchemy import select

    from .store.models import Round

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
    preset: str = typer.Option("default", help=f"Config preset: {', '.join(PRESETS)}."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing prefloop.yaml."),
) -> None:
    """Create a project: prefloop.yaml from a preset and a migrated database."""
    project = init_project(directory, preset=preset, force=force)
    console.print(f"[green]initialised[/] {project.root} (config {project.root / 'prefloop.yaml'}, store {project.store.safe_url})")




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
    project_dir: Optional[Path] = ProjectOpt,
    quiet: bool = QuietOpt,
    verbose: bool = VerboseOpt,
) -> None:
    """Import prompts (all or nothing: one bad record imports none; annotators keep working meanwhile)."""
    verbosity(quiet, verbose)
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
    project_dir: Optional[Path] = ProjectOpt,
    quiet: bool = QuietOpt,
    verbose: bool = VerboseOpt,
) -> None:
    """Enqueue tasks from a JSONL file of prompts and outputs (all or nothing)."""
    verbosity(quiet, verbose)
    from .bulk import add_tasks
    from .importer import read_tasks

    if kind not in kind_names():
        raise DataError(f"--kind {kind!r} is not a task kind", hint=f"use one of {', '.join(kind_names())}")
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
    t = table("queue", [("kind", "text"), ("open", "number"), ("complete", "number"), ("cancelled", "number")])
    for kind in kind_names():
        row = [st.tasks_by_kind_status.get((kind, s), 0) for s in ("open", "complete", "cancelled")]
        if any(row):
            t.add_row(kind, *map(str, row))
    console.print(fit(t))
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


class Source(str, Enum):
    """Where a pair or SFT row's label came from (the ``source`` provenance column)."""

    human = "human"
    judge = "judge"
    mixed = "mixed"


def _export(dataset: str, out: Path, fmt: str, rounds: list[int], min_confidence: Optional[float], project_dir: Optional[Path],
            sources: list[Source], sft_type: str = "prompt-completion") -> None:
    from prefloop.console import quiet_progress_bars
    from prefloop.judges.trust import untrusted_judges

    from .export import build_dpo_dataset, build_sft_dataset, dataset_hash, save_dataset

    quiet_progress_bars()  # datasets' "Creating json from Arrow format" bars: a spinner of ours instead
    project = open_project(project_dir)
    ids = round_ids(project, rounds)
    agg = project.config.aggregation
    only = [s.value for s in sources] or None
    skip = untrusted_judges(project.store, project.config.judges.trust)
    err = Console(stderr=True)
    with err.status(f"exporting {dataset.upper()} rows to {escape(str(out))}") if err.is_terminal else contextlib.nullcontext():
        ds = (build_dpo_dataset(project.store, round_ids=ids, config=agg, min_confidence=min_confidence, sources=only,
                                exclude_judges=skip)
              if dataset == "dpo" else build_sft_dataset(project.store, round_ids=ids, config=agg, sources=only,
                                                         dataset_type=sft_type, exclude_judges=skip))  # type: ignore[arg-type]
        save_dataset(ds, out, fmt)  # type: ignore[arg-type]
    if skip:
        console.print(f"left out the labels of untrusted judges (judges.trust): {', '.join(f'{j} on {k}' for j, k in sorted(skip))}")
    by_source: dict[str, int] = {}
    for s in ds["source"]:
        by_source[s] = by_source.get(s, 0) + 1
    console.print(f"[green]wrote[/] {len(ds)} {dataset.upper()} rows to {out} ({fmt}{', ' + sft_type if dataset == 'sft' else ''}); by source {json.dumps(by_source)}; sha256 {dataset_hash(ds)[:16]}…")


FormatOpt = typer.Option("jsonl", "--format", "-f", help="disk (save_to_disk), jsonl or parquet.")
RoundsOpt = typer.Option([], "--round", "-r", help="Only these round numbers (repeatable).")
SourceOpt = typer.Option([], "--source", help="Only rows whose labels came from these sources (repeatable; default: all).")


@export_app.command("dpo")
def export_dpo(
    out: Path = typer.Argument(..., help="Output file or folder."),
    fmt: str = FormatOpt,
    rounds: list[int] = RoundsOpt,
    min_confidence: Optional[float] = typer.Option(None, help="Override aggregation.min_confidence."),
    source: list[Source] = SourceOpt,
    project_dir: Optional[Path] = ProjectOpt,
    quiet: bool = QuietOpt,
    verbose: bool = VerboseOpt,
) -> None:
    """Preference pairs as prompt/chosen/rejected (conversational), with provenance."""
    verbosity(quiet, verbose)
    _export("dpo", out, fmt, rounds, min_confidence, project_dir, source)


@export_app.command("sft")
def export_sft(out: Path = typer.Argument(..., help="Output file or folder."), fmt: str = FormatOpt,
               rounds: list[int] = RoundsOpt, source: list[Source] = SourceOpt, project_dir: Optional[Path] = ProjectOpt,
               sft_type: str = typer.Option(
                   "prompt-completion", "--type", "-t",
                   help="prompt-completion: `prompt` + `completion` (SFTTrainer puts the loss on the reply only); "
                        "messages: the whole conversation in `messages` (loss on every token)."),
               quiet: bool = QuietOpt, verbose: bool = VerboseOpt) -> None:
    """Human edits and top-rated outputs as chat `prompt`/`completion` (or `messages`), with provenance."""
    verbosity(quiet, verbose)
    _export("sft", out, fmt, rounds, None, project_dir, source, sft_type)


def cmd_stats(round_number: Optional[int] = RoundOpt, project_dir: Optional[Path] = ProjectOpt) -> None:
    """Labels, preferences and agreement (between humans, and judges against humans)."""
    from .aggregate import preferences
    from .agreement import inter_annotator, judge_human_agreement

    project = open_project(project_dir)
    ids = round_ids(project, [round_number] if round_number is not None else None)
    queue_status(round_number, project_dir)
    prefs = preferences(project.store, round_ids=ids, config=project.config.aggregation)
    by: dict[tuple[str, str], int] = {}
    for p in prefs:
        by[(p.source, p.method)] = by.get((p.source, p.method), 0) + 1
    t = table("preference pairs", [("source", "text"), ("method", "text"), ("pairs", "number")])
    for (src, method), n in sorted(by.items()):
        t.add_row(src, method, str(n))
    console.print(fit(t))
    for kind in [k.name for k in KINDS.values() if k.agreement_level]:
        rep = inter_annotator(project.store, kind=kind, round_ids=ids)
        if rep.n_tasks == 0:
            continue
        t = table(f"inter-annotator agreement ({kind}): {rep.n_tasks} shared tasks, Krippendorff's α {_fmt(rep.alpha)}",
                  [("annotator A", "text"), ("annotator B", "text"), ("shared", "number"), ("agreement", "number"),
                   ("Cohen's κ", "number")])
        for pair in rep.pairs:
            t.add_row(pair.a, pair.b, str(pair.n), _fmt(pair.observed), _fmt(pair.kappa))
        console.print(fit(t))
    judges = judge_human_agreement(project.store, round_ids=ids)
    if judges:
        t = table("judges vs human majority (compare tasks)",
                  [("judge", "text"), ("n", "number"), ("agreement", "number"), ("n\nno ties", "number"),
                   ("agreement\nno ties", "number"), ("Cohen's κ", "number")])
        for j in judges:
            t.add_row(j.judge, str(j.n), _fmt(j.agreement), str(j.n_without_ties), _fmt(j.agreement_without_ties), _fmt(j.kappa))
        console.print(fit(t))


def register(app: typer.Typer) -> None:
    app.command("init")(cmd_init)
    app.command("import")(cmd_import)
    app.add_typer(queue_app, name="queue")
    app.command("annotate")(cmd_annotate)
    app.add_typer(export_app, name="export")
    app.command("stats")(cmd_stats)
