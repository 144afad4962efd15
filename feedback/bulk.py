"""Bulk writes (``prefloop import``, ``prefloop queue add``): all or nothing, and annotators keep working.

Why it is built this way (issue 9, items 13 and 14):

**SQLite has one writer at a time.** An import in one transaction held the write lock for as
long as it ran (100k prompts: two minutes) and no answer was acknowledged meanwhile. So on
SQLite a bulk write

1. prepares every row before it writes anything (the records come checked; hashes and column
   values are computed here, outside any transaction);
2. writes rows that nobody sees yet, in short transactions of at most ``batch_rows`` rows
   (milliseconds; claims and submits take the lock in between): prompts and outputs carry the
   id of a ``bulk_writes`` row in state ``staging`` (readers list prompts through
   :func:`~prefloop.feedback.prompts.visible_prompts`; outputs are reached only through tasks),
   and tasks wait in ``staged_tasks``, where no claim looks;
3. commits with one single-row UPDATE (state ``committed``): from then on its prompts are
   visible, and the write is complete and durable;
4. moves its tasks into ``tasks`` in transactions as short, then marks itself ``done``.
   A claim walks an index of ``tasks``, so making many tasks claimable costs lock time in
   proportion to their number; short steps after the commit point keep each wait short, and a
   task that becomes claimable a moment after another changes nothing an annotator can see.

A writer that dies before step 3 left nothing visible, and the next bulk writer deletes its rows
(roll back). One that dies during step 4 is finished by whoever opens the store next (roll
forward, :func:`recover`). One bulk writer runs at a time (a file lock beside the database), so
a writer that holds the lock knows that any bulk write still ``staging`` is dead.

**PostgreSQL** runs the same steps in one transaction (tasks go straight into ``tasks``): MVCC
hides the new rows until COMMIT, and none of the locks it takes is one that a claim or a submit
waits for (it inserts rows only; the foreign keys of its new rows take key-share locks on the
prompts they reference, which no claim or submit updates). Concurrent bulk writers queue on an
advisory lock rather than deadlock on each other's new prompts.

**Set-based de-duplication, on both.** Each batch stores its prompts with one multi-row
``INSERT … ON CONFLICT (content_hash) DO NOTHING RETURNING`` (a ``queue add`` then reads the ids
of the prompts that were already there in one more statement), so the statements a bulk write
sends grow with its number of batches, never with its rows, whatever the table holds already.
A per-row lookup made PostgreSQL cache a generic plan costed on a tiny table: each lookup became
a sequential scan, and a 30,000-prompt import after a 10-prompt pilot took 2.7× as long.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import Table, delete, func, insert, literal, select, text, update
from sqlalchemy.engine import Connection

from prefloop.errors import DataError, PrefloopError
from prefloop.text import check_text

from .prompts import MAX_SOURCE, STAGING, prompt_fields
from .store.db import Store
from .store.models import BulkWrite, Generation, Prompt, StagedTask, Task, utcnow
from .store.rows import columns_of, reserve_ids

if TYPE_CHECKING:
    from .importer import PromptRecord, TaskRecord
    from .queue import Queue

#: Rows written per transaction (a prompt; or a task's prompt, outputs and task): tens of
#: milliseconds of SQLite's write lock (benchmarks/bulk_paths.py).
DEFAULT_BATCH_ROWS = 5000
COMMITTED, DONE = "committed", "done"

#: ``progress(phase, done, total)`` after each step: phase ``write`` (records staged),
#: ``publish`` (tasks moved into the queue, SQLite) or ``wait`` (another bulk write runs first).
ProgressFn = Callable[[str, int, int], None]

P, G, T, ST, BW = (cast(Table, m.__table__) for m in (Prompt, Generation, Task, StagedTask, BulkWrite))


class _Pacer:
    """Leaves SQLite's write lock free for a moment after every quarter second of holding it.

    A claim or submit that finds the lock taken sleeps and tries again (SQLite's busy handler:
    after 1, 2, 5 … ms, then every 100 ms). A writer that begins its next transaction as soon as
    it commits can win the lock every time: publishing 100k tasks once kept four annotators
    waiting 2.5 s. So after ``HOLD`` seconds of transactions the writer stays out for ``FREE``
    seconds, longer than the longest of those sleeps: every waiting claim and submit runs first.
    Time spent outside the lock anyway (preparing rows, a checkpoint) counts as such a pause.
    """

    HOLD, FREE = 0.25, 0.12

    def __init__(self) -> None:
        self.held, self.free_since = 0.0, time.monotonic()

    @contextlib.contextmanager
    def transaction(self, store: Store) -> Iterator[Connection]:
        began = time.monotonic()
        if began - self.free_since >= self.FREE:
            self.held = 0.0
        with store.transaction() as conn:
            yield conn
        self.free_since = time.monotonic()
        self.held += self.free_since - began
        if self.held >= self.HOLD:
            time.sleep(self.FREE)  # pacing, see the class doc
            self.held, self.free_since = 0.0, time.monotonic()
#: Two keys for pg_advisory_xact_lock: this constant and the schema's name, hashed.
_PG_LOCK_KEY = 0x70726566  # "pref"


def write_prompts(
    store: Store,
    records: Sequence[PromptRecord],
    *,
    source: str | None,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    progress: ProgressFn | None = None,
) -> int:
    """Store checked prompt records, all or none; returns how many were new."""
    _positive(batch_rows)
    rows = _prepare_prompts(store, records, source)
    created = 0
    with _writing(store, "import", source, progress, batch_rows) as w:
        for start in range(0, len(rows), batch_rows):
            chunk = rows[start:start + batch_rows]
            with w.batch() as conn:
                created += len(_insert_prompts(conn, chunk, w.id))
            _report(progress, "write", start + len(chunk), len(rows))
        w.commit(len(rows))
    store.analyze()
    return created


def add_tasks(
    queue: Queue,
    records: Sequence[TaskRecord],
    *,
    overlap: int | None = None,
    source: str | None = None,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    progress: ProgressFn | None = None,
) -> int:
    """Enqueue checked task records (prompt, outputs, kind, priority), all or none; returns how many.

    Prompts already stored are reused; ``overlap`` defaults to the queue's.
    """
    _positive(batch_rows)
    store = queue.store
    dialect, now = store.engine.dialect, utcnow()
    prompts = _prepare_prompts(store, [r.prompt for r in records], source)
    as_task, as_output = columns_of(dialect, T, _TASK_COLUMNS), columns_of(dialect, G, _GENERATION_COLUMNS)
    output = as_output.row({"id": None, "prompt_id": None, "text": None, "model": "import", "params": {}, "meta": {},
                            "bulk_id": None, "created_at": now})
    tasks: dict[tuple[str, int, float], list[Any]] = {}  # one converted row per kind, size and priority
    prepared = []
    for rec, prompt in zip(records, prompts, strict=True):
        shape = (rec.kind, len(rec.outputs), rec.priority)
        if shape not in tasks:
            try:
                fields = queue.task_fields(rec.kind, len(rec.outputs), overlap=overlap, priority=rec.priority)
            except PrefloopError as exc:
                raise DataError(f"{rec.where}: {exc.message}", hint=exc.hint) from None
            tasks[shape] = as_task.row({**fields, "prompt_id": None, "generation_ids": None, "created_at": now})
        outputs = []
        for text_ in rec.outputs:
            row = output.copy()
            row[_OUTPUT_TEXT] = text_
            outputs.append(row)
        prepared.append((prompt, outputs, tasks[shape].copy()))
    with _writing(store, "queue add", source, progress, batch_rows) as w:
        for start, end in _batches([2 + len(outputs) for _, outputs, _ in prepared], batch_rows):
            with w.batch() as conn:
                _insert_tasks(conn, prepared[start:end], w, start)
            _report(progress, "write", end, len(prepared))
        w.commit(len(prepared))
    store.analyze()  # PostgreSQL: claims walk the claim index only once statistics exist
    return len(prepared)


def recover(store: Store) -> None:
    """Finish every bulk write that reached its commit point but not its end (its writer died).

    Safe at any time, even while that writer still runs: each step re-reads what is left.
    """
    if store.dialect != "sqlite":
        return  # a PostgreSQL bulk write is one transaction: nothing is ever left half done
    with store.transaction() as conn:
        pending = conn.execute(select(BW.c.id).where(BW.c.state == COMMITTED)).scalars().all()
    for bulk_id in pending:
        _publish_tasks(store, bulk_id, DEFAULT_BATCH_ROWS, None, _Pacer())


# ------------------------------------------------------------------ one bulk write
class _Writer:
    """A bulk write under way: its ``bulk_writes`` row and the transactions its batches run in."""

    def __init__(self, store: Store, bulk_id: int, conn: Connection | None,
                 batch_rows: int, progress: ProgressFn | None) -> None:
        self.store, self.id, self.conn = store, bulk_id, conn  # conn: PostgreSQL's one transaction
        self.batch_rows, self.progress, self.pacer = batch_rows, progress, _Pacer()

    @property
    def staged(self) -> bool:
        return self.conn is None

    @contextlib.contextmanager
    def batch(self) -> Iterator[Connection]:
        if self.conn is not None:
            yield self.conn
        else:
            with self.pacer.transaction(self.store) as conn:
                yield conn

    def commit(self, n_rows: int) -> None:
        """The commit point, then the tasks into the queue (SQLite; see the module doc)."""
        finished = {"rows": n_rows, "finished_at": utcnow()}
        if self.conn is not None:
            self.conn.execute(update(BW).where(BW.c.id == self.id).values(state=DONE, **finished))
            return
        with self.pacer.transaction(self.store) as conn:
            has_tasks = conn.execute(select(ST.c.pos).where(ST.c.bulk_id == self.id).limit(1)).first() is not None
            conn.execute(update(BW).where(BW.c.id == self.id).values(state=COMMITTED if has_tasks else DONE, **finished))
        if has_tasks:
            _publish_tasks(self.store, self.id, self.batch_rows, self.progress, self.pacer)


@contextlib.contextmanager
def _writing(store: Store, kind: str, source: str | None, progress: ProgressFn | None,
             batch_rows: int) -> Iterator[_Writer]:
    if store.dialect == "postgresql":
        with store.engine.connect() as conn, conn.begin():
            conn.execute(text("SELECT pg_advisory_xact_lock(:key, hashtext(current_schema()))"), {"key": _PG_LOCK_KEY})
            yield _Writer(store, _new_bulk_write(conn, kind, source), conn, batch_rows, progress)
        return
    with _one_writer_at_a_time(store, progress):
        _roll_back_dead(store)
        recover(store)
        with store.transaction() as conn:
            bulk_id = _new_bulk_write(conn, kind, source)
        writer = _Writer(store, bulk_id, None, batch_rows, progress)
        try:
            yield writer
        except BaseException:
            with contextlib.suppress(Exception):  # if this fails too, the next bulk writer cleans up
                _roll_back(store, bulk_id, writer.pacer)
            raise


def _new_bulk_write(conn: Connection, kind: str, source: str | None) -> int:
    values = {"kind": kind, "source": source, "state": STAGING, "rows": 0, "created_at": utcnow()}
    return conn.execute(insert(BW).values(**values).returning(BW.c.id)).scalar_one()


@contextlib.contextmanager
def _one_writer_at_a_time(store: Store, progress: ProgressFn | None) -> Iterator[None]:
    """A file lock beside the SQLite database, released by the OS if its holder dies."""
    from filelock import FileLock, Timeout

    database = store.url.database
    if not database or database == ":memory:":
        yield  # a private in-memory database: nobody else writes to it
        return
    lock = FileLock(f"{database}-bulk.lock")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        _report(progress, "wait", 0, 0)
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


# ------------------------------------------------------------------ rows
_PROMPT_COLUMNS = ("text", "messages", "source", "split", "tags", "meta", "reference", "content_hash", "created_at",
                   "bulk_id")
_GENERATION_COLUMNS = ("id", "prompt_id", "text", "model", "params", "meta", "bulk_id", "created_at")
_TASK_COLUMNS = ("kind", "prompt_id", "generation_ids", "overlap", "priority", "status", "scale_min", "scale_max",
                 "meta", "created_at")
_HASH, _OUTPUT_TEXT = _PROMPT_COLUMNS.index("content_hash"), _GENERATION_COLUMNS.index("text")


def _prepare_prompts(store: Store, records: Sequence[PromptRecord], source: str | None) -> list[list[Any]]:
    """Every prompt row in the driver's form, before any transaction (``bulk_id`` is set per batch)."""
    as_row, now = columns_of(store.engine.dialect, P, _PROMPT_COLUMNS), utcnow()
    if source is not None:
        check_text(source, "source", max_length=MAX_SOURCE)
    # parse_record checked every field already (its errors name file, line and field)
    return [as_row.row({**prompt_fields(r.prompt, source=r.source or source, split=r.split, tags=r.tags, meta=r.meta,
                                        reference=r.reference, checked=True), "created_at": now, "bulk_id": None})
            for r in records]


def _insert_prompts(conn: Connection, rows: list[list[Any]], bulk_id: int) -> dict[str, int]:
    """Store the new ones among ``rows`` in one statement; returns their ids by content hash."""
    for r in rows:
        r[-1] = bulk_id
    done = columns_of(conn.dialect, P, _PROMPT_COLUMNS).insert(
        conn, rows, suffix=" ON CONFLICT (content_hash) DO NOTHING RETURNING content_hash, id")
    return dict(done)


def _insert_tasks(conn: Connection, chunk: list[tuple[list, list[list], list]], w: _Writer, start: int) -> None:
    prompt_ids = _insert_prompts(conn, [p for p, _, _ in chunk], w.id)
    missing = {p[_HASH] for p, _, _ in chunk} - prompt_ids.keys()
    if missing:  # stored before, or earlier in this file
        prompt_ids.update(conn.execute(select(P.c.content_hash, P.c.id).where(P.c.content_hash.in_(missing))).all())
    gen_ids = iter(reserve_ids(conn, G, sum(len(outputs) for _, outputs, _ in chunk)))
    generations, tasks = [], []
    for prompt, outputs, task in chunk:
        prompt_id = prompt_ids[prompt[_HASH]]
        ids = []
        for out in outputs:
            out[0], out[1], out[-2] = next(gen_ids), prompt_id, w.id  # id, prompt_id, bulk_id
            ids.append(out[0])
            generations.append(out)
        task[1], task[2] = prompt_id, json.dumps(ids)
        tasks.append(task)
    columns_of(conn.dialect, G, _GENERATION_COLUMNS).insert(conn, generations)
    if w.staged:  # the queue's counters start when the task is published
        columns_of(conn.dialect, ST, ("bulk_id", "pos", *_TASK_COLUMNS)).insert(
            conn, [[w.id, pos, *t] for pos, t in enumerate(tasks, start)])
    else:
        columns_of(conn.dialect, T, (*_TASK_COLUMNS, "n_done")).insert(conn, [[*t, 0] for t in tasks])


# ------------------------------------------------------------------ publish and clean up (SQLite)


def _publish_tasks(store: Store, bulk_id: int, batch_rows: int, progress: ProgressFn | None, pacer: _Pacer) -> None:
    """Move a committed write's tasks into the queue, in file order: ``batch_rows`` rows changed per
    transaction (each task moved is one row inserted and one deleted)."""
    per_step = max(1, batch_rows // 2)
    total = moved = None
    while True:
        with pacer.transaction(store) as conn:
            left = conn.execute(select(func.min(ST.c.pos), func.max(ST.c.pos)).where(ST.c.bulk_id == bulk_id)).one()
            if left[0] is None:
                conn.execute(update(BW).where(BW.c.id == bulk_id).values(state=DONE))
                return
            lo = left[0]
            if total is None:
                total = conn.execute(select(BW.c.rows).where(BW.c.id == bulk_id)).scalar_one()
            part = (ST.c.bulk_id == bulk_id) & (ST.c.pos >= lo) & (ST.c.pos < lo + per_step)
            cols = [ST.c[c] for c in _TASK_COLUMNS]
            rows = select(*cols, literal(0)).where(part).order_by(ST.c.pos)
            conn.execute(insert(T).from_select([*_TASK_COLUMNS, "n_done"], rows))
            conn.execute(delete(ST).where(part))
            moved = min(left[1] + 1, lo + per_step)
        _report(progress, "publish", moved, total)


def _roll_back_dead(store: Store) -> None:
    """Delete what dead bulk writes staged (the caller holds the one-writer lock)."""
    with store.transaction() as conn:
        dead = conn.execute(select(BW.c.id).where(BW.c.state == STAGING)).scalars().all()
    pacer = _Pacer()
    for bulk_id in dead:
        _roll_back(store, bulk_id, pacer)


def _roll_back(store: Store, bulk_id: int, pacer: _Pacer, batch_rows: int = DEFAULT_BATCH_ROWS) -> None:
    """Delete a staging write's rows, ``batch_rows`` per transaction, then the write itself.

    A write past its commit point is complete: it is never rolled back, only finished.
    """
    with store.transaction() as conn:
        if conn.execute(select(BW.c.state).where(BW.c.id == bulk_id)).scalar() != STAGING:
            return
    for table, key in ((ST, ST.c.pos), (G, G.c.id), (P, P.c.id)):
        while True:
            with pacer.transaction(store) as conn:
                some = select(key).where(table.c.bulk_id == bulk_id).limit(batch_rows).scalar_subquery()
                if conn.execute(delete(table).where(table.c.bulk_id == bulk_id, key.in_(some))).rowcount == 0:
                    break
    with store.transaction() as conn:
        conn.execute(delete(BW).where(BW.c.id == bulk_id, BW.c.state == STAGING))


def _batches(rows_per_record: Sequence[int], batch_rows: int) -> Iterator[tuple[int, int]]:
    """``(start, end)`` of consecutive records writing at most ``batch_rows`` rows (at least one record)."""
    start, rows = 0, 0
    for i, n in enumerate(rows_per_record):
        if rows and rows + n > batch_rows:
            yield start, i
            start, rows = i, 0
        rows += n
    if rows:
        yield start, len(rows_per_record)


def _report(progress: ProgressFn | None, phase: str, done: int, total: int) -> None:
    if progress is not None:
        progress(phase, done, total)


def _positive(batch_rows: int) -> int:
    if batch_rows < 1:
        raise ValueError(f"batch_rows must be ≥ 1, got {batch_rows}")
    return batch_rows
