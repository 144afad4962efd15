"""Deprecated: evaluation intervals moved to :mod:`prefloop.stats` (one bootstrap implementation for
evaluation, ``prefloop compare`` and experiments); this path goes away in 0.3."""

import warnings

from prefloop.stats import (  # noqa: F401
    CONFIDENCE,
    RESAMPLES,
    SEED,
    Bootstrap,
    Interval,
    PromptValues,
    bootstrap_ci,
    includes,
    mean_paired_diff,
    paired_diff_ci,
)

warnings.warn("prefloop.training.stats moved to prefloop.stats; the old path goes away in 0.3", DeprecationWarning, stacklevel=2)
