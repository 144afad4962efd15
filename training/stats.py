"""Bootstrap intervals over eval prompts: how far an evaluation number can be trusted.

An eval set is a sample of prompts, and each prompt may have several samples (answers, or
judged comparisons). The samples of one prompt are not independent — a hard prompt is hard for
all of them — so the unit of resampling is the **prompt**: a resample draws prompts with
replacement and keeps each drawn prompt's samples together (a cluster bootstrap). Intervals are
percentile intervals of the statistic over the resamples, from a seeded generator: the same data
and settings give the same interval, every time.

- :func:`bootstrap_ci`: the interval of a mean (an oracle score, a win rate);
- :func:`paired_diff_ci`: the interval of the mean per-prompt difference between two rounds on the
  same prompts (a paired comparison, far tighter than comparing two separate intervals);
- :func:`includes`: whether an interval contains a value (0 for a change, 0.5 for a win rate):
  inside it, the difference is within the noise.

Fewer than two prompts leave the spread unknown: the interval is ``None`` (shown as n/a).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

Interval = tuple[float, float]
#: values of one prompt: its samples' values, or one value.
PromptValues = Sequence[float] | float

CONFIDENCE = 0.95
RESAMPLES = 2000
SEED = 0
#: resampled indices held in memory at once (resamples × prompts), whatever the eval set's size.
_CHUNK_CELLS = 2_000_000


def _groups(values: Sequence[PromptValues]) -> list[list[float]]:
    """Per-prompt lists of values; prompts without any value (e.g. all judgements failed) are dropped."""
    out = []
    for v in values:
        group = [float(v)] if isinstance(v, (int, float)) else [float(x) for x in v]
        if group:
            out.append(group)
    return out


def _percentiles(sums: np.ndarray, counts: np.ndarray, resamples: int, seed: int, confidence: float,
                 center: float = 0.0) -> Interval | None:
    """Percentile interval of center + sum/count over prompt resamples (the pooled mean of the drawn
    prompts; ``sums`` are taken around ``center``, so that a constant sample gives exactly its value)."""
    n = len(sums)
    if n < 2:
        return None
    if not 0 < confidence < 1 or resamples < 1:
        raise ValueError(f"confidence must lie in (0, 1) and resamples be positive, got {confidence}, {resamples}")
    rng = np.random.default_rng(seed)
    stats = np.empty(resamples)
    step = max(1, _CHUNK_CELLS // n)
    for start in range(0, resamples, step):
        idx = rng.integers(0, n, size=(min(step, resamples - start), n))
        stats[start : start + len(idx)] = sums[idx].sum(axis=1) / counts[idx].sum(axis=1)
    tail = (1 - confidence) / 2
    lo, hi = np.quantile(stats, [tail, 1 - tail])
    return center + float(lo), center + float(hi)


def bootstrap_ci(values: Sequence[PromptValues], *, resamples: int = RESAMPLES, seed: int = SEED,
                 confidence: float = CONFIDENCE) -> Interval | None:
    """The ``confidence`` interval of the mean of all samples, resampling prompts with their samples.

    ``values[i]`` is prompt i's samples (or a single value). ``None`` with fewer than two prompts.
    """
    groups = _groups(values)
    center = groups[0][0] if groups else 0.0
    sums = np.array([sum(x - center for x in g) for g in groups], dtype=float)
    counts = np.array([len(g) for g in groups], dtype=float)
    return _percentiles(sums, counts, resamples, seed, confidence, center)


def _paired(a: Sequence[PromptValues], b: Sequence[PromptValues]) -> np.ndarray:
    if len(a) != len(b):
        raise ValueError(f"paired values need one entry per prompt on both sides, got {len(a)} and {len(b)}")
    diffs = []
    for x, y in zip(a, b, strict=True):
        gx, gy = _groups([x]), _groups([y])
        if gx and gy:  # a prompt missing on one side is no pair
            diffs.append(float(np.mean(gx[0])) - float(np.mean(gy[0])))
    return np.array(diffs, dtype=float)


def mean_paired_diff(a: Sequence[PromptValues], b: Sequence[PromptValues]) -> float | None:
    """The mean over prompts of (prompt's mean in ``a``) − (its mean in ``b``); ``a[i]``, ``b[i]``: one prompt."""
    d = _paired(a, b)
    return float(d.mean()) if len(d) else None


def paired_diff_ci(a: Sequence[PromptValues], b: Sequence[PromptValues], *, resamples: int = RESAMPLES,
                   seed: int = SEED, confidence: float = CONFIDENCE) -> Interval | None:
    """The interval of :func:`mean_paired_diff`, resampling prompts (each keeps its pair)."""
    d = _paired(a, b)
    center = float(d[0]) if len(d) else 0.0
    return _percentiles(d - center, np.ones_like(d), resamples, seed, confidence, center)


def includes(ci: Interval | Sequence[float] | None, value: float) -> bool | None:
    """Whether ``value`` lies in the interval (``None`` when there is no interval)."""
    if ci is None:
        return None
    lo, hi = ci
    return bool(lo <= value <= hi)


@dataclass(frozen=True)
class Bootstrap:
    """The settings of every interval of one evaluation (``training.evaluation.bootstrap_*``)."""

    resamples: int = RESAMPLES
    seed: int = SEED
    confidence: float = CONFIDENCE

    def ci(self, values: Sequence[PromptValues]) -> Interval | None:
        return bootstrap_ci(values, resamples=self.resamples, seed=self.seed, confidence=self.confidence)

    def change(self, mine: Mapping[int, PromptValues], theirs: Mapping[int, PromptValues]) -> dict[str, object]:
        """Round N's values against another round's on the prompts both have: the mean per-prompt
        difference, its interval, and whether the interval includes 0 (within the noise)."""
        keys = sorted(set(mine) & set(theirs))
        a, b = [mine[k] for k in keys], [theirs[k] for k in keys]
        ci = paired_diff_ci(a, b, resamples=self.resamples, seed=self.seed, confidence=self.confidence)
        return {"diff": mean_paired_diff(a, b), "ci": None if ci is None else list(ci),
                "within_noise": includes(ci, 0.0), "prompts": len(_paired(a, b))}

    def to_json(self) -> dict[str, object]:
        return {"resamples": self.resamples, "seed": self.seed, "confidence": self.confidence}
