"""Evaluate a round's policy on the held-out ``eval`` prompts.

- **Win rate** of round N against round N−1 and against round 0 (the base model): the same eval
  prompts, sample k of one round against sample k of the other (``samples_per_prompt`` pairs per
  prompt, not all k² pairs: each sample is judged once per opponent round), judged by a pairwise
  judge in both orders (position swap). A tie, or a verdict that flips with the order, counts
  half; a failed judgement counts for nobody and is reported.
- **Oracle score**: when the task defines a program that scores an answer in [0, 1]
  (``training.evaluation.oracle``), its mean over the round's eval samples.

Both come per prompt too (:meth:`WinRate.per_prompt`, :func:`oracle_by_prompt`), which is what the
intervals of :mod:`prefloop.stats` resample.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from prefloop.errors import ConfigError
from prefloop.stats import Bootstrap, includes

#: An oracle scores one answer to one prompt in [0, 1]: ``oracle(prompt_meta, messages, text)``.
Oracle = Callable[[dict[str, Any], list[dict[str, str]], str], float]

#: what one judged comparison is worth to the round being evaluated.
OUTCOME_SCORE = {"win": 1.0, "tie": 0.5, "loss": 0.0}


def load_oracle(name: str) -> Oracle:
    """A task's oracle: a shipped task name (``support-desk``, ``arithmetic``), ``package.module:NAME``
    of a :class:`~prefloop.sim.task.TaskSpec`, or ``package.module:function`` of an oracle function."""
    from prefloop.sim.task import TaskSpec, resolve

    fn = resolve(name, "oracle")
    if isinstance(fn, TaskSpec):
        return fn.oracle
    if not callable(fn):
        raise ConfigError(f"oracle {name!r} is not callable")
    return fn


@dataclass
class WinRate:
    against: int  # the other round's number
    wins: int = 0
    losses: int = 0
    ties: int = 0
    inconsistent: int = 0  # verdicts that flipped with the order (counted as ties)
    failed: int = 0
    cost: float = 0.0
    details: list[dict[str, Any]] = field(default_factory=list)

    @property
    def judged(self) -> int:
        return self.wins + self.losses + self.ties

    @property
    def rate(self) -> float | None:
        return (self.wins + 0.5 * self.ties) / self.judged if self.judged else None

    def per_prompt(self) -> dict[int, list[float | None]]:
        """prompt → each sample's comparison as 1 (win), 0.5 (tie) or 0 (loss); None where judging failed."""
        out: dict[int, list[float | None]] = {}
        for d in self.details:
            out.setdefault(d["prompt_id"], []).append(OUTCOME_SCORE.get(d["outcome"]))
        return out

    def summary(self, boot: Bootstrap | None = None) -> dict[str, Any]:
        """The counts and the rate; with ``boot``, the rate's interval over prompts and whether it
        includes 50 % (no preference either way: within the noise)."""
        out: dict[str, Any] = {"against": self.against, "win_rate": self.rate, "wins": self.wins, "losses": self.losses,
                               "ties": self.ties, "inconsistent": self.inconsistent, "failed": self.failed,
                               "judged": self.judged, "cost": self.cost}
        if boot is not None:
            ci = boot.ci([[x for x in v if x is not None] for v in self.per_prompt().values()])
            out["win_rate_ci"] = None if ci is None else list(ci)
            out["within_noise"] = includes(ci, 0.5)
        return out


def win_rate(
    judge: Any,
    prompts: dict[int, list[dict[str, str]]],
    mine: dict[int, list[tuple[int, str]]],
    theirs: dict[int, list[tuple[int, str]]],
    against: int,
    references: dict[int, str | None] | None = None,
) -> WinRate:
    """Round N's samples (``mine``: prompt → [(generation id, text)]) against another round's."""
    keys: list[tuple[int, int, int, int]] = []  # (prompt, k, my gen, their gen)
    msgs, a, b, refs = [], [], [], []
    for pid in sorted(set(mine) & set(theirs)):
        for k, ((ga, ta), (gb, tb)) in enumerate(zip(mine[pid], theirs[pid], strict=False)):
            keys.append((pid, k, ga, gb))
            msgs.append(prompts[pid])
            a.append(ta)
            b.append(tb)
            refs.append((references or {}).get(pid))
    out = WinRate(against)
    if not keys:
        return out
    verdicts = judge.compare(msgs, a, b, references=refs)
    for (pid, k, ga, gb), v in zip(keys, verdicts, strict=True):
        out.cost += 0.0 if v.cached else float(v.cost or 0.0)
        if not v.ok:
            out.failed += 1
            outcome = "failed"
        elif v.winner == "A":
            out.wins += 1
            outcome = "win"
        elif v.winner == "B":
            out.losses += 1
            outcome = "loss"
        else:
            out.ties += 1
            outcome = "tie"
        if v.ok and not v.consistent:
            out.inconsistent += 1
        out.details.append({"prompt_id": pid, "sample": k, "mine": ga, "theirs": gb, "outcome": outcome,
                            "prob_mine": None if not v.ok else v.prob_a, "consistent": v.consistent, "error": v.error})
    return out


def oracle_score(oracle: Oracle, meta: dict[str, Any], messages: list[dict[str, str]], text: str, what: str) -> float:
    """``oracle``'s score of one answer (``what`` names it in errors), checked to lie in [0, 1].

    An oracle is user code: NaN or a non-number is its bug, reported as such, never stored.
    """
    value = oracle(meta, messages, text)
    try:
        score = float(value)
    except (TypeError, ValueError):
        score = None
    if score is None or not 0.0 <= score <= 1.0:  # NaN fails the comparison too
        raise ConfigError(f"the oracle returned {value!r} for {what}; oracles must score in [0, 1]",
                          hint="fix the function named by training.evaluation.oracle")
    return score


def oracle_by_prompt(samples: dict[int, list[tuple[int, str]]], metas: dict[int, dict[str, Any] | None]) -> dict[int, list[float]]:
    """prompt → the oracle scores stored on its samples (``metas``: generation id → meta); prompts
    whose samples carry no score (no oracle) are left out."""
    out: dict[int, list[float]] = {}
    for pid, gens in samples.items():
        scores = [float(m["oracle_score"]) for g, _ in gens if "oracle_score" in (m := metas.get(g) or {})]
        if scores:
            out[pid] = scores
    return out


def mean_or_none(values: list[float]) -> float | None:
    return statistics.fmean(values) if values else None
