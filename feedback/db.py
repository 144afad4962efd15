"""Moved to :mod:`prefloop.feedback.store.db`; this name is the same module (kept for existing imports)."""

import sys

from prefloop.feedback.store import db as _moved

sys.modules[__name__] = _moved
