"""The queue's hot-path SQL: statements built once, compiled once per dialect, run directly.

SQLite runs a small statement in ~10 µs; SQLAlchemy's per-execution bookkeeping (execution
context, events, result objects) adds ~40 µs to each. So :class:`~prefloop.feedback.queue.Queue`
keeps its statements as SQLAlchemy Core constructs (readable, dialect-correct SQL), compiles
each once per dialect, and runs the compiled text on the DBAPI cursor of a connection that
SQLAlchemy opened, converting values with each column type's own SQLAlchemy processors.
Statements that vary (filters, list lengths) are built on first use and cached.

On SQLite a claim is three statements in one ``BEGIN IMMEDIATE`` transaction and a submit four.
On PostgreSQL, where every statement is a network round trip, each is one statement
(:func:`claim_pg`, :data:`SUBMIT_PG`); the general submit statements answer the rare cases.
"""

from __future__ import annotations

import functools
import typing
from collections import namedtuple
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    DateTime,
    Integer,
    Table,
    and_,
    bindparam,
    case,
    cast,
    delete,
    exists,
    func,
    insert,
    select,
    true,
    union_all,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import ClauseElement, Select
from sqlalchemy.sql.compiler import SQLCompiler
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
        assert isinstance(compiled, SQLCompiler)  # a statement's compiler, with its bind names and prefetch lists
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
            raise _wrapped(conn, c.sql, args, exc, cursor) from exc
        return c, cursor

    def many(self, conn: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
        """Execute once per parameter set, in one DBAPI ``executemany`` (SQLite: one loop in C;
        psycopg: one pipeline). A statement without results."""
        if not rows:
            return
        c = self._compiled(conn.dialect)
        args: list[Any] = [self._args(c, params) for params in rows]
        cursor = conn.connection.cursor()
        try:
            cursor.executemany(c.sql, args)
        except conn.dialect.loaded_dbapi.Error as exc:
            raise _wrapped(conn, c.sql, args, exc, cursor) from exc
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


def _wrapped(conn: Connection, statement: str, args: Any, exc: Any, cursor: Any) -> BaseException:  # noqa: ANN401
    """The DBAPI error as :meth:`Connection.execute` would raise it, ``connection_invalidated`` when the
    server dropped the connection (the server answers 503; :meth:`Store.autocommit` retries once)."""
    dialect = conn.dialect
    dropped = bool(dialect.is_disconnect(exc, conn.connection.dbapi_connection, cursor))
    return DBAPIError.instance(statement, args, exc, dialect.loaded_dbapi.Error, dialect=dialect,
                               connection_invalidated=dropped)


T, L, A, G, P = (typing.cast(Table, m.__table__) for m in (Task, Lease, Annotation, Generation, Prompt))
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
def next_task(shape: tuple[bool, int]) -> Fast:
    """SQLite: the best task with a free slot the annotator has not seen.

    Ordered by ``priority DESC, id`` so that the ``ix_tasks_claim`` index (status, priority
    DESC, id) yields candidates in order and the search stops at the first free one.
    """
    return Fast(_free_tasks(shape, select(*SHOWN).select_from(T.join(P, P.c.id == T.c.prompt_id))))


def _free_tasks(shape: tuple[bool, int], q: Select, *also: ColumnElement[bool]) -> Select:
    """``q`` limited to the best task with a free slot the annotator has not answered or skipped."""
    q = q.where(*also, T.c.status == OPEN, T.c.n_done + others_leased() < T.c.overlap, ~answered_by_me())
    return _filtered(q, shape).order_by(T.c.priority.desc(), T.c.id).limit(1)


#: SQLite: lease a slot of the task :func:`next_task` read in this ``BEGIN IMMEDIATE`` transaction (so
#: it is still free). An expired lease of the annotator's own on the task is replaced.
_take = sqlite.insert(L).values(
    task_id=bindparam("task"), annotator_id=bindparam("annotator"), expires_at=bindparam("expires"),
    created_at=bindparam("now"),
)
TAKE_SLOT = Fast(_take.on_conflict_do_update(
    index_elements=[L.c.task_id, L.c.annotator_id],
    set_={"expires_at": _take.excluded.expires_at, "created_at": _take.excluded.created_at},
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
    mine = bindparam("annotator", type_=Integer)
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

#: One more human answer (``tasks`` columns): the task completes when the count reaches its overlap.
ONE_MORE_LABEL = {
    "n_done": T.c.n_done + 1,
    "status": case((and_(T.c.status == OPEN, T.c.n_done + 1 >= T.c.overlap), COMPLETE), else_=T.c.status),
}

COUNT_HUMAN_LABEL = Fast(update(T).where(T.c.id == bindparam("task")).values(ONE_MORE_LABEL))

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


# --------------------------------------------------------------------------- PostgreSQL: one statement each
# A claim and a submit are one statement each, sent on an autocommit connection whose transactions are
# REPEATABLE READ (:meth:`Store.autocommit`): one round trip, no BEGIN/COMMIT, no pre-ping.
#
# Why REPEATABLE READ: one statement sees one snapshot, so it cannot count a lease that another claim
# committed after the statement began, even once it holds that task's row lock (READ COMMITTED re-checks
# a locked row that changed, but against subqueries of the old snapshot: two claims could both take
# the last slot). So every claim also updates the task row it leases (``touched``), and in REPEATABLE
# READ a statement that locks a row changed after its snapshot fails with a serialization failure,
# having written nothing; :class:`Queue` runs it again on a fresh snapshot. A lock that succeeds thus
# proves that no claim or submit touched the task since the snapshot: its lease count is current.

#: the task columns an answer is checked against (a submit whose claim ran in another process).
TASK_FIELDS = Fast(select(T.c.kind, T.c.generation_ids, T.c.scale_min, T.c.scale_max, T.c.meta).where(T.c.id == bindparam("task")))


def _candidate_texts() -> ColumnElement[Any]:
    """The texts of the enclosing query's task's outputs, in the task's order (a correlated array)."""
    out = func.json_array_elements_text(T.c.generation_ids).table_valued("value", with_ordinality="ord").render_derived(name="out")
    text = select(G.c.text).where(G.c.id == cast(out.c.value, Integer)).scalar_subquery()  # one index probe each
    return select(postgresql.array_agg(postgresql.aggregate_order_by(text, out.c.ord))).scalar_subquery().label("candidate_texts")


@functools.cache
def claim_pg(shape: tuple[bool, int]) -> Fast:
    """A whole PostgreSQL claim as one statement, with the filters and order of the SQLite claim;
    it returns :data:`SHOWN` and ``candidate_texts`` (the outputs' texts in the task's order).

    ``held`` finds the annotator's active lease (``renewed`` extends it); else ``pick`` locks the
    best free task, passing over rows that others hold (``FOR UPDATE SKIP LOCKED``, so concurrent
    claimers spread over tasks). A skipped row may be a claim or submit in flight on a task that
    still has a slot for us: when ``pick`` finds nothing, ``waited`` waits for the lock of the best
    task that still has a free slot, rather than answer "nothing left" (it holds no other lock, so
    claims cannot deadlock). ``touched`` marks the task (see above), ``taken`` inserts the lease.
    """
    me, now, expires = (bindparam(n, type_=t) for n, t in (("annotator", Integer), ("now", DateTime), ("expires", DateTime)))
    held = _filtered(
        select(L.c.id.label("lease_id"), L.c.task_id)
        .select_from(L.join(T, T.c.id == L.c.task_id))
        .where(L.c.annotator_id == me, L.c.expires_at > now, T.c.status == OPEN),
        shape,
    ).order_by(L.c.id).limit(1).cte("held")
    renewed = update(L).where(L.c.id == held.c.lease_id).values(expires_at=expires).returning(L.c.task_id).cte("renewed")

    no_lease = ~exists(select(held.c.lease_id))
    pick = _free_tasks(shape, select(T.c.id), no_lease).with_for_update(skip_locked=True, of=T).cte("pick")
    best = _free_tasks(shape, select(T.c.id), no_lease, ~exists(select(pick.c.id))).cte("best")
    waited = select(T.c.id).where(T.c.id.in_(select(best.c.id))).with_for_update(of=T).cte("waited")
    chosen = union_all(select(pick.c.id), select(waited.c.id)).cte("chosen")
    # at most one row each (pick and waited exclude each other): a scalar compared by primary key is an index probe
    touched = (
        update(T).where(T.c.id == select(chosen.c.id).scalar_subquery()).values(n_done=T.c.n_done).returning(T.c.id)
    ).cte("touched")
    lease = select(touched.c.id, me, expires, now)
    ins = postgresql.insert(L).from_select(["task_id", "annotator_id", "expires_at", "created_at"], lease)
    taken = ins.on_conflict_do_update(  # the annotator's own expired lease on the task is replaced
        index_elements=[L.c.task_id, L.c.annotator_id],
        set_={"expires_at": ins.excluded.expires_at, "created_at": ins.excluded.created_at},
    ).returning(L.c.task_id).cte("taken")
    got = union_all(select(renewed.c.task_id), select(taken.c.task_id)).cte("got")
    return Fast(
        select(*SHOWN, _candidate_texts())
        .select_from(T.join(P, P.c.id == T.c.prompt_id))
        .where(T.c.id == select(got.c.task_id).scalar_subquery())
    )


def _submit_pg() -> Select:
    ctx = _submit_context().cte("ctx")
    fresh = and_(ctx.c.keyed_id.is_(None), ctx.c.prior_id.is_(None), ctx.c.lease_id.is_not(None))
    values = [
        bindparam("task", type_=Integer), bindparam("annotator", type_=Integer),
        *(bindparam(c, type_=A.c[c].type) for c in SUBMIT_COLUMNS), ctx.c.lease_expired, bindparam("key", type_=A.c.idempotency_key.type),
    ]
    ins = (
        insert(A)
        .from_select(["task_id", "annotator_id", *SUBMIT_COLUMNS, "late", "idempotency_key"], select(*values).where(fresh))
        .returning(A.c.id)
        .cte("ins")
    )
    wrote = exists(select(ins.c.id))
    counted = update(T).where(T.c.id == bindparam("task"), wrote).values(ONE_MORE_LABEL).returning(T.c.id).cte("counted")
    dropped = delete(L).where(L.c.id == select(ctx.c.lease_id).scalar_subquery(), wrote).returning(L.c.id).cte("dropped")
    return (
        select(ins.c.id.label("annotation_id"), ctx.c.lease_expired.label("late"))
        .select_from(ctx.outerjoin(ins, true()))
        .add_cte(counted, dropped)
    )


#: the annotation columns a submit's parameters name (``task_id``, ``annotator_id``, ``late`` and the key come apart).
SUBMIT_COLUMNS = ("status", "value", "rationale", "confidence", "duration_s", "prompt_tokens", "completion_tokens", "cost",
                  "meta", "history", "created_at", "updated_at")

#: A whole leased submit as one statement: :data:`SUBMIT_CONTEXT`, and when the caller holds a lease, has
#: not answered and the key is new, the annotation (``late`` when the lease expired), one more label on
#: the task and the lease dropped. ``annotation_id`` is NULL when nothing was written: the general path
#: then answers (an error, a retried key, an earlier skip), exactly as it always has.
SUBMIT_PG = Fast(_submit_pg())
