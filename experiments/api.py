"""``run_experiment`` and ``report``: what ``prefloop experiment run|report`` do, from Python."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from prefloop.errors import ConfigError
from prefloop.text import finite_or_none

from .results import ExperimentResults, results_of
from .runner import Experiment, ExperimentError, run_jobs, write_atomic
from .spec import ExperimentSpec, load_spec

DEFAULT_ROOT = Path("prefloop-experiments")


def run_experiment(spec: ExperimentSpec | str | Path, out: str | Path | None = None, *, jobs: int | None = None,
                   quiet: bool = False, console: Any = None) -> ExperimentResults:
    """Run every unfinished (arm, seed) of ``spec`` (a spec or a spec file) in ``out`` (default
    ``prefloop-experiments/NAME``), ``jobs`` at once (default: the spec's), then report.

    Every run's config is validated first. Finished runs are skipped and unfinished ones resume, so
    running it again after an interruption finishes the experiment. A failed run does not stop the
    others; it is named in the :class:`ExperimentError` raised at the end (after the report).
    """
    from rich.console import Console

    spec = spec if isinstance(spec, ExperimentSpec) else load_spec(spec)
    exp = Experiment(spec, out or DEFAULT_ROOT / spec.name)
    exp.check_unchanged()
    console = console or Console(stderr=True)

    def say(text: str) -> None:
        if not quiet:
            console.print(text, highlight=False, soft_wrap=True)  # one line a message, in a log file too

    exp.out.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(exp.out / ".experiment.lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise ConfigError(f"another `prefloop experiment run` is working in {exp.out}", hint="wait for it, or stop it first") from None
    try:
        exp.write_spec()
        baselines, runs = exp.pending_jobs()
        workers = jobs or spec.jobs
        say(f"experiment [bold]{spec.name}[/] in {exp.out}: {len(spec.arms)} arm(s) × {len(spec.seeds)} seed(s) × "
            f"{spec.rounds} round(s) on task {spec.task}; {len(exp.runs) - len(runs)} run(s) finished already, "
            f"{len(runs)} to run ({len(baselines)} shared round 0 first), {workers} at a time")
        outcomes = run_jobs(exp, baselines, workers, say)
        broken = {o.job.run.baseline for o in outcomes if not o.ok}
        blocked = [j for j in runs if j.run.baseline in broken and not (j.folder / "prefloop.yaml").is_file()]
        outcomes += run_jobs(exp, [j for j in runs if j not in blocked], workers, say)
    finally:
        lock.release()
    results = report(exp, console=console, quiet=quiet)
    failed = [o.job.label for o in outcomes if not o.ok] + [f"{j.label} (its round 0 failed)" for j in blocked]
    if failed:
        raise ExperimentError(f"{len(failed)} job(s) failed: {'; '.join(failed)}",
                              hint=f"their logs are in {exp.out / 'logs'}; run the same command again to retry them")
    return results


def report(experiment: Experiment | str | Path, *, console: Any = None, quiet: bool = False) -> ExperimentResults:
    """Re-aggregate the finished rounds of every run: write results.json, runs.csv, summary.csv,
    report.txt and experiment.png (and compare.json, compare.csv with the compare stage; judges.csv
    when judges and humans labelled the same tasks), log the
    wandb group, and print the tables."""
    from rich.console import Console

    from .display import differences_table, efficiency_table, plot, results_table, side_by_side_tables
    from .judges import judges_table, pooled_judges
    from .results import csv_text
    from .sidebyside import side_by_side
    from .tracking import log_experiment

    exp = experiment if isinstance(experiment, Experiment) else Experiment.open(experiment)
    res = results_of(exp)
    files = res.write()
    png = plot(res, exp.out / "experiment.png")
    tables = [results_table(res)] + ([efficiency_table(res)] if res.spec.target else [])
    sbs = side_by_side(exp)
    if sbs is not None:
        write_atomic(exp.out / "compare.json", json.dumps(finite_or_none(sbs.to_dict()), indent=1, allow_nan=False))
        write_atomic(exp.out / "compare.csv", csv_text([finite_or_none(r) for r in sbs.rows()]))
        files += [exp.out / "compare.json", exp.out / "compare.csv"]
        tables += [*side_by_side_tables(sbs, res), differences_table(sbs)]
    judges = pooled_judges(exp)
    if judges:
        write_atomic(exp.out / "judges.csv", csv_text([finite_or_none(j.row()) for j in judges]))
        files.append(exp.out / "judges.csv")
        tables.append(judges_table(judges))
    text = Console(width=100, record=True, file=io.StringIO(), color_system=None)
    for t in tables:
        text.print(t)
    write_atomic(exp.out / "report.txt", text.export_text())
    log_experiment(res, png, res.summary_rows(), compare_rows=sbs.rows() if sbs else None,
                   judge_rows=[j.row() for j in judges])
    out = Console()
    if out.width < 80:  # a narrow terminal wraps long lines; a narrower table would crop numbers
        out = Console(width=80)
    for t in tables:
        out.print(t)
    if not quiet:
        (console or Console(stderr=True)).print(
            f"written: {', '.join(str(p.name) for p in [*files, png, exp.out / 'report.txt'])} in {exp.out}", highlight=False)
    return res
