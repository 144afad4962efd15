"""The one writer of annotations: leased submits, skips, and lease-free records (judges, Argilla,
imports) all end in :func:`plan` and :func:`apply`.

:func:`plan` checks an answer through its task's kind (:mod:`prefloop.kinds`) and decides the
row: a new one, an update (the previous status, value and rationale appended to ``history``,
meta merged), or nothing when the same answer comes again. It also decides how ``tasks.n_done``
moves: +1 when a counted answer becomes submitted, −1 when a submitted one is withdrawn
(submitted → skipped), never twice for one answer. Which answers count is the caller's to say:
a leased submit fills the slot its lease held; a record counts when its annotator is human.

:func:`apply` writes a batch of planned rows in one statement per kind of change: one
multi-row INSERT … RETURNING for the new rows (up to :data:`ROWS_PER_INSERT` a statement), one
``executemany`` UPDATE batch for the changed ones and one for the counts, on the DBAPI cursor of
the caller's transaction (:class:`~prefloop.feedback.store.queue_sql.Fast`: compiled once per
shape, no per-row ORM work). A judge's chunk of verdicts is one such batch
(:func:`record`), instead of a session round trip per verdict.
"""

from __future__ import annotations

import datetime as dt
import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple, cast

from sqlalchemy import Table, and_, bindparam, insert, select, update
from sqlalchemy.engine import Connection

from prefloop.errors import InvalidAnswer, NotFoundError
from prefloop.kinds import get_kind
from prefloop.text import check_json, check_text

from .store.models import (
    Annotation,
    AnnotationStatus,
    Annotator,
    AnnotatorKind,
    Task,
    utcnow,
)
from .store.queue_sql import COUNT_HUMAN_LABEL, UNCOUNT_HUMAN_LABEL, Fast

SUBMITTED, SKIPPED = AnnotationStatus.SUBMITTED.value, AnnotationStatus.SKIPPED.value
STATUSES = (SUBMITTED, SKIPPED)
#: the longest idempotency key the table holds (PostgreSQL refuses longer ones; SQLite would store them).
MAX_KEY = 200
#: answers read and written per batch: IN lists and executemany stay well inside both databases' limits.
BATCH = 2000

A, T, N = (cast(Table, m.__table__) for m in (Annotation, Task, Annotator))

#: the columns an update may change (with a key: a leased submit over an earlier skip)
_UPDATED = ("status", "value", "rationale", "confidence", "duration_s", "prompt_tokens", "completion_tokens", "cost",
            "meta", "history", "updated_at")
_KEYED = ("late", "idempotency_key")
_COLUMNS = ("task_id", "annotator_id", *_UPDATED, *_KEYED, "created_at")

#: new rows per INSERT statement: 16 columns × 500 rows stay well inside both databases' parameter limits
ROWS_PER_INSERT = 500
UPDATE = Fast(update(A).where(A.c.id == bindparam("row_id")), columns=_UPDATED)
UPDATE_KEYED = Fast(update(A).where(A.c.id == bindparam("row_id")), columns=_UPDATED + _KEYED)


@dataclass(frozen=True)
class NewAnnotation:
    """One answer (or skip) to write: the value is checked by the task's kind when submitted."""

    annotator_id: int
    task_id: int
    value: dict[str, Any] | None
    status: str = SUBMITTED
    rationale: str | None = None
    confidence: float | None = None
    duration_s: float | None = None  # human time on task, judge latency
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cost: float | None = None
    meta: dict[str, Any] | None = None
    late: bool = False  # a leased submit after its lease expired
    idempotency_key: str | None = None  # leased submits only

    def check_extras(self) -> None:
        """The text policy for what comes with an answer: status, rationale, key, meta, and numbers
        that must be finite and ≥ 0 (PostgreSQL stores NaN in a float column, SQLite stores NULL)."""
        if self.status not in STATUSES:
            raise InvalidAnswer(f"status {str(self.status)[:40]!r} is not one of {', '.join(STATUSES)}")
        if self.rationale is not None:
            check_text(self.rationale, "rationale", error=InvalidAnswer)
        if self.idempotency_key is not None:
            check_text(self.idempotency_key, "idempotency key", error=InvalidAnswer, allow_blank=False, max_length=MAX_KEY)
        check_json(dict(self.meta or {}), "meta", error=InvalidAnswer)
        for name in ("confidence", "duration_s", "prompt_tokens", "completion_tokens", "cost"):
            x = getattr(self, name)
            if x is not None and (isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x) or x < 0):
                raise InvalidAnswer(f"{name} is {x!r}; expected a finite number ≥ 0")


class Prior(NamedTuple):
    """The annotation already stored for (task, annotator)."""

    id: int
    status: str
    value: dict[str, Any]
    rationale: str | None
    meta: dict[str, Any] | None
    history: list[Any] | None
    updated_at: dt.datetime


@dataclass(frozen=True)
class Target:
    """What a write is checked against, read in the writing transaction: the task's kind, outputs,
    scale and ties; whether this annotator's submitted answer counts towards the task's overlap;
    and the annotation already stored, if any."""

    kind: str
    generation_ids: list[int]
    scale: tuple[int, int] | None
    allow_tie: bool
    counts: bool
    prior: Prior | None = None

    @classmethod
    def of(cls, row: Any, *, counts: bool) -> Target:
        """From a row with the task's ``kind, generation_ids, scale_min, scale_max, meta`` and the
        ``prior_*`` columns of a left-joined annotation."""
        prior = None
        if row.prior_id is not None:
            prior = Prior(row.prior_id, row.prior_status, row.prior_value, row.prior_rationale, row.prior_meta,
                          row.prior_history, row.prior_updated_at)
        return replace(cls.of_task(row, counts=counts), prior=prior)

    @classmethod
    def of_task(cls, row: Any, *, counts: bool) -> Target:
        """From a row with the task's ``kind, generation_ids, scale_min, scale_max, meta``, as if unanswered."""
        scale = (row.scale_min, row.scale_max) if row.scale_min is not None else None
        return cls(row.kind, [int(g) for g in row.generation_ids], scale, bool((row.meta or {}).get("allow_tie", True)),
                   counts)

    @classmethod
    def unanswered(cls) -> Target:
        """A leased task's target for a skip: claims never lease a task the annotator has answered,
        so there is no earlier answer, and a skip needs no validation (nothing to read)."""
        return cls(kind="", generation_ids=[], scale=None, allow_tie=True, counts=True)


@dataclass
class Change:
    """A planned write: ``insert``, ``update`` or ``same`` (nothing to write), and its count move."""

    op: str
    task_id: int
    row: dict[str, Any] = field(default_factory=dict)
    count: int = 0  # +1 / -1 on tasks.n_done
    prior_id: int | None = None
    keyed: bool = False


def plan(ann: NewAnnotation, target: Target, now: dt.datetime) -> Change:
    """Validate ``ann`` against its task and decide the row, the history and the count move."""
    clean: dict[str, Any] = {}
    if ann.status == SUBMITTED:
        clean = get_kind(target.kind).validate(
            ann.value, target.generation_ids, scale=target.scale, allow_tie=target.allow_tie, where=f"task {ann.task_id}",
        )
    prior = target.prior
    counted_before = target.counts and prior is not None and prior.status == SUBMITTED
    count = int(target.counts and ann.status == SUBMITTED) - int(counted_before)
    fields = {
        "status": ann.status, "value": clean, "rationale": ann.rationale, "confidence": ann.confidence,
        "duration_s": ann.duration_s, "prompt_tokens": ann.prompt_tokens, "completion_tokens": ann.completion_tokens,
        "cost": ann.cost, "updated_at": now,
    }
    if prior is None:
        row: dict[str, Any] = {**fields, "task_id": ann.task_id, "annotator_id": ann.annotator_id, "meta": dict(ann.meta or {}),
               "history": [], "late": ann.late, "idempotency_key": ann.idempotency_key, "created_at": now}
        return Change("insert", ann.task_id, row, count)
    if prior.status == ann.status and prior.value == clean and prior.rationale == ann.rationale:
        return Change("same", ann.task_id, prior_id=prior.id)
    snapshot = {"status": prior.status, "value": prior.value, "rationale": prior.rationale,
                "updated_at": prior.updated_at.isoformat()}
    row = {**fields, "row_id": prior.id, "meta": {**(prior.meta or {}), **(ann.meta or {})},
           "history": [*(prior.history or []), snapshot]}
    keyed = ann.idempotency_key is not None
    if keyed:
        row.update(late=ann.late, idempotency_key=ann.idempotency_key)
    return Change("update", ann.task_id, row, count, prior.id, keyed)


def apply(conn: Connection, changes: Sequence[Change]) -> list[tuple[int, bool]]:
    """Write planned changes, one statement per kind of change; ``(annotation id, changed)`` each."""
    rows = [c.row for c in changes if c.op == "insert"]
    inserted = {}
    for start in range(0, len(rows), ROWS_PER_INSERT):
        part = rows[start : start + ROWS_PER_INSERT]
        params = {f"{k}_{i}": v for i, row in enumerate(part) for k, v in row.items()}
        inserted.update({(r.task_id, r.annotator_id): r.id for r in _insert(len(part)).all(conn, params)})
    UPDATE.many(conn, [c.row for c in changes if c.op == "update" and not c.keyed])
    UPDATE_KEYED.many(conn, [c.row for c in changes if c.op == "update" and c.keyed])
    COUNT_HUMAN_LABEL.many(conn, [{"task": c.task_id} for c in changes if c.count > 0])
    UNCOUNT_HUMAN_LABEL.many(conn, [{"task": c.task_id} for c in changes if c.count < 0])
    out = []
    for c in changes:
        if c.op == "insert":
            out.append((inserted[(c.row["task_id"], c.row["annotator_id"])], True))
        else:
            assert c.prior_id is not None
            out.append((c.prior_id, c.op == "update"))
    return out


@functools.lru_cache(maxsize=32)
def _insert(n: int) -> Fast:
    """One multi-row INSERT of ``n`` new annotations (parameters ``<column>_<i>``) that returns
    each row's (task, annotator, id): one statement and one round trip for a whole batch."""
    rows = [{c: bindparam(f"{c}_{i}", type_=A.c[c].type) for c in _COLUMNS} for i in range(n)]
    return Fast(insert(A).values(rows).returning(A.c.task_id, A.c.annotator_id, A.c.id))


def write(conn: Connection, ann: NewAnnotation, target: Target, now: dt.datetime) -> tuple[int, bool]:
    """Plan and write one answer whose target the caller has read (a leased submit, a skip)."""
    return apply(conn, [plan(ann, target, now)])[0]


def record(conn: Connection, answers: Sequence[NewAnnotation], *, now: dt.datetime | None = None) -> list[tuple[int, bool]]:
    """Write lease-free answers (judges, Argilla, imports): read their tasks, annotators and earlier
    answers, plan each, write each batch at once. A submitted answer counts towards its task's
    overlap when its annotator is human. All or nothing: one refused answer writes none.

    An answer for a (task, annotator) that comes earlier in ``answers`` is written after it, as
    if recorded one by one."""
    now = now or utcnow()
    out: list[tuple[int, bool]] = []
    for run in _runs(answers):
        targets = _targets(conn, run)
        out += apply(conn, [plan(a, targets[(a.task_id, a.annotator_id)], now) for a in run])
    return out


def _runs(answers: Sequence[NewAnnotation]) -> list[list[NewAnnotation]]:
    """``answers`` cut into batches of at most :data:`BATCH`, none holding a (task, annotator) twice."""
    runs: list[list[NewAnnotation]] = [[]]
    seen: set[tuple[int, int]] = set()
    for a in answers:
        key = (a.task_id, a.annotator_id)
        if key in seen or len(runs[-1]) >= BATCH:
            runs.append([])
            seen = set()
        runs[-1].append(a)
        seen.add(key)
    return [r for r in runs if r]


#: Each answer's target, for a batch: its tasks × its annotators, with their earlier answers.
_TARGETS = (
    select(
        T.c.id.label("task_id"), N.c.id.label("annotator_id"), (N.c.kind == AnnotatorKind.HUMAN.value).label("human"),
        T.c.kind, T.c.generation_ids, T.c.scale_min, T.c.scale_max, T.c.meta,
        A.c.id.label("prior_id"), A.c.status.label("prior_status"), A.c.value.label("prior_value"),
        A.c.rationale.label("prior_rationale"), A.c.meta.label("prior_meta"), A.c.history.label("prior_history"),
        A.c.updated_at.label("prior_updated_at"),
    )
    .select_from(
        T.join(N, N.c.id.in_(bindparam("annotators", expanding=True)))
        .outerjoin(A, and_(A.c.task_id == T.c.id, A.c.annotator_id == N.c.id))
    )
    .where(T.c.id.in_(bindparam("tasks", expanding=True)))
)
_TASK_EXISTS = select(T.c.id).where(T.c.id == bindparam("task"))


def _targets(conn: Connection, answers: list[NewAnnotation]) -> dict[tuple[int, int], Target]:
    """Each answer's target, in one read for the whole batch; NotFoundError for the first answer
    (in order) whose task or annotator is missing."""
    params = {"tasks": sorted({a.task_id for a in answers}), "annotators": sorted({a.annotator_id for a in answers})}
    found = {(r.task_id, r.annotator_id): Target.of(r, counts=bool(r.human)) for r in conn.execute(_TARGETS, params)}
    for a in answers:
        if (a.task_id, a.annotator_id) not in found:
            if conn.execute(_TASK_EXISTS, {"task": a.task_id}).first() is None:
                raise NotFoundError(f"task {a.task_id} does not exist")
            raise NotFoundError(f"annotator {a.annotator_id} does not exist")
    return found
