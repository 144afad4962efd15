"""What an experiment measured, read back from the runs' stores (the source of truth), per run and
round, and aggregated per arm and round with intervals, plus label efficiency.

Per run and round: the oracle score of every eval prompt (the mean of its samples' ``oracle_score``,
stored on the eval generations) and the win rate of every eval prompt against round 0 and the
previous round (from ``runs/round-N/eval.json``: a win counts 1, a tie ½, a loss 0; a failed
judgement is left out); labels, minutes, judge tokens, compute and cost from the ROI report's cost
model (:func:`prefloop.training.roi.round_cost`, with the run's own ``cost`` prices).

Per arm and round: means over seeds of per-seed means over prompts, with a 95 % interval from the
two-level bootstrap (:func:`prefloop.stats.hierarchical_bootstrap`); counts and costs as means over seeds. Label efficiency: for
each target score, the first round whose mean oracle score reaches it, and the human labels,
minutes and money spent in rounds 1…that round (mean over seeds; round 0, the base model's shared
evaluation, is not counted).
"""

from __future__ import annotations

import csv
import io
import json
import statistics
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from prefloop.stats import Estimate, hierarchical_bootstrap
from prefloop.text import finite_or_none

from .runner import Experiment, Run, write_atomic

OUTCOME_VALUE = {"win": 1.0, "tie": 0.5, "loss": 0.0}
METRICS = ("oracle", "win_base", "win_prev")
SUMS = ("human_labels", "human_minutes", "judge_labels", "judge_tokens", "compute_minutes",
        "human_cost", "judge_cost", "compute_cost", "cost")


@dataclass
class RoundNumbers:
    """One run's numbers for one finished round."""

    arm: str
    seed: int
    round: int
    oracle: float | None = None
    win_base: float | None = None
    win_prev: float | None = None
    human_labels: int = 0
    human_minutes: float = 0.0
    judge_labels: int = 0
    judge_tokens: int = 0
    compute_minutes: float = 0.0
    human_cost: float = 0.0
    judge_cost: float = 0.0
    compute_cost: float = 0.0
    cost: float = 0.0
    #: prompt id → value (the unit the bootstrap resamples)
    by_prompt: dict[str, dict[int, float]] = field(default_factory=dict)

    def scalars(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "by_prompt"}


@dataclass
class ArmRound:
    """One arm's numbers for one round, over the seeds that finished it."""

    arm: str
    round: int
    seeds: list[int]
    oracle: Estimate | None
    win_base: Estimate | None
    win_prev: Estimate | None
    means: dict[str, float]  # SUMS, mean over seeds
    cumulative: dict[str, float]  # human_labels, human_minutes, cost over rounds 1…round, mean over seeds
    #: vs the reference arm in this round: "ref", "≈" (intervals overlap: within noise), "▲"/"▼", or "" (no data)
    vs_reference: str = ""

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"arm": self.arm, "round": self.round, "seeds": self.seeds, "vs_reference": self.vs_reference}
        for k in METRICS:
            est = getattr(self, k)
            out[k] = est.to_dict() if est else None
        return {**out, **self.means, **{f"cumulative_{k}": v for k, v in self.cumulative.items()}}


@dataclass
class Efficiency:
    """What an arm spent before its mean oracle score first reached ``target`` (``round`` None: not reached)."""

    arm: str
    target: float
    round: int | None
    human_labels: float | None
    human_minutes: float | None
    cost: float | None


@dataclass
class ExperimentResults:
    experiment: Experiment
    runs: list[RoundNumbers]
    arms: list[ArmRound]
    efficiency: list[Efficiency]
    currency: str = "USD"

    @property
    def spec(self) -> Any:
        return self.experiment.spec

    def arm_round(self, arm: str, number: int) -> ArmRound | None:
        return next((a for a in self.arms if a.arm == arm and a.round == number), None)

    def to_json(self) -> dict[str, Any]:
        s = self.spec
        return finite_or_none({
            "experiment": s.name, "task": s.task, "rounds": s.rounds, "seeds": s.seeds, "reference": s.reference_arm,
            "currency": self.currency,
            "bootstrap": {**s.bootstrap.model_dump(), "method": "resample seeds, then eval prompts within each seed"},
            "arms": [a.to_dict() for a in self.arms],
            "efficiency": [asdict(e) for e in self.efficiency],
            "runs": [{**r.scalars(), "by_prompt": {k: {str(p): v for p, v in d.items()} for k, d in r.by_prompt.items()}}
                     for r in self.runs],
        })

    def summary_rows(self) -> list[dict[str, Any]]:
        """One flat row per arm and round (``summary.csv``, the wandb table)."""
        rows = []
        for a in self.arms:
            row: dict[str, Any] = {"arm": a.arm, "round": a.round, "seeds": len(a.seeds), "vs_reference": a.vs_reference}
            for k in METRICS:
                est = getattr(a, k)
                row.update({k: est.mean if est else None, f"{k}_low": est.low if est else None, f"{k}_high": est.high if est else None})
            rows.append(finite_or_none({**row, **a.means, **{f"cumulative_{k}": v for k, v in a.cumulative.items()}}))
        return rows

    def write(self) -> list[Path]:
        """``results.json`` (everything), ``runs.csv`` (per run and round), ``summary.csv`` (per arm and round)."""
        out = self.experiment.out
        write_atomic(out / "results.json", json.dumps(self.to_json(), indent=1, allow_nan=False))
        write_atomic(out / "runs.csv", csv_text([r.scalars() for r in self.runs]))
        write_atomic(out / "summary.csv", csv_text(self.summary_rows()))
        return [out / "results.json", out / "runs.csv", out / "summary.csv"]


def csv_text(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    if rows:
        w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
        w.writeheader()
        w.writerows([{k: "" if v is None else v for k, v in r.items()} for r in rows])
    return buf.getvalue()


# --------------------------------------------------------------------------------------- one run
def collect_run(run: Run) -> list[RoundNumbers]:
    """A run's finished rounds 0…N (in order, stopping at the first that is not done)."""
    from prefloop.project import Project
    from prefloop.training.roi import round_cost
    from prefloop.training.rounds import Orchestrator
    from prefloop.training.rounds.context import round_dir

    if not (run.folder / "prefloop.db").is_file():
        return []
    project = Project(run.folder)
    try:
        orch = Orchestrator(project, progress=False)
        out: list[RoundNumbers] = []
        for r in orch.rounds():
            if r.number != len(out) or r.state != "done":
                break
            n = RoundNumbers(run.arm, run.seed, r.number)
            n.by_prompt["oracle"] = _oracle_by_prompt(project.store, r.id)
            details = _eval_details(round_dir(project, r.number) / "eval.json")
            n.by_prompt["win_base"] = _wins_by_prompt(details.get("vs_base"))
            n.by_prompt["win_prev"] = _wins_by_prompt(details.get("vs_previous"))
            for k in METRICS:
                n_values = list(n.by_prompt[k].values())
                setattr(n, k, statistics.fmean(n_values) if n_values else None)
            c = round_cost(project.store, r.id, project.config.cost, seconds=r.control.seconds,
                           eval_judge_cost=(r.metrics.get("eval") or {}).get("judge_cost") or 0.0)
            n.human_labels, n.judge_labels, n.judge_tokens = c.human_labels, c.judge_labels, c.judge_tokens
            n.human_minutes, n.compute_minutes = c.human_seconds / 60, c.compute_seconds / 60
            n.human_cost, n.judge_cost, n.compute_cost, n.cost = c.human_cost, c.judge_cost, c.compute_cost, c.total
            out.append(n)
        return out
    finally:
        project.store.dispose()


def _oracle_by_prompt(store: Any, round_id: int) -> dict[int, float]:
    from sqlalchemy import select

    from prefloop.feedback.store.models import Generation

    scores: dict[int, list[float]] = defaultdict(list)
    with store.session() as s:
        for pid, meta in s.execute(select(Generation.prompt_id, Generation.meta)
                                   .where(Generation.round_id == round_id).order_by(Generation.id)):
            meta = meta or {}
            if meta.get("purpose") == "eval" and meta.get("oracle_score") is not None:
                scores[pid].append(float(meta["oracle_score"]))
    return {pid: statistics.fmean(v) for pid, v in sorted(scores.items())}


def _eval_details(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    return json.loads(path.read_text()).get("details") or {}


def _wins_by_prompt(details: list[dict[str, Any]] | None) -> dict[int, float]:
    values: dict[int, list[float]] = defaultdict(list)
    for d in details or []:
        if d.get("outcome") in OUTCOME_VALUE:
            values[int(d["prompt_id"])].append(OUTCOME_VALUE[d["outcome"]])
    return {pid: statistics.fmean(v) for pid, v in sorted(values.items())}


# --------------------------------------------------------------------------------------- aggregate
def aggregate(exp: Experiment, runs: list[RoundNumbers]) -> tuple[list[ArmRound], list[Efficiency]]:
    spec = exp.spec
    b = spec.bootstrap
    by_run: dict[tuple[str, int], list[RoundNumbers]] = defaultdict(list)
    for r in runs:
        by_run[(r.arm, r.seed)].append(r)
    arms: list[ArmRound] = []
    for arm in spec.arms:
        for number in range(spec.rounds + 1):
            rows = [rs[number] for seed in spec.seeds if len(rs := by_run[(arm.name, seed)]) > number]
            if not rows:
                continue
            ests = {k: hierarchical_bootstrap([list(r.by_prompt[k].values()) for r in rows], resamples=b.resamples,
                                              seed=b.seed, confidence=b.confidence) for k in METRICS}
            cumulative = {k: statistics.fmean(sum(getattr(x, k) for x in by_run[(r.arm, r.seed)][1 : number + 1]) for r in rows)
                          for k in ("human_labels", "human_minutes", "cost")}
            arms.append(ArmRound(arm.name, number, [r.seed for r in rows], ests["oracle"], ests["win_base"], ests["win_prev"],
                                 {k: statistics.fmean(getattr(r, k) for r in rows) for k in SUMS}, cumulative))
    ref = spec.reference_arm
    for a in arms:
        other = next((x for x in arms if x.arm == ref and x.round == a.round), None)
        if a.arm == ref:
            a.vs_reference = "ref"
        elif a.oracle is not None and other is not None and other.oracle is not None:
            a.vs_reference = "≈" if a.oracle.overlaps(other.oracle) else ("▲" if a.oracle.mean > other.oracle.mean else "▼")
    efficiency = []
    for arm in spec.arms:
        for target in spec.target:
            hit = next((a for a in arms if a.arm == arm.name and a.oracle is not None and a.oracle.mean >= target), None)
            efficiency.append(Efficiency(arm.name, target, hit.round if hit else None,
                                         *((hit.cumulative[k] for k in ("human_labels", "human_minutes", "cost")) if hit else (None,) * 3)))
    return arms, efficiency


def load_results(out: str | Path) -> ExperimentResults:
    """Read every run of the experiment in ``out`` (finished rounds only) and aggregate them."""
    exp = Experiment.open(out)
    return results_of(exp)


def results_of(exp: Experiment) -> ExperimentResults:
    runs = [n for run in exp.runs for n in collect_run(run)]
    arms, efficiency = aggregate(exp, runs)
    currency = exp.runs[0].config.cost.currency if exp.runs else "USD"
    return ExperimentResults(exp, runs, arms, efficiency, currency)
