"""Judge interfaces and verdicts.

A :class:`PairwiseJudge` says which of two outputs answers a prompt better; a
:class:`PointwiseJudge` scores one output on a rubric's scale. Both take chat-message prompts and
lists (they batch), return one verdict per input, and never invent an answer: a judgement that
failed carries ``error`` (its reason) and no winner/score.

Pairwise judging is debiased here, once for every backend: each pair is judged in both orders
and the two probabilities are averaged; a verdict whose winner flips with the order is
*inconsistent* and becomes a low-confidence tie. ``judge()`` keeps the shape of TRL's old
``BasePairwiseJudge`` so TRL users feel at home.

Verdicts are cached by (judge identity, inputs) when the judge has a cache (the runner gives
it the store's ``judge_cache`` table): the same question is never asked twice.
"""

from __future__ import annotations

import hashlib
import json
import math
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any, Literal, TypedDict

from prefloop.text import text_problem

if TYPE_CHECKING:
    from .cache import VerdictCache

Messages = list[dict[str, str]]
Winner = Literal["A", "B", "tie"]


class Usage(TypedDict):
    """What one verdict used: the keyword arguments that both verdict kinds share."""

    prompt_tokens: int
    completion_tokens: int
    latency_s: float
    cost: float


class _Verdict:
    """What both verdict kinds share: ``ok``, and a JSON round trip for the cache."""

    _tuples: tuple[str, ...] = ()
    # declared here for code that takes either kind; the dataclasses below define them
    error: str | None
    prompt_tokens: int
    completion_tokens: int
    cost: float
    latency_s: float
    cached: bool

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)  # type: ignore[call-overload]
        d.pop("cached")
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Any:
        names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        d = {k: v for k, v in d.items() if k in names}
        for k in cls._tuples:
            if d.get(k) is not None:
                d[k] = tuple(d[k])
        return cls(**d)


@dataclass
class PairwiseVerdict(_Verdict):
    """Which of A and B is better. ``prob_a`` is P(A better), averaged over both orders.

    ``winner`` is None exactly when ``error`` says why no verdict could be given.
    """

    winner: Winner | None
    prob_a: float
    consistent: bool
    rationale: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    latency_s: float = 0.0
    error: str | None = None
    #: P(first shown is better) in each order: (A first, B first → P(A better)).
    orders: tuple[float, float] | None = None
    #: panel verdicts only: spread of the members' opinions (0 = unanimous) and their votes.
    disagreement: float | None = None
    members: dict[str, dict[str, Any]] = field(default_factory=dict)
    cached: bool = False
    _tuples = ("orders",)

    @property
    def confidence(self) -> float:
        """|2·P(A) − 1| for a consistent verdict; 0 for one that flips with the order."""
        if not self.ok or not self.consistent:
            return 0.0
        return abs(2.0 * self.prob_a - 1.0)

    @classmethod
    def failed(cls, error: str, **kw: Any) -> PairwiseVerdict:
        return cls(winner=None, prob_a=math.nan, consistent=False, error=error, **kw)


@dataclass
class PointwiseVerdict(_Verdict):
    """A score on the judge's scale (``scale``); ``confidence`` is the top answer's probability."""

    score: float | None
    rationale: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    latency_s: float = 0.0
    error: str | None = None
    confidence: float | None = None
    scale: tuple[int, int] = (1, 5)
    #: the probability of each scale point, where the backend knows it (log-probs).
    distribution: dict[str, float] | None = None
    disagreement: float | None = None
    members: dict[str, dict[str, Any]] = field(default_factory=dict)
    cached: bool = False
    _tuples = ("scale",)

    @classmethod
    def failed(cls, error: str, **kw: Any) -> PointwiseVerdict:
        return cls(score=None, error=error, **kw)


@dataclass
class Oriented:
    """One order's raw outcome: P(the output shown first is better), or why there is none."""

    p_first: float | None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0
    rationale: str | None = None
    error: str | None = None


def _digest(payload: Any) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, ensure_ascii=False, default=str).encode()).hexdigest()


class Judge(ABC):
    """What every judge has: a name, an identity (what makes its verdicts reproducible), a cache."""

    name: str
    cache: VerdictCache | None = None

    @property
    @abstractmethod
    def identity(self) -> dict[str, Any]:
        """``name``, ``model``, ``template_hash`` (+ ``backend``): stored with every verdict."""

    def check(self) -> None:  # noqa: B027 - optional hook
        """Fail early (a PrefloopError) when the judge cannot run, e.g. a missing API key."""

    def cost_of(self, prompt_tokens: int, completion_tokens: int) -> float:
        spec = getattr(self, "spec", None)
        if spec is None:
            return 0.0
        return prompt_tokens / 1000 * spec.price_prompt_per_1k + completion_tokens / 1000 * spec.price_completion_per_1k

    def cache_key(self, kind: str, prompt: Messages, outputs: list[str], reference: str | None) -> str:
        return _digest({"judge": self.identity, "kind": kind, "prompt": prompt, "outputs": outputs, "reference": reference})

    def _through_cache(self, keys: list[str], cls: Any, compute: Any) -> list[Any]:
        """Verdicts for ``keys``: cached ones from the cache, the rest from ``compute(indices)``
        (each distinct question once); successful new verdicts are cached."""
        hits = self.cache.get_many(keys) if self.cache is not None else {}
        first_of: dict[str, int] = {}
        for i, k in enumerate(keys):
            if k not in hits:
                first_of.setdefault(k, i)
        fresh: dict[str, Any] = {}
        if first_of:
            idx = sorted(first_of.values())
            fresh = {keys[i]: _storable(v) for i, v in zip(idx, compute(idx), strict=True)}
            if self.cache is not None:
                ok = {k: v.to_dict() for k, v in fresh.items() if v.ok}
                if ok:
                    self.cache.put_many(self.name, ok)
        out = []
        for k in keys:
            if k in hits:
                v = cls.from_dict(hits[k])
                v.cached = True
            else:
                v = fresh[k]
            out.append(v)
        return out


def _storable(v: Any) -> Any:  # noqa: ANN401 - a verdict
    """``v``, or a failed verdict saying why when its rationale (untrusted model text) cannot be
    stored or exported (:mod:`prefloop.text`): never cached, never recorded as an answer."""
    problem = text_problem(v.rationale) if isinstance(v.rationale, str) else None
    if problem is None:
        return v
    spent = {"prompt_tokens": v.prompt_tokens, "completion_tokens": v.completion_tokens, "cost": v.cost,
             "latency_s": v.latency_s}
    if isinstance(v, PointwiseVerdict):
        spent["scale"] = v.scale
    return type(v).failed(f"the judge's rationale {problem}", **spent)


def _references(references: list[str | None] | None, n: int) -> list[str | None]:
    if references is None:
        return [None] * n
    if len(references) != n:
        raise ValueError(f"got {len(references)} references for {n} inputs")
    return list(references)


class PairwiseJudge(Judge):
    """Compare two outputs of the same prompt. Subclasses implement :meth:`_judge_oriented`
    (P(first shown better) for a batch of ordered pairs) or override :meth:`_compare_uncached`."""

    tie_margin: float = 0.05

    def compare(
        self,
        prompts: list[Messages],
        a: list[str],
        b: list[str],
        *,
        references: list[str | None] | None = None,
    ) -> list[PairwiseVerdict]:
        """One verdict per (prompt, a, b), judged in both orders; cached verdicts are reused."""
        if not len(prompts) == len(a) == len(b):
            raise ValueError(f"compare needs as many prompts as pairs: {len(prompts)} prompts, {len(a)} a, {len(b)} b")
        refs = _references(references, len(prompts))
        keys = [self.cache_key("pairwise", p, [x, y], r) for p, x, y, r in zip(prompts, a, b, refs, strict=True)]
        return self._through_cache(
            keys, PairwiseVerdict,
            lambda idx: self._compare_uncached([prompts[i] for i in idx], [a[i] for i in idx], [b[i] for i in idx], [refs[i] for i in idx]),
        )

    def _compare_uncached(
        self, prompts: list[Messages], a: list[str], b: list[str], refs: list[str | None]
    ) -> list[PairwiseVerdict]:
        n = len(prompts)
        oriented = self._judge_oriented(prompts + prompts, a + b, b + a, refs + refs)
        return [self.combine_orders(oriented[i], oriented[n + i]) for i in range(n)]

    def _judge_oriented(
        self, prompts: list[Messages], first: list[str], second: list[str], refs: list[str | None]
    ) -> list[Oriented]:
        raise NotImplementedError(f"{type(self).__name__} must implement _judge_oriented or _compare_uncached")

    def combine_orders(self, ab: Oriented, ba: Oriented) -> PairwiseVerdict:
        """Debias: P(A) = mean(P(A first wins), 1 − P(B first wins)); a flip is inconsistent."""
        prompt_tokens, completion_tokens = ab.prompt_tokens + ba.prompt_tokens, ab.completion_tokens + ba.completion_tokens
        tokens = Usage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens, latency_s=ab.latency_s + ba.latency_s,
                       cost=self.cost_of(prompt_tokens, completion_tokens))
        errors = [f"{label}: {problem}" for label, o in (("A first", ab), ("B first", ba)) if (problem := _oriented_problem(o))]
        if errors:
            return PairwiseVerdict.failed("; ".join(errors), **tokens)
        assert ab.p_first is not None and ba.p_first is not None  # _oriented_problem reported a missing one
        p1, p2 = float(ab.p_first), 1.0 - float(ba.p_first)
        prob_a = (p1 + p2) / 2
        side1, side2 = _side(p1), _side(p2)
        consistent = side1 == side2
        if not consistent:
            winner: Winner = "tie"
        elif abs(prob_a - 0.5) <= self.tie_margin:
            winner = "tie"
        else:
            winner = "A" if prob_a > 0.5 else "B"
        rationale = ab.rationale or ba.rationale
        return PairwiseVerdict(winner, prob_a, consistent, rationale, orders=(p1, p2), **tokens)

    def judge(self, prompts: list[str], completions: list[list[str]], shuffle_order: bool = True) -> list[int]:
        """TRL's pairwise-judge shape: the index (0/1) of the better completion per prompt, −1 on failure.

        Both orders are always judged, which subsumes ``shuffle_order``; a tie goes to the side with
        the higher probability (0 when exactly even).
        """
        del shuffle_order  # both orders are judged regardless
        for i, pair in enumerate(completions):
            if len(pair) != 2:
                raise ValueError(f"completions[{i}] must hold exactly two completions, got {len(pair)}")
        msgs = [[{"role": "user", "content": p}] for p in prompts]
        verdicts = self.compare(msgs, [c[0] for c in completions], [c[1] for c in completions])
        out = []
        for v in verdicts:
            if not v.ok:
                out.append(-1)
            elif v.winner == "A":
                out.append(0)
            elif v.winner == "B":
                out.append(1)
            else:
                out.append(0 if v.prob_a >= 0.5 else 1)
        return out


def _oriented_problem(o: Oriented) -> str | None:
    """Why one order gave no usable probability (a broken model's NaN included), or None."""
    if o.error or o.p_first is None:
        return o.error or "no answer"
    if not math.isfinite(o.p_first):
        return f"the model's probability is {o.p_first!r}, not a number"
    return None


def _side(p: float) -> str:
    return "first" if p > 0.5 else "second" if p < 0.5 else "even"


class PointwiseJudge(Judge):
    """Score single outputs. Subclasses implement :meth:`_score_uncached`."""

    scale: tuple[int, int] = (1, 5)

    def score(
        self, prompts: list[Messages], outputs: list[str], *, references: list[str | None] | None = None
    ) -> list[PointwiseVerdict]:
        """One verdict per (prompt, output) on ``self.scale``; cached verdicts are reused."""
        if len(prompts) != len(outputs):
            raise ValueError(f"score needs as many prompts as outputs: {len(prompts)} vs {len(outputs)}")
        refs = _references(references, len(prompts))
        keys = [self.cache_key("pointwise", p, [o], r) for p, o, r in zip(prompts, outputs, refs, strict=True)]
        return self._through_cache(
            keys, PointwiseVerdict,
            lambda idx: self._score_uncached([prompts[i] for i in idx], [outputs[i] for i in idx], [refs[i] for i in idx]),
        )

    @abstractmethod
    def _score_uncached(self, prompts: list[Messages], outputs: list[str], refs: list[str | None]) -> list[PointwiseVerdict]:
        ...


class ScoreBasedPairwise(PairwiseJudge, PointwiseJudge):
    """A pairwise judge from a pointwise one: score both outputs, the higher wins.

    Order cannot matter (each output is scored alone), so these verdicts are always consistent.
    """

    def _compare_uncached(self, prompts: list[Messages], a: list[str], b: list[str], refs: list[str | None]) -> list[PairwiseVerdict]:
        scores = self.score(prompts + prompts, a + b, references=refs + refs)
        n = len(prompts)
        lo, hi = self.scale
        out = []
        for va, vb in zip(scores[:n], scores[n:], strict=True):
            tokens = Usage(
                prompt_tokens=va.prompt_tokens + vb.prompt_tokens,
                completion_tokens=va.completion_tokens + vb.completion_tokens,
                latency_s=va.latency_s + vb.latency_s,
                cost=va.cost + vb.cost,
            )
            if not (va.ok and vb.ok):
                errs = [f"{s}: {v.error}" for s, v in (("A", va), ("B", vb)) if not v.ok]
                out.append(PairwiseVerdict.failed("; ".join(errs), **tokens))
                continue
            assert va.score is not None and vb.score is not None  # an ok verdict has its score
            prob_a = 0.5 + (float(va.score) - float(vb.score)) / (2 * (hi - lo))
            winner: Winner = "tie" if abs(prob_a - 0.5) <= self.tie_margin else ("A" if prob_a > 0.5 else "B")
            why = " | ".join(f"{s}: {v.rationale}" for s, v in (("A", va), ("B", vb)) if v.rationale) or None
            out.append(PairwiseVerdict(winner, prob_a, True, why, orders=(prob_a, prob_a), **tokens))
        return out
