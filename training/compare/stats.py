"""Intervals for ``prefloop compare``: a percentile bootstrap over eval prompts and sampling seeds crossed.

(One evaluation's intervals, prompts with several samples each, are :mod:`prefloop.training.stats`.)

Values come as a grid, one row per seed and one column per eval prompt (``{seed: {prompt: value}}``;
a plain list is one seed). Every seed answers the same prompts, so the two are crossed: a
replicate draws the seeds with replacement and, independently, the prompts with replacement, and
takes the mean of the drawn cells (a missing cell is left out). The estimate is the mean of all
cells; the interval is the replicates' percentile interval. A fixed bootstrap seed makes every
table reproducible. :func:`paired_diff_ci` does the same for the difference of two conditions on
the cells both have (same prompt, same seed), which is narrower than comparing two intervals.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Union

#: ``{seed: {prompt: value}}`` (any hashable keys: ``Mapping`` is invariant in its key type, so ``Hashable`` would
#: refuse a ``dict[int, …]``), or one seed's values
Grid = Union[Mapping[Any, Mapping[Any, float]], Sequence[float]]


@dataclass(frozen=True)
class Interval:
    mean: float
    low: float
    high: float
    n: int  #: cells (prompt × seed) that carried a value

    def to_dict(self) -> dict[str, Any]:
        return {"mean": self.mean, "low": self.low, "high": self.high, "n": self.n}


def _as_grid(values: Grid) -> dict[Hashable, dict[Hashable, float]]:
    if isinstance(values, Mapping):
        return {s: {p: float(v) for p, v in row.items() if v is not None} for s, row in values.items()}
    return {0: {i: float(v) for i, v in enumerate(values) if v is not None}}


def bootstrap_ci(values: Grid, *, confidence: float = 0.95, resamples: int = 2000, seed: int = 0) -> Interval | None:
    """The mean of ``values`` with its bootstrap interval over seeds and prompts (``None`` if empty)."""
    import numpy as np

    grid = _as_grid(values)
    seeds = [s for s, row in grid.items() if row]
    prompts = sorted({p for s in seeds for p in grid[s]}, key=repr)
    if not seeds or not prompts:
        return None
    cells = np.full((len(seeds), len(prompts)), np.nan)
    col = {p: j for j, p in enumerate(prompts)}
    for i, s in enumerate(seeds):
        for p, v in grid[s].items():
            cells[i, col[p]] = v
    present = ~np.isnan(cells)
    filled = np.where(present, cells, 0.0)
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, len(seeds), size=(resamples, len(seeds)))
    cols = rng.integers(0, len(prompts), size=(resamples, len(prompts)))
    # A drawn row or column that appears c times counts c times: weights from the draw counts.
    row_w = np.stack([np.bincount(r, minlength=len(seeds)) for r in rows])  # (B, S)
    col_w = np.stack([np.bincount(c, minlength=len(prompts)) for c in cols])  # (B, P)
    sums = np.einsum("bs,sp,bp->b", row_w, filled, col_w)
    counts = np.einsum("bs,sp,bp->b", row_w, present.astype(float), col_w)
    replicates = sums[counts > 0] / counts[counts > 0]
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(replicates, [alpha, 1.0 - alpha])
    return Interval(float(cells[present].mean()), float(low), float(high), int(present.sum()))


def paired_diff_ci(a: Grid, b: Grid, *, confidence: float = 0.95, resamples: int = 2000, seed: int = 0) -> Interval | None:
    """``a − b`` on the cells both have, with its bootstrap interval (``None`` if none is shared)."""
    ga, gb = _as_grid(a), _as_grid(b)
    diff = {s: {p: ga[s][p] - gb[s][p] for p in ga[s] if p in gb.get(s, {})} for s in ga if s in gb}
    return bootstrap_ci(diff, confidence=confidence, resamples=resamples, seed=seed)
