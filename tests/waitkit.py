"""Waiting in tests without sleeping for a guessed time: poll a condition until a deadline, and
see that a thread is really blocked behind a transaction (rather than hoping 0.3 s was enough).
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable

from sqlalchemy import Connection, text

from prefloop.feedback.store.db import ImmediateSQLiteDialect, Store


def wait_until(condition: Callable[[], object], what: str, *, timeout: float = 60.0, interval: float = 0.02) -> None:
    """Return as soon as ``condition()`` is true; fail naming ``what`` after ``timeout`` seconds.

    The deadline only bounds a test that is already failing: a passing test never waits for it.
    """
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def blocked_by(store: Store, holder: Connection, worker: threading.Thread) -> bool:
    """True while ``worker`` waits for the lock that ``holder``'s open transaction holds.

    PostgreSQL: some backend lists the holder in ``pg_blocking_pids``. SQLite: the worker is
    inside ``BEGIN IMMEDIATE`` (every prefloop transaction starts with it) while the holder has
    the write lock, so it cannot get past it until the holder ends.
    """
    if store.dialect == "postgresql":
        pid = holder.scalar(text("SELECT pg_backend_pid()"))
        with store.engine.connect() as probe:
            waiting = probe.scalar(text("SELECT count(*) FROM pg_stat_activity WHERE :pid = ANY(pg_blocking_pids(pid))"),
                                   {"pid": pid})
        return bool(waiting)
    frame = sys._current_frames().get(worker.ident)
    return frame is not None and frame.f_code is ImmediateSQLiteDialect.do_begin.__code__
