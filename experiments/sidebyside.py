"""The compare stage of an experiment, pooled over seeds: base, base + RAG, fine-tuned and
fine-tuned + RAG side by side, per arm, with intervals over the training runs.

Each run writes ``prefloop compare``'s result for its last round (``runs/compare/round-N.json``),
which keeps the value of every eval prompt per sampling seed. Here, per arm and condition, a
prompt's value in a run is the mean over its sampling seeds; the estimate is the mean over runs
(training seeds) × eval prompts, with a bootstrap interval over both, crossed
(:func:`prefloop.stats.grid_ci`: every run answers the same eval prompts). The paired differences
(:data:`DIFFERENCES`: same run, same prompt) say which gaps are outside the noise. Latency, tokens,
the cost to serve 1,000 answers and the one-off cost of the adapter are means over the runs.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

from prefloop.stats import Estimate, grid_ci, grid_paired_diff_ci

from .runner import Experiment

#: the gaps a reader asks about: what retrieval adds, what fine-tuning adds, and both
DIFFERENCES = (("base+rag", "base"), ("ft", "base"), ("ft+rag", "base"), ("ft+rag", "base+rag"), ("ft+rag", "ft"))
#: per-answer means pooled over the runs
MEANS = ("latency_s", "retrieval_s", "prompt_tokens", "completion_tokens", "cost_per_1000", "one_off")


@dataclass
class Condition:
    """One condition of one arm, over the runs whose comparison is written."""

    arm: str
    condition: str
    seeds: list[int]
    oracle: Estimate | None
    parts: dict[str, Estimate]
    win_vs_base: Estimate | None
    means: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return {"arm": self.arm, "condition": self.condition, "seeds": self.seeds,
                "oracle": self.oracle.to_dict() if self.oracle else None,
                "parts": {k: v.to_dict() for k, v in self.parts.items()},
                "win_vs_base": self.win_vs_base.to_dict() if self.win_vs_base else None, **self.means}


@dataclass
class Difference:
    arm: str
    better: str
    than: str
    oracle: Estimate | None

    @property
    def within_noise(self) -> bool | None:
        return None if self.oracle is None else self.oracle.low <= 0.0 <= self.oracle.high

    def to_dict(self) -> dict[str, Any]:
        return {"arm": self.arm, "a": self.better, "b": self.than, "oracle": self.oracle.to_dict() if self.oracle else None,
                "within_noise": self.within_noise}


@dataclass
class SideBySide:
    round: int
    conditions: list[Condition] = field(default_factory=list)
    differences: list[Difference] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"round": self.round, "conditions": [c.to_dict() for c in self.conditions],
                "differences": [d.to_dict() for d in self.differences]}

    def rows(self) -> list[dict[str, Any]]:
        """One flat row per arm and condition (``compare.csv``, the wandb table)."""
        out = []
        parts = sorted({p for c in self.conditions for p in c.parts})  # every row has every column
        for c in self.conditions:
            row: dict[str, Any] = {"arm": c.arm, "condition": c.condition, "seeds": len(c.seeds)}
            for name, est in [("oracle", c.oracle), *((p, c.parts.get(p)) for p in parts), ("win_vs_base", c.win_vs_base)]:
                row.update({name: est.mean if est else None, f"{name}_low": est.low if est else None,
                            f"{name}_high": est.high if est else None})
            out.append({**row, **c.means})
        return out


def _grid(results: dict[int, dict[str, Any]], condition: str, metric: str) -> dict[int, dict[str, float]]:
    """training seed → eval prompt → the mean over the run's sampling seeds."""
    grid: dict[int, dict[str, float]] = {}
    for seed, result in results.items():
        arm = next((a for a in result["arms"] if a["arm"] == condition), None)
        by_seed = ((arm or {}).get("by_prompt") or {}).get(metric) or {}
        values: dict[str, list[float]] = {}
        for row in by_seed.values():
            for pid, v in row.items():
                if v is not None:
                    values.setdefault(pid, []).append(float(v))
        if values:
            grid[seed] = {pid: statistics.fmean(vs) for pid, vs in values.items()}
    return grid


def side_by_side(exp: Experiment) -> SideBySide | None:
    """The pooled comparison of every arm (``None`` when the spec's compare stage is off or no run wrote
    one); a run's comparison made with other conditions, seeds or samples than the spec's is left out."""
    spec = exp.spec
    if not spec.compare.enabled:
        return None
    b = spec.bootstrap

    def ci(grid: dict[int, dict[str, float]]) -> Estimate | None:
        return grid_ci(grid, confidence=b.confidence, resamples=b.resamples, seed=b.seed)

    out = SideBySide(spec.rounds)
    for arm in spec.arms:
        results = {r.seed: done for r in exp.runs if r.arm == arm.name and (done := exp.comparison(r)) is not None}
        if not results:
            continue
        oracle = {name: _grid(results, name, "oracle") for name in spec.compare.conditions}
        for name in spec.compare.conditions:
            entries = [a for res in results.values() for a in res["arms"] if a["arm"] == name]
            if not entries:
                continue
            part_names = sorted({p for a in entries for p in a.get("parts") or {}})
            parts = {p: est for p in part_names if (est := ci(_grid(results, name, p)))}
            means = {k: statistics.fmean(float(a.get(k) or 0.0) for a in entries) for k in MEANS}
            out.conditions.append(Condition(arm.name, name, sorted(results), ci(oracle[name]),
                                            parts, ci(_grid(results, name, "win_vs_base")), means))
        for better, than in DIFFERENCES:
            if better in spec.compare.conditions and than in spec.compare.conditions:
                diff = grid_paired_diff_ci(oracle[better], oracle[than],
                                           confidence=b.confidence, resamples=b.resamples, seed=b.seed)
                out.differences.append(Difference(arm.name, better, than, diff))
    return out if out.conditions else None
