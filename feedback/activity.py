"""Who labelled what, when: queue progress per round, labels per annotator per hour, streaks.

The numbers the admin dashboard draws and an annotator's own progress bar shows. Agreement
statistics live in :mod:`.agreement`; this module only counts.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from sqlalchemy import case, func, select

from prefloop.text import finite_or_none

from .store.db import Store
from .store.models import Annotation, AnnotationStatus, Annotator, AnnotatorKind, Round, Task, TaskStatus, utcnow

#: a pause longer than this ends a streak of answers (a "sitting").
STREAK_GAP = dt.timedelta(minutes=15)


@dataclass(frozen=True)
class RoundProgress:
    round_id: int | None
    round_number: int | None
    tasks: int
    complete: int
    slots: int  # sum of overlaps: how many human answers the round asks for
    answered: int  # human answers counted against those slots

    @property
    def fraction(self) -> float:
        return self.answered / self.slots if self.slots else 1.0


@dataclass
class Throughput:
    """Submitted human labels per annotator per hour over the last ``len(hours)`` hours."""

    hours: list[dt.datetime]
    counts: dict[str, list[int]] = field(default_factory=dict)
    mean_duration_s: dict[str, float | None] = field(default_factory=dict)

    def total(self, name: str) -> int:
        return sum(self.counts.get(name, []))


def round_progress(store: Store) -> list[RoundProgress]:
    """One row per round (``round_id`` None: tasks outside any round), oldest first."""
    answered = func.sum(case((Task.n_done > Task.overlap, Task.overlap), else_=Task.n_done))
    complete = func.sum(case((Task.status == TaskStatus.COMPLETE.value, 1), else_=0))
    q = (
        select(Task.round_id, Round.number, func.count(), complete, func.sum(Task.overlap), answered)
        .outerjoin(Round, Round.id == Task.round_id)
        .where(Task.status != TaskStatus.CANCELLED.value)
        .group_by(Task.round_id, Round.number)
    )
    with store.session() as s:
        rows = s.execute(q).all()
    out = [RoundProgress(r[0], r[1], int(r[2]), int(r[3] or 0), int(r[4] or 0), int(r[5] or 0)) for r in rows]
    return sorted(out, key=lambda p: (p.round_number is not None, p.round_number or 0))


def throughput(store: Store, *, hours: int = 24, now: dt.datetime | None = None) -> Throughput:
    """Labels per human annotator per clock hour, the current hour last."""
    now = now or utcnow()
    last = now.replace(minute=0, second=0, microsecond=0)
    start = last - dt.timedelta(hours=hours - 1)
    buckets = [start + dt.timedelta(hours=i) for i in range(hours)]
    q = (
        select(Annotator.name, Annotation.created_at, Annotation.duration_s)
        .join(Annotator, Annotator.id == Annotation.annotator_id)
        .where(
            Annotator.kind == AnnotatorKind.HUMAN.value,
            Annotation.status == AnnotationStatus.SUBMITTED.value,
            Annotation.created_at >= start,
        )
    )
    out = Throughput(hours=buckets)
    durations: dict[str, list[float]] = {}
    with store.session() as s:
        for name, created, duration in s.execute(q):
            i = int((created - start).total_seconds() // 3600)
            if 0 <= i < hours:
                out.counts.setdefault(name, [0] * hours)[i] += 1
                if (finite := finite_or_none(duration)) is not None:  # PostgreSQL may hold a NaN duration
                    durations.setdefault(name, []).append(finite)
    out.mean_duration_s = {n: (sum(d) / len(d) if (d := durations.get(n)) else None) for n in out.counts}
    return out


def streak(store: Store, annotator_id: int, *, now: dt.datetime | None = None, gap: dt.timedelta = STREAK_GAP) -> int:
    """Answers in the current sitting: submitted in a row with no pause longer than ``gap``."""
    now = now or utcnow()
    q = (
        select(Annotation.created_at)
        .where(Annotation.annotator_id == annotator_id, Annotation.status == AnnotationStatus.SUBMITTED.value)
        .order_by(Annotation.created_at.desc())
        .limit(1000)
    )
    with store.session() as s:
        times = list(s.scalars(q))
    n, previous = 0, now
    for t in times:
        if previous - t > gap:
            break
        n, previous = n + 1, t
    return n
