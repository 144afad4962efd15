"""``prefloop kb eval``: how well a retriever finds the documents a labelled query needs.

A query set is JSONL with ``query`` and ``relevant`` (a list of document keys or sources; a
single string is one). For each query the retriever returns ``k`` passages; a passage is a hit
when its document's key or source is one of the relevant ones. Per retriever:

- **recall@k**: the share of a query's relevant documents that appear among its ``k`` passages,
  averaged over queries;
- **MRR**: the mean of 1 / rank of the first relevant passage (0 when none is in the top ``k``);
- **hit@k**: the share of queries with at least one relevant passage in the top ``k``.

A relevant label that names no document of the knowledge base is an error (a typo would
otherwise lower recall silently).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select

from prefloop.errors import DataError
from prefloop.feedback.store.db import Store
from prefloop.text import check_json, check_text

from .kb import get_kb_row
from .models import KbDocument
from .retrievers import Passage, Retriever


@dataclass(frozen=True)
class LabelledQuery:
    query: str
    relevant: frozenset[str]
    where: str


@dataclass(frozen=True)
class RetrievalScores:
    retriever: str
    k: int
    queries: int
    recall: float
    mrr: float
    hit_rate: float
    seconds_per_query: float


def read_queries(path: str | Path) -> list[LabelledQuery]:
    """A labelled query set, checked; a bad line names the file, the line and the field."""
    from prefloop.feedback.importer import read_rows

    out = []
    for where, row in read_rows(Path(path)):
        check_json(row, where)
        query = row.get("query")
        if query is None:
            raise DataError(f"{where}: no 'query' field")
        check_text(query, f"{where}: field 'query'", allow_blank=False)
        relevant = row.get("relevant")
        if isinstance(relevant, str):
            relevant = [relevant]
        if not isinstance(relevant, list) or not relevant or not all(isinstance(r, str) and r for r in relevant):
            raise DataError(f"{where}: field 'relevant' must be a document key or a non-empty list of them")
        out.append(LabelledQuery(query, frozenset(relevant), where))
    if not out:
        raise DataError(f"{path}: no queries found")
    return out


def check_labels(store: Store, kb: str, queries: list[LabelledQuery]) -> None:
    """Every relevant label must name a document of ``kb`` (by key or source)."""
    with store.session() as s:
        kb_id = get_kb_row(s, kb).id
        known = set()
        for key, source in s.execute(select(KbDocument.key, KbDocument.source).where(KbDocument.kb_id == kb_id)):
            known.add(key)
            if source is not None:
                known.add(source)
    for q in queries:
        unknown = sorted(q.relevant - known)
        if unknown:
            raise DataError(f"{q.where}: field 'relevant' names {unknown[0]!r}, which is no document of knowledge base {kb!r}",
                            hint="`prefloop kb search` shows document keys in the 'source' column")


def is_hit(passage: Passage, relevant: frozenset[str]) -> bool:
    return passage.document_key in relevant or (passage.source is not None and passage.source in relevant)


def score_results(queries: list[LabelledQuery], results: list[list[Passage]]) -> tuple[float, float, float]:
    """(recall@k, MRR, hit@k) of passages already cut to k."""
    recall = mrr = hits = 0.0
    for q, passages in zip(queries, results, strict=True):
        found: set[str] = set()
        first = 0
        for rank, p in enumerate(passages, 1):
            if is_hit(p, q.relevant):
                found |= {label for label in (p.document_key, p.source) if label in q.relevant}
                first = first or rank
        recall += len(found) / len(q.relevant)  # labels satisfied by at least one passage
        mrr += 1.0 / first if first else 0.0
        hits += 1.0 if first else 0.0
    n = len(queries)
    return recall / n, mrr / n, hits / n


def evaluate(retriever: Retriever, queries: list[LabelledQuery], k: int = 5) -> RetrievalScores:
    start = time.perf_counter()
    results = retriever.search_many([q.query for q in queries], k)
    elapsed = time.perf_counter() - start
    recall, mrr, hit = score_results(queries, results)
    return RetrievalScores(retriever.name, k, len(queries), recall, mrr, hit, elapsed / len(queries))
