"""The annotation queue: enqueue tasks, claim a slot with a lease, submit, skip, release.

Guarantees, on SQLite and PostgreSQL alike:

- a task is served to ``overlap`` distinct humans, never twice to the same one;
- a claim holds a lease; an expired lease frees its slot for someone else;
- two concurrent claimers never get the same slot (SQLite: ``BEGIN IMMEDIATE``; PostgreSQL:
  ``FOR UPDATE SKIP LOCKED`` and a re-count of the slot once the row is locked), and a claim
  never answers "nothing left" while a task with a free slot is merely busy;
- ``submit`` validates the answer against the task and is idempotent by key: a retried submit
  returns the first receipt and never writes a second annotation;
- a late submit (lease expired) is kept, flagged ``late``: an annotator's work is never lost.

Judges, imports and the Argilla bridge write through :meth:`Queue.record`, which needs no lease.
Claim and submit run pre-compiled statements from :mod:`.queue_sql` (a few per call, no ORM).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from sqlalchemy import func, select
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from prefloop.errors import DataError, DuplicateSubmission, InvalidAnswer, NotAssigned, NotFoundError, QueueError
from prefloop.text import check_json, check_text

from . import queue_sql as sql
from .answers import validate_answer
from .db import Store
from .models import (
    OUTPUTS_PER_KIND,
    Annotation,
    AnnotationStatus,
    Annotator,
    AnnotatorKind,
    Generation,
    Lease,
    Prompt,
    Task,
    TaskKind,
    TaskStatus,
    utcnow,
)
from .prompts import PromptInput, get_or_create_prompt

#: the longest annotator name, idempotency key and model label the tables hold (PostgreSQL
#: refuses longer ones; SQLite would store them).
MAX_NAME = MAX_KEY = 200
MAX_MODEL = 500


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


class Queue:
    """The queue over a :class:`~prefloop.feedback.db.Store`.

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
        self.rating_scale = tuple(rating_scale)
        self.allow_ties = allow_ties
        self.clock = clock
        self._pg = store.dialect == "postgresql"

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

    # ------------------------------------------------------------------ enqueue
    def add_task(
        self,
        kind: str | TaskKind,
        generation_ids: list[int],
        *,
        overlap: int | None = None,
        priority: float = 0.0,
        round_id: int | None = None,
        scale: tuple[int, int] | None = None,
        meta: dict[str, Any] | None = None,
        session: Session | None = None,
    ) -> int:
        """Enqueue a task over stored generations of one prompt; returns the task id."""
        if session is None:
            with self.store.session() as s:
                return self.add_task(
                    kind, generation_ids, overlap=overlap, priority=priority, round_id=round_id,
                    scale=scale, meta=meta, session=s,
                )
        ids = [int(g) for g in generation_ids]
        if len(set(ids)) != len(ids):
            raise QueueError(f"a task needs distinct outputs, got {ids}")
        fields = self.task_fields(kind, len(ids), overlap=overlap, priority=priority, scale=scale, meta=meta)
        gens = session.execute(
            select(Generation.id, Generation.prompt_id, Generation.text).where(Generation.id.in_(ids))
        ).all()
        if len(gens) != len(ids):
            missing = sorted(set(ids) - {g.id for g in gens})
            raise NotFoundError(f"generation(s) {missing} do not exist")
        prompt_ids = {g.prompt_id for g in gens}
        if len(prompt_ids) != 1:
            raise QueueError(f"the outputs of one task must answer the same prompt; got prompts {sorted(prompt_ids)}")
        texts = dict((g.id, g.text) for g in gens)
        check_distinct_outputs([texts[i] for i in ids], error=QueueError)
        task = Task(prompt_id=prompt_ids.pop(), round_id=round_id, generation_ids=ids, **fields)
        session.add(task)
        session.flush()
        return task.id

    def task_fields(
        self,
        kind: str | TaskKind,
        n_outputs: int,
        *,
        overlap: int | None = None,
        priority: float = 0.0,
        scale: tuple[int, int] | None = None,
        meta: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The columns of a new task of ``kind`` over ``n_outputs`` outputs, with this queue's defaults.

        Raises :class:`QueueError` for a task that cannot be served (wrong number of outputs,
        negative overlap, an empty rating scale, a priority or meta that cannot be stored); one
        task or a bulk ``queue add`` alike.
        """
        try:
            kind = TaskKind(kind).value
        except ValueError:
            raise QueueError(f"unknown task kind {kind!r}", hint=f"use one of {', '.join(k.value for k in TaskKind)}") from None
        lo_n, hi_n = OUTPUTS_PER_KIND[kind]
        if not lo_n <= n_outputs <= hi_n:
            raise QueueError(f"a {kind} task needs {lo_n}{'' if lo_n == hi_n else f'–{hi_n}'} outputs, got {n_outputs}")
        if isinstance(priority, bool) or not isinstance(priority, (int, float)) or not math.isfinite(priority):
            raise QueueError(f"priority is {priority!r}; expected a finite number")
        check_json(dict(meta or {}), "meta", error=QueueError)
        k = self.overlap if overlap is None else overlap
        if k < 0:
            raise QueueError(f"overlap must be ≥ 0, got {k}")
        lo, hi = scale or self.rating_scale if kind == "rate" else (None, None)
        if kind == "rate" and not lo < hi:
            raise QueueError(f"rating scale must go from low to high, got {lo}–{hi}")
        return {
            "kind": kind, "overlap": k, "n_done": 0, "priority": float(priority),
            "status": TaskStatus.OPEN.value if k > 0 else TaskStatus.COMPLETE.value,
            "scale_min": lo, "scale_max": hi, "meta": {"allow_tie": self.allow_ties, **(meta or {})},
        }

    def add_generations(
        self,
        prompt: PromptInput | int,
        outputs: list[str],
        *,
        round_id: int | None = None,
        model: str | None = None,
        params: dict[str, Any] | None = None,
        session: Session,
    ) -> list[int]:
        """Store outputs of one prompt (created if new, or given by id); returns generation ids."""
        if not isinstance(outputs, list):
            raise DataError(f"outputs must be a list of texts, got {type(outputs).__name__}")
        for i, o in enumerate(outputs):
            check_text(o, f"outputs[{i}]", allow_blank=False)
        if model is not None:
            check_text(model, "model", max_length=MAX_MODEL)
        check_json(dict(params or {}), "params")
        if isinstance(prompt, int):
            if session.get(Prompt, prompt) is None:
                raise NotFoundError(f"prompt {prompt} does not exist")
            prompt_id = prompt
        else:
            prompt_id = get_or_create_prompt(session, prompt, source="api")[0].id
        rows = [
            Generation(prompt_id=prompt_id, round_id=round_id, text=o, model=model, params=dict(params or {}))
            for o in outputs
        ]
        session.add_all(rows)
        session.flush()
        return [r.id for r in rows]

    def _one_liner(self, kind: str, prompt: PromptInput | int, outputs: list[str], **kw: Any) -> int:
        with self.store.session() as s:
            ids = self.add_generations(prompt, outputs, round_id=kw.get("round_id"), model=kw.pop("model", None), session=s)
            return self.add_task(kind, ids, session=s, **kw)

    def add_comparison(self, prompt: PromptInput | int, outputs: list[str], **kw: Any) -> int:
        """One-liner: store the prompt and two outputs and enqueue an A/B task."""
        return self._one_liner("compare", prompt, outputs, **kw)

    def add_rating(self, prompt: PromptInput | int, output: str, **kw: Any) -> int:
        """One-liner: store the prompt and one output and enqueue a rate task."""
        return self._one_liner("rate", prompt, [output], **kw)

    def add_ranking(self, prompt: PromptInput | int, outputs: list[str], **kw: Any) -> int:
        """One-liner: store the prompt and several outputs and enqueue a rank task."""
        return self._one_liner("rank", prompt, outputs, **kw)

    def add_edit(self, prompt: PromptInput | int, output: str, **kw: Any) -> int:
        """One-liner: store the prompt and one output and enqueue an edit (correction) task."""
        return self._one_liner("edit", prompt, [output], **kw)

    # ------------------------------------------------------------------ claim
    def claim(
        self, annotator_id: int, *, round_id: int | None = None, kinds: list[str] | None = None
    ) -> ClaimedTask | None:
        """The next task for this annotator by priority, with a lease; ``None`` when none is left.

        Claiming again while a lease is active returns the same task (a reloaded page keeps it)
        and renews the lease. Each pass is one transaction; on PostgreSQL a pass may find its
        candidate full after all (see :meth:`_candidate`), and the next pass excludes it.
        """
        now = self.clock()
        me = {"annotator": annotator_id, "now": now}
        where = sql.ClaimFilter(round_id, _task_kinds(kinds))
        tried: list[int] = []
        for _ in range(64):
            with self.store.transaction() as conn:
                claimed, full = self._claim_once(conn, me, where, now + self.lease, tried)
            if full is None:
                return claimed
            tried.append(full)
        return None

    def _claim_once(
        self, conn: Connection, me: dict[str, Any], where: sql.ClaimFilter, expires: dt.datetime, tried: list[int]
    ) -> tuple[ClaimedTask | None, int | None]:
        """One pass of :meth:`claim`: ``(claimed or None, None)``, or ``(None, id of a task found full)``."""
        row = sql.held_lease(where.shape).first(conn, {**me, **where.params})
        if row is not None:
            sql.RENEW_LEASE.run(conn, {**me, "task": row.id, "expires": expires})
            return self._claimed(conn, row, expires), None
        row = self._candidate(conn, {**me, **where.params, **sql.numbered_values("tried", tried)}, where, len(tried))
        if row is None:
            return None, None
        if sql.take_slot(self._pg).run(conn, {**me, "task": row.id, "expires": expires}) == 0:
            return None, row.id  # full after all (PostgreSQL only); ending this transaction releases the row
        return self._claimed(conn, row, expires), None

    def _candidate(  # noqa: ANN401 - a result row
        self, conn: Connection, params: dict[str, Any], where: sql.ClaimFilter, n_tried: int
    ) -> Any:
        """The best task with a free slot for this annotator, locked until the transaction ends.

        SQLite: ``BEGIN IMMEDIATE`` already serialises claims; the first match is ours.
        PostgreSQL (READ COMMITTED): ``FOR UPDATE SKIP LOCKED`` lets concurrent claimers spread
        over tasks. But a skipped row may be a claim or submit in flight on a task that still
        has a slot for us, and a row that changed since the statement's snapshot is re-checked
        against a lease count from that older snapshot. So when nothing comes back, a plain
        read (fresh snapshot, no locks) names the best task that still has a slot, and we wait
        for its lock. Either way the caller re-counts the slot once the lock is held, and never
        waits while holding another task's lock (so claims cannot deadlock).
        """
        row = sql.next_task(self._pg, where.shape, n_tried).first(conn, params)
        if row is not None or not self._pg:
            return row
        free = sql.next_task(False, where.shape, n_tried).first(conn, params)
        return None if free is None else sql.LOCK_TASK.first(conn, {"task": free.id})

    @staticmethod
    def _claimed(conn: Connection, row: Any, expires: dt.datetime) -> ClaimedTask:  # noqa: ANN401
        ids = row.generation_ids
        texts = dict(sql.candidate_texts(len(ids)).all(conn, sql.numbered_values("g", ids)))
        messages = row.prompt_messages or [{"role": "user", "content": row.prompt_text or ""}]
        return ClaimedTask(
            task_id=row.id,
            kind=row.kind,
            prompt_id=row.prompt_id,
            prompt_messages=[dict(m) for m in messages],
            candidates=[Candidate(g, texts[g]) for g in ids],
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
        _check_extras(rationale=rationale, idempotency_key=idempotency_key, meta=meta, duration_s=duration_s)
        try:
            return self._submit(annotator_id, task_id, value, idempotency_key, duration_s, rationale, meta)
        except IntegrityError:
            # A concurrent retry with the same key (or the same task) won the race: answer as a retry.
            if idempotency_key is None:
                raise
            with self.store.transaction() as conn:
                used = sql.KEY_USE.first(conn, {"key": idempotency_key})
            if used is None:
                raise
            return _retry_receipt(idempotency_key, task_id, annotator_id, used)

    def _submit(self, annotator_id, task_id, value, key, duration_s, rationale, meta) -> Receipt:  # noqa: ANN001
        now = self.clock()
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
            clean = validate_answer(
                ctx.kind, list(ctx.generation_ids), value,
                scale=(ctx.scale_min, ctx.scale_max) if ctx.scale_min is not None else None,
                allow_tie=bool(ctx.meta.get("allow_tie", True)), task_id=task_id,
            )
            late = bool(ctx.lease_expired)
            ann_id = sql.INSERT_ANNOTATION.scalar(conn, _annotation(
                task_id, annotator_id, sql.SUBMITTED, clean, now, rationale=rationale, duration_s=duration_s,
                late=late, idempotency_key=key, meta=dict(meta or {}),
            ))
            sql.DROP_LEASE_BY_ID.run(conn, {"lease": ctx.lease_id})
            sql.COUNT_HUMAN_LABEL.run(conn, mine)
            return Receipt(ann_id, task_id, late=late)

    def skip(self, annotator_id: int, task_id: int, *, reason: str | None = None) -> None:
        """Decline a claimed task: it is never served to this annotator again; the slot is freed."""
        if reason is not None:
            check_text(reason, "skip reason", error=InvalidAnswer)
        with self.store.transaction() as conn:
            if sql.DROP_LEASE.run(conn, {"task": task_id, "annotator": annotator_id}) == 0:
                raise NotAssigned(f"task {task_id} is not assigned to this annotator", hint="claim it first")
            skipped = _annotation(task_id, annotator_id, sql.SKIPPED, {}, self.clock(), rationale=reason)
            sql.INSERT_ANNOTATION.run(conn, skipped)

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
        submission counts towards the task's overlap.
        """
        if session is None:
            with self.store.session() as s:
                return self.record(
                    annotator_id, task_id, value, status=status, rationale=rationale, confidence=confidence,
                    duration_s=duration_s, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                    cost=cost, meta=meta, session=s,
                )
        _check_extras(rationale=rationale, meta=meta, confidence=confidence, duration_s=duration_s,
                      prompt_tokens=prompt_tokens, completion_tokens=completion_tokens, cost=cost)
        s = session
        task = s.get(Task, task_id)
        if task is None:
            raise NotFoundError(f"task {task_id} does not exist")
        annotator = s.get(Annotator, annotator_id)
        if annotator is None:
            raise NotFoundError(f"annotator {annotator_id} does not exist")
        clean: dict[str, Any] = {}
        if status == AnnotationStatus.SUBMITTED.value:
            scale = (task.scale_min, task.scale_max) if task.scale_min is not None else None
            clean = validate_answer(
                task.kind, list(task.generation_ids), value, scale=scale,
                allow_tie=bool(task.meta.get("allow_tie", True)), task_id=task_id,
            )
        existing = s.scalar(
            select(Annotation).where(Annotation.task_id == task_id, Annotation.annotator_id == annotator_id)
        )
        now = utcnow()
        fields = dict(
            status=status, value=clean, rationale=rationale, confidence=confidence, duration_s=duration_s,
            prompt_tokens=prompt_tokens, completion_tokens=completion_tokens, cost=cost,
        )
        if existing is None:
            row = Annotation(task_id=task_id, annotator_id=annotator_id, meta=dict(meta or {}), history=[],
                             created_at=now, updated_at=now, late=False, **fields)
            s.add(row)
            s.flush()
            if annotator.kind == AnnotatorKind.HUMAN.value and status == AnnotationStatus.SUBMITTED.value:
                sql.COUNT_HUMAN_LABEL.run(s.connection(), {"task": task_id})
            return row.id, True
        if existing.status == status and existing.value == clean and existing.rationale == rationale:
            return existing.id, False
        snapshot = {"status": existing.status, "value": existing.value, "rationale": existing.rationale,
                    "updated_at": existing.updated_at.isoformat()}
        was_counted = existing.status == AnnotationStatus.SUBMITTED.value
        for k, v in fields.items():
            setattr(existing, k, v)
        existing.history = [*existing.history, snapshot]
        existing.meta = {**existing.meta, **(meta or {})}
        existing.updated_at = now
        if annotator.kind == AnnotatorKind.HUMAN.value:
            counted_now = status == AnnotationStatus.SUBMITTED.value
            if counted_now and not was_counted:
                sql.COUNT_HUMAN_LABEL.run(s.connection(), {"task": task_id})
            elif was_counted and not counted_now:
                sql.UNCOUNT_HUMAN_LABEL.run(s.connection(), {"task": task_id})
        return existing.id, True

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
                tq, slots, leases, ann = (q.where(Task.round_id == round_id) for q in (tq, slots, leases, ann))
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


def check_distinct_outputs(
    texts: list[str], *, where: str | None = None, error: type[QueueError] | type[DataError] = QueueError
) -> None:
    """Refuse a task whose outputs repeat one text: nobody can prefer an output over itself."""
    first: dict[str, int] = {}
    for i, text in enumerate(texts, 1):
        if text in first:
            raise error(
                f"{where + ': ' if where else ''}outputs {first[text]} and {i} are identical; "
                "a task compares different outputs",
                hint="drop the duplicate, or use a rate task for a single output",
            )
        first[text] = i


def _check_extras(
    *, rationale: str | None = None, idempotency_key: str | None = None, meta: dict[str, Any] | None = None,
    **numbers: float | None,
) -> None:
    """The text policy for what comes with an answer: rationale, key, meta, and numbers that must
    be finite and ≥ 0 (PostgreSQL stores NaN in a float column, SQLite stores NULL)."""
    if rationale is not None:
        check_text(rationale, "rationale", error=InvalidAnswer)
    if idempotency_key is not None:
        check_text(idempotency_key, "idempotency key", error=InvalidAnswer, allow_blank=False, max_length=MAX_KEY)
    check_json(dict(meta or {}), "meta", error=InvalidAnswer)
    for name, x in numbers.items():
        if x is not None and (isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x) or x < 0):
            raise InvalidAnswer(f"{name} is {x!r}; expected a finite number ≥ 0")


def _task_kinds(kinds: list[str] | None) -> tuple[str, ...]:
    known = [k.value for k in TaskKind]
    for k in kinds or ():
        if k not in known:
            raise QueueError(f"unknown task kind {k!r}", hint=f"use one of {', '.join(known)}")
    return tuple(kinds or ())


class _KeyUse(NamedTuple):
    id: int
    task_id: int
    annotator_id: int
    late: bool


def _retry_receipt(key: str, task_id: int, annotator_id: int, used: _KeyUse) -> Receipt:
    """The first receipt again when a key comes back for the same answer; an error otherwise."""
    if (used.task_id, used.annotator_id) != (task_id, annotator_id):
        raise QueueError(
            f"idempotency key {key!r} was already used for another submission (task {used.task_id})",
            hint="use a fresh key for each distinct answer",
        )
    return Receipt(used.id, task_id, late=bool(used.late), duplicate=True)


def _annotation(task_id: int, annotator_id: int, status: str, value: dict, now: dt.datetime, **fields: Any) -> dict:
    """Every column of a new annotation row, as the pre-compiled INSERT expects them."""
    row = dict.fromkeys(sql.ANNOTATION_COLUMNS)
    row.update(task_id=task_id, annotator_id=annotator_id, status=status, value=value, late=False, meta={},
               history=[], created_at=now, updated_at=now)
    row.update(fields)
    return row
