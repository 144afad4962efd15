"""Moved to :mod:`prefloop.feedback.store.queue_sql`; this name is the same module (kept for existing imports)."""

import sys

from prefloop.feedback.store import queue_sql as _moved

sys.modules[__name__] = _moved
