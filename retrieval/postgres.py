"""``postgres``: PostgreSQL's own full-text search, the default retriever on PostgreSQL.

Migration 0004 keeps a stored ``tsvector`` of every chunk (``to_tsvector('english', text)``)
under a GIN index, so a team needs no extra service and no index files. A query matches chunks
that share at least one stemmed, non-stopword term with it (the words joined by ``or`` and
parsed by ``websearch_to_tsquery``, which never fails on user input), ranked by ``ts_rank``.
Only ``\\w+`` words of the query reach PostgreSQL, as a bound parameter.
"""

from __future__ import annotations

import re

from sqlalchemy import text

from prefloop.errors import ConfigError
from prefloop.feedback.store.db import Store

from .retrievers import Ranking, Retriever

_WORDS = re.compile(r"\w+")
_SQL = text(
    "SELECT c.id, ts_rank(c.tsv, q) AS score "
    "FROM kb_chunks AS c, websearch_to_tsquery('english', :query) AS q "
    "WHERE c.kb_id = :kb_id AND c.tsv @@ q "
    "ORDER BY score DESC, c.id LIMIT :k"
)


def any_word_query(query: str) -> str:
    """``"Refund for my order?"`` → ``"refund or for or my or order"`` (any word may match)."""
    return " or ".join(w for w in _WORDS.findall(query.lower()) if w != "or")


class PostgresRetriever(Retriever):
    name = "postgres"

    def __init__(self, store: Store, kb: str) -> None:
        if store.dialect != "postgresql":
            raise ConfigError("the postgres retriever needs a PostgreSQL store", hint="on SQLite use bm25 (the default there)")
        super().__init__(store, kb)

    def rank(self, queries: list[str], k: int) -> list[Ranking]:
        out: list[Ranking] = []
        with self.store.transaction() as conn:
            for q in queries:
                words = any_word_query(q)
                if not words:
                    out.append([])
                    continue
                rows = conn.execute(_SQL, {"query": words, "kb_id": self.kb.id, "k": k}).all()
                out.append([(int(cid), float(score)) for cid, score in rows])
        return out
