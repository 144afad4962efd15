"""Percentile bootstrap intervals: how far an evaluation number can be trusted.

The one implementation behind every interval prefloop prints. An eval set is a sample of prompts,
and runs differ by seed, so a number's noise comes from which prompts (and seeds) happened to be
drawn. Three resampling designs answer three questions; they share a seeded
``numpy.random.default_rng(seed)``, the percentile interval ``numpy.quantile(replicates, [α/2, 1 − α/2])``
(linear interpolation) and the same checks of ``confidence`` and ``resamples``.

- **Prompts, samples kept together** (one evaluation: :func:`bootstrap_ci`, :func:`paired_diff_ci`,
  :class:`Bootstrap`). The samples of one prompt are not independent — a hard prompt is hard for all
  of them — so a replicate draws prompts with replacement, keeps each drawn prompt's samples, and
  takes the pooled mean of the drawn samples (a cluster bootstrap). Fewer than two prompts leave
  the spread unknown: ``None`` (shown as n/a). Returns ``(low, high)``.
- **Seeds × prompts, crossed** (``prefloop compare``: :func:`grid_ci`, :func:`grid_paired_diff_ci`).
  Every seed answers the same prompts: a replicate draws the seeds with replacement and,
  independently, the prompts with replacement, and takes the mean of the drawn cells (a missing cell
  is left out). ``None`` only without any value. Returns an :class:`Estimate`.
- **Seeds, then prompts within each seed** (``prefloop experiment``: :func:`hierarchical_bootstrap`).
  Arms' runs per seed are separate, so a replicate draws S seeds with replacement, then for each drawn
  seed its P prompts with replacement, and takes the mean of the drawn seeds' means. ``None`` only
  without any value. Returns an :class:`Estimate`.

The first design is the second with one seed and per-prompt sums and counts for cells, and runs on
the same engine (:func:`_crossed_replicates`): with one seed the seed draw consumes nothing, so its
draws are exactly ``rng.integers(0, P, size=(B, P))``.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Union

if TYPE_CHECKING:  # numpy is imported where it is used: the CLI starts without it
    import numpy as np

Interval = tuple[float, float]
#: values of one prompt: its samples' values, or one value.
PromptValues = Sequence[float] | float
#: ``{seed: {prompt: value}}`` (any hashable keys: ``Any``, as a mapping's key type is invariant);
#: a plain list is one seed's values in prompt order.
Grid = Union[Mapping[Any, Mapping[Any, float]], Sequence[float]]

CONFIDENCE = 0.95
RESAMPLES = 2000
SEED = 0
#: resampled cells held in memory at once (resamples × prompts), whatever the eval set's size.
_CHUNK_CELLS = 2_000_000


@dataclass(frozen=True)
class Estimate:
    """A mean with its interval."""

    mean: float
    low: float
    high: float
    n: int  #: values that carried the estimate (cells for a grid, per-prompt values for seeds → prompts)

    def overlaps(self, other: Estimate) -> bool:
        """Whether the two intervals share a point (then a difference is within the noise)."""
        return self.low <= other.high and other.low <= self.high

    def to_dict(self) -> dict[str, Any]:
        return {"mean": self.mean, "low": self.low, "high": self.high, "n": self.n}


def _check(confidence: float, resamples: int) -> None:
    if not 0 < confidence < 1 or resamples < 1:
        raise ValueError(f"confidence must lie in (0, 1) and resamples be positive, got {confidence}, {resamples}")


def _percentile_interval(replicates: np.ndarray, confidence: float) -> Interval:
    import numpy as np

    tail = (1 - confidence) / 2
    lo, hi = np.quantile(replicates, [tail, 1 - tail])
    return float(lo), float(hi)


def _crossed_replicates(sums: np.ndarray, counts: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    """Pooled means Σ sums / Σ counts over the drawn cells of a (seeds × prompts) table, seeds and
    prompts drawn independently with replacement; replicates that drew no value are dropped.

    Draws: ``rows = rng.integers(0, S, size=(B, S))``, then ``rng.integers(0, P, size=(B, P))`` (in
    chunks of rows, which give the same numbers). A row drawn c times counts c times.
    """
    import numpy as np

    s, p = sums.shape
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, s, size=(resamples, s))
    out = np.empty(resamples)
    step = max(1, _CHUNK_CELLS // p)
    for start in range(0, resamples, step):
        drawn_rows = rows[start : start + step]
        b = len(drawn_rows)
        row_w = np.zeros((b, s))
        np.add.at(row_w, (np.arange(b)[:, None], drawn_rows), 1.0)
        cols = rng.integers(0, p, size=(b, p))
        # the drawn rows' column totals (with one seed: the cells themselves), then the drawn columns
        total = np.take_along_axis(row_w @ sums, cols, axis=1).sum(axis=1)
        count = np.take_along_axis(row_w @ counts, cols, axis=1).sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[start : start + b] = total / count
    return out[~np.isnan(out)]


# ------------------------------------------------------------------ prompts, samples kept together
def _groups(values: Sequence[PromptValues]) -> list[list[float]]:
    """Per-prompt lists of values; prompts without any value (e.g. all judgements failed) are dropped."""
    out = []
    for v in values:
        group = [float(v)] if isinstance(v, (int, float)) else [float(x) for x in v]
        if group:
            out.append(group)
    return out


def _prompt_interval(sums: Sequence[float], counts: Sequence[float], center: float, resamples: int, seed: int,
                     confidence: float) -> Interval | None:
    """Percentile interval of the pooled mean over prompt resamples (``sums`` are taken around
    ``center``, so that a constant sample gives exactly its value)."""
    import numpy as np

    if len(sums) < 2:
        return None
    _check(confidence, resamples)
    replicates = _crossed_replicates(np.array([sums], dtype=float), np.array([counts], dtype=float), resamples, seed)
    lo, hi = _percentile_interval(replicates, confidence)
    return center + lo, center + hi


def bootstrap_ci(values: Sequence[PromptValues], *, resamples: int = RESAMPLES, seed: int = SEED,
                 confidence: float = CONFIDENCE) -> Interval | None:
    """The ``confidence`` interval of the mean of all samples, resampling prompts with their samples.

    ``values[i]`` is prompt i's samples (or a single value). ``None`` with fewer than two prompts.
    """
    groups = _groups(values)
    center = groups[0][0] if groups else 0.0
    return _prompt_interval([sum(x - center for x in g) for g in groups], [len(g) for g in groups], center,
                            resamples, seed, confidence)


def _paired(a: Sequence[PromptValues], b: Sequence[PromptValues]) -> list[float]:
    if len(a) != len(b):
        raise ValueError(f"paired values need one entry per prompt on both sides, got {len(a)} and {len(b)}")
    import numpy as np

    diffs = []
    for x, y in zip(a, b, strict=True):
        gx, gy = _groups([x]), _groups([y])
        if gx and gy:  # a prompt missing on one side is no pair
            diffs.append(float(np.mean(gx[0])) - float(np.mean(gy[0])))
    return diffs


def mean_paired_diff(a: Sequence[PromptValues], b: Sequence[PromptValues]) -> float | None:
    """The mean over prompts of (prompt's mean in ``a``) − (its mean in ``b``); ``a[i]``, ``b[i]``: one prompt."""
    import numpy as np

    d = _paired(a, b)
    return float(np.mean(d)) if d else None


def paired_diff_ci(a: Sequence[PromptValues], b: Sequence[PromptValues], *, resamples: int = RESAMPLES,
                   seed: int = SEED, confidence: float = CONFIDENCE) -> Interval | None:
    """The interval of :func:`mean_paired_diff`, resampling prompts (each keeps its pair)."""
    d = _paired(a, b)
    center = d[0] if d else 0.0
    return _prompt_interval([x - center for x in d], [1.0] * len(d), center, resamples, seed, confidence)


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


# ------------------------------------------------------------------ seeds × prompts, crossed
def _as_grid(values: Grid) -> dict[Hashable, dict[Hashable, float]]:
    if isinstance(values, Mapping):
        return {s: {p: float(v) for p, v in row.items() if v is not None} for s, row in values.items()}
    return {0: {i: float(v) for i, v in enumerate(values) if v is not None}}


def grid_ci(values: Grid, *, confidence: float = CONFIDENCE, resamples: int = RESAMPLES, seed: int = SEED) -> Estimate | None:
    """The mean of ``values`` with its bootstrap interval over seeds and prompts (``None`` if empty).

    The grid's rows are its seeds in the order given, its columns the prompts in the order of their
    ``repr`` (that order fixes which prompt a draw picks)."""
    import numpy as np

    grid = _as_grid(values)
    seeds = [s for s, row in grid.items() if row]
    prompts = sorted({p for s in seeds for p in grid[s]}, key=repr)
    if not seeds or not prompts:
        return None
    _check(confidence, resamples)
    cells = np.full((len(seeds), len(prompts)), np.nan)
    col = {p: j for j, p in enumerate(prompts)}
    for i, s in enumerate(seeds):
        for p, v in grid[s].items():
            cells[i, col[p]] = v
    present = ~np.isnan(cells)
    center = float(cells[present][0])
    replicates = _crossed_replicates(np.where(present, cells - center, 0.0), present.astype(float), resamples, seed)
    low, high = _percentile_interval(replicates, confidence)
    return Estimate(float(cells[present].mean()), center + low, center + high, int(present.sum()))


def grid_paired_diff_ci(a: Grid, b: Grid, *, confidence: float = CONFIDENCE, resamples: int = RESAMPLES,
                        seed: int = SEED) -> Estimate | None:
    """``a − b`` on the cells both have (same seed, same prompt), with its interval (``None`` if none is shared)."""
    ga, gb = _as_grid(a), _as_grid(b)
    diff = {s: {p: ga[s][p] - gb[s][p] for p in ga[s] if p in gb.get(s, {})} for s in ga if s in gb}
    return grid_ci(diff, confidence=confidence, resamples=resamples, seed=seed)


# ------------------------------------------------------------------ seeds, then prompts within each seed
def hierarchical_bootstrap(groups: Sequence[Sequence[float]], *, resamples: int = RESAMPLES, seed: int = SEED,
                           confidence: float = CONFIDENCE) -> Estimate | None:
    """The mean of per-seed means (``groups``: one list of per-prompt values per seed) with its interval.

    Exactly (so that anyone can recompute it): ``rng = numpy.random.default_rng(seed)``;
    ``picks = rng.integers(0, S, size=(B, S))``; ``u = rng.random((B, S, P_max))``; in replicate b, the
    j-th drawn seed s = picks[b, j] contributes the mean of its values at positions
    ``floor(u[b, j, k] · P_s)`` for k < P_s; the replicate is the mean of those S means.
    """
    import numpy as np

    groups = [list(map(float, g)) for g in groups if len(g)]
    if not groups:
        return None
    _check(confidence, resamples)
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
    low, high = _percentile_interval(replicates, confidence)
    mean = float(np.mean([np.mean(g) for g in groups]))
    return Estimate(mean, low, high, int(sizes.sum()))
