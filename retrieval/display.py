"""Untrusted text (documents, queries, model output) in a table cell: hidden characters visible.

An ANSI escape in a document could clear the line, move the cursor or recolour the table a
user is reading; a bidi override could reorder what they see. The rule of what is hidden and
how it is written is :func:`prefloop.visible.visible_parts` (shared with the annotation terminal
and the page); here runs of whitespace are folded for a one-line cell and long text is cut.
"""

from __future__ import annotations

import re

from rich.text import Text

from prefloop.visible import visible_parts

_WHITESPACE = re.compile(r"[ \t\r\n]+")


def visible(text: str, *, max_chars: int | None = None, one_line: bool = True) -> Text:
    """``text`` as a rich ``Text``: hidden characters as dim escapes, whitespace runs folded to a
    space (``one_line``), cut to ``max_chars`` characters with "…"."""
    if one_line:
        text = _WHITESPACE.sub(" ", text).strip()
    cut = max_chars is not None and len(text) > max_chars
    if cut:
        text = text[: max_chars - 1]  # type: ignore[operator]
    out = Text()
    for part, marker in visible_parts(text):
        out.append(part, style="dim" if marker else None)
    if cut:
        out.append("…", style="dim")
    return out
