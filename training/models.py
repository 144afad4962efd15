"""Deprecated: model loading moved to :mod:`prefloop.training.loading` (``models`` read as the store's
tables); this path goes away in 0.3."""

import warnings

from prefloop.training.loading import *  # noqa: F403

warnings.warn(
    "prefloop.training.models moved to prefloop.training.loading; the old path goes away in 0.3", DeprecationWarning, stacklevel=2
)
