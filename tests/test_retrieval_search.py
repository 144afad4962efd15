"""Retrievers: BM25 (persisted, rebuilt when the knowledge base changes), PostgreSQL full-text
search, dense (the real packaged MiniLM), hybrid fusion, and the kb eval numbers."""

from __future__ import annotations

import json

import pytest

from prefloop.errors import ConfigError, DataError
from prefloop.retrieval.evaluation import LabelledQuery, check_labels, evaluate, read_queries, score_results
from prefloop.retrieval.hybrid import HybridRetriever, reciprocal_rank_fusion
from prefloop.retrieval.ingest import import_kb
from prefloop.retrieval.kb import kb_info
from prefloop.retrieval.retrievers import Passage, Retriever, build_retriever, default_retriever

DOCS = {
    "refunds": "Refunds are paid to the original card within 14 days after the returned item arrives.",
    "shipping": "Standard shipping to Canada takes 5 to 7 business days; express takes 2.",
    "plans": "The Pro plan costs 12 dollars a month and the Team plan 30 dollars a month.",
    "warranty": "Every blender carries a two-year warranty against manufacturing defects.",
    "cancel": "You can cancel a subscription at any time; it stays active until the period ends.",
}


def write_docs(path, docs):
    path.write_text("".join(json.dumps({"id": k, "text": v, "title": k.title()}) + "\n" for k, v in docs.items()))
    return path


@pytest.fixture
def kb(store, tmp_path):
    import_kb(store, write_docs(tmp_path / "docs.jsonl", DOCS))
    return tmp_path / "index"


def keys(passages):
    return [p.document_key for p in passages]


def test_bm25_finds_by_stemmed_words_and_keeps_provenance(store, kb):
    r = build_retriever("bm25", store, "default", index_dir=kb)
    top = r.search("How many days until my refund is paid?", k=3)
    assert keys(top)[0] == "refunds"
    p = top[0]
    assert (p.rank, p.retriever, p.kb, p.title, p.position, p.char_start) == (1, "bm25", "default", "Refunds", 0, 0)
    assert p.text == DOCS["refunds"] and p.score > 0
    assert keys(r.search("cancelling my subscriptions", k=2))[0] == "cancel"  # stemming: cancelling → cancel
    assert r.search("the and of", k=5) == []  # stopwords only: nothing matches
    assert keys(r.search("blender", k=50)) == ["warranty"]  # k beyond the corpus: only chunks that match
    batch = r.search_many(["refund", "Canada shipping"], k=2)
    assert [keys(x) for x in batch] == [keys(r.search("refund", 2)), keys(r.search("Canada shipping", 2))]


def test_bm25_index_is_persisted_and_rebuilt_when_the_kb_changes(store, kb, tmp_path):
    first = build_retriever("bm25", store, "default", index_dir=kb)
    meta = first.folder / "meta.json"
    stamp = meta.stat().st_mtime_ns, meta.stat().st_ino
    assert json.loads(meta.read_text())["content_hash"] == kb_info(store, "default").content_hash
    second = build_retriever("bm25", store, "default", index_dir=kb)
    assert second.folder == first.folder and (meta.stat().st_mtime_ns, meta.stat().st_ino) == stamp  # loaded, not rebuilt
    import_kb(store, write_docs(tmp_path / "docs.jsonl", {**DOCS, "warranty": "Every toaster carries a warranty."}))
    third = build_retriever("bm25", store, "default", index_dir=kb)
    assert third.folder != first.folder and not first.folder.exists()  # a new revision, the old index removed
    assert keys(third.search("toaster", 3)) == ["warranty"] and third.search("blender", 3) == []
    assert [p.name for p in (kb / "bm25").iterdir() if p.is_dir()] == [third.folder.name]


def test_a_stale_retriever_skips_chunks_deleted_since(store, kb, tmp_path):
    r = build_retriever("bm25", store, "default", index_dir=kb)
    import_kb(store, write_docs(tmp_path / "docs.jsonl", {**DOCS, "warranty": "Every toaster carries a warranty."}))
    assert r.search("blender", 3) == []  # its chunk is gone from the store: no passage without text


def test_unknown_kb_retriever_and_bad_queries(store, kb):
    with pytest.raises(ConfigError, match="unknown retriever 'bm52'"):
        build_retriever("bm52", store, "default", index_dir=kb)
    with pytest.raises(Exception, match="no knowledge base named 'nope'") as exc:
        build_retriever("bm25", store, "nope", index_dir=kb)
    assert "default" in exc.value.hint
    r = build_retriever("bm25", store, "default", index_dir=kb)
    with pytest.raises(DataError, match="query 1 holds a NUL"):
        r.search("refund\x00", 3)
    with pytest.raises(ConfigError, match="k must be at least 1"):
        r.search("refund", 0)


def test_default_retriever_follows_the_store(store):
    assert default_retriever(store) == ("postgres" if store.dialect == "postgresql" else "bm25")


def test_postgres_full_text_search(store, kb):
    if store.dialect != "postgresql":
        with pytest.raises(ConfigError, match="needs a PostgreSQL store"):
            build_retriever("postgres", store, "default")
        return
    r = build_retriever("auto", store, "default")
    assert r.name == "postgres"
    top = r.search("How many days until my refunds are paid?", k=3)
    assert keys(top)[0] == "refunds" and top[0].score > 0 and top[0].title == "Refunds"
    assert keys(r.search("monthly price of the Pro plan", 5))[0] == "plans"
    assert r.search("the and of", 5) == []
    for hostile in ("'; DROP TABLE kb_chunks; --", "a & | ! :* <-> (", '"unclosed', "-blender or"):
        r.search(hostile, 5)  # user text never reaches tsquery syntax
    assert keys(r.search("-blender", 5)) == ["warranty"]  # a leading '-' is not NOT
    with store.transaction() as conn:  # the GIN index exists and the planner can use it
        plan = "\n".join(row[0] for row in conn.exec_driver_sql(
            "EXPLAIN SELECT id FROM kb_chunks WHERE tsv @@ websearch_to_tsquery('english', 'refund')"))
        indexes = {row[0] for row in conn.exec_driver_sql("SELECT indexname FROM pg_indexes WHERE tablename = 'kb_chunks'")}
    assert "ix_kb_chunks_tsv" in indexes and "kb_chunks" in plan


class FixedRetriever(Retriever):
    """A member with a set ranking, to check the fusion arithmetic exactly."""

    name = "fixed"

    def __init__(self, store, kb, ranking):
        super().__init__(store, kb)
        self.ranking = ranking

    def rank(self, queries, k):
        return [self.ranking[:k] for _ in queries]


def test_reciprocal_rank_fusion_by_hand():
    fused = reciprocal_rank_fusion([[1, 2, 3], [3, 1, 4]], k=60)
    # 1: 1/61 + 1/62; 3: 1/63 + 1/61; 2: 1/62; 4: 1/63
    assert [cid for cid, _ in fused] == [1, 3, 2, 4]
    assert fused[0][1] == pytest.approx(1 / 61 + 1 / 62) and fused[1][1] == pytest.approx(1 / 61 + 1 / 63)
    # equal fused scores: the better best rank wins, then the smaller id
    assert [cid for cid, _ in reciprocal_rank_fusion([[5, 6], [6, 5]])] == [5, 6]
    assert [cid for cid, _ in reciprocal_rank_fusion([[9], [8]])] == [8, 9]


def test_hybrid_fuses_its_members_rankings(store, kb):
    bm25 = build_retriever("bm25", store, "default", index_dir=kb)
    ids = {p.document_key: p.chunk_id for p in bm25.search("refund Canada plan blender cancel", 5)}
    a = FixedRetriever(store, "default", [(ids["plans"], 9.0), (ids["refunds"], 5.0), (ids["shipping"], 1.0)])
    b = FixedRetriever(store, "default", [(ids["shipping"], 0.9), (ids["plans"], 0.8), (ids["cancel"], 0.1)])
    top = HybridRetriever(store, "default", [a, b]).search("anything", k=3)
    assert keys(top) == ["plans", "shipping", "refunds"]  # 1/61+1/62, 1/63+1/61, 1/62
    assert top[0].score == pytest.approx(1 / 61 + 1 / 62) and top[0].retriever == "hybrid"


def test_eval_numbers_by_hand(store, kb, tmp_path):
    queries = tmp_path / "q.jsonl"
    queries.write_text(
        json.dumps({"query": "refund paid days", "relevant": ["refunds"]}) + "\n"
        + json.dumps({"query": "Pro plan dollars", "relevant": ["plans", "cancel"]}) + "\n"
        + json.dumps({"query": "zebra", "relevant": "warranty"}) + "\n"
    )
    labelled = read_queries(queries)
    check_labels(store, "default", labelled)
    r = build_retriever("bm25", store, "default", index_dir=kb)
    s = evaluate(r, labelled, k=2)
    first = keys(r.search("Pro plan dollars", 2))
    assert first[0] == "plans" and "cancel" not in first
    # q1: refunds at rank 1 → recall 1, RR 1; q2: plans at rank 1 of 2 labels → recall 1/2, RR 1; q3: nothing → 0, 0
    assert s.recall == pytest.approx((1 + 0.5 + 0) / 3)
    assert s.mrr == pytest.approx((1 + 1 + 0) / 3)
    assert s.hit_rate == pytest.approx(2 / 3) and s.queries == 3 and s.k == 2


def test_score_results_ranks_and_labels():
    def p(key, rank, source=None):
        return Passage(rank, "t", 1.0, rank, "x", "kb", key, None, source, 0, 0, 1)

    qs = [LabelledQuery("a", frozenset({"d2"}), "q:1"), LabelledQuery("b", frozenset({"d1", "src-3"}), "q:2")]
    results = [[p("d1", 1), p("d9", 2), p("d2", 3)], [p("d3", 1, "src-3"), p("d3", 2, "src-3")]]
    recall, mrr, hit = score_results(qs, results)
    assert recall == pytest.approx((1 + 0.5) / 2)  # the label matched by source counts once
    assert mrr == pytest.approx((1 / 3 + 1) / 2) and hit == 1.0


def test_bad_query_sets(store, kb, tmp_path):
    q = tmp_path / "q.jsonl"
    q.write_text(json.dumps({"query": "refund", "relevant": ["refunds"]}) + "\n" + json.dumps({"query": "x", "relevant": []}) + "\n")
    with pytest.raises(DataError, match=r"q.jsonl:2: field 'relevant'"):
        read_queries(q)
    q.write_text(json.dumps({"query": "refund", "relevant": ["refundz"]}) + "\n")
    with pytest.raises(DataError, match=r"q.jsonl:1: field 'relevant' names 'refundz', which is no document"):
        check_labels(store, "default", read_queries(q))


@pytest.mark.slow
def test_dense_and_hybrid_with_the_packaged_minilm(store, kb):
    dense = build_retriever("dense", store, "default", index_dir=kb)
    # no word in common with the refunds document: only meaning connects them
    assert keys(dense.search("When do I get my money back?", 2))[0] == "refunds"
    assert keys(dense.search("kitchen appliance guarantee", 2))[0] == "warranty"
    again = build_retriever("dense", store, "default", index_dir=kb)
    assert again.folder == dense.folder and (dense.folder / "embeddings.npy").is_file()
    hybrid = build_retriever("hybrid", store, "default", index_dir=kb)
    q = "money back for the returned blender"
    expected = reciprocal_rank_fusion(
        [[cid for cid, _ in m.rank([q], 50)[0]] for m in hybrid.members])[:3]
    assert [(p.chunk_id, pytest.approx(p.score)) for p in hybrid.search(q, 3)] == expected
