"""Database connection: one :class:`Store` per URL, SQLite (WAL) by default, PostgreSQL for teams.

SQLite transactions start with ``BEGIN IMMEDIATE`` so that a transaction that reads and then
writes (a claim) holds the write lock from its first statement: two processes can never both
read a free slot and then both take it, and there is no deferred-lock upgrade deadlock.
PostgreSQL claims use ``SELECT … FOR UPDATE SKIP LOCKED`` instead, as one statement on a
connection of :meth:`Store.autocommit` (see :mod:`.queue_sql`).

Both databases get the same pool (``POOL_SIZE`` + ``POOL_OVERFLOW`` connections, more than the
annotation server's request threads) and the same notion of "busy": a statement waits at most
``busy_timeout_s`` for a lock (SQLite's ``busy_timeout``, PostgreSQL's ``lock_timeout``), then
fails with an error the server turns into 503 + Retry-After.

JSON columns hold strict JSON on both databases: PostgreSQL refuses NaN and Infinity, SQLite would
store them, so the engine's serializer refuses them everywhere (:class:`NonFiniteJSON`) and a stray
NaN fails the same clear way in a SQLite test as it would in production on PostgreSQL.
"""

from __future__ import annotations

import contextlib
import json
import math
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event
from sqlalchemy.dialects import registry
from sqlalchemy.dialects.sqlite.pysqlite import SQLiteDialect_pysqlite
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import DBAPIError, DontWrapMixin
from sqlalchemy.orm import Session, sessionmaker

from prefloop.errors import ConfigError, DataError

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
POOL_SIZE, POOL_OVERFLOW = 10, 40
#: seconds a statement waits for a lock by default (bulk writers); the server sets its own.
DEFAULT_BUSY_TIMEOUT_S = 60.0


class NonFiniteJSON(DataError, DontWrapMixin):
    """A JSON value to be stored holds NaN or ±Infinity. Raised as it is (not wrapped in SQLAlchemy's
    StatementError), so callers and the CLI see one line without an SQL dump."""


def strict_json_dumps(value: Any) -> str:
    """The store's JSON serializer: :func:`json.dumps` that refuses NaN/±Infinity, naming where they are."""
    try:
        return json.dumps(value, allow_nan=False)
    except ValueError:
        where, number = _non_finite(value, "") or ("", float("nan"))
        raise NonFiniteJSON(
            f"cannot store {number!r} at {where or 'the top level'} of a JSON value: JSON has no NaN or "
            "Infinity (an undefined number is stored as None, i.e. null)"
        ) from None


def _non_finite(value: Any, where: str) -> tuple[str, float] | None:
    """The path and value of the first NaN/±Infinity in ``value`` (``a.b[2]``), or None."""
    if isinstance(value, float) and not math.isfinite(value):
        return where, value
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, (list, tuple)) else ()
    for k, v in items:
        found = _non_finite(v, f"{where}[{k}]" if isinstance(k, int) else f"{where}.{k}" if where else str(k))
        if found:
            return found
    return None


class ImmediateSQLiteDialect(SQLiteDialect_pysqlite):
    """The standard SQLite driver, with every transaction opened by ``BEGIN IMMEDIATE``.

    Issued by the dialect rather than from a ``begin`` event: an engine event makes SQLAlchemy
    dispatch events around every statement, and routing the BEGIN itself through
    ``exec_driver_sql`` costs as much as a claim's real work.
    """

    supports_statement_cache = True

    def do_begin(self, dbapi_connection) -> None:  # noqa: ANN001
        dbapi_connection.execute("BEGIN IMMEDIATE")


registry.register("sqlite.prefloop_immediate", __name__, "ImmediateSQLiteDialect")


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):  # noqa: ANN001
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
        cur = dbapi_connection.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()


def _repeatable_read(dbapi_connection, _record) -> None:  # noqa: ANN001
    """Statements outside an explicit transaction run in REPEATABLE READ (see :mod:`.queue_sql`)."""
    cur = dbapi_connection.cursor()
    cur.execute("SET default_transaction_isolation = 'repeatable read'")
    cur.close()
    dbapi_connection.commit()  # a session setting survives only a committed transaction


class Store:
    """Owns the engine and hands out sessions; ``Store(url).migrate()`` makes the schema current."""

    def __init__(self, url: str, *, echo: bool = False, busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S) -> None:
        try:
            parsed = make_url(url)
        except Exception as exc:  # sqlalchemy raises ArgumentError with a terse message
            raise ConfigError(
                f"invalid database URL {url!r}: {exc}",
                hint="use sqlite:///path/to/prefloop.db or postgresql+psycopg://user:pw@host:5432/db",
            ) from exc
        self.url = parsed
        self.dialect = parsed.get_backend_name()
        if self.dialect not in ("sqlite", "postgresql"):
            raise ConfigError(f"unsupported database {self.dialect!r}", hint="prefloop supports SQLite and PostgreSQL")
        self.busy_timeout_s = busy_timeout_s
        kwargs: dict = {"echo": echo, "future": True, "json_serializer": strict_json_dumps}
        in_memory = self.dialect == "sqlite" and parsed.database in (None, "", ":memory:")
        if not in_memory:  # an in-memory SQLite database lives in one connection per thread
            kwargs.update(pool_size=POOL_SIZE, max_overflow=POOL_OVERFLOW)
        engine_url = parsed
        if self.dialect == "sqlite":
            if parsed.get_driver_name() != "pysqlite":
                raise ConfigError(
                    f"unsupported SQLite driver {parsed.get_driver_name()!r}", hint="use sqlite:///path/to/prefloop.db"
                )
            if parsed.database and parsed.database != ":memory:":
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": busy_timeout_s}
            engine_url = parsed.set(drivername="sqlite+prefloop_immediate")
        else:
            kwargs.update(pool_pre_ping=True)
        self._engine_kwargs = kwargs
        self._reader: Engine | None = None  # SQLite: connections for Store.read()
        self._autocommit: Engine | None = None  # PostgreSQL: connections for Store.autocommit()
        self._reader_lock = threading.Lock()
        self.engine = create_engine(engine_url, **kwargs)
        #: connections that can be open at once (the server runs no more request threads than this).
        self.pool_capacity = POOL_SIZE + POOL_OVERFLOW if not in_memory else 1
        if self.dialect == "sqlite":
            _configure_sqlite(self.engine)
        event.listen(self.engine, "checkout", self._apply_busy_timeout)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    def set_busy_timeout(self, seconds: float) -> None:
        """From now on, statements wait at most ``seconds`` for a lock (connections adopt it at checkout)."""
        self.busy_timeout_s = seconds

    def _apply_busy_timeout(self, dbapi_connection, record, _proxy) -> None:  # noqa: ANN001
        ms = max(1, int(self.busy_timeout_s * 1000))
        if record.info.get("busy_timeout_ms") == ms:
            return
        cur = dbapi_connection.cursor()
        if self.dialect == "sqlite":
            cur.execute(f"PRAGMA busy_timeout={ms}")
        else:
            cur.execute(f"SET lock_timeout = {ms}")
            dbapi_connection.commit()  # a session setting survives only a committed transaction
        cur.close()
        record.info["busy_timeout_ms"] = ms

    @property
    def safe_url(self) -> str:
        """The URL with any password masked, for logs and messages."""
        return self.url.render_as_string(hide_password=True)

    @contextlib.contextmanager
    def session(self) -> Iterator[Session]:
        """A session in one transaction: committed on success, rolled back on any error."""
        with self._sessions() as session:
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Connection]:
        """A Core connection in one transaction, for hot paths that need no ORM unit of work."""
        with self.engine.begin() as conn:
            yield conn

    @contextlib.contextmanager
    def read(self) -> Iterator[Connection]:
        """A Core connection in a transaction that only reads, for long reads (exports, statistics).

        Every other SQLite transaction here begins ``IMMEDIATE``, holding the write lock from its
        first statement; a read of 100k labels would stall every claim and submit for seconds.
        This one begins ``DEFERRED``: a consistent snapshot that, in WAL mode, neither waits for
        the writer nor makes it wait (SQLAlchemy's recipe for pysqlite transactions).
        """
        private = self.url.database in (None, "", ":memory:")  # another connection would see another database
        if self.dialect != "sqlite" or private:
            with self.engine.connect() as conn, conn.begin():
                yield conn
            return
        with self._reader_lock:
            if self._reader is None:
                self._reader = create_engine(self.url, **self._engine_kwargs)
                _configure_sqlite(self._reader)
                event.listen(self._reader, "begin", lambda conn: conn.exec_driver_sql("BEGIN"))
        with self._reader.connect() as conn, conn.begin():
            yield conn

    @contextlib.contextmanager
    def autocommit(self) -> Iterator[Connection]:
        """PostgreSQL: a connection on which every statement is its own REPEATABLE READ transaction.

        For the queue's one-statement claim and submit: one round trip each, no BEGIN or COMMIT.
        These connections are handed out without a pre-ping (another round trip); a statement that
        finds its connection dropped by the server fails with ``connection_invalidated`` set, and the
        whole pool is replaced (its other idle connections were most likely dropped too), so the
        caller can run the statement once more on a fresh connection.
        """
        if self.dialect != "postgresql":
            raise ConfigError("autocommit connections are for PostgreSQL")
        engine = self._autocommit
        if engine is None:
            with self._reader_lock:
                if self._autocommit is None:
                    kwargs = {**self._engine_kwargs, "pool_pre_ping": False, "isolation_level": "AUTOCOMMIT"}
                    self._autocommit = create_engine(self.engine.url, **kwargs)
                    event.listen(self._autocommit, "connect", _repeatable_read)
                    event.listen(self._autocommit, "checkout", self._apply_busy_timeout)
                engine = self._autocommit
        with engine.connect() as conn:
            try:
                yield conn
            except DBAPIError as exc:
                if exc.connection_invalidated:
                    conn.invalidate(exc)
                    engine.dispose()
                raise

    def analyze(self) -> None:
        """Refresh PostgreSQL's planner statistics; call it after a bulk import of tasks.

        Until autovacuum first analyses a freshly filled table (a minute or so), PostgreSQL
        assumes few open tasks and plans a claim as a sort of all of them rather than a walk
        of the claim index that stops at the first free one. SQLite needs nothing here.
        """
        if self.dialect == "postgresql":
            with self.engine.begin() as conn:
                conn.exec_driver_sql("ANALYZE tasks, leases, annotations, generations, prompts")

    def migrate(self) -> None:
        """Create or upgrade the schema to the newest Alembic revision."""
        from alembic import command

        with self.engine.begin() as conn:
            cfg = alembic_config(self)
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")

    def dispose(self) -> None:
        self.engine.dispose()
        for other in (self._reader, self._autocommit):
            if other is not None:
                other.dispose()


def rows_by_id(conn: Connection, columns: tuple, ids: Iterable[int], *, chunk: int = 5000) -> Iterator[Any]:
    """Rows of ``columns`` whose first column (an id) is in ``ids``, a few thousand ids per statement.

    One ``IN`` of 100,000 parameters passes SQLite's limit, and SQLAlchemy spends seconds on the
    parameters of many: a run of ids with few holes is read as one range and filtered here.
    """
    from sqlalchemy import select

    wanted = set(ids)
    ordered = sorted(wanted)
    id_col = columns[0]
    for i in range(0, len(ordered), chunk):
        part = ordered[i:i + chunk]
        if part[-1] - part[0] < 2 * len(part):
            rows = conn.execute(select(*columns).where(id_col.between(part[0], part[-1])))
            yield from (r for r in rows if r[0] in wanted)
        else:
            yield from conn.execute(select(*columns).where(id_col.in_(part)))


def alembic_config(store: Store):  # noqa: ANN201 - alembic.config.Config
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", store.url.render_as_string(hide_password=False).replace("%", "%%"))
    return cfg


def open_store(url: str, *, migrate: bool = True) -> Store:
    """Open a store and bring its schema up to date (the usual entry point)."""
    store = Store(url)
    if migrate:
        store.migrate()
        from prefloop.feedback.bulk import recover

        recover(store)  # finish a bulk write whose writer died after its commit point
    return store


def postgres_schema_url(url: str, schema: str, *, recreate: bool = True) -> str:
    """A URL whose connections use ``schema`` (created, emptied first when ``recreate``).

    Lets several stores (test runs, benchmarks, projects) share one PostgreSQL database.
    """
    from sqlalchemy import text

    base = make_url(url)
    admin = create_engine(base)
    with admin.begin() as conn:
        if recreate:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
    admin.dispose()
    return base.update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(hide_password=False)
