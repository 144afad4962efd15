"""One text policy for every entry point: what text prefloop accepts, stores and trains on.

Prompts, model outputs, answers, rationales, names and keys arrive from files, HTTP bodies,
terminals, judges and Argilla. Whatever the path, a string is accepted only if

- it is valid Unicode: no lone UTF-16 surrogate (``"\\ud800"`` decodes from JSON but cannot be
  encoded as UTF-8, so one such answer would break every later export);
- it holds no NUL (U+0000): PostgreSQL cannot store it in text or JSON, so it is refused on
  SQLite too, and both databases behave the same;

and a JSON value is accepted only if its numbers are finite (PostgreSQL refuses NaN/Infinity in
JSON). Refused input raises the caller's error class with a message naming the field and the
position, and nothing is stored: prefloop never silently alters a record.

Other control characters (ANSI escapes, bidi overrides) are stored as they are, so that what
is trained on is what was written; the page and the terminal show them visibly.
"""

from __future__ import annotations

import math
import re
import unicodedata
from typing import Any

from prefloop.errors import DataError, PrefloopError

_SURROGATE = re.compile("[\ud800-\udfff]")
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
#: Characters that render as nothing: an edit made only of these (and spaces) is empty.
INVISIBLE = frozenset("\u0000\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180e\u200b\u200c\u200d\u200e\u200f"
                      "\u202a\u202b\u202c\u202d\u202e\u2060\u2061\u2062\u2063\u2064\u2066\u2067\u2068\u2069"
                      "\u206a\u206b\u206c\u206d\u206e\u206f\u3164\ufeff\uffa0")


def text_problem(value: str) -> str | None:
    """Why ``value`` cannot be stored, or ``None`` when it can."""
    if _UNSTORABLE.search(value) is None:  # the common case: one scan
        return None
    m = _SURROGATE.search(value)
    if m is not None:
        return f"holds an invalid character (lone surrogate U+{ord(m.group()):04X}) at position {m.start()}"
    i = value.find("\x00")
    if i >= 0:
        return f"holds a NUL character (U+0000) at position {i}, which cannot be stored"
    return None


def storable(value: str) -> tuple[str, int]:
    """Text a model wrote, made storable on both databases: each NUL or lone surrogate becomes
    U+FFFD (the replacement character), and the count says how many did, so that callers record
    the change instead of hiding it. Model output is not refused: a round cannot ask the model again."""
    return _UNSTORABLE.subn("\ufffd", value)


def check_text(
    value: Any,
    field: str,
    *,
    error: type[PrefloopError] = DataError,
    allow_blank: bool = True,
    max_length: int | None = None,
) -> str:
    """``value`` if it is storable text, else ``error`` naming ``field``.

    ``allow_blank=False`` also refuses text that is empty once whitespace and invisible
    characters (zero-width, BOM, bidi marks) are removed.
    """
    if not isinstance(value, str):
        raise error(f"{field}: expected text, got {type(value).__name__}")
    problem = text_problem(value)
    if problem is not None:
        raise error(f"{field} {problem}")
    if not allow_blank and is_blank(value):
        raise error(f"{field} is empty (only spaces or invisible characters)")
    if max_length is not None and len(value) > max_length:
        raise error(f"{field} is {len(value)} characters long; at most {max_length} are allowed")
    return value


def is_blank(value: str) -> bool:
    """True when nothing visible remains after removing whitespace and invisible characters."""
    return all(ch.isspace() or ch in INVISIBLE or unicodedata.category(ch) == "Cf" for ch in value)


def check_json(value: Any, field: str, *, error: type[PrefloopError] = DataError) -> Any:
    """``value`` if every string in it (keys too) is storable text and every number is finite."""
    found = _problem(value)
    if found is not None:
        where, problem = found
        raise error(f"{field}{where}{problem}")
    return value


def _problem(value: Any) -> tuple[str, str] | None:
    """``(path below value, what is wrong)`` for the first unstorable part of ``value``, else None.

    The path is built only on the way back from a problem: the walk over a good value (every
    imported row) allocates nothing.
    """
    if isinstance(value, str):
        problem = text_problem(value)
        return None if problem is None else ("", f" {problem}")
    if value is None or isinstance(value, int):  # bool is an int
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else ("", f" is {value!r}; only finite numbers can be stored")
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                return "", f": keys must be text, got {type(k).__name__}"
            problem = text_problem(k)
            if problem is not None:
                return "", f" key {k[:40]!r} {problem}"
            found = _problem(v)
            if found is not None:
                return f".{k}{found[0]}", found[1]
        return None
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            found = _problem(v)
            if found is not None:
                return f"[{i}]{found[0]}", found[1]
        return None
    return "", f": {type(value).__name__} is not a JSON value"


def one_line(message: str, *, limit: int = 500) -> str:
    """``message`` as one line for an error: line breaks and runs of spaces become one space,
    other control characters (ANSI escapes) are shown escaped, and a long message is cut."""
    flat = " ".join(message.split())
    flat = "".join(repr(ch)[1:-1] if unicodedata.category(ch) == "Cc" else ch for ch in flat)
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def finite_or_none(value: Any) -> Any:
    """Metrics computed by prefloop: an undefined number (NaN, ±inf) becomes ``None`` (shown as n/a)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_none(v) for v in value]
    return value


#: How an undefined statistic (None, NaN, ±inf) reads in tables, charts and the dashboard.
NA = "n/a"


def show_number(value: Any, spec: str = ".2f", *, scale: float = 1.0, suffix: str = "") -> str:
    """A statistic for people: ``value × scale`` formatted with ``spec`` plus ``suffix``, or ``n/a`` when undefined."""
    if finite_or_none(value) is None:
        return NA
    return f"{value * scale:{spec}}{suffix}"
