"""``bm25``: Okapi BM25 with bm25s (sparse matrices, no model), the embedded default retriever.

Text is lower-cased, split into words, stripped of English stopwords and Snowball-stemmed
(PyStemmer), the same way for chunks and queries, so "refunds" finds "refund". The index is
saved under the project's ``.prefloop/index/bm25/`` and rebuilt when the knowledge base changes
(:mod:`.indexes`).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import numpy as np

from prefloop.feedback.store.db import Store

from .indexes import ensure_index
from .retrievers import Ranking, Retriever

STOPWORDS = "en_plus"
LANGUAGE = "english"


@functools.cache
def _stemmer() -> Any:
    import Stemmer

    return Stemmer.Stemmer(LANGUAGE)


def tokenize(texts: list[str]) -> list[list[str]]:
    import bm25s

    return bm25s.tokenize(texts, stopwords=STOPWORDS, stemmer=_stemmer(), return_ids=False, show_progress=False)


def _build(folder: Path, ids: list[int], texts: list[str]) -> dict[str, Any]:
    import bm25s

    index = bm25s.BM25()
    index.index(tokenize(texts), show_progress=False)
    index.save(str(folder), show_progress=False)
    np.save(folder / "chunk_ids.npy", np.asarray(ids, dtype=np.int64))
    return {"retriever": "bm25", "stopwords": STOPWORDS, "stemmer": LANGUAGE, "params": {"k1": index.k1, "b": index.b}}


class BM25Retriever(Retriever):
    name = "bm25"

    def __init__(self, store: Store, kb: str, index_dir: str | Path) -> None:
        super().__init__(store, kb)
        import bm25s

        self.folder, self.kb = ensure_index(store, Path(index_dir), "bm25", self.kb, _build)
        self.index = bm25s.BM25.load(str(self.folder), show_progress=False)
        self.chunk_ids = np.load(self.folder / "chunk_ids.npy")
        self.meta = json.loads((self.folder / "meta.json").read_text())

    def rank(self, queries: list[str], k: int) -> list[Ranking]:
        n = len(self.chunk_ids)
        if n == 0:
            return [[] for _ in queries]
        docs, scores = self.index.retrieve(tokenize(queries), k=min(k, n), show_progress=False, n_threads=0)
        return [
            [(int(self.chunk_ids[d]), float(s)) for d, s in zip(row_docs, row_scores, strict=True) if s > 0]
            for row_docs, row_scores in zip(docs, scores, strict=True)
        ]
