"""The numbers of a comparison, computed from the stored answers alone.

Per arm: the oracle score (and its parts, when the oracle names them) and the win rate against
the base model, each the mean over eval prompts × seeds with a 95 % bootstrap interval over both
(:func:`prefloop.stats.grid_ci`); a prompt's value within a seed is the mean over its samples.
Win rates are the evaluation judge's, both orders judged (position swap): a win counts 1, a tie
or a flip ½, a loss 0, a failed judgement nothing. Then the means per answer of latency (seconds
of generation, plus retrieval for a RAG arm), prompt and completion tokens, and what 1,000 answers
cost to serve; for the fine-tuned arms the one-off cost of the rounds that made the adapter.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from prefloop.feedback.passages import RAG, first_prompted
from prefloop.feedback.store.models import Generation
from prefloop.stats import Estimate, grid_ci

from ..evaluation import win_rate
from .economics import BreakEven, Prices, break_even, cost_per_answer

#: seed → prompt id → the arm's answers to it, in sample order
Answers = dict[int, dict[int, list[Generation]]]
OUTCOME = {"win": 1.0, "tie": 0.5, "loss": 0.0}


@dataclass
class OneOff:
    """What the fine-tuned adapter cost to make: the cost records of rounds 1…N."""

    rounds: list[int] = field(default_factory=list)
    human: float = 0.0
    judge: float = 0.0
    compute: float = 0.0
    human_labels: int = 0

    @property
    def total(self) -> float:
        return self.human + self.judge + self.compute

    def to_dict(self) -> dict[str, Any]:
        return {"rounds": self.rounds, "human": self.human, "judge": self.judge, "compute": self.compute,
                "human_labels": self.human_labels, "total": self.total}


@dataclass
class ArmResult:
    arm: str
    answers: int
    oracle: Estimate | None
    parts: dict[str, Estimate]
    win_vs_base: Estimate | None
    judged: dict[str, int]
    latency_s: float
    retrieval_s: float
    prompt_tokens: float
    completion_tokens: float
    cost_per_answer: float
    one_off: float
    #: what the intervals resample: metric ("oracle", each part, "win_vs_base") → seed → prompt id → value;
    #: saved so that runs of several trainings can be pooled (``prefloop experiment``'s compare stage)
    by_prompt: dict[str, dict[int, dict[int, float]]] = field(default_factory=dict)

    @property
    def cost_per_1000(self) -> float:
        return 1000.0 * self.cost_per_answer

    def quality(self) -> float | None:
        """Points: 100 × the oracle score; without an oracle, the win rate against base in % (base: 50)."""
        if self.oracle is not None:
            return 100.0 * self.oracle.mean
        if self.arm == "base":
            return 50.0
        return 100.0 * self.win_vs_base.mean if self.win_vs_base is not None else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "arm": self.arm, "answers": self.answers, "oracle": self.oracle.to_dict() if self.oracle else None,
            "parts": {k: v.to_dict() for k, v in self.parts.items()},
            "win_vs_base": self.win_vs_base.to_dict() if self.win_vs_base else None, "judged": self.judged,
            "latency_s": self.latency_s, "retrieval_s": self.retrieval_s, "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens, "cost_per_answer": self.cost_per_answer,
            "cost_per_1000": self.cost_per_1000, "one_off": self.one_off, "quality": self.quality(),
            "by_prompt": {m: {str(seed): {str(pid): v for pid, v in row.items()} for seed, row in grid.items()}
                          for m, grid in self.by_prompt.items()},
        }


def per_prompt(answers: Answers, value: Any) -> dict[int, dict[int, float]]:
    """seed → prompt → the mean of ``value(generation)`` over the prompt's samples (``None``s left out)."""
    out: dict[int, dict[int, float]] = {}
    for seed, by_prompt in answers.items():
        for pid, gens in by_prompt.items():
            vals = [v for v in (value(g) for g in gens) if v is not None]
            if vals:
                out.setdefault(seed, {})[pid] = statistics.fmean(vals)
    return out


def _mean(answers: Answers, value: Any) -> float:
    vals = [float(value(g)) for by_prompt in answers.values() for gens in by_prompt.values() for g in gens]
    return statistics.fmean(vals) if vals else 0.0


def retrieval_seconds(g: Generation) -> float:
    return float(((g.meta or {}).get(RAG) or {}).get("seconds") or 0.0)


def judge_vs_base(judge: Any, plain: Mapping[int, list[dict[str, str]]], refs: Mapping[int, str | None],
                  mine: Answers, base: Answers) -> tuple[dict[int, dict[int, float]], dict[str, int], float]:
    """The judge's verdicts of an arm's answers against base's (same prompt, seed and sample): the
    per-prompt win values, the counts, and what the judge spent. The judge reads the prompt as the
    RAG side was given it (its sources), or the plain prompt when neither side retrieved."""
    grid: dict[int, dict[int, float]] = {}
    counts = {"wins": 0, "losses": 0, "ties": 0, "inconsistent": 0, "failed": 0}
    spent = 0.0
    for seed in sorted(set(mine) & set(base)):
        a, b = mine[seed], base[seed]
        shared = sorted(set(a) & set(b))
        prompts = {pid: first_prompted(plain[pid], [g.meta for g in a[pid]] + [g.meta for g in b[pid]]) for pid in shared}
        wr = win_rate(judge, prompts, {pid: [(g.id, g.text) for g in a[pid]] for pid in shared},
                      {pid: [(g.id, g.text) for g in b[pid]] for pid in shared}, 0, dict(refs))
        spent += wr.cost
        for k in ("wins", "losses", "ties", "inconsistent", "failed"):
            counts[k] += getattr(wr, k)
        values: dict[int, list[float]] = {}
        for d in wr.details:
            if d["outcome"] in OUTCOME:
                values.setdefault(d["prompt_id"], []).append(OUTCOME[d["outcome"]])
        for pid, vals in values.items():
            grid.setdefault(seed, {})[pid] = statistics.fmean(vals)
    return grid, counts, spent


def arm_result(arm: str, answers: Answers, *, prices: Prices, one_off: float, win: dict[int, dict[int, float]] | None,
               judged: dict[str, int] | None) -> ArmResult:
    gens = [g for by_prompt in answers.values() for gs in by_prompt.values() for g in gs]
    grids = {"oracle": per_prompt(answers, lambda g: (g.meta or {}).get("oracle_score"))}
    names = sorted({k for g in gens for k in ((g.meta or {}).get("oracle_parts") or {})})
    for n in names:
        grids[n] = per_prompt(answers, lambda g, n=n: ((g.meta or {}).get("oracle_parts") or {}).get(n))
    if win:
        grids["win_vs_base"] = win
    oracle = grid_ci(grids["oracle"])
    parts = {n: iv for n in names if (iv := grid_ci(grids[n]))}
    retrieval = _mean(answers, retrieval_seconds)
    latency = _mean(answers, lambda g: float((g.meta or {}).get("latency_s") or 0.0)) + retrieval
    prompt_tokens = _mean(answers, lambda g: (g.meta or {}).get("prompt_tokens") or 0)
    completion_tokens = _mean(answers, lambda g: (g.meta or {}).get("completion_tokens") or 0)
    return ArmResult(arm, len(gens), oracle, parts, grid_ci(win) if win else None, judged or {}, latency, retrieval,
                     prompt_tokens, completion_tokens, cost_per_answer(latency, prompt_tokens, completion_tokens, prices),
                     one_off, {m: g for m, g in grids.items() if g})


#: the break-even questions: each fine-tuned arm against each arm without an adapter
PAIRS = (("ft", "base"), ("ft+rag", "base+rag"), ("ft", "base+rag"), ("ft+rag", "base"))


def break_evens(results: list[ArmResult], prices: Prices) -> list[BreakEven]:
    by = {r.arm: r for r in results}
    out = []
    for tuned, alt in PAIRS:
        t, a = by.get(tuned), by.get(alt)
        if t is None or a is None or t.quality() is None or a.quality() is None:
            continue
        out.append(break_even(tuned, alt, one_off=t.one_off, cost_tuned=t.cost_per_answer, cost_alternative=a.cost_per_answer,
                              quality_tuned=t.quality(), quality_alternative=a.quality(),  # type: ignore[arg-type]
                              value_per_point=prices.value_per_point))
    return out
