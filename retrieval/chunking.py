"""Split a document into overlapping chunks of ``size`` words or tokens.

Units:

- ``words`` (the default): maximal runs of non-space characters, so a chunk of 120 words is
  about 160 tokens of an English BPE tokenizer;
- ``tokens``: the tokens of a Hugging Face tokenizer (its offset mapping says where each token
  starts and ends in the text), for a budget that must hold exactly in a model's context.

Each chunk is an exact slice of the document (``text[char_start:char_end]``, from the first
unit's start to the last unit's end), so its provenance is a character span and nothing is
rewritten. Consecutive chunks share ``overlap`` units; the last chunk ends at the document's end
and no chunk lies entirely inside its predecessor.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field, model_validator

from prefloop.strict import StrictModel

_WORD = re.compile(r"\S+")


class Chunking(StrictModel):
    """How a knowledge base cuts its documents (stored on the knowledge base)."""

    unit: Literal["words", "tokens"] = "words"
    size: int = Field(120, ge=1, le=100_000, description="units per chunk")
    overlap: int = Field(20, ge=0, description="units shared by consecutive chunks")
    tokenizer: str | None = Field(None, description="model source of the tokenizer (unit: tokens)")

    @model_validator(mode="after")
    def _check(self) -> Chunking:
        if self.overlap >= self.size:
            raise ValueError(f"overlap ({self.overlap}) must be smaller than size ({self.size})")
        if self.unit == "tokens" and not self.tokenizer:
            raise ValueError("unit 'tokens' needs a tokenizer (a model source, e.g. offline:smollm2-135m-instruct)")
        if self.unit == "words" and self.tokenizer:
            raise ValueError("a tokenizer is only used with unit 'tokens'")
        return self


@dataclass(frozen=True)
class Span:
    """One chunk: its position in the document, its character span and its length in units."""

    position: int
    char_start: int
    char_end: int
    n_units: int


def unit_spans(text: str, chunking: Chunking, tokenizer: Any = None) -> list[tuple[int, int]]:
    """The (start, end) character span of every unit of ``text``."""
    if chunking.unit == "words":
        return [m.span() for m in _WORD.finditer(text)]
    if tokenizer is None:
        raise ValueError("unit 'tokens' needs the tokenizer object")
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    # Tokens that cover no character (some tokenizers emit them) cannot bound a slice.
    return [(int(a), int(b)) for a, b in enc["offset_mapping"] if b > a]


def chunk_spans(text: str, chunking: Chunking, tokenizer: Any = None) -> list[Span]:
    """Windows of ``size`` units stepping by ``size - overlap``; none for a text without units."""
    units = unit_spans(text, chunking, tokenizer)
    step = chunking.size - chunking.overlap
    spans: list[Span] = []
    start = 0
    while start < len(units):
        end = min(start + chunking.size, len(units))
        spans.append(Span(len(spans), units[start][0], units[end - 1][1], end - start))
        if end == len(units):
            break
        start += step
    return spans
