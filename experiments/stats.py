"""Deprecated: the experiments' two-level bootstrap moved to :mod:`prefloop.stats`; this path goes away in 0.3."""

import warnings

from prefloop.stats import Estimate, hierarchical_bootstrap  # noqa: F401

warnings.warn("prefloop.experiments.stats moved to prefloop.stats; the old path goes away in 0.3", DeprecationWarning, stacklevel=2)
