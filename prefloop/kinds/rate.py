"""rate: one output on the task's scale (default 1–5).

Answer ``{"rating": int}`` inside the scale. Ratings of several outputs of one prompt (in one
round) make a pair, best vs worst by mean rating, when the gap reaches
``aggregation.rating_margin``; an output whose mean rating reaches ``aggregation.sft_min_rating``
is an SFT target. A judge answers with a pointwise score mapped onto the task's scale.
"""

from __future__ import annotations

import random
import statistics
from collections import defaultdict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from prefloop.errors import ConfigError, InvalidAnswer

from .base import (
    MIXED,
    POINTWISE,
    KeyState,
    Label,
    Preference,
    SFTTarget,
    TaskKind,
    TaskLabels,
    TaskView,
    TextsOf,
    as_int,
    round_half_up,
    spend,
)

if TYPE_CHECKING:
    from prefloop.feedback.config import AggregationConfig
    from prefloop.judges.base import PointwiseVerdict

DEFAULT_SCALE = (1, 5)
#: Argilla's rating questions take integer values 0–10, at most 11 of them.
ARGILLA_RATING_RANGE = (0, 10)


class RateKind(TaskKind):
    name = "rate"
    outputs = (1, 1)
    answer_field = "rating"
    needs_scale = True
    judge_mode = POINTWISE
    counts_position_flips = False
    makes_pairs = True
    makes_sft = True
    combines_tasks = True
    agreement_level = "ordinal"
    key_help = "{lo}…{hi} = rating · s = skip · q = quit"
    argilla_question = "rating"
    argilla_question_type = "rating"

    # ---------------------------------------------------------------- answers
    def check(self, v: Any, generation_ids: list[int], *, scale: tuple[int, int] | None, allow_tie: bool, where: str) -> Any:
        lo, hi = scale or DEFAULT_SCALE
        if isinstance(v, bool) or (not isinstance(v, int) and not (isinstance(v, float) and v.is_integer())):
            raise InvalidAnswer(f"{where}: rating must be an integer from {lo} to {hi}, got {v!r}")
        if not lo <= int(v) <= hi:
            raise InvalidAnswer(f"{where}: rating {v} is outside the scale {lo}–{hi}")
        return int(v)

    # ---------------------------------------------------------------- aggregation
    @staticmethod
    def _means(tasks: list[TaskLabels]) -> dict[tuple[int, int | None], dict[int, tuple[float, str, list[str], int]]]:
        """(prompt, round) → generation → (mean rating, source, annotators, task id), humans first."""
        groups: dict[tuple[int, int | None], dict[int, tuple[float, str, list[str], int]]] = defaultdict(dict)
        for t in tasks:
            voters = t.voters()
            if not voters:
                continue
            mean = sum(float(lab.value["rating"]) for lab in voters) / len(voters)
            groups[(t.prompt_id, t.round_number)][t.generation_ids[0]] = (mean, voters[0].kind, [lab.annotator for lab in voters], t.task_id)
        return groups

    def preferences(self, tasks: list[TaskLabels], config: AggregationConfig) -> list[Preference]:
        """Per prompt and round: the best- vs the worst-rated output, when the gap reaches the margin."""
        scale_span = {t.task_id: (t.scale[1] - t.scale[0]) if t.scale else 4 for t in tasks}
        out = []
        for (prompt_id, round_number), gens in self._means(tasks).items():
            if len(gens) < 2:
                continue
            best = max(gens, key=lambda g: (gens[g][0], -g))
            worst = min(gens, key=lambda g: (gens[g][0], g))
            gap = gens[best][0] - gens[worst][0]
            if gap <= 0 or gap < config.rating_margin:
                continue
            sources = {gens[best][1], gens[worst][1]}
            annotators = sorted({*gens[best][2], *gens[worst][2]})
            out.append(Preference(
                prompt_id, round_number, best, worst, sources.pop() if len(sources) == 1 else MIXED, "rating",
                min(1.0, gap / scale_span[gens[best][3]]), len(annotators), annotators, [gens[best][3], gens[worst][3]],
            ))
        return out

    def sft_targets(self, tasks: list[TaskLabels], config: AggregationConfig, texts: TextsOf) -> list[SFTTarget]:
        """Outputs whose mean rating reaches ``sft_min_rating``, confidence = the mean's share of the scale."""
        rated: list[tuple[TaskLabels, float, list[Label]]] = []
        for t in tasks:
            voters = t.voters()
            if not voters:
                continue
            mean = sum(float(lab.value["rating"]) for lab in voters) / len(voters)
            if mean >= config.sft_min_rating:
                rated.append((t, mean, voters))
        if not rated:
            return []
        text = texts([t.generation_ids[0] for t, _, _ in rated])
        out = []
        for t, mean, voters in rated:
            lo, hi = t.scale or DEFAULT_SCALE
            out.append(SFTTarget(
                t.prompt_id, t.round_number, text[t.generation_ids[0]], voters[0].kind, "rating",
                (mean - lo) / (hi - lo), [lab.annotator for lab in voters], [t.task_id], t.generation_ids[0],
            ))
        return out

    def agreement_label(self, t: TaskLabels, value: dict[str, Any], consistent: bool = True) -> int:
        return int(value["rating"])

    # ---------------------------------------------------------------- judges
    def judge_answer(
        self, view: TaskView, verdicts: Sequence[Any], pairs: Sequence[tuple[int, int]] = (),
    ) -> dict[str, Any]:
        """The judge's score mapped onto the task's scale, rounded half up."""
        v: PointwiseVerdict = verdicts[0]
        rec: dict[str, Any] = {"rationale": v.rationale, "confidence": v.confidence, **spend([v])}
        if not v.ok:
            return {**rec, "status": "skipped", "value": None, "rationale": v.error, "meta": {"error": v.error, "cached": v.cached}}
        lo, hi = view.scale or DEFAULT_SCALE
        jlo, jhi = v.scale
        assert v.score is not None  # an ok verdict has its score
        score = lo + (float(v.score) - jlo) / (jhi - jlo) * (hi - lo)
        meta: dict[str, Any] = {"score": score, "judge_score": v.score, "judge_scale": list(v.scale), "cached": v.cached}
        if v.distribution:
            meta["distribution"] = v.distribution
        if v.disagreement is not None:
            meta["disagreement"] = v.disagreement
        if v.members:
            meta["members"] = v.members
        rating = min(hi, max(lo, round_half_up(score)))
        return {**rec, "status": "submitted", "value": {"rating": rating}, "meta": meta}

    def doubt(self, ok: list[dict[str, Any]], scale: tuple[int, int] | None) -> dict[str, float]:
        """The spread of the judges' scores, and 1 − their mean confidence."""
        out = {}
        lo, hi = scale or DEFAULT_SCALE
        unit = [(float((v["meta"] or {}).get("score", v["value"].get("rating"))) - lo) / (hi - lo) for v in ok]
        if len(unit) >= 2:
            out["disagreement"] = min(1.0, 2.0 * statistics.pstdev(unit))
        confs = [float(v["confidence"]) for v in ok if v["confidence"] is not None]
        if confs:
            out["low_margin"] = 1.0 - statistics.fmean(confs)
        return out

    # ---------------------------------------------------------------- scripted humans
    def best_from_scores(self, view: TaskView, scores: list[float], tie_tolerance: float) -> dict[str, Any] | None:
        """The score (a share of the scale, clipped to 0–1) as a rating."""
        lo, hi = view.scale or DEFAULT_SCALE
        share = min(1.0, max(0.0, float(scores[0])))
        return {"rating": lo + round(share * (hi - lo))}

    def plausible_mistake(self, view: TaskView, best: dict[str, Any] | None, rng: random.Random) -> dict[str, Any]:
        """One step off the right rating (any rating when it is unknown)."""
        lo, hi = view.scale or DEFAULT_SCALE
        if best is None:
            return {"rating": rng.randint(lo, hi)}
        near = [v for v in (best["rating"] - 1, best["rating"] + 1) if lo <= v <= hi]
        return {"rating": rng.choice(near)}

    # ---------------------------------------------------------------- terminal
    def on_key(self, key: str, view: TaskView, state: KeyState) -> dict[str, Any] | None:
        if key.isdigit():
            lo, hi = view.scale or DEFAULT_SCALE
            if lo <= int(key) <= hi:
                return {"rating": int(key)}
        return None

    # ---------------------------------------------------------------- Argilla
    def argilla_options(
        self, view: TaskView, *, default_scale: tuple[int, int], default_ties: bool,
    ) -> tuple[tuple[Any, ...], str]:
        lo, hi = view.scale or default_scale
        variant = "" if (lo, hi) == tuple(default_scale) else f"{lo}-{hi}"
        return tuple(range(lo, hi + 1)), variant

    def argilla_check_options(self, dataset: str, options: tuple[Any, ...]) -> None:
        lo, hi = ARGILLA_RATING_RANGE
        if options[0] < lo or options[-1] > hi:
            raise ConfigError(
                f"{dataset}: the rating scale {options[0]}–{options[-1]} cannot be shown in Argilla, whose rating "
                f"questions take integers {lo}–{hi}",
                hint="use a queue.rating_scale inside 0–10 (e.g. [1, 5]) for tasks meant for Argilla",
            )

    def argilla_main_question(self, options: tuple[Any, ...]) -> Any:
        import argilla as rg

        opts = list(options)
        return rg.RatingQuestion(
            self.argilla_question, values=opts, title=f"Rate the response ({opts[0]} = worst, {opts[-1]} = best)",
        )

    def argilla_suggestion(self, value: dict[str, Any], generation_ids: list[int], options: tuple[Any, ...],
                           fields: tuple[str, ...]) -> Any:
        if "rating" not in value:
            return None
        rating = as_int(value["rating"])
        return rating if rating in options else None


RATE = RateKind()
