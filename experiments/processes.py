"""The experiment's worker processes, stopped with it.

Ctrl-C reaches the whole process group, but ``kill PID`` (or a job scheduler's SIGTERM) reaches only
the ``prefloop experiment`` process: its workers would go on training, unseen, for an hour. So a
SIGTERM becomes an ordinary exit of the main thread, and on any exit the workers still running are
terminated and no new one starts. Runs are resumable, so a stopped experiment finishes when re-run.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import threading
from collections.abc import Iterator, Sequence
from typing import IO, Any

#: how long a terminated worker may take to exit before it is killed
GRACE_SECONDS = 30.0


class Stopped(Exception):  # noqa: N818 - a state, not an error
    """The experiment is stopping: no new worker starts."""


class WorkerProcesses:
    """Starts workers, remembers the live ones, and stops them all at once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._live: set[subprocess.Popen[bytes]] = set()
        self._stopping = False

    def call(self, argv: Sequence[str], *, log: IO[str], env: dict[str, str]) -> int:
        """Run one worker to its end (its output to ``log``) and return its exit code; raises
        :class:`Stopped` instead of starting it once :meth:`stop` was called."""
        with self._lock:
            if self._stopping:
                raise Stopped
            proc = subprocess.Popen(list(argv), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
            self._live.add(proc)
        try:
            return proc.wait()
        finally:
            with self._lock:
                self._live.discard(proc)

    @contextlib.contextmanager
    def stopped_on_exit(self) -> Iterator[WorkerProcesses]:
        """If the block ends with an exception (Ctrl-C, SIGTERM, an error), stop every worker first."""
        try:
            yield self
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Terminate every live worker (SIGTERM, then SIGKILL after :data:`GRACE_SECONDS`)."""
        with self._lock:
            self._stopping = True
            live = list(self._live)
        for proc in live:
            proc.terminate()
        for proc in live:
            try:
                proc.wait(timeout=GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@contextlib.contextmanager
def sigterm_as_exit() -> Iterator[None]:
    """Within the block, SIGTERM raises ``SystemExit(143)`` in the main thread (so ``finally`` blocks
    run); outside the main thread, where signals cannot be handled, nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _exit(signum: int, frame: Any) -> None:  # noqa: ANN401, ARG001
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, _exit)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
