"""One interface for every retriever: ``search(query, k)`` and ``search_many(queries, k)`` return
:class:`Passage` objects, best first, each with its provenance.

Backends: ``bm25`` (:mod:`.bm25`, the embedded default), ``dense`` (:mod:`.dense`),
``hybrid`` (:mod:`.hybrid`) and ``postgres`` (:mod:`.postgres`, the default on PostgreSQL).
A retriever ranks chunk ids; this module turns them into passages with one query to the store.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

from sqlalchemy import select

from prefloop.errors import ConfigError, DataError
from prefloop.feedback.store.db import Store
from prefloop.text import check_text

from .kb import KbInfo, kb_info
from .models import KbChunk, KbDocument

RETRIEVERS = ("bm25", "dense", "hybrid", "postgres")
#: a ranking: (chunk id, score) pairs, best first
Ranking = list[tuple[int, float]]


@dataclass(frozen=True)
class Passage:
    """A retrieved chunk with where it came from (stored with a generation, shown to annotators)."""

    chunk_id: int
    text: str
    score: float
    rank: int  # 1 = best
    retriever: str
    kb: str
    document_key: str
    title: str | None
    source: str | None
    position: int  # the chunk's index within its document
    char_start: int
    char_end: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Retriever(ABC):
    """Ranks the chunks of one knowledge base for a query."""

    name: ClassVar[str]

    def __init__(self, store: Store, kb: str) -> None:
        self.store = store
        self.kb: KbInfo = kb_info(store, kb)

    def search(self, query: str, k: int = 5) -> list[Passage]:
        return self.search_many([query], k)[0]

    def search_many(self, queries: Sequence[str], k: int = 5) -> list[list[Passage]]:
        """The top ``k`` passages of each query, best first (fewer when fewer chunks match)."""
        if isinstance(queries, str):
            raise TypeError("search_many takes a list of queries; use search() for one")
        if k < 1:
            raise ConfigError(f"k must be at least 1, got {k}")
        for i, q in enumerate(queries):
            check_text(q, f"query {i + 1}", error=DataError)
        if not queries:
            return []
        rankings = self.rank(list(queries), k)
        return passages_for(self.store, self.kb.name, rankings, self.name)

    @abstractmethod
    def rank(self, queries: list[str], k: int) -> list[Ranking]:
        """For each query, up to ``k`` (chunk id, score) pairs, best first; only chunks that match."""


def passages_for(store: Store, kb: str, rankings: list[Ranking], retriever: str) -> list[list[Passage]]:
    """Rankings of chunk ids → passages; a chunk deleted since the ranking was made is left out."""
    ids = sorted({cid for ranking in rankings for cid, _ in ranking})
    rows: dict[int, Any] = {}
    with store.session() as s:
        for i in range(0, len(ids), 500):
            stmt = (
                select(KbChunk.id, KbChunk.text, KbChunk.position, KbChunk.char_start, KbChunk.char_end,
                       KbDocument.key, KbDocument.title, KbDocument.source)
                .join(KbDocument, KbDocument.id == KbChunk.document_id)
                .where(KbChunk.id.in_(ids[i:i + 500]))
            )
            rows.update({r.id: r for r in s.execute(stmt)})
    out = []
    for ranking in rankings:
        found = [(cid, score) for cid, score in ranking if cid in rows]
        out.append([
            Passage(cid, rows[cid].text, float(score), rank, retriever, kb, rows[cid].key, rows[cid].title,
                    rows[cid].source, rows[cid].position, rows[cid].char_start, rows[cid].char_end)
            for rank, (cid, score) in enumerate(found, 1)
        ])
    return out


def default_retriever(store: Store) -> str:
    """PostgreSQL's own full-text search on PostgreSQL (no extra service), BM25 on SQLite."""
    return "postgres" if store.dialect == "postgresql" else "bm25"


def default_index_dir(store: Store) -> Path:
    """Where indexes of a store opened outside a project live: the cache, one folder per store URL."""
    from prefloop.cache import cache_dir

    return cache_dir() / "index" / hashlib.sha256(store.safe_url.encode()).hexdigest()[:16]


def build_retriever(
    name: str,
    store: Store,
    kb: str,
    *,
    index_dir: str | Path | None = None,
    dense_model: str | None = None,
) -> Retriever:
    """The retriever ``name`` (``auto``: :func:`default_retriever`) over knowledge base ``kb``.

    BM25 and dense indexes are kept under ``index_dir`` (a project uses ``.prefloop/index``).
    """
    if name == "auto":
        name = default_retriever(store)
    if name not in RETRIEVERS:
        raise ConfigError(f"unknown retriever {name!r}", hint=f"retrievers: auto, {', '.join(RETRIEVERS)}")
    folder = Path(index_dir) if index_dir is not None else default_index_dir(store)
    if name == "bm25":
        from .bm25 import BM25Retriever

        return BM25Retriever(store, kb, folder)
    if name == "dense":
        from .dense import DenseRetriever

        return DenseRetriever(store, kb, folder, model=dense_model)
    if name == "hybrid":
        from .bm25 import BM25Retriever
        from .dense import DenseRetriever
        from .hybrid import HybridRetriever

        return HybridRetriever(store, kb, [BM25Retriever(store, kb, folder), DenseRetriever(store, kb, folder, model=dense_model)])
    from .postgres import PostgresRetriever

    return PostgresRetriever(store, kb)
