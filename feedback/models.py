"""Moved to :mod:`prefloop.feedback.store.models`; this name is the same module (kept for existing imports)."""

import sys

from prefloop.feedback.store import models as _moved

sys.modules[__name__] = _moved
