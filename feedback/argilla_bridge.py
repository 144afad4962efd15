"""Deprecated path: the Argilla bridge is now the package :mod:`prefloop.feedback.argilla`."""

from __future__ import annotations

import warnings

from .argilla import *  # noqa: F403 - the package's public names, as this module had them
from .argilla import __all__  # noqa: F401

warnings.warn("prefloop.feedback.argilla_bridge moved to prefloop.feedback.argilla; the old path goes away in 0.3",
              DeprecationWarning, stacklevel=2)
