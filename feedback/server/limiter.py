"""Slows down failed sign-ins without ever standing between a valid token and its owner.

A token carries 256 random bits, so guessing one is hopeless; what the limiter prevents is a
flood of failures (a misconfigured script, a scanner) costing lookups and filling logs. It is
consulted only *after* a token failed: a valid token is checked first (one indexed sha256
lookup) and always passes, so nobody is locked out by someone else's failures, even when a whole
team shares one address behind a proxy. Failures are counted

- per client address and per token prefix (a script retrying a revoked token from many places),
  ``limit`` of each in a sliding ``window``;
- over all clients, ``overall`` in the same window (a flood from many addresses).

Past any of these, a failing attempt gets 429 with ``Retry-After`` instead of 401.
Counts live in memory (one ``prefloop serve`` process); each key keeps at most its limit of
timestamps, keys idle for a window are dropped, and past the overall ceiling no new key is
made, so memory stays bounded under a flood.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

#: how many leading characters of a token identify it for counting (``pfl_`` + 8 random ones).
TOKEN_PREFIX_CHARS = 12


class SignInLimiter:
    def __init__(self, limit: int, overall: int, window: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit, self.overall, self.window = limit, overall, window
        self._clock = clock
        self._fails: dict[tuple[str, str], deque[float]] = {}
        self._lock = threading.Lock()
        self._next_prune = clock() + window

    def failed(self, address: str, token: str) -> float:
        """Count a failed sign-in; the seconds to wait before failing again is allowed (0: none).

        The wait is computed from the failures *before* this one, so the ``limit``-th failure in a
        window still gets its 401 and the next one its 429. Past the overall ceiling only the
        overall count moves, so a flood from ever new addresses adds no keys.
        """
        now = self._clock()
        with self._lock:
            wait = self._count(("all", ""), self.overall, now)
            if not wait:
                for key in (("address", address), ("token", token[:TOKEN_PREFIX_CHARS])):
                    wait = max(wait, self._count(key, self.limit, now))
            if now >= self._next_prune:
                self._prune(now)
        return wait

    def _count(self, key: tuple[str, str], limit: int, now: float) -> float:
        q = self._fails.get(key)
        if q is None:
            q = self._fails[key] = deque(maxlen=limit)
        wait = self.window - (now - q[0]) if len(q) == limit and now - q[0] < self.window else 0.0
        q.append(now)
        return wait

    def _prune(self, now: float) -> None:
        for key in [k for k, q in self._fails.items() if not q or now - q[-1] >= self.window]:
            del self._fails[key]
        self._next_prune = now + self.window

    def __len__(self) -> int:
        """How many keys are being counted (for tests of the memory bound)."""
        return len(self._fails)
