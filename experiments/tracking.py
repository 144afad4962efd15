"""The experiment's wandb group (``group`` = the experiment's name): one run per (arm, seed) with its
round metrics (``round`` is the step), and one summary run with the table and the PNG.

A run's rounds are logged once: ``DIR/runs/ARM/seed-S/wandb.json`` remembers which, so re-running
``prefloop experiment report`` adds only new rounds; the summary run is logged again each time.
Runs are offline unless ``wandb.mode`` (or ``WANDB_MODE``) says otherwise, written under
``DIR/wandb/``; the API key only ever comes from ``WANDB_API_KEY``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

from .results import METRICS, ExperimentResults
from .runner import write_atomic


def _mode(res: ExperimentResults) -> str:
    w = res.spec.wandb
    return "disabled" if not w.enabled else os.environ.get("WANDB_MODE") or w.mode


def run_id(experiment: str, *parts: Any) -> str:
    """A wandb run id (letters, digits, - and _; at most 64) that is the same every time."""
    raw = "-".join(str(p) for p in (experiment, *parts))
    slug = re.sub(r"[^A-Za-z0-9_-]+", "-", raw)[:48]
    return f"{slug}-{hashlib.sha256(raw.encode()).hexdigest()[:8]}"


def _table(rows: list[dict[str, Any]]) -> Any:
    import wandb

    columns = list(rows[0]) if rows else []
    return wandb.Table(columns=columns, data=[[row.get(c) for c in columns] for row in rows])  # type: ignore[arg-type]  # wandb annotates columns as list[str | int]: invariant, so a list[str] is refused


def log_experiment(res: ExperimentResults, png: Path, table_rows: list[dict[str, Any]],
                   compare_rows: list[dict[str, Any]] | None = None,
                   judge_rows: list[dict[str, Any]] | None = None) -> list[str]:
    """Log what is new to wandb; returns the run ids written (none when wandb is disabled). The
    summary run holds the results table, the PNG, the judges' pooled agreement with the humans and,
    with the compare stage, the side-by-side table."""
    if _mode(res) == "disabled":
        return []
    import wandb

    from prefloop.training.tracking import scrub

    spec, out = res.spec, res.experiment.out
    (out / "wandb").mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("WANDB_SILENT", "true")
    common = dict(project=spec.wandb.project, entity=spec.wandb.entity, group=spec.name, dir=str(out), mode=_mode(res),
                  resume="allow", reinit="finish_previous",
                  settings=wandb.Settings(console="off", silent=True, x_disable_stats=True))
    written = []
    for run in res.experiment.runs:
        rounds = [r for r in res.runs if r.arm == run.arm and r.seed == run.seed]
        marker = run.folder / "wandb.json"
        logged = set(json.loads(marker.read_text()).get("rounds", [])) if marker.is_file() else set()
        new = [r for r in rounds if r.round not in logged]
        if not new:
            continue
        rid = run_id(spec.name, run.arm, run.seed)
        w = wandb.init(id=rid, name=f"{run.arm} · seed {run.seed}", job_type="arm", **common,
                       config=scrub({"arm": run.arm, "seed": run.seed, "task": spec.task,
                                     "overrides": spec.arm(run.arm).overrides, "config": run.config.model_dump(mode="json")}))
        w.define_metric("round")
        w.define_metric("*", step_metric="round")
        for r in new:
            w.log({k: v for k, v in r.scalars().items() if k not in ("arm", "seed") and v is not None})
        w.finish()
        write_atomic(marker, json.dumps({"run_id": rid, "rounds": sorted(logged | {r.round for r in new})}))
        written.append(rid)
    rid = run_id(spec.name, "summary")
    w = wandb.init(id=rid, name="summary", job_type="summary", config={"spec": spec.model_dump(mode="json")}, **common)
    w.log({"results": _table(table_rows), "experiment": wandb.Image(str(png)),
           **({"compare": _table(compare_rows)} if compare_rows else {}),
           **({"judges": _table(judge_rows)} if judge_rows else {})})
    for a in res.arms:
        for k in METRICS:
            est = getattr(a, k)
            if est is not None and a.round == spec.rounds:
                w.summary[f"{a.arm}/round-{a.round}/{k}"] = est.mean
    w.finish()
    written.append(rid)
    return written
