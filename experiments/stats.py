"""Intervals over seeds and eval prompts: a two-level (hierarchical) percentile bootstrap.

Run-to-run noise has two sources — the seed (sampling, training, the humans' mistakes) and which
eval prompts happened to be asked — so a replicate resamples both: it draws S seeds with
replacement, then, for each drawn seed, that seed's P prompts with replacement, and takes the mean
of the drawn seeds' means. The estimate is the mean of the per-seed means (every seed weighs the
same); the interval is the replicates' percentile interval. A fixed bootstrap seed makes the table
reproducible.

Exactly (so that anyone can recompute it): ``rng = numpy.random.default_rng(seed)``;
``picks = rng.integers(0, S, size=(B, S))``; ``u = rng.random((B, S, P_max))``; in replicate b, the
j-th drawn seed s = picks[b, j] contributes the mean of its values at positions
``floor(u[b, j, k] · P_s)`` for k < P_s; the replicate is the mean of those S means; the interval is
``numpy.quantile(replicates, [α/2, 1 − α/2])`` (linear interpolation).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Estimate:
    mean: float
    low: float
    high: float

    def overlaps(self, other: Estimate) -> bool:
        """Whether the two intervals share a point (then a difference is within the noise)."""
        return self.low <= other.high and other.low <= self.high

    def to_dict(self) -> dict[str, Any]:
        return {"mean": self.mean, "low": self.low, "high": self.high}


def hierarchical_bootstrap(groups: Sequence[Sequence[float]], *, resamples: int = 2000, seed: int = 0,
                           confidence: float = 0.95) -> Estimate | None:
    """The mean of per-seed means (``groups``: one list of per-prompt values per seed) with its interval."""
    import numpy as np

    groups = [list(map(float, g)) for g in groups if len(g)]
    if not groups:
        return None
    s, p = len(groups), max(len(g) for g in groups)
    values = np.zeros((s, p))
    for i, g in enumerate(groups):
        values[i, : len(g)] = g
    sizes = np.array([len(g) for g in groups])
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, s, size=(resamples, s))
    u = rng.random((resamples, s, p))
    n = sizes[picks]  # (B, S): prompts of each drawn seed
    idx = np.minimum((u * n[..., None]).astype(int), n[..., None] - 1)
    drawn = values[picks[..., None], idx]  # (B, S, P)
    mask = np.arange(p)[None, None, :] < n[..., None]
    replicates = (np.where(mask, drawn, 0.0).sum(axis=-1) / n).mean(axis=-1)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(replicates, [alpha, 1 - alpha])
    mean = float(np.mean([np.mean(g) for g in groups]))
    return Estimate(mean, float(low), float(high))
