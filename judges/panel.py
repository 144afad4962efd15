"""A panel: several judges combined by majority vote or by the mean, with their disagreement kept.

Each member judges (and caches) on its own; the panel's verdict carries every member's opinion in
``members`` and how far they disagree in ``disagreement`` (0 = unanimous), which active selection
uses to send humans the tasks the judges cannot settle. Members that fail are left out; a panel
fails only when every member does.
"""

from __future__ import annotations

import hashlib
import json
import statistics
from collections import Counter
from collections.abc import Iterable
from typing import Any, cast

from .base import Judge, Messages, PairwiseJudge, PairwiseVerdict, PointwiseJudge, PointwiseVerdict, Usage, Winner


class PanelJudge(PairwiseJudge, PointwiseJudge):
    backend = "panel"

    def __init__(
        self, name: str, members: list[Judge], *, combine: str = "majority", scale: tuple[int, int] = (1, 5), tie_margin: float = 0.05, spec: Any = None
    ) -> None:
        if len(members) < 2:
            raise ValueError("a panel needs at least two members")
        if combine not in ("majority", "mean"):
            raise ValueError(f"combine must be 'majority' or 'mean', got {combine!r}")
        self.name = name
        self.members = members
        self.combine = combine
        self.scale = cast("tuple[int, int]", tuple(scale))  # a list from a caller becomes a tuple
        self.tie_margin = tie_margin
        self.spec = spec

    @property
    def identity(self) -> dict[str, Any]:
        ids = [m.identity for m in self.members]
        digest = hashlib.sha256(json.dumps({"members": ids, "combine": self.combine, "scale": list(self.scale), "tie": self.tie_margin}, sort_keys=True).encode()).hexdigest()[:16]
        return {"name": self.name, "backend": self.backend, "model": "+".join(m.identity.get("model", "?") for m in self.members), "template_hash": digest}

    def set_cache(self, cache: Any) -> None:
        self.cache = cache
        for m in self.members:
            if getattr(m, "cache", None) is None:
                if hasattr(m, "set_cache"):  # e.g. a reward model, which finds its adapter in the same store
                    m.set_cache(cache)
                else:
                    m.cache = cache

    def check(self) -> None:
        for m in self.members:
            m.check()

    def cost_of(self, prompt_tokens: int, completion_tokens: int) -> float:
        return 0.0  # members price their own tokens; the panel sums their costs

    # ------------------------------------------------------------------ pairwise
    def _compare_uncached(self, prompts: list[Messages], a: list[str], b: list[str], refs: list[str | None]) -> list[PairwiseVerdict]:
        pairwise = [m for m in self.members if isinstance(m, PairwiseJudge)]
        if len(pairwise) < 2:
            raise ValueError(f"panel {self.name!r} has fewer than two pairwise members")
        per_member = {m.name: m.compare(prompts, a, b, references=refs) for m in pairwise}
        out = []
        for i in range(len(prompts)):
            vs = {name: vv[i] for name, vv in per_member.items()}
            out.append(self._combine_pair(vs))
        return out

    def _combine_pair(self, vs: dict[str, PairwiseVerdict]) -> PairwiseVerdict:
        totals = _totals(vs.values())
        members = {
            n: {"winner": v.winner, "prob_a": v.prob_a if v.ok else None, "consistent": v.consistent, "error": v.error}
            for n, v in vs.items()
        }
        ok = {n: v for n, v in vs.items() if v.ok}
        if not ok:
            return PairwiseVerdict.failed("; ".join(f"{n}: {v.error}" for n, v in vs.items()), members=members, **totals)
        probs = [v.prob_a for v in ok.values()]
        prob_a = statistics.fmean(probs)
        if self.combine == "majority":
            votes = Counter(v.winner for v in ok.values())
            ranked = votes.most_common()
            top, n_top = ranked[0]
            winner: Winner = "tie" if len(ranked) > 1 and ranked[1][1] == n_top else top  # type: ignore[assignment]
            disagreement = 1.0 - n_top / len(ok)
        else:
            winner = "tie" if abs(prob_a - 0.5) <= self.tie_margin else ("A" if prob_a > 0.5 else "B")
            disagreement = min(1.0, 2.0 * statistics.pstdev(probs))
        consistent = sum(v.consistent for v in ok.values()) * 2 >= len(ok)
        why = "\n".join(f"{n}: {v.rationale}" for n, v in ok.items() if v.rationale) or None
        return PairwiseVerdict(
            winner, prob_a, consistent, why, disagreement=disagreement, members=members, **totals,
        )

    # ------------------------------------------------------------------ pointwise
    def _score_uncached(self, prompts: list[Messages], outputs: list[str], refs: list[str | None]) -> list[PointwiseVerdict]:
        pointwise = [m for m in self.members if isinstance(m, PointwiseJudge)]
        if len(pointwise) < 2:
            raise ValueError(f"panel {self.name!r} has fewer than two pointwise members")
        per_member = {m.name: m.score(prompts, outputs, references=refs) for m in pointwise}
        lo, hi = self.scale
        out = []
        for i in range(len(prompts)):
            vs = {n: vv[i] for n, vv in per_member.items()}
            totals = _totals(vs.values())
            members = {n: {"score": v.score, "scale": list(v.scale), "error": v.error} for n, v in vs.items()}
            ok = {n: v for n, v in vs.items() if v.ok}
            if not ok:
                out.append(PointwiseVerdict.failed("; ".join(f"{n}: {v.error}" for n, v in vs.items()), scale=self.scale, members=members, **totals))
                continue
            # Members may use different scales: compare them on [0, 1].
            unit = []
            for v in ok.values():
                assert v.score is not None  # an ok verdict has its score
                unit.append((v.score - v.scale[0]) / (v.scale[1] - v.scale[0]))
            centre = statistics.median(unit) if self.combine == "majority" else statistics.fmean(unit)
            confs = [v.confidence for v in ok.values() if v.confidence is not None]
            out.append(PointwiseVerdict(
                score=lo + (hi - lo) * centre,
                confidence=statistics.fmean(confs) if confs else None,
                scale=self.scale,
                disagreement=min(1.0, 2.0 * statistics.pstdev(unit)),
                members=members,
                rationale="\n".join(f"{n}: {v.rationale}" for n, v in ok.items() if v.rationale) or None,
                **totals,
            ))
        return out


def _totals(verdicts: Iterable[PairwiseVerdict | PointwiseVerdict]) -> Usage:
    """What the members used together (they run one after another, so their latencies add up)."""
    vs = list(verdicts)
    return Usage(
        prompt_tokens=sum(v.prompt_tokens for v in vs),
        completion_tokens=sum(v.completion_tokens for v in vs),
        cost=sum(v.cost for v in vs),
        latency_s=sum(v.latency_s for v in vs),
    )
