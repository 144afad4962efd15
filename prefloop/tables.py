"""Tables that fit an 80-column terminal: numbers whole, text wrapped.

A rich table wider than the terminal shrinks its columns, numbers included: ``0.2…``, or a count
folded one digit per line. A prefloop table says what each column holds: a **number** (or an id,
a hash, a time) never wraps and is never narrower than its widest value; **text** (names, models,
paths, errors) folds onto more lines. The frame is light (one rule under the header, no outer
box), which leaves the width to the values. Headers of number columns are short, or break with
``\\n`` ("human\\nlabels"), since a number column never wraps its header either.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

from rich import box
from rich.cells import cell_len
from rich.table import Table
from rich.text import Text

Kind = Literal["text", "number", "id"]


def table(title: str | None, columns: Iterable[tuple[str, Kind]], *, caption: str | None = None, **kwargs: Any) -> Table:
    """An empty table with ``columns`` as (header, kind): ``number`` right-aligned, ``id`` left,
    both never wrapped; ``text`` folds. Call :func:`fit` after the rows are in."""
    t = Table(title=title, caption=caption, box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False,
              collapse_padding=True, **kwargs)
    for header, shape in columns:
        if shape == "text":
            t.add_column(header, overflow="fold")
        else:
            t.add_column(header, justify="right" if shape == "number" else "left", no_wrap=True)
    return t


def fit(t: Table) -> Table:
    """Set every unwrapped column's minimum width to its widest cell or header line, so that a narrow
    terminal shrinks only the text columns."""
    for column in t.columns:
        if column.no_wrap:
            widths = [_width(c) for c in [*column.cells, column.header]]
            column.min_width = max([column.min_width or 0, *widths]) or None
    return t


def _width(cell: Any) -> int:
    """The widest line of a cell given as text (other renderables measure themselves)."""
    text = cell.plain if isinstance(cell, Text) else cell if isinstance(cell, str) else ""
    return max(cell_len(line) for line in text.split("\n"))


class FirstThatFits:
    """The first of several renderables whose natural width fits the console (one wide table on a
    wide terminal or in a log file, the same numbers as two narrower tables on 80 columns); the
    last one when none does."""

    def __init__(self, *choices: Any) -> None:
        self.choices = choices

    def __rich_console__(self, console: Any, options: Any) -> Any:
        from rich.measure import Measurement

        unbounded = options.update(max_width=10_000)  # a measurement is capped at the width it is given
        for choice in self.choices[:-1]:
            if Measurement.get(console, unbounded, choice).maximum <= options.max_width:
                yield choice
                return
        yield self.choices[-1]
