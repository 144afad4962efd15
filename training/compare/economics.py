"""What an answer costs, and when fine-tuning pays for itself.

**Per answer** (at inference): the measured seconds per answer (retrieval included for a RAG arm)
× the serving machine's hourly rate (``cost.inference_hourly_rate``, default
``cost.compute_hourly_rate``) / 3600, plus prompt tokens / 1000 × ``price_prompt_per_1k_tokens``
and completion tokens / 1000 × ``price_completion_per_1k_tokens`` (both 0 unless set: a hosted
model's prices). Reported per 1,000 answers.

**One-off** (fine-tuning): the sum of the cost records of rounds 1…N (human labels, judge labels,
the rounds' compute — :mod:`prefloop.training.roi`). The arms without an adapter have none.

**Break-even volume** of a fine-tuned arm T against an alternative A (e.g. ``ft+rag`` against
``base+rag``), with one-off cost C, per-answer costs c_T, c_A and quality q_T, q_A in points
(100 × the oracle score; without an oracle, the win rate against the base model in %)::

    advantage per answer  d = (c_A − c_T) + v · (q_T − q_A)      (v = cost.value_per_point, else 0)
    break-even volume     V = C / d   answers, when d > 0

After V answers, T's lower per-answer cost (and, with v set, its higher value) has repaid what
fine-tuning cost. With d ≤ 0 it never pays back; if T is nevertheless better (better but dearer,
the usual case of ``ft+rag`` against ``base+rag`` without a value per point), what is reported
instead is the **cost per quality point**: (c_T − c_A) × 1000 / (q_T − q_A) per point per 1,000
answers, and C / (q_T − q_A) one-off per point.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal


@dataclass(frozen=True)
class Prices:
    """The project's prices that turn seconds and tokens into money (``cost:``)."""

    hourly_rate: float
    prompt_per_1k: float = 0.0
    completion_per_1k: float = 0.0
    value_per_point: float | None = None

    @classmethod
    def from_config(cls, cost: Any) -> Prices:
        rate = cost.inference_hourly_rate if cost.inference_hourly_rate is not None else cost.compute_hourly_rate
        return cls(rate, cost.price_prompt_per_1k_tokens, cost.price_completion_per_1k_tokens, cost.value_per_point)


def cost_per_answer(seconds: float, prompt_tokens: float, completion_tokens: float, prices: Prices) -> float:
    """Serving one answer: machine time plus tokens at the configured prices."""
    return (seconds * prices.hourly_rate / 3600.0 + prompt_tokens / 1000.0 * prices.prompt_per_1k
            + completion_tokens / 1000.0 * prices.completion_per_1k)


Verdict = Literal["pays_back", "cost_per_point", "never"]


@dataclass(frozen=True)
class BreakEven:
    tuned: str
    alternative: str
    one_off: float  #: C
    cost_tuned: float  #: c_T per answer
    cost_alternative: float  #: c_A per answer
    quality_tuned: float  #: q_T in points
    quality_alternative: float  #: q_A in points
    advantage: float  #: d per answer
    verdict: Verdict
    answers: float | None  #: V, when it pays back
    per_point_per_1000: float | None  #: (c_T − c_A)·1000 / (q_T − q_A), when better but dearer
    one_off_per_point: float | None  #: C / (q_T − q_A), when better

    @property
    def quality_gain(self) -> float:
        return self.quality_tuned - self.quality_alternative

    def explain(self, currency: str = "USD") -> str:
        """One line a person reads."""
        gain = f"{self.quality_gain:+.1f} points"
        if self.verdict == "pays_back":
            when = "at once (no one-off cost)" if self.answers == 0 else f"after {self.answers:,.0f} answers"
            worse = "; but it is worse" if self.quality_gain < 0 else ""
            return f"{self.tuned} pays for itself against {self.alternative} {when} ({gain}{worse})"
        if self.verdict == "cost_per_point":
            return (f"{self.tuned} is better ({gain}) but not cheaper to serve than {self.alternative}: it never pays back, "
                    f"each point costs {self.per_point_per_1000:.4g} {currency} per 1,000 answers "
                    f"plus {self.one_off_per_point:.4g} {currency} one-off")
        return f"{self.tuned} never pays back against {self.alternative}: not cheaper to serve, not better ({gain})"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "quality_gain": self.quality_gain}


def break_even(tuned: str, alternative: str, *, one_off: float, cost_tuned: float, cost_alternative: float,
               quality_tuned: float, quality_alternative: float, value_per_point: float | None = None) -> BreakEven:
    """The break-even volume of ``tuned`` against ``alternative`` (see the module doc)."""
    gain = quality_tuned - quality_alternative
    d = (cost_alternative - cost_tuned) + (value_per_point or 0.0) * gain
    answers = per_point = one_off_point = None
    if d > 0:
        verdict: Verdict = "pays_back"
        answers = one_off / d
    elif gain > 0:
        verdict = "cost_per_point"
        per_point = max(0.0, cost_tuned - cost_alternative) * 1000.0 / gain
    else:
        verdict = "never"
    if gain > 0:
        one_off_point = one_off / gain
    return BreakEven(tuned, alternative, one_off, cost_tuned, cost_alternative, quality_tuned, quality_alternative,
                     d, verdict, answers, per_point, one_off_point)
