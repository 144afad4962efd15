"""Retrieval as a condition of generation: each prompt's passages found, placed and recorded.

:class:`PromptRetriever` takes a ``rag:`` section and, for a batch of prompts, searches the
knowledge base with each prompt's last user turn, places the passages with
:func:`~.augment.place` (the budget measured with the policy's tokenizer) and returns a
:class:`RetrievedPrompt`: the messages the model is given and the record stored with every
generation of that prompt (:mod:`prefloop.feedback.passages` says which keys, and why there).
Retrieval is deterministic for a given knowledge base, so a record read back from a stored
generation (:meth:`RetrievedPrompt.from_meta`) is what a resumed run uses: it never retrieves
again for a prompt that already has samples, even if the knowledge base changed since.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefloop.feedback.passages import PASSAGES, PROMPT_MESSAGES, RAG
from prefloop.feedback.store.db import Store

from .augment import PlacedPassage, place
from .config import RagConfig
from .retrievers import build_retriever

Messages = list[dict[str, str]]


def project_index_dir(project: Any) -> Path:
    """Where a project keeps its BM25 and dense indexes (rebuilt from the store when stale)."""
    return Path(project.root) / ".prefloop" / "index"


def query_of(messages: Messages) -> str:
    """What is searched for: the last user turn (the customer's message), else the last turn."""
    users = [m.get("content", "") for m in messages if m.get("role") == "user"]
    return (users[-1] if users else (messages[-1].get("content", "") if messages else "")).strip()


def placed_record(p: PlacedPassage) -> dict[str, Any]:
    """A placed passage as stored with a generation (its text as it went into the prompt)."""
    q = p.passage
    return {"number": p.number, "chunk_id": q.chunk_id, "kb": q.kb, "document_key": q.document_key, "title": q.title,
            "source": q.source, "score": q.score, "rank": q.rank, "retriever": q.retriever, "position": q.position,
            "char_start": q.char_start, "char_end": q.char_end, "truncated": p.truncated, "text": p.text}


@dataclass(frozen=True)
class RetrievedPrompt:
    """A prompt with its passages placed: what the model is given and what is stored with it."""

    messages: Messages
    passages: list[dict[str, Any]]
    info: dict[str, Any]

    def meta(self) -> dict[str, Any]:
        return {PASSAGES: self.passages, PROMPT_MESSAGES: self.messages, RAG: self.info}

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any] | None) -> RetrievedPrompt | None:
        """The record of a stored generation (``None`` if it was made without retrieval)."""
        meta = meta or {}
        if RAG not in meta or PROMPT_MESSAGES not in meta:
            return None
        return cls([dict(m) for m in meta[PROMPT_MESSAGES]], [dict(p) for p in meta.get(PASSAGES) or []], dict(meta[RAG]))


def template_hash(template: str) -> str:
    return hashlib.sha256(template.encode("utf-8")).hexdigest()[:16]


class PromptRetriever:
    """Retrieves and places passages for prompts as a ``rag:`` section says."""

    def __init__(self, rag: RagConfig, store: Store, *, index_dir: str | Path, tokenizer: Any = None) -> None:
        self.rag = rag
        self.tokenizer = tokenizer
        self.retriever = build_retriever(rag.retriever, store, rag.kb, index_dir=index_dir, dense_model=rag.dense_model)

    def signature(self) -> dict[str, Any]:
        """What decides which passages a prompt gets and how they are placed (part of every record)."""
        r = self.rag
        return {"kb": self.retriever.kb.name, "kb_hash": self.retriever.kb.content_hash, "retriever": self.retriever.name,
                "k": r.k, "placement": r.placement, "max_context_tokens": r.max_context_tokens,
                "template": template_hash(r.template),
                "tokens": "tokenizer" if self.tokenizer is not None else "words"}

    def retrieve(self, prompts: Mapping[int, Messages]) -> dict[int, RetrievedPrompt]:
        """For each prompt id, its messages with the passages placed (one search for all prompts)."""
        ids = list(prompts)
        queries = {i: query_of(prompts[i]) for i in ids}
        searched = [i for i in ids if queries[i]]
        start = time.perf_counter()
        found = self.retriever.search_many([queries[i] for i in searched], self.rag.k) if searched else []
        per_query = (time.perf_counter() - start) / max(1, len(searched))
        by_id = dict(zip(searched, found, strict=True))
        sig = self.signature()
        out: dict[int, RetrievedPrompt] = {}
        for i in ids:
            aug = place(prompts[i], by_id.get(i, []), self.rag.template, tokenizer=self.tokenizer,
                        max_context_tokens=self.rag.max_context_tokens, placement=self.rag.placement)
            info = {**sig, "retrieved": len(by_id.get(i, [])), "placed": len(aug.placed), "context_tokens": aug.context_tokens,
                    "seconds": round(per_query, 6)}
            out[i] = RetrievedPrompt(aug.messages, [placed_record(p) for p in aug.placed], info)
        return out
