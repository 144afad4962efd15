"""Deprecated: scripted annotators moved to :mod:`prefloop.sim` (``prefloop.sim.humans``); this path goes away in 0.3."""

import warnings

from prefloop.sim.humans import *  # noqa: F403

warnings.warn(
    "prefloop.feedback.simulate moved to prefloop.sim; the old path goes away in 0.3", DeprecationWarning, stacklevel=2
)
