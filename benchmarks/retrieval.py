"""Retrieval: bm25s vs rank-bm25 on 100k chunks, PostgreSQL full-text search latency on the same
corpus, and retrieval quality (recall@5, MRR) on the knowledge demo's labelled queries.

The corpus is synthetic but shaped like text: words drawn from a Zipf distribution (exponent
1.07) over English stopwords (the most frequent ranks) and 30,000 pseudo-words, 40–120 words
per chunk, seeded. Queries are 3–8 words taken from a random chunk, so each has matches.

- **bm25s vs rank-bm25**: both index the same token lists (bm25s' tokenizer: lower-case,
  stopwords, Snowball stems; its time is shown apart), then answer the same queries (top 10).
  rank-bm25 scores every document in Python per query term, so it runs on fewer queries; the
  table shows queries per second and the ratio, and how much the two top-10 lists overlap.
- **PostgreSQL**: the same chunks imported with ``import_kb`` into a fresh schema (the stored
  ``tsvector`` and the GIN index are built by the migration), then each query through
  :class:`PostgresRetriever` (any-word match, ``ts_rank``, top 10), one at a time: p50/p95 ms.
- **Quality**: ``support_kb`` imported into SQLite (bm25, dense, hybrid) and PostgreSQL
  (postgres), evaluated on ``support_kb_queries.jsonl`` at k = 5.

    OMP_NUM_THREADS=1 python benchmarks/retrieval.py [--chunks 100000] [--repeats 3] [--postgres-url URL]

PostgreSQL comes from ``--postgres-url`` or ``PREFLOOP_TEST_POSTGRES_URL``; without it those rows are skipped.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

console = Console(width=170)
SCHEMA = "bench_retrieval"


def make_corpus(n: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """``n`` chunks of Zipf-distributed words, and a vocabulary's worth of seeded queries."""
    from bm25s.stopwords import STOPWORDS_EN_PLUS

    rng = np.random.default_rng(seed)
    syllables = [c + v for c in "bcdfghklmnprstvwz" for v in ("a", "e", "i", "o", "u", "ai", "ou")]
    pseudo: set[str] = set()
    while len(pseudo) < 30_000:
        pseudo.add("".join(rng.choice(syllables, size=rng.integers(2, 5))))
    vocab = np.array(list(STOPWORDS_EN_PLUS) + sorted(pseudo))
    ranks = np.arange(1, len(vocab) + 1)
    p = 1.0 / ranks**1.07
    p /= p.sum()
    lengths = rng.integers(40, 121, size=n)
    words = vocab[rng.choice(len(vocab), size=int(lengths.sum()), p=p)]
    chunks, start = [], 0
    for length in lengths:
        chunks.append(" ".join(words[start:start + length]))
        start += length
    return chunks, vocab.tolist()


def make_queries(chunks: list[str], n: int, seed: int = 1) -> list[str]:
    rng = np.random.default_rng(seed)
    out = []
    for i in rng.integers(0, len(chunks), size=n):
        ws = chunks[i].split()
        m = int(rng.integers(3, 9))
        start = int(rng.integers(0, max(1, len(ws) - m)))
        out.append(" ".join(ws[start:start + m]))
    return out


def timed(fn, repeats: int):  # noqa: ANN001, ANN201
    times, result = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t)
    return result, times


def fmt(times: list[float], scale: float = 1.0, unit: str = "s") -> str:
    med = statistics.median(times) * scale
    return f"{med:.2f} {unit} ({min(times) * scale:.2f}–{max(times) * scale:.2f})" if len(times) > 1 else f"{med:.2f} {unit}"


def bench_bm25(chunks: list[str], queries: list[str], rank_queries: int, repeats: int) -> list[list[str]]:
    import bm25s
    from rank_bm25 import BM25Okapi

    from prefloop.retrieval.bm25 import tokenize

    tokens, t_tok = timed(lambda: tokenize(chunks), 1)
    query_tokens = tokenize(queries)

    def index_bm25s():  # noqa: ANN202
        idx = bm25s.BM25()
        idx.index(tokens, show_progress=False)
        return idx

    idx, t_idx_s = timed(index_bm25s, repeats)
    _, t_idx_r = timed(lambda: BM25Okapi(tokens), repeats)
    rank = BM25Okapi(tokens)
    k = 10
    (docs_s, _), t_q_s = timed(lambda: idx.retrieve(query_tokens, k=k, show_progress=False, n_threads=0), repeats)
    few = query_tokens[:rank_queries]

    def query_rank():  # noqa: ANN202
        return [np.argsort(-rank.get_scores(q), kind="stable")[:k] for q in few]

    tops_r, t_q_r = timed(query_rank, repeats)
    overlap = statistics.mean(len(set(docs_s[i].tolist()) & set(tops_r[i].tolist())) / k for i in range(len(few)))
    qps_s = [len(queries) / t for t in t_q_s]
    qps_r = [len(few) / t for t in t_q_r]
    ratio_idx = statistics.median(t_idx_r) / statistics.median(t_idx_s)
    ratio_q = statistics.median(qps_s) / statistics.median(qps_r)
    return [
        ["tokenize (bm25s tokenizer + PyStemmer, shared)", fmt(t_tok), "", ""],
        ["index: bm25s", fmt(t_idx_s), "", ""],
        ["index: rank-bm25 (BM25Okapi)", fmt(t_idx_r), f"rank-bm25 / bm25s = {ratio_idx:.2f}×", ""],
        [f"query top-{k}: bm25s ({len(queries)} queries, 1 thread)", fmt([1 / q for q in qps_s], 1000, "ms/q"),
         f"{statistics.median(qps_s):,.0f} q/s", ""],
        [f"query top-{k}: rank-bm25 ({len(few)} queries)", fmt([1 / q for q in qps_r], 1000, "ms/q"),
         f"{statistics.median(qps_r):,.1f} q/s", f"bm25s / rank-bm25 = {ratio_q:,.0f}× q/s; top-10 overlap {overlap:.0%}"],
    ]


def bench_postgres(url: str, chunks: list[str], queries: list[str]) -> list[list[str]]:
    from prefloop.feedback.store.db import open_store, postgres_schema_url
    from prefloop.retrieval.ingest import import_kb
    from prefloop.retrieval.postgres import PostgresRetriever

    store = open_store(postgres_schema_url(url, SCHEMA))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "chunks.jsonl"
        path.write_text("".join(json.dumps({"id": f"c{i}", "text": t}) + "\n" for i, t in enumerate(chunks)))
        t = time.perf_counter()
        r = import_kb(store, path, kb="bench")
        t_import = time.perf_counter() - t
    retriever = PostgresRetriever(store, "bench")
    retriever.rank(queries[:20], 10)  # warm the cache
    lat = []
    for q in queries:
        t = time.perf_counter()
        retriever.rank([q], 10)
        lat.append(time.perf_counter() - t)
    lat.sort()
    p50, p95 = lat[len(lat) // 2], lat[int(len(lat) * 0.95)]
    with store.transaction() as conn:
        size = conn.exec_driver_sql("SELECT pg_size_pretty(pg_relation_size('ix_kb_chunks_tsv'))").scalar()
    store.dispose()
    return [
        [f"PostgreSQL: import {r.chunks:,} chunks (tsvector + GIN)", f"{t_import:.1f} s", f"GIN index {size}", ""],
        [f"PostgreSQL FTS query top-10 ({len(queries)} queries, serial)", f"p50 {p50 * 1000:.1f} ms",
         f"p95 {p95 * 1000:.1f} ms", f"{len(queries) / sum(lat):,.0f} q/s"],
    ]


def bench_quality(url: str | None, k: int) -> list[list[str]]:
    from prefloop.feedback.store.db import open_store, postgres_schema_url
    from prefloop.retrieval.demo_data import support_kb_path, support_kb_queries_path
    from prefloop.retrieval.evaluation import check_labels, evaluate, read_queries
    from prefloop.retrieval.ingest import import_kb
    from prefloop.retrieval.retrievers import build_retriever

    queries = read_queries(support_kb_queries_path())
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        stores = [("sqlite", open_store(f"sqlite:///{tmp}/kb.db"), ("bm25", "dense", "hybrid"))]
        if url:
            stores.append(("postgresql", open_store(postgres_schema_url(url, SCHEMA + "_q")), ("postgres",)))
        for db, store, names in stores:
            import_kb(store, support_kb_path(), kb="support")
            check_labels(store, "support", queries)
            for name in names:
                s = evaluate(build_retriever(name, store, "support", index_dir=Path(tmp) / "index"), queries, k)
                rows.append([f"{name} ({db})", f"{s.recall:.3f}", f"{s.mrr:.3f}", f"{s.hit_rate:.3f}",
                             f"{1000 * s.seconds_per_query:.1f}"])
            store.dispose()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--chunks", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--rank-bm25-queries", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--postgres-url", default=os.environ.get("PREFLOOP_TEST_POSTGRES_URL"))
    args = ap.parse_args()
    console.print("load average at start: " + " ".join(f"{x:.2f}" for x in os.getloadavg()))
    t = time.perf_counter()
    chunks, _ = make_corpus(args.chunks)
    queries = make_queries(chunks, args.queries)
    words = sum(len(c.split()) for c in chunks)
    console.print(f"corpus: {len(chunks):,} chunks, {words:,} words ({time.perf_counter() - t:.1f} s to generate)")

    speed = Table(title=f"BM25 and PostgreSQL FTS on {len(chunks):,} synthetic chunks (median (min–max) of {args.repeats})")
    for col in ("what", "time", "throughput / ratio", "note"):
        speed.add_column(col)
    for row in bench_bm25(chunks, queries, args.rank_bm25_queries, args.repeats):
        speed.add_row(*row)
    if args.postgres_url:
        for row in bench_postgres(args.postgres_url, chunks, queries[:200]):
            speed.add_row(*row)
    console.print(speed)

    quality = Table(title="retrieval quality on the knowledge demo (support_kb, 38 queries, k = 5)")
    for col in ("retriever (store)", "recall@5", "MRR", "hit@5", "ms/query"):
        quality.add_column(col, justify="left" if col.startswith("retriever") else "right")
    for row in bench_quality(args.postgres_url, 5):
        quality.add_row(*row)
    console.print(quality)
    console.print("load average at end: " + " ".join(f"{x:.2f}" for x in os.getloadavg()))


if __name__ == "__main__":
    main()
