"""Show untrusted text as it is stored: characters that hide, erase or reorder text become visible.

Model outputs and prompts may hold terminal control sequences (``"Berlin.\\x1b[2K\\x1b[1GParis."``
shows as "Paris." in a terminal while "Berlin." is what gets stored and trained on), bidi
overrides that display text in another order than it is stored (U+202E), and characters that
render as nothing (zero-width space, BOM, Unicode tag characters that smuggle ASCII past a
reader). Anything an annotator judges must show them, so that what they see is what is stored.

Marked: C0 controls except tab and newline (a carriage return only when it is not part of
``\\r\\n``), DEL and C1 controls, bidi controls, and invisible format characters. Joiners
(U+200C/U+200D, U+034F) are left alone: emoji sequences and several scripts need them, and they
cannot hide or reorder text. ``feedback/server/static/annotate.js`` (``visibleNodes``) marks exactly the
same set, shown the same way; a browser test checks that the two agree.
"""

from __future__ import annotations

import re

#: One hidden character per match (``\r`` only when it does not start ``\r\n``).
HIDDEN = re.compile(
    "\r(?!\n)|[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\xad\u061c\u115f\u1160\u17b4\u17b5\u180e\u200b\u200e\u200f"
    "\u2028-\u202e\u2060-\u2064\u2066-\u206f\u3164\ufeff\uffa0\U000e0000-\U000e007f]"
)


def visible_parts(text: str) -> list[tuple[str, bool]]:
    """``text`` as runs of ``(shown, is_marker)``: plain runs as they are, each hidden character
    as its Python escape (``\\r``, ``\\x1b``, ``\\u202e``, ``\\U000e0041``), for the caller to style."""
    parts: list[tuple[str, bool]] = []
    pos = 0
    for m in HIDDEN.finditer(text):
        if m.start() > pos:
            parts.append((text[pos:m.start()], False))
        parts.append((_escape(ord(m.group())), True))
        pos = m.end()
    if pos < len(text):
        parts.append((text[pos:], False))
    return parts


def _escape(code: int) -> str:
    if code == 0x0D:
        return "\\r"
    if code <= 0xFF:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"
