"""Verdict caches: the same (judge identity, prompt, outputs) is never judged twice.

:class:`StoreCache` keeps verdicts in the store's ``judge_cache`` table, so a re-run of a round
(or another process) reuses them; :class:`MemoryCache` serves judges used outside a project
(e.g. inside a TRL trainer). Only successful verdicts are cached: a failure is retried next time.
"""

from __future__ import annotations

import contextlib
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError


class VerdictCache(Protocol):
    def get_many(self, keys: list[str]) -> dict[str, dict[str, Any]]: ...

    def put_many(self, judge: str, entries: dict[str, dict[str, Any]]) -> None: ...


class MemoryCache:
    """A dict: for one process's lifetime."""

    def __init__(self) -> None:
        self._d: dict[str, dict[str, Any]] = {}

    def get_many(self, keys: list[str]) -> dict[str, dict[str, Any]]:
        return {k: self._d[k] for k in keys if k in self._d}

    def put_many(self, judge: str, entries: dict[str, dict[str, Any]]) -> None:
        self._d.update(entries)

    def __len__(self) -> int:
        return len(self._d)


class StoreCache:
    """The ``judge_cache`` table of a :class:`~prefloop.feedback.store.db.Store` (SQLite or PostgreSQL)."""

    def __init__(self, store: Any) -> None:
        self.store = store

    def get_many(self, keys: list[str]) -> dict[str, dict[str, Any]]:
        from prefloop.feedback.store.models import JudgeCache

        out: dict[str, dict[str, Any]] = {}
        uniq = list(dict.fromkeys(keys))
        with self.store.session() as s:
            for i in range(0, len(uniq), 500):
                chunk = uniq[i : i + 500]
                out.update(dict(s.execute(select(JudgeCache.key, JudgeCache.verdict).where(JudgeCache.key.in_(chunk))).all()))
        return out

    def put_many(self, judge: str, entries: dict[str, dict[str, Any]]) -> None:
        if not entries:
            return
        try:
            self._insert(judge, entries)
        except IntegrityError:
            # Another process inserted some of these keys between our read and our commit. The
            # verdicts are equal by construction (same identity and inputs): keep theirs.
            for k, v in entries.items():
                with contextlib.suppress(IntegrityError):
                    self._insert(judge, {k: v})

    def _insert(self, judge: str, entries: dict[str, dict[str, Any]]) -> None:
        from prefloop.feedback.store.models import JudgeCache

        with self.store.session() as s:
            known = set(s.scalars(select(JudgeCache.key).where(JudgeCache.key.in_(list(entries)))))
            s.add_all(JudgeCache(key=k, judge=judge, verdict=v) for k, v in entries.items() if k not in known)

    def count(self, judge: str | None = None) -> int:
        from sqlalchemy import func

        from prefloop.feedback.store.models import JudgeCache

        with self.store.session() as s:
            q = select(func.count()).select_from(JudgeCache)
            if judge is not None:
                q = q.where(JudgeCache.judge == judge)
            return int(s.scalar(q) or 0)

