"""The queue's hot-path SQL: statements built once, compiled once per dialect, run directly.

A claim + submit cycle is eight small statements and two commits. SQLite runs such a statement
in ~10 µs; SQLAlchemy's per-execution bookkeeping (execution context, events, result objects)
adds ~40 µs to each. So :class:`~prefloop.feedback.queue.Queue` keeps its statements as
SQLAlchemy Core constructs (readable, dialect-correct SQL), compiles each once per dialect,
and runs the compiled text on the DBAPI cursor of a transaction that SQLAlchemy opened
(:meth:`Store.transaction`), converting values with each column type's own SQLAlchemy
processors. Each statement also does as much as one round trip can: a claim reads the task
*and* its prompt; a submit reads the task, the caller's lease, their earlier answer and any
earlier use of the idempotency key in one go. Statements that vary (filters, list lengths,
dialect) are built on first use and cached.
"""

from __future__ import annotations

import functools
from collections import namedtuple
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import DateTime, Integer, and_, bindparam, case, delete, exists, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import ClauseElement, Select
from sqlalchemy.sql.elements import ColumnElement

from .models import Annotation, AnnotationStatus, Generation, Lease, Prompt, Task, TaskStatus


@dataclass(frozen=True)
class _Compiled:
    sql: str
    order: Sequence[str] | None  # parameter names in order for positional drivers (sqlite3)
    defaults: dict[str, Any]  # values fixed in the statement (literals, LIMIT)
    binds: tuple[tuple[str, Callable[[Any], Any]], ...]  # names whose values a type converts
    results: tuple[Callable[[Any], Any] | None, ...]
    row: type  # a namedtuple of the result columns


class Fast:
    """A Core statement run straight on the DBAPI cursor (see the module doc for why).

    ``columns`` names the columns of an INSERT whose values come as parameters. The compiled
    statement must not need SQLAlchemy at execution time: no expanding ``IN`` lists and no
    Python-side column defaults (both are refused when it is compiled).
    """

    def __init__(self, stmt: ClauseElement, *, columns: Sequence[str] | None = None) -> None:
        self.stmt = stmt
        self.columns = list(columns) if columns else None
        self._by_dialect: dict[tuple[str, str], _Compiled] = {}

    def _compiled(self, dialect: Dialect) -> _Compiled:
        c = self._by_dialect.get((dialect.name, dialect.driver))
        if c is None:
            c = self._by_dialect[(dialect.name, dialect.driver)] = self._compile(dialect)
        return c

    def _compile(self, dialect: Dialect) -> _Compiled:
        compiled = self.stmt.compile(dialect=dialect, column_keys=self.columns)
        if compiled.insert_prefetch or compiled.update_prefetch or any(b.expanding for b in compiled.bind_names):
            raise TypeError(f"{self.stmt} needs SQLAlchemy at execution time; pass every column and no IN lists")
        binds: dict[str, Callable[[Any], Any]] = {}  # one converter per name, however often it appears
        for bp, name in compiled.bind_names.items():
            proc = bp.type.dialect_impl(dialect).bind_processor(dialect)
            if proc is not None:
                binds.setdefault(name, proc)
        cols = list(getattr(self.stmt, "exported_columns", ()))
        return _Compiled(
            sql=compiled.string,
            order=compiled.positiontup,
            defaults={name: bp.value for bp, name in compiled.bind_names.items() if not bp.required},
            binds=tuple(binds.items()),
            results=tuple(c.type.dialect_impl(dialect).result_processor(dialect, None) for c in cols),
            row=namedtuple("Row", [c.key for c in cols], rename=True) if cols else tuple,
        )

    @staticmethod
    def _args(c: _Compiled, params: Mapping[str, Any]) -> tuple[Any, ...] | dict[str, Any]:
        values = {**c.defaults, **params}
        for name, proc in c.binds:
            values[name] = proc(values[name])
        return tuple(values[n] for n in c.order) if c.order is not None else values

    def _execute(self, conn: Connection, params: Mapping[str, Any]):  # noqa: ANN202 - a DBAPI cursor
        c = self._compiled(conn.dialect)
        args = self._args(c, params)
        cursor = conn.connection.cursor()
        try:
            cursor.execute(c.sql, args)
        except conn.dialect.loaded_dbapi.Error as exc:  # the same exception classes as Connection.execute
            raise DBAPIError.instance(c.sql, args, exc, conn.dialect.loaded_dbapi.Error, dialect=conn.dialect) from exc
        return c, cursor

    def many(self, conn: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
        """Execute once per parameter set, in one DBAPI ``executemany`` (SQLite: one loop in C;
        psycopg: one pipeline). A statement without results."""
        if not rows:
            return
        c = self._compiled(conn.dialect)
        args = [self._args(c, params) for params in rows]
        cursor = conn.connection.cursor()
        try:
            cursor.executemany(c.sql, args)
        except conn.dialect.loaded_dbapi.Error as exc:
            raise DBAPIError.instance(c.sql, args, exc, conn.dialect.loaded_dbapi.Error, dialect=conn.dialect) from exc
        finally:
            cursor.close()

    def first(self, conn: Connection, params: Mapping[str, Any]) -> Any | None:  # noqa: ANN401 - a namedtuple
        """The first result row (with typed values), or ``None``."""
        c, cursor = self._execute(conn, params)
        raw = cursor.fetchone()
        cursor.close()
        if raw is None:
            return None
        return c.row(*(v if proc is None else proc(v) for proc, v in zip(c.results, raw, strict=False)))

    def all(self, conn: Connection, params: Mapping[str, Any]) -> list[Any]:
        c, cursor = self._execute(conn, params)
        raws = cursor.fetchall()
        cursor.close()
        return [c.row(*(v if proc is None else proc(v) for proc, v in zip(c.results, raw, strict=False))) for raw in raws]

    def scalar(self, conn: Connection, params: Mapping[str, Any]) -> Any:  # noqa: ANN401
        row = self.first(conn, params)
        return None if row is None else row[0]

    def run(self, conn: Connection, params: Mapping[str, Any]) -> int:
        """Execute a statement without results; returns the number of rows it changed."""
        _, cursor = self._execute(conn, params)
        n = cursor.rowcount
        cursor.close()
        return n


T, L, A = Task.__table__, Lease.__table__, Annotation.__table__
G, P = Generation.__table__, Prompt.__table__
OPEN, COMPLETE = TaskStatus.OPEN.value, TaskStatus.COMPLETE.value

#: What an annotator is shown: the task's columns and its prompt's.
SHOWN = (
    T.c.id, T.c.kind, T.c.prompt_id, T.c.round_id, T.c.generation_ids, T.c.scale_min, T.c.scale_max,
    T.c.meta, P.c.text.label("prompt_text"), P.c.messages.label("prompt_messages"),
)


def others_leased() -> ColumnElement[int]:
    """Active leases of other annotators on the enclosing query's task (a correlated count)."""
    return (
        select(func.count())
        .select_from(L)
        .where(L.c.task_id == T.c.id, L.c.expires_at > bindparam("now"), L.c.annotator_id != bindparam("annotator"))
        .scalar_subquery()
    )


def answered_by_me() -> ColumnElement[bool]:
    """The annotator already answered or skipped the enclosing query's task."""
    return exists().where(A.c.task_id == T.c.id, A.c.annotator_id == bindparam("annotator"))


@dataclass(frozen=True)
class ClaimFilter:
    """Which tasks a claim may take: one round's, and/or only some kinds."""

    round_id: int | None
    kinds: tuple[str, ...]

    @property
    def shape(self) -> tuple[bool, int]:
        """What the SQL depends on (the values are parameters)."""
        return self.round_id is not None, len(self.kinds)

    @property
    def params(self) -> dict[str, Any]:
        values = numbered_values("kind", self.kinds)
        if self.round_id is not None:
            values["round_id"] = self.round_id
        return values


def _filtered(q: Select, shape: tuple[bool, int]) -> Select:
    by_round, n_kinds = shape
    if by_round:
        q = q.where(T.c.round_id == bindparam("round_id"))
    if n_kinds:
        q = q.where(T.c.kind.in_(numbered("kind", n_kinds)))
    return q


def numbered(prefix: str, n: int) -> list[Any]:
    """``n`` parameters ``prefix0 … prefix{n-1}``: an ``IN`` list of fixed length."""
    return [bindparam(f"{prefix}{i}") for i in range(n)]


def numbered_values(prefix: str, values: Sequence[Any]) -> dict[str, Any]:
    return {f"{prefix}{i}": v for i, v in enumerate(values)}


@functools.cache
def held_lease(shape: tuple[bool, int]) -> Fast:
    """The annotator's oldest active lease on an open task that fits the claim's filters."""
    q = (
        select(*SHOWN)
        .select_from(L.join(T, T.c.id == L.c.task_id).join(P, P.c.id == T.c.prompt_id))
        .where(L.c.annotator_id == bindparam("annotator"), L.c.expires_at > bindparam("now"), T.c.status == OPEN)
        .order_by(L.c.id)
        .limit(1)
    )
    return Fast(_filtered(q, shape))


@functools.cache
def next_task(lock: bool, shape: tuple[bool, int], n_tried: int) -> Fast:
    """The best task with a free slot the annotator has not seen; with ``lock`` (PostgreSQL),
    row-locked, passing over rows that others hold.

    Ordered by ``priority DESC, id`` so that the ``ix_tasks_claim`` index (status, priority
    DESC, id) yields candidates in order and the search stops at the first free one.
    """
    q = (
        select(*SHOWN)
        .select_from(T.join(P, P.c.id == T.c.prompt_id))
        .where(T.c.status == OPEN, T.c.n_done + others_leased() < T.c.overlap, ~answered_by_me())
    )
    q = _filtered(q, shape)
    if n_tried:
        q = q.where(T.c.id.not_in(numbered("tried", n_tried)))
    q = q.order_by(T.c.priority.desc(), T.c.id).limit(1)
    return Fast(q.with_for_update(skip_locked=True, of=T) if lock else q)


#: PostgreSQL: one task, row-locked, waiting for whoever holds it.
LOCK_TASK = Fast(
    select(*SHOWN)
    .select_from(T.join(P, P.c.id == T.c.prompt_id))
    .where(T.c.id == bindparam("task"))
    .with_for_update(of=T)
)


@functools.cache
def take_slot(pg: bool) -> Fast:
    """Lease a slot if the task still has one (changes 0 rows when it is full after all).

    The count runs in this statement's own snapshot: on PostgreSQL, one taken after the row
    lock is ours, so it sees every lease that earlier lock holders committed. An expired
    lease of the annotator's own on the task is replaced.
    """
    values = select(
        bindparam("task", type_=Integer), bindparam("annotator", type_=Integer),
        bindparam("expires", type_=DateTime), bindparam("now", type_=DateTime),
    ).where(T.c.id == bindparam("task"), T.c.n_done + others_leased() < T.c.overlap)
    ins = (postgresql.insert if pg else sqlite.insert)(L).from_select(
        ["task_id", "annotator_id", "expires_at", "created_at"], values
    )
    return Fast(ins.on_conflict_do_update(
        index_elements=[L.c.task_id, L.c.annotator_id],
        set_={"expires_at": ins.excluded.expires_at, "created_at": ins.excluded.created_at},
    ))


RENEW_LEASE = Fast(
    update(L)
    .where(L.c.task_id == bindparam("task"), L.c.annotator_id == bindparam("annotator"))
    .values(expires_at=bindparam("expires"))
)


@functools.cache
def candidate_texts(n: int) -> Fast:
    """The texts of ``n`` generations, by id (parameters ``g0 … g{n-1}``)."""
    return Fast(select(G.c.id, G.c.text).where(G.c.id.in_(numbered("g", n))))


def _submit_context() -> Select:
    prior, keyed = A.alias("prior"), A.alias("keyed")
    mine = bindparam("annotator")
    return (
        select(
            T.c.kind, T.c.generation_ids, T.c.scale_min, T.c.scale_max, T.c.meta,
            L.c.id.label("lease_id"), (L.c.expires_at <= bindparam("now")).label("lease_expired"),
            prior.c.id.label("prior_id"), prior.c.status.label("prior_status"), prior.c.value.label("prior_value"),
            prior.c.rationale.label("prior_rationale"), prior.c.meta.label("prior_meta"),
            prior.c.history.label("prior_history"), prior.c.updated_at.label("prior_updated_at"),
            keyed.c.id.label("keyed_id"), keyed.c.task_id.label("keyed_task_id"),
            keyed.c.annotator_id.label("keyed_annotator_id"), keyed.c.late.label("keyed_late"),
        )
        .select_from(
            T.outerjoin(L, and_(L.c.task_id == T.c.id, L.c.annotator_id == mine))
            .outerjoin(prior, and_(prior.c.task_id == T.c.id, prior.c.annotator_id == mine))
            .outerjoin(keyed, keyed.c.idempotency_key == bindparam("key"))
        )
        .where(T.c.id == bindparam("task"))
    )


#: Everything a submit checks, in one row: the task, the caller's lease (and whether it has
#: expired), their earlier answer or skip (the ``prior_*`` columns, as the writer takes them),
#: and any annotation already stored under the key.
SUBMIT_CONTEXT = Fast(_submit_context())

#: Where an idempotency key was used before (the retry path after a unique-key conflict).
KEY_USE = Fast(select(A.c.id, A.c.task_id, A.c.annotator_id, A.c.late).where(A.c.idempotency_key == bindparam("key")))

DROP_LEASE_BY_ID = Fast(delete(L).where(L.c.id == bindparam("lease")))

DROP_LEASE = Fast(delete(L).where(L.c.task_id == bindparam("task"), L.c.annotator_id == bindparam("annotator")))

#: One more human answer; the task completes when the count reaches its overlap.
COUNT_HUMAN_LABEL = Fast(
    update(T)
    .where(T.c.id == bindparam("task"))
    .values(
        n_done=T.c.n_done + 1,
        status=case((and_(T.c.status == OPEN, T.c.n_done + 1 >= T.c.overlap), COMPLETE), else_=T.c.status),
    )
)

#: A human answer withdrawn (submitted → skipped, e.g. discarded in Argilla): the slot reopens.
UNCOUNT_HUMAN_LABEL = Fast(
    update(T)
    .where(T.c.id == bindparam("task"), T.c.n_done > 0)
    .values(
        n_done=T.c.n_done - 1,
        status=case((and_(T.c.status == COMPLETE, T.c.n_done - 1 < T.c.overlap), OPEN), else_=T.c.status),
    )
)

SUBMITTED, SKIPPED = AnnotationStatus.SUBMITTED.value, AnnotationStatus.SKIPPED.value
