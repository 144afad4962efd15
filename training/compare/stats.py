"""Deprecated: ``prefloop compare``'s intervals moved to :mod:`prefloop.stats` (``grid_ci``,
``grid_paired_diff_ci``; ``Interval`` is :class:`prefloop.stats.Estimate`); this path goes away in 0.3."""

import warnings

from prefloop.stats import Estimate, Grid, grid_ci, grid_paired_diff_ci  # noqa: F401

Interval = Estimate
bootstrap_ci = grid_ci
paired_diff_ci = grid_paired_diff_ci

warnings.warn("prefloop.training.compare.stats moved to prefloop.stats; the old path goes away in 0.3", DeprecationWarning,
              stacklevel=2)
