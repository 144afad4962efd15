"""Untrusted text (documents, queries, model output) for a terminal: every control character visible.

An ANSI escape in a document could clear the line, move the cursor or recolour the table a
user is reading; a bidi override could reorder what they see. Here C0/C1 controls, DEL and the
bidi/zero-width format characters become dim ``\\x1b`` / ``\\u202e`` escapes, and the result is a
rich ``Text`` (never parsed as markup). The annotation terminal has its own copy of this rule
(``prefloop.feedback.terminal``); the two should become one function when both have landed.
"""

from __future__ import annotations

import re
import unicodedata

from rich.text import Text

_WHITESPACE = re.compile(r"[ \t\r\n]+")


def _escape(ch: str) -> str | None:
    code = ord(ch)
    if code < 0x20 or code == 0x7F or 0x80 <= code <= 0x9F:
        return f"\\x{code:02x}"
    if unicodedata.category(ch) == "Cf" or ch in "\u2028\u2029":  # bidi controls, zero-width, BOM, separators
        return f"\\u{code:04x}"
    return None


def visible(text: str, *, max_chars: int | None = None, one_line: bool = True) -> Text:
    """``text`` as a rich ``Text``: controls shown as dim escapes, whitespace runs folded to a space
    (``one_line``), cut to ``max_chars`` characters with "…"."""
    if one_line:
        text = _WHITESPACE.sub(" ", text).strip()
    cut = False
    if max_chars is not None and len(text) > max_chars:
        text, cut = text[: max_chars - 1], True
    out = Text()
    plain: list[str] = []
    for ch in text:
        esc = None if (not one_line and ch in "\n\t") else _escape(ch)
        if esc is None:
            plain.append(ch)
            continue
        if plain:
            out.append("".join(plain))
            plain = []
        out.append(esc, style="dim")
    if plain:
        out.append("".join(plain))
    if cut:
        out.append("…", style="dim")
    return out
