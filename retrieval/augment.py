"""Place retrieved passages into a chat prompt, within a token budget.

:func:`augment` renders the ``rag.template`` (Jinja, sandboxed: the template is configuration,
the passages are data and are never evaluated) with numbered passages and puts the text into the
system message or before the last user turn. Passages go in rank order while the rendered
context fits ``max_context_tokens``; the first one that does not fit is cut at a unit boundary
(and marked with "…") if at least :data:`MIN_UNITS` of it fit, and the rest are dropped. Tokens
are counted with the model's tokenizer when one is given, else as whitespace-separated words.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from .retrievers import Passage

MIN_UNITS = 8  # a passage cut shorter than this says too little to be worth its place
ELLIPSIS = " …"
_WORD = re.compile(r"\S+")


@dataclass(frozen=True)
class PlacedPassage:
    """A passage as it went into the prompt: its number there, its (possibly cut) text."""

    number: int
    passage: Passage
    text: str
    truncated: bool

    def as_template_value(self) -> dict[str, Any]:
        p = self.passage
        return {"number": self.number, "text": self.text, "title": p.title, "source": p.source,
                "document_key": p.document_key, "score": p.score, "truncated": self.truncated}


@dataclass(frozen=True)
class Augmented:
    messages: list[dict[str, str]]
    placed: list[PlacedPassage]
    context: str  # the rendered text ("" when no passage was placed)
    context_tokens: int


@functools.lru_cache(maxsize=32)
def compile_template(source: str) -> jinja2.Template:
    """The template compiled in a sandbox; a syntax error is a ``ValueError`` naming the line."""
    env = ImmutableSandboxedEnvironment(undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=False)
    try:
        return env.from_string(source)
    except jinja2.TemplateSyntaxError as exc:
        raise ValueError(f"template line {exc.lineno}: {exc.message}") from None


def count_tokens(text: str, tokenizer: Any = None) -> int:
    if tokenizer is None:
        return len(_WORD.findall(text))
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def _unit_ends(text: str, tokenizer: Any) -> list[int]:
    """The character offset where each unit (word or token) of ``text`` ends."""
    if tokenizer is None:
        return [m.end() for m in _WORD.finditer(text)]
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    return [int(b) for a, b in enc["offset_mapping"] if b > a]


def render_context(template: str, placed: list[PlacedPassage]) -> str:
    return compile_template(template).render(passages=[p.as_template_value() for p in placed]).strip()


def fit_passages(
    passages: list[Passage], template: str, *, tokenizer: Any = None, max_context_tokens: int = 512,
) -> list[PlacedPassage]:
    """The passages, in order, that fit the budget once rendered (the last one possibly cut)."""
    placed: list[PlacedPassage] = []

    def fits(candidate: list[PlacedPassage]) -> bool:
        return count_tokens(render_context(template, candidate), tokenizer) <= max_context_tokens

    for p in passages:
        number = len(placed) + 1
        whole = PlacedPassage(number, p, p.text, False)
        if fits([*placed, whole]):
            placed.append(whole)
            continue
        ends = _unit_ends(p.text, tokenizer)
        lo, hi = 0, len(ends) - 1  # the largest m < len(ends) whose cut fits (binary search: fit is monotone)
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if fits([*placed, PlacedPassage(number, p, p.text[: ends[mid - 1]] + ELLIPSIS, True)]):
                lo = mid
            else:
                hi = mid - 1
        if lo >= MIN_UNITS:
            placed.append(PlacedPassage(number, p, p.text[: ends[lo - 1]] + ELLIPSIS, True))
        break
    return placed


def place(
    messages: list[dict[str, str]],
    passages: list[Passage],
    template: str,
    *,
    tokenizer: Any = None,
    max_context_tokens: int = 512,
    placement: str = "system",
) -> Augmented:
    """:func:`augment`, also returning which passages were placed (to store with the generation)."""
    out = [dict(m) for m in messages]
    placed = fit_passages(passages, template, tokenizer=tokenizer, max_context_tokens=max_context_tokens)
    if not placed:
        return Augmented(out, [], "", 0)
    context = render_context(template, placed)
    if placement == "system":
        if out and out[0].get("role") == "system":
            out[0]["content"] = f"{out[0]['content']}\n\n{context}" if out[0]["content"] else context
        else:
            out.insert(0, {"role": "system", "content": context})
    elif placement == "user":
        users = [i for i, m in enumerate(out) if m.get("role") == "user"]
        if not users:
            raise ValueError("placement 'user' needs a user message")
        out[users[-1]]["content"] = f"{context}\n\n{out[users[-1]]['content']}"
    else:
        raise ValueError(f"placement must be 'system' or 'user', got {placement!r}")
    return Augmented(out, placed, context, count_tokens(context, tokenizer))


def augment(
    messages: list[dict[str, str]],
    passages: list[Passage],
    template: str | None = None,
    tokenizer: Any = None,
    max_context_tokens: int = 512,
    placement: str = "system",
) -> list[dict[str, str]]:
    """``messages`` with the passages placed (a new list; the input is not changed).

    ``template`` defaults to ``rag.template``'s default; with no passage that fits, the messages
    come back unchanged.
    """
    if template is None:
        from .config import DEFAULT_TEMPLATE

        template = DEFAULT_TEMPLATE
    return place(messages, passages, template, tokenizer=tokenizer, max_context_tokens=max_context_tokens,
                 placement=placement).messages
