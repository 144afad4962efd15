"""The annotation queue: claim a slot with a lease, submit, skip, release; and its progress.

Guarantees, on SQLite and PostgreSQL alike:

- a task is served to ``overlap`` distinct humans, never twice to the same one;
- a claim holds a lease; an expired lease frees its slot for someone else;
- two concurrent claimers never get the same slot (SQLite: ``BEGIN IMMEDIATE``; PostgreSQL:
  ``FOR UPDATE SKIP LOCKED`` in a REPEATABLE READ statement that starts over when a task it
  locks changed since its snapshot), and a claim never answers "nothing left" while a task
  with a free slot is merely busy;
- ``submit`` validates the answer against the task and is idempotent by key: a retried submit
  returns the first receipt and never writes a second annotation;
- a late submit (lease expired) is kept, flagged ``late``: an annotator's work is never lost.

Judges, imports and the Argilla bridge write through :meth:`Queue.record` and
:meth:`Queue.record_many`, which need no lease. Every answer, leased or not, is written by
:mod:`.writer` (validation through the task's kind, history, ``n_done``). Tasks are added by
the methods :class:`Queue` inherits from :mod:`.enqueue`. Claim and submit run pre-compiled
statements from :mod:`.queue_sql`, no ORM: on PostgreSQL one statement (one round trip) each.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple, TypeVar, cast

from sqlalchemy import func, select
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session

from prefloop.errors import (
    DuplicateSubmission,
    InvalidAnswer,
    NotAssigned,
    NotFoundError,
    PrefloopError,
    QueueError,
)
from prefloop.kinds import get_kind
from prefloop.text import check_json, check_text

from . import writer
from .enqueue import Enqueue, check_distinct_outputs
from .store import queue_sql as sql
from .store.db import Store
from .store.models import (
    Annotation,
    AnnotationStatus,
    Annotator,
    AnnotatorKind,
    Lease,
    Task,
    TaskStatus,
    utcnow,
)
from .writer import NewAnnotation

__all__ = ["Candidate", "ClaimedTask", "Queue", "QueueStatus", "Receipt", "check_distinct_outputs"]

#: the longest annotator name the table holds (PostgreSQL refuses longer ones; SQLite would store them).
MAX_NAME = 200
#: PostgreSQL: times a claim or submit statement runs again after a serialization failure before giving up
#: (then the error reaches the caller; the server answers 503 + Retry-After).
SERIALIZATION_RETRIES = 100
SERIALIZATION_FAILURE = "40001"
#: PostgreSQL: claimed tasks whose answer checks a Queue keeps, so that a submit needs no read first.
TARGETS_KEPT = 10_000
_R = TypeVar("_R")


@dataclass(frozen=True)
class Candidate:
    generation_id: int
    text: str


@dataclass(frozen=True)
class ClaimedTask:
    """What an annotator is shown: the prompt, the candidates, and the lease's expiry."""

    task_id: int
    kind: str
    prompt_id: int
    prompt_messages: list[dict[str, str]]
    candidates: list[Candidate]
    lease_expires_at: dt.datetime
    round_id: int | None = None
    scale: tuple[int, int] | None = None
    allow_tie: bool = True
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def prompt_text(self) -> str:
        users = [m["content"] for m in self.prompt_messages if m["role"] == "user"]
        return users[-1] if users else ""


@dataclass(frozen=True)
class Receipt:
    """The acknowledgement of a submit: ``duplicate`` when a retried key matched a stored answer."""

    annotation_id: int
    task_id: int
    late: bool = False
    duplicate: bool = False


@dataclass
class QueueStatus:
    tasks_by_kind_status: dict[tuple[str, str], int]
    open_slots: int
    active_leases: int
    human_annotations: int
    judge_annotations: int
    skips: int

    @property
    def total_tasks(self) -> int:
        return sum(self.tasks_by_kind_status.values())


class Queue(Enqueue):
    """The queue over a :class:`~prefloop.feedback.store.db.Store`.

    ``lease_seconds``: how long a claim holds its slot; ``overlap``: the default number of
    distinct humans per task; ``rating_scale``: the default scale of rate tasks; ``clock``: the
    naive-UTC time that leases start and expire by (tests move it forward instead of sleeping).
    """

    def __init__(
        self,
        store: Store,
        *,
        lease_seconds: float = 900,
        overlap: int = 1,
        rating_scale: tuple[int, int] = (1, 5),
        allow_ties: bool = True,
        clock: Callable[[], dt.datetime] = utcnow,
    ) -> None:
        if overlap < 0:
            raise QueueError(f"overlap must be ≥ 0, got {overlap}")
        self.store = store
        self.lease = dt.timedelta(seconds=lease_seconds)
        self.overlap = overlap
        self.rating_scale = cast(tuple[int, int], tuple(rating_scale))
        self.allow_ties = allow_ties
        self.clock = clock
        self._pg = store.dialect == "postgresql"
        self._targets: dict[int, writer.Target] = {}  # PostgreSQL: claimed tasks, for their submits
        self._targets_lock = threading.Lock()

    @classmethod
    def from_config(cls, store: Store, queue_config: Any) -> Queue:
        """Build from a :class:`prefloop.feedback.config.QueueConfig`."""
        return cls(
            store,
            lease_seconds=queue_config.lease_seconds,
            overlap=queue_config.overlap,
            rating_scale=tuple(queue_config.rating_scale),
            allow_ties=queue_config.allow_ties,
        )

    # ------------------------------------------------------------------ annotators
    def ensure_annotator(
        self,
        name: str,
        *,
        kind: str = AnnotatorKind.HUMAN.value,
        role: str = "annotator",
        meta: dict[str, Any] | None = None,
    ) -> int:
        """The id of the annotator called ``name``, created on first sight."""
        check_text(name, "annotator name", error=QueueError, allow_blank=False, max_length=MAX_NAME)
        check_json(dict(meta or {}), "meta", error=QueueError)
        with self.store.session() as s:
            row = s.scalar(select(Annotator).where(Annotator.name == name))
            if row is not None:
                if row.kind != kind:
                    raise QueueError(f"annotator {name!r} exists as a {row.kind}, not a {kind}")
                return row.id
            row = Annotator(name=name, kind=AnnotatorKind(kind).value, role=role, meta=dict(meta or {}))
            s.add(row)
            s.flush()
            return row.id

    # ------------------------------------------------------------------ claim
    def claim(
        self, annotator_id: int, *, round_id: int | None = None, kinds: list[str] | None = None
    ) -> ClaimedTask | None:
        """The next task for this annotator by priority, with a lease; ``None`` when none is left.

        Claiming again while a lease is active returns the same task (a reloaded page keeps it)
        and renews the lease. PostgreSQL: one statement (:meth:`_claim_pg`). SQLite: one
        ``BEGIN IMMEDIATE`` transaction, which holds the write lock from its first read, so the
        first free task it reads is still free when it takes the slot.
        """
        now = self.clock()
        where = sql.ClaimFilter(round_id, _task_kinds(kinds))
        me = {"annotator": annotator_id, "now": now, **where.params}
        expires = now + self.lease
        if self._pg:
            return self._claim_pg({**me, "expires": expires}, where)
        with self.store.transaction() as conn:
            row = sql.held_lease(where.shape).first(conn, me)
            if row is not None:
                sql.RENEW_LEASE.run(conn, {**me, "task": row.id, "expires": expires})
            else:
                row = sql.next_task(where.shape).first(conn, me)
                if row is None:
                    return None
                sql.TAKE_SLOT.run(conn, {**me, "task": row.id, "expires": expires})
            return self._claimed(conn, row, expires)

    def _claim_pg(self, params: dict[str, Any], where: sql.ClaimFilter) -> ClaimedTask | None:
        """PostgreSQL: the whole claim in one statement (:func:`.queue_sql.claim_pg`)."""
        row = self._one_statement(lambda conn: sql.claim_pg(where.shape).first(conn, params))
        if row is None:
            return None
        self._remember(row.id, writer.Target.of_task(row, counts=True))
        texts = dict(zip(row.generation_ids, row.candidate_texts, strict=True))
        return self._shown(row, texts, params["expires"])

    def _one_statement(self, run: Callable[[Connection], _R]) -> _R:
        """Run one claim or submit statement on an autocommit connection (PostgreSQL).

        A serialization failure means a concurrent claim or submit changed a task this statement
        locked after its snapshot (see :mod:`.store.queue_sql`): nothing was written, so it runs
        again on a fresh snapshot. A connection the server dropped gets one more try on a new one
        (the pool hands connections out without a pre-ping). Should the server have committed the
        statement just before the connection died, the second run finds the claim's lease (and
        returns its task) or the submit's answer (a retried key gets the first receipt; without a
        key the submit is refused as a duplicate, and the answer is stored).
        """
        dropped, retries = False, 0
        while True:
            try:
                with self.store.autocommit() as conn:
                    return run(conn)
            except DBAPIError as exc:
                if exc.connection_invalidated and not dropped:
                    dropped = True
                elif getattr(exc.orig, "sqlstate", None) == SERIALIZATION_FAILURE and retries < SERIALIZATION_RETRIES:
                    retries += 1
                else:
                    raise

    def _remember(self, task_id: int, target: writer.Target) -> None:
        """Keep what a task's answers are checked against (a task's kind, outputs and scale never change)."""
        with self._targets_lock:
            if len(self._targets) >= TARGETS_KEPT:
                self._targets.pop(next(iter(self._targets)))
            self._targets[task_id] = target

    @classmethod
    def _claimed(cls, conn: Connection, row: Any, expires: dt.datetime) -> ClaimedTask:  # noqa: ANN401
        ids = row.generation_ids
        return cls._shown(row, dict(sql.candidate_texts(len(ids)).all(conn, sql.numbered_values("g", ids))), expires)

    @staticmethod
    def _shown(row: Any, texts: dict[int, str], expires: dt.datetime) -> ClaimedTask:  # noqa: ANN401
        messages = row.prompt_messages or [{"role": "user", "content": row.prompt_text or ""}]
        return ClaimedTask(
            task_id=row.id,
            kind=row.kind,
            prompt_id=row.prompt_id,
            prompt_messages=[dict(m) for m in messages],
            candidates=[Candidate(g, texts[g]) for g in row.generation_ids],
            lease_expires_at=expires,
            round_id=row.round_id,
            scale=(row.scale_min, row.scale_max) if row.scale_min is not None else None,
            allow_tie=bool(row.meta.get("allow_tie", True)),
            meta={k: v for k, v in row.meta.items() if k != "allow_tie"},
        )

    # ------------------------------------------------------------------ submit / skip / release
    def submit(
        self,
        annotator_id: int,
        task_id: int,
        value: dict[str, Any],
        *,
        idempotency_key: str | None = None,
        duration_s: float | None = None,
        rationale: str | None = None,
        meta: dict[str, Any] | None = None,
    ) -> Receipt:
        """Store a claimed task's answer. Idempotent by ``idempotency_key``; see the module doc."""
        answer = NewAnnotation(annotator_id, task_id, value, rationale=rationale, duration_s=duration_s,
                               meta=meta, idempotency_key=idempotency_key)
        answer.check_extras()
        try:
            return self._submit(answer)
        except IntegrityError:
            # A concurrent retry with the same key (or the same task) won the race: answer as a retry.
            if idempotency_key is None:
                raise
            with self.store.transaction() as conn:
                used = sql.KEY_USE.first(conn, {"key": idempotency_key})
            if used is None:
                raise
            return _retry_receipt(idempotency_key, task_id, annotator_id, used)

    def _submit(self, answer: NewAnnotation) -> Receipt:
        if self._pg:
            receipt = self._submit_pg(answer)
            if receipt is not None:
                return receipt
        return self._submit_general(answer)

    def _submit_pg(self, answer: NewAnnotation) -> Receipt | None:
        """PostgreSQL: a leased first answer in one statement (:data:`.queue_sql.SUBMIT_PG`); ``None``
        when it wrote nothing, and the general path answers: a bad value, a retried key, no lease, an
        earlier answer or skip, a task that does not exist. The answer is checked before the statement
        against the task as its claim returned it (one more read when the claim ran elsewhere)."""
        now = self.clock()
        target = self._targets.get(answer.task_id)
        if target is None:
            task = self._one_statement(lambda conn: sql.TASK_FIELDS.first(conn, {"task": answer.task_id}))
            if task is None:
                return None
            target = writer.Target.of_task(task, counts=True)
            self._remember(answer.task_id, target)
        try:
            change = writer.plan(answer, target, now)
        except PrefloopError:
            return None
        params = {**change.row, "task": answer.task_id, "annotator": answer.annotator_id,
                  "key": answer.idempotency_key, "now": now}
        row = self._one_statement(lambda conn: sql.SUBMIT_PG.first(conn, params))
        if row is None or row.annotation_id is None:
            return None
        return Receipt(row.annotation_id, answer.task_id, late=bool(row.late))

    def _submit_general(self, answer: NewAnnotation) -> Receipt:
        now = self.clock()
        task_id, annotator_id, key = answer.task_id, answer.annotator_id, answer.idempotency_key
        mine = {"task": task_id, "annotator": annotator_id}
        with self.store.transaction() as conn:
            ctx = sql.SUBMIT_CONTEXT.first(conn, {**mine, "key": key, "now": now})
            if ctx is None:
                raise NotFoundError(f"task {task_id} does not exist")
            if ctx.keyed_id is not None:
                used = _KeyUse(ctx.keyed_id, ctx.keyed_task_id, ctx.keyed_annotator_id, ctx.keyed_late)
                return _retry_receipt(key, task_id, annotator_id, used)
            if ctx.prior_status == sql.SUBMITTED:
                raise DuplicateSubmission(
                    f"task {task_id} was already answered by this annotator",
                    hint="a retry must reuse the first submission's idempotency key",
                )
            if ctx.lease_id is None:
                raise NotAssigned(
                    f"task {task_id} is not assigned to this annotator (no claim, or it was skipped or released)",
                    hint="claim the next task first",
                )
            late = bool(ctx.lease_expired)
            # The answer fills the slot its lease held: it counts towards the task's overlap.
            ann_id, _ = writer.write(conn, replace(answer, late=late), writer.Target.of(ctx, counts=True), now)
            sql.DROP_LEASE_BY_ID.run(conn, {"lease": ctx.lease_id})
            return Receipt(ann_id, task_id, late=late)

    def skip(self, annotator_id: int, task_id: int, *, reason: str | None = None) -> None:
        """Decline a claimed task: it is never served to this annotator again; the slot is freed."""
        if reason is not None:
            check_text(reason, "skip reason", error=InvalidAnswer)
        with self.store.transaction() as conn:
            if sql.DROP_LEASE.run(conn, {"task": task_id, "annotator": annotator_id}) == 0:
                raise NotAssigned(f"task {task_id} is not assigned to this annotator", hint="claim it first")
            skipped = NewAnnotation(annotator_id, task_id, None, status=sql.SKIPPED, rationale=reason)
            writer.write(conn, skipped, writer.Target.unanswered(), self.clock())

    def release(self, annotator_id: int, task_id: int) -> bool:
        """Give a claimed task back without answering (it may be served to you again later)."""
        with self.store.transaction() as conn:
            return sql.DROP_LEASE.run(conn, {"task": task_id, "annotator": annotator_id}) > 0

    # ------------------------------------------------------------------ record (no lease)
    def record(
        self,
        annotator_id: int,
        task_id: int,
        value: dict[str, Any] | None,
        *,
        status: str = AnnotationStatus.SUBMITTED.value,
        rationale: str | None = None,
        confidence: float | None = None,
        duration_s: float | None = None,
        prompt_tokens: int | None = None,
        completion_tokens: int | None = None,
        cost: float | None = None,
        meta: dict[str, Any] | None = None,
        session: Session | None = None,
    ) -> tuple[int, bool]:
        """Write or update an annotation without a lease (judges, Argilla, imports).

        Returns ``(annotation_id, changed)``. Writing the same value again changes nothing; a
        different value replaces the old one, which is appended to ``history``. A first human
        submission counts towards the task's overlap. With ``session``, the write joins that
        session's transaction.
        """
        answer = NewAnnotation(
            annotator_id, task_id, value, status=status, rationale=rationale, confidence=confidence,
            duration_s=duration_s, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens, cost=cost, meta=meta,
        )
        return self.record_many([answer], session=session)[0]

    def record_many(self, answers: list[NewAnnotation], *, session: Session | None = None) -> list[tuple[int, bool]]:
        """:meth:`record` for a batch (a judge's chunk of verdicts): one statement per kind of write,
        all or nothing; ``(annotation_id, changed)`` per answer, in order."""
        for a in answers:
            a.check_extras()
        if not answers:
            return []
        if session is None:
            with self.store.transaction() as conn:
                return writer.record(conn, answers)
        session.flush()  # the session's pending rows (a task just added) must be visible to the writer
        return writer.record(session.connection(), answers)

    # ------------------------------------------------------------------ reporting
    def status(self, round_id: int | None = None) -> QueueStatus:
        now = self.clock()
        with self.store.session() as s:
            tq = select(Task.kind, Task.status, func.count()).group_by(Task.kind, Task.status)
            slots = select(func.coalesce(func.sum(Task.overlap - Task.n_done), 0)).where(Task.status == TaskStatus.OPEN.value)
            leases = select(func.count()).select_from(Lease).join(Task, Task.id == Lease.task_id).where(Lease.expires_at > now)
            ann = (
                select(Annotator.kind, Annotation.status, func.count())
                .join(Annotator, Annotator.id == Annotation.annotator_id)
                .join(Task, Task.id == Annotation.task_id)
                .group_by(Annotator.kind, Annotation.status)
            )
            if round_id is not None:
                in_round = Task.round_id == round_id
                tq, slots, leases, ann = tq.where(in_round), slots.where(in_round), leases.where(in_round), ann.where(in_round)
            by_kind = {(k, st): n for k, st, n in s.execute(tq)}
            counts = {(k, st): n for k, st, n in s.execute(ann)}
            return QueueStatus(
                tasks_by_kind_status=by_kind,
                open_slots=int(s.scalar(slots) or 0),
                active_leases=int(s.scalar(leases) or 0),
                human_annotations=counts.get(("human", "submitted"), 0),
                judge_annotations=counts.get(("judge", "submitted"), 0),
                skips=sum(n for (_, st), n in counts.items() if st == "skipped"),
            )

    def progress(self, annotator_id: int, *, round_id: int | None = None) -> dict[str, int]:
        """An annotator's own progress: answered, skipped, and tasks still available to them."""
        now = self.clock()
        with self.store.session() as s:
            mine = select(Annotation.status, func.count()).join(Task, Task.id == Annotation.task_id).where(
                Annotation.annotator_id == annotator_id
            ).group_by(Annotation.status)
            if round_id is not None:
                mine = mine.where(Task.round_id == round_id)
            counts = dict(s.execute(mine).all())
            avail = select(func.count()).select_from(Task).where(
                Task.status == TaskStatus.OPEN.value, Task.n_done + sql.others_leased() < Task.overlap,
                ~sql.answered_by_me(),
            )
            if round_id is not None:
                avail = avail.where(Task.round_id == round_id)
            return {
                "done": counts.get(AnnotationStatus.SUBMITTED.value, 0),
                "skipped": counts.get(AnnotationStatus.SKIPPED.value, 0),
                "remaining": int(s.scalar(avail, {"annotator": annotator_id, "now": now}) or 0),
            }


def _task_kinds(kinds: list[str] | None) -> tuple[str, ...]:
    return tuple(get_kind(k).name for k in kinds or ())


class _KeyUse(NamedTuple):
    id: int
    task_id: int
    annotator_id: int
    late: bool


def _retry_receipt(key: str | None, task_id: int, annotator_id: int, used: _KeyUse) -> Receipt:
    """The first receipt again when a key comes back for the same answer; an error otherwise."""
    if (used.task_id, used.annotator_id) != (task_id, annotator_id):
        raise QueueError(
            f"idempotency key {key!r} was already used for another submission (task {used.task_id})",
            hint="use a fresh key for each distinct answer",
        )
    return Receipt(used.id, task_id, late=bool(used.late), duplicate=True)
