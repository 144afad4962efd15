"""Rows inserted at the database's speed: converted once, sent as one multi-row statement.

The bulk paths (:mod:`prefloop.feedback.bulk`) write hundreds of thousands of rows; SQLAlchemy's
per-value work would cost more than the database's own. :func:`columns_of` gives the cached
inserter of some columns of a table; :func:`reserve_ids` draws primary keys ahead, so that rows can
refer to each other before they exist.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import JSON, Table, func, select, text
from sqlalchemy.engine import Connection, Dialect


class Columns:
    """Rows of some columns of a table, converted and inserted without SQLAlchemy's per-value work.

    SQLAlchemy converts each value of each row through its column type on every execution, which
    cost 5–10× the database's own work here (issue 14 asks for the database's speed). So rows are
    converted once, while they are prepared (JSON as SQLAlchemy's JSON type writes it, ``None``
    included; other types by the dialect's own converters), then inserted by statements sent
    through the connection, so that events and error translation work as usual: on SQLite one
    multi-row ``VALUES`` per 32,766 values; on PostgreSQL one ``INSERT … SELECT FROM unnest(…)``
    with one array per column (a ``VALUES`` list of thousands of rows takes PostgreSQL longer to
    plan than to insert).
    """

    def __init__(self, dialect: Dialect, table: Table, columns: tuple[str, ...]) -> None:
        self.pg = dialect.name == "postgresql"
        self.names = columns
        self.convert: list[tuple[int, Callable[[Any], Any]]] = []
        for i, c in enumerate(columns):
            col_type = table.c[c].type
            if isinstance(col_type, JSON):
                self.convert.append((i, _json))
                continue
            to_db = col_type.dialect_impl(dialect).bind_processor(dialect)
            if to_db is not None:  # datetimes on SQLite: one `now` for every row, converted once
                self.convert.append((i, functools.lru_cache(maxsize=16)(functools.partial(_unless_none, to_db))))
        quote = dialect.identifier_preparer
        head = f"INSERT INTO {quote.format_table(table)} ({', '.join(quote.quote(c) for c in columns)}) "
        if self.pg:  # JSON travels as text and is cast; other arrays take the column's own type
            types = ["text" if isinstance(table.c[c].type, JSON) else table.c[c].type.compile(dialect=dialect)
                     for c in columns]
            casts = [f"u.c{i}::json" if isinstance(table.c[c].type, JSON) else f"u.c{i}" for i, c in enumerate(columns)]
            arrays = ", ".join(f"%s::{t}[]" for t in types)
            names = ", ".join(f"c{i}" for i in range(len(columns)))
            self.sql = f"{head}SELECT {', '.join(casts)} FROM unnest({arrays}) WITH ORDINALITY AS u({names}, n) ORDER BY u.n"
        else:
            self.head, self.one = head + "VALUES ", "(" + ", ".join(["?"] * len(columns)) + ")"
            self.per_statement = max(1, _MAX_PARAMETERS // len(columns))

    def row(self, values: dict[str, Any]) -> list[Any]:
        out = [values[c] for c in self.names]
        for i, to_db in self.convert:
            out[i] = to_db(out[i])
        return out

    def insert(self, conn: Connection, rows: Sequence[Sequence[Any]], *, suffix: str = "") -> Sequence[Any]:
        """Insert converted ``rows``; returns what ``suffix`` (``RETURNING …``) returns."""
        if not rows:
            return []
        if self.pg:
            columns = tuple(list(c) for c in zip(*rows, strict=True))
            result = conn.exec_driver_sql(self.sql + suffix, columns)
            return result.all() if result.returns_rows else []
        out: list[Any] = []
        for i in range(0, len(rows), self.per_statement):
            part = rows[i:i + self.per_statement]
            sql = self.head + ", ".join([self.one] * len(part)) + suffix
            result = conn.exec_driver_sql(sql, tuple(v for r in part for v in r))
            if result.returns_rows:
                out += result.all()
        return out


_BUILT: dict[tuple[str, str, str, tuple[str, ...]], Columns] = {}


def columns_of(dialect: Dialect, table: Table, columns: tuple[str, ...]) -> Columns:
    key = (dialect.name, dialect.driver, table.name, columns)
    if key not in _BUILT:
        _BUILT[key] = Columns(dialect, table, columns)
    return _BUILT[key]


#: Parameters per statement: SQLite's default limit (32,766 since 3.32; PostgreSQL allows 65,535).
_MAX_PARAMETERS = 32_766


def _unless_none(to_db: Callable[[Any], Any], value: Any) -> Any:  # noqa: ANN401
    return None if value is None else to_db(value)


def _json(value: Any) -> str:  # noqa: ANN401
    """A JSON column's value as SQLAlchemy's JSON type writes it (the common empty cases for free)."""
    if value is None:
        return "null"
    if not value and isinstance(value, (dict, list)):
        return "{}" if isinstance(value, dict) else "[]"
    return json.dumps(value)


def reserve_ids(conn: Connection, table: Table, n: int) -> list[int]:
    """``n`` new primary keys of ``table``, so that rows can refer to each other before they exist.

    PostgreSQL draws them from the table's sequence. SQLite gives a new row the largest id plus
    one, and this transaction holds the write lock until the rows are in, so nobody else can
    take them.
    """
    if conn.dialect.name == "postgresql":
        drawn = conn.execute(text("SELECT nextval(pg_get_serial_sequence(:t, 'id')) FROM generate_series(1, :n)"),
                             {"t": table.name, "n": n}).scalars()
        return sorted(drawn)
    first = conn.execute(select(func.coalesce(func.max(table.c.id), 0))).scalar_one() + 1
    return list(range(first, first + n))
