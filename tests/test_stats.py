"""The one bootstrap implementation (prefloop.stats): its three designs share one engine, follow
their documented draws, refuse bad settings alike, and the old module paths still work."""

from __future__ import annotations

import importlib
import re
import sys

import numpy as np
import pytest

import prefloop.stats as stats
from prefloop.stats import bootstrap_ci, grid_ci, grid_paired_diff_ci, hierarchical_bootstrap, paired_diff_ci


def crossed_by_hand(grid: dict[int, dict[int, float]], resamples: int, seed: int, confidence: float) -> tuple[float, float]:
    """The documented crossed procedure, written out with loops: all seed draws, then all prompt
    draws; a replicate is the mean of the drawn cells that hold a value."""
    seeds, prompts = list(grid), sorted({p for row in grid.values() for p in row})
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, len(seeds), size=(resamples, len(seeds)))
    cols = rng.integers(0, len(prompts), size=(resamples, len(prompts)))
    replicates = []
    for b in range(resamples):
        cells = [grid[seeds[i]][prompts[j]] for i in rows[b] for j in cols[b] if prompts[j] in grid[seeds[i]]]
        if cells:
            replicates.append(sum(cells) / len(cells))
    alpha = (1 - confidence) / 2
    low, high = np.quantile(replicates, [alpha, 1 - alpha])
    return float(low), float(high)


def test_the_crossed_bootstrap_is_the_documented_procedure() -> None:
    rng = np.random.default_rng(11)
    grid = {s: {p: float(rng.random()) for p in range(9) if (s, p) not in {(0, 3), (2, 7)}} for s in range(3)}
    iv = grid_ci(grid, resamples=400, seed=7, confidence=0.9)
    assert iv is not None and iv.n == 25
    assert (iv.low, iv.high) == pytest.approx(crossed_by_hand(grid, 400, 7, 0.9), abs=1e-12)
    assert iv.mean == pytest.approx(np.mean([v for row in grid.values() for v in row.values()]))


def test_one_seed_of_the_grid_is_the_prompt_bootstrap() -> None:
    """The evaluation's design is the crossed one with a single seed: the same draws, the same interval."""
    values = np.random.default_rng(2).random(30).round(3).tolist()
    other = np.random.default_rng(3).random(30).round(3).tolist()
    order = sorted(range(30), key=repr)  # a grid's prompts are its columns in the order of their repr
    iv = grid_ci(values, resamples=1500, seed=4)
    assert iv is not None and (iv.low, iv.high) == bootstrap_ci([values[p] for p in order], resamples=1500, seed=4)
    diff = grid_paired_diff_ci(values, other, resamples=1500, seed=4)
    assert diff is not None and (diff.low, diff.high) == paired_diff_ci(
        [values[p] for p in order], [other[p] for p in order], resamples=1500, seed=4)


def test_memory_chunks_do_not_change_the_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    groups = [[float(x) for x in row] for row in np.random.default_rng(8).random((50, 3)).round(3)]
    grid = {s: dict(enumerate(np.random.default_rng(s).random(40).tolist())) for s in range(3)}
    whole = bootstrap_ci(groups, resamples=999), grid_ci(grid, resamples=999)
    monkeypatch.setattr(stats, "_CHUNK_CELLS", 7 * 50)  # 7 replicates at a time, the last chunk short
    assert (bootstrap_ci(groups, resamples=999), grid_ci(grid, resamples=999)) == whole


@pytest.mark.parametrize("design", [
    lambda **kw: bootstrap_ci([0.1, 0.5, 0.9], **kw),
    lambda **kw: paired_diff_ci([0.1, 0.5, 0.9], [0.2, 0.2, 0.2], **kw),
    lambda **kw: grid_ci([0.1, 0.5, 0.9], **kw),
    lambda **kw: grid_paired_diff_ci({0: {1: 0.1, 2: 0.5}}, {0: {1: 0.2, 2: 0.2}}, **kw),
    lambda **kw: hierarchical_bootstrap([[0.1, 0.5, 0.9], [0.3]], **kw),
], ids=["prompts", "prompts-paired", "grid", "grid-paired", "hierarchical"])
@pytest.mark.parametrize(("setting", "value"), [("confidence", 1.0), ("confidence", 0.0), ("resamples", 0)])
def test_every_design_refuses_bad_settings_with_one_clear_error(design, setting: str, value: float) -> None:  # noqa: ANN001
    with pytest.raises(ValueError, match=r"confidence must lie in \(0, 1\) and resamples be positive"):
        design(**{setting: value})


@pytest.mark.parametrize(("old", "names"), [
    ("prefloop.training.stats", {"Bootstrap": "Bootstrap", "bootstrap_ci": "bootstrap_ci", "includes": "includes",
                                 "paired_diff_ci": "paired_diff_ci", "mean_paired_diff": "mean_paired_diff"}),
    ("prefloop.training.compare.stats", {"Interval": "Estimate", "bootstrap_ci": "grid_ci", "paired_diff_ci": "grid_paired_diff_ci"}),
    ("prefloop.experiments.stats", {"Estimate": "Estimate", "hierarchical_bootstrap": "hierarchical_bootstrap"}),
])
def test_the_old_paths_reexport_with_a_deprecation_warning(monkeypatch: pytest.MonkeyPatch, old: str,
                                                           names: dict[str, str]) -> None:
    monkeypatch.delitem(sys.modules, old, raising=False)  # import it afresh, so that it warns again
    with pytest.warns(DeprecationWarning, match=re.escape(f"{old} moved to prefloop.stats; the old path goes away in 0.3")):
        module = importlib.import_module(old)
    for was, now in names.items():
        assert getattr(module, was) is getattr(stats, now)
