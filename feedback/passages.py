"""What a generation was prompted with, when retrieval put passages into its prompt.

A generation made with retrieval (``rag.enabled``, or a RAG arm of ``prefloop compare``) keeps,
in its ``meta``:

- ``passages``: the passages as they were placed, in prompt order — ``number`` (the ``[n]`` the
  prompt shows), ``chunk_id``, ``kb``, ``document_key``, ``title``, ``source``, ``score``,
  ``rank``, ``retriever``, ``position``, ``char_start``, ``char_end``, ``truncated`` and ``text``
  (the text as placed, "…" included when it was cut);
- ``prompt_messages``: the chat messages exactly as the model was given them (the passages
  rendered into them);
- ``rag``: how they were found (knowledge base and its content hash, retriever, k, placement,
  token budget, retrieval seconds).

Stored on each generation rather than in a table of their own: a generation then says alone
what the model saw, whatever happens to the knowledge base later (chunks are replaced when a
document changes), so the page, the terminal, the judges and the exported datasets all read one
row; and the store needs no migration. The price is one copy per sample of a prompt (bounded by
``rag.max_context_tokens``). This module reads those keys; :mod:`prefloop.retrieval.context`
writes them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from .store.models import Generation

PASSAGES = "passages"
PROMPT_MESSAGES = "prompt_messages"
RAG = "rag"

#: the fields of a stored passage that an annotator sees, and exports carry
PASSAGE_FIELDS = ("number", "chunk_id", "kb", "document_key", "title", "source", "score", "rank", "truncated", "text")


def passages_of(meta: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """The passages placed in a generation's prompt (none without retrieval)."""
    return [dict(p) for p in (meta or {}).get(PASSAGES) or []]


def prompted_messages(messages: list[dict[str, str]], meta: Mapping[str, Any] | None) -> list[dict[str, str]]:
    """The prompt as the model saw it: the stored augmented messages, else the prompt's own."""
    stored = (meta or {}).get(PROMPT_MESSAGES)
    return [dict(m) for m in stored] if stored else [dict(m) for m in messages]


def first_prompted(messages: list[dict[str, str]], metas: Iterable[Mapping[str, Any] | None]) -> list[dict[str, str]]:
    """The prompt a judge of several outputs sees: the first of them that was made with retrieval
    (so a judge checks a RAG answer against its sources), else the plain prompt."""
    for meta in metas:
        if (meta or {}).get(PROMPT_MESSAGES):
            return prompted_messages(messages, meta)
    return [dict(m) for m in messages]


def merged_passages(metas: Iterable[Mapping[str, Any] | None]) -> list[dict[str, Any]]:
    """The passages of several generations, in order, each (chunk, text) once: the outputs of one
    task were prompted with the same passages in the loop, and a person reads each source once."""
    seen: set[tuple[Any, Any]] = set()
    out: list[dict[str, Any]] = []
    for meta in metas:
        for p in passages_of(meta):
            key = (p.get("chunk_id"), p.get("text"))
            if key not in seen:
                seen.add(key)
                out.append({k: p.get(k) for k in PASSAGE_FIELDS})
    return out


def generation_metas(session: Session, generation_ids: Iterable[int]) -> dict[int, dict[str, Any]]:
    """generation id → its meta."""
    ids = sorted({int(g) for g in generation_ids})
    out: dict[int, dict[str, Any]] = {}
    for i in range(0, len(ids), 500):
        rows = session.execute(select(Generation.id, Generation.meta).where(Generation.id.in_(ids[i : i + 500])))
        out.update({gid: dict(meta or {}) for gid, meta in rows})
    return out


def task_sources(session: Session, generation_ids: list[int]) -> list[dict[str, Any]]:
    """What an annotator of a task must see beside its outputs: the passages their prompts held."""
    metas = generation_metas(session, generation_ids)
    return merged_passages(metas.get(int(g)) for g in generation_ids)
