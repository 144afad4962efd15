"""``hybrid``: reciprocal-rank fusion of several retrievers (by default BM25 and dense).

RRF (Cormack et al., 2009) scores a chunk by Σ 1 / (k + rank) over the rankings it appears in.
It needs no score calibration between a lexical and an embedding retriever, which is why it is
the usual way to combine them: a chunk both find near the top beats one that only one finds first.
"""

from __future__ import annotations

from collections.abc import Sequence

from prefloop.feedback.store.db import Store

from .retrievers import Ranking, Retriever

RRF_K = 60  # the constant of the original paper; larger values flatten the head of each ranking


def reciprocal_rank_fusion(rankings: Sequence[Sequence[int]], k: int = RRF_K) -> Ranking:
    """Fuse rankings of ids (best first) into one: (id, Σ 1/(k + rank)), best first.

    Ties go to the id with the better best rank, then to the smaller id, so the order is stable.
    """
    scores: dict[int, float] = {}
    best: dict[int, int] = {}
    for ranking in rankings:
        for rank, cid in enumerate(ranking, 1):
            scores[cid] = scores.get(cid, 0.0) + 1.0 / (k + rank)
            best[cid] = min(best.get(cid, rank), rank)
    return sorted(scores.items(), key=lambda item: (-item[1], best[item[0]], item[0]))


class HybridRetriever(Retriever):
    name = "hybrid"

    def __init__(self, store: Store, kb: str, members: list[Retriever], *, rrf_k: int = RRF_K, depth: int = 50) -> None:
        super().__init__(store, kb)
        self.members = members
        self.rrf_k = rrf_k
        self.depth = depth  # how deep each member's ranking goes into the fusion

    def rank(self, queries: list[str], k: int) -> list[Ranking]:
        depth = max(self.depth, k)
        per_member = [m.rank(queries, depth) for m in self.members]
        fused = []
        for qi in range(len(queries)):
            fused.append(reciprocal_rank_fusion([[cid for cid, _ in rankings[qi]] for rankings in per_member], self.rrf_k)[:k])
        return fused
