"""compare: which of two outputs is better (or about the same).

Answer ``{"choice": generation_id}`` (one of the two shown) or ``{"choice": "tie"}``. Humans are
combined by majority (a split vote stays a disagreement); judges alone count only
position-consistent verdicts (an inconsistent one is a tie), weighted by their confidence.
"""

from __future__ import annotations

import random
import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from prefloop.errors import InvalidAnswer

from .base import (
    HUMAN,
    JUDGE,
    PAIRWISE,
    TIE,
    KeyState,
    Preference,
    TaskKind,
    TaskLabels,
    TaskView,
    as_int,
    pair_margins,
    pair_meta,
    spend,
)

if TYPE_CHECKING:
    from prefloop.feedback.config import AggregationConfig
    from prefloop.judges.base import PairwiseVerdict

#: Argilla labels of the two outputs (in task order).
LABEL_A, LABEL_B = "A", "B"
#: Position-relative labels: categories that mean the same across tasks (agreement).
FIRST, SECOND = "first", "second"


@dataclass(frozen=True)
class Outcome:
    """The combined verdict of one compare task."""

    task_id: int
    status: str  # "preferred" | "tie" | "disagreement" | "unlabelled"
    winner: int | None
    loser: int | None
    source: str | None
    confidence: float
    votes: dict[str, int]
    annotators: list[str]


class CompareKind(TaskKind):
    name = "compare"
    outputs = (2, 2)
    answer_field = "choice"
    allows_tie = True
    judge_mode = PAIRWISE
    makes_pairs = True
    agreement_level = "nominal"
    key_help = "1 = first is better · 2 = second is better · t = tie · s = skip · q = quit"
    argilla_question = "preference"
    argilla_question_type = "label_selection"

    _ARGILLA_LABELS: ClassVar[dict[str, str]] = {LABEL_A: "A is better", LABEL_B: "B is better", TIE: "About the same"}

    # ---------------------------------------------------------------- answers
    def check(self, v: Any, generation_ids: list[int], *, scale: tuple[int, int] | None, allow_tie: bool, where: str) -> Any:
        if v == TIE:
            if not allow_tie:
                raise InvalidAnswer(f"{where}: ties are not allowed for this task; choose one output")
            return TIE
        if isinstance(v, bool) or v not in generation_ids:
            raise InvalidAnswer(
                f"{where}: choice {v!r} is not one of the shown outputs {generation_ids}",
                hint="send the generation id of the better output, or 'tie'",
            )
        return int(v)

    # ---------------------------------------------------------------- aggregation
    def outcome(self, t: TaskLabels) -> Outcome:
        """Majority of humans if any answered, else the position-consistent judges' vote."""
        humans = t.by(HUMAN)
        voters, source = (humans, HUMAN) if humans else (t.by(JUDGE), JUDGE)
        if not voters:
            return Outcome(t.task_id, "unlabelled", None, None, None, 0.0, {}, [])
        # An inconsistent judge verdict (it flipped under position swap) counts as a tie.
        choices = [str(lab.value["choice"]) if lab.consistent else TIE for lab in voters]
        counter = Counter(choices) if len(choices) > 1 else None  # one voter: most tasks, no Counter
        votes: dict[str, int] = counter if counter is not None else {choices[0]: 1}
        names = [lab.annotator for lab in voters]
        ranked = counter.most_common() if counter is not None else [(choices[0], 1)]
        top, n_top = ranked[0]
        if len(ranked) > 1 and ranked[1][1] == n_top:
            return Outcome(t.task_id, "disagreement", None, None, source, n_top / len(voters), dict(votes), names)
        share = n_top / len(voters)
        if source == JUDGE:
            confs = [lab.confidence for lab, c in zip(voters, choices, strict=True) if c == top and lab.confidence is not None]
            if confs:
                share *= sum(confs) / len(confs)
        if top == TIE:
            return Outcome(t.task_id, "tie", None, None, source, share, dict(votes), names)
        winner = int(top)
        loser = next(g for g in t.generation_ids if g != winner)
        return Outcome(t.task_id, "preferred", winner, loser, source, share, dict(votes), names)

    def preferences(self, tasks: list[TaskLabels], config: AggregationConfig) -> list[Preference]:
        out = []
        for t in tasks:
            o = self.outcome(t)
            if o.status == "preferred":
                assert o.winner is not None and o.loser is not None and o.source is not None
                method = "majority" if o.source == HUMAN else "judge-panel"
                out.append(Preference(
                    t.prompt_id, t.round_number, o.winner, o.loser, o.source, method, o.confidence,
                    len(o.annotators), o.annotators, [t.task_id],
                ))
        return out

    def position_label(self, t: TaskLabels, value: dict[str, Any]) -> str:
        """``first`` / ``second`` / ``tie`` in the task's stored order."""
        choice = value["choice"]
        if choice == TIE:
            return TIE
        return FIRST if int(choice) == t.generation_ids[0] else SECOND

    def agreement_label(self, t: TaskLabels, value: dict[str, Any], consistent: bool = True) -> str:
        return self.position_label(t, value) if consistent else TIE

    # ---------------------------------------------------------------- judges
    def judge_pairs(self, n_outputs: int) -> list[tuple[int, int]]:
        return [(0, 1)]

    def judge_answer(
        self, view: TaskView, verdicts: Sequence[Any], pairs: Sequence[tuple[int, int]] = (),
    ) -> dict[str, Any]:
        """The winner's generation id or "tie" (an inconsistent verdict is a tie)."""
        v: PairwiseVerdict = verdicts[0]
        gens = view.generation_ids
        meta = {**pair_meta(v), "positions": {"A": gens[0], "B": gens[1]}}
        rec: dict[str, Any] = {"meta": meta, "rationale": v.rationale, "confidence": v.confidence, **spend([v])}
        if not v.ok:
            return {**rec, "status": "skipped", "value": None, "rationale": v.error, "meta": {**meta, "error": v.error}, "confidence": None}
        winner = v.winner
        if winner == TIE and not view.allow_tie:
            if not v.consistent:
                reason = "inconsistent under position swap, and this task allows no tie"
                return {**rec, "status": "skipped", "value": None, "rationale": reason, "meta": {**meta, "error": reason}}
            winner = "A" if v.prob_a >= 0.5 else "B"  # the judge leaned this way, with low confidence
        choice: int | str = TIE if winner == TIE else gens[0 if winner == "A" else 1]
        return {**rec, "status": "submitted", "value": {"choice": choice}}

    def doubt(self, ok: list[dict[str, Any]], scale: tuple[int, int] | None) -> dict[str, float]:
        out = {}
        choices = [str(v["value"].get("choice")) for v in ok]
        if len(choices) >= 2:
            out["disagreement"] = 1.0 - Counter(choices).most_common(1)[0][1] / len(choices)
        margins = pair_margins([v["meta"] or {} for v in ok])
        if margins:
            out["low_margin"] = statistics.fmean(margins)
        return out

    def position_checks(self, meta: dict[str, Any]) -> list[bool]:
        if "consistent" in meta and meta.get("winner") is not None:
            return [bool(meta["consistent"])]
        return []

    # ---------------------------------------------------------------- scripted humans
    def best_from_scores(self, view: TaskView, scores: list[float], tie_tolerance: float) -> dict[str, Any] | None:
        (a, sa), (b, sb) = zip(view.generation_ids, scores, strict=True)
        if abs(sa - sb) <= tie_tolerance:
            return {"choice": TIE} if view.allow_tie else None
        return {"choice": a if sa > sb else b}

    def plausible_mistake(self, view: TaskView, best: dict[str, Any] | None, rng: random.Random) -> dict[str, Any]:
        """The other output (a random one when the right answer is a tie or unknown)."""
        ids = view.generation_ids
        if best is None or best["choice"] == TIE:
            return {"choice": rng.choice(ids)}
        return {"choice": ids[1] if best["choice"] == ids[0] else ids[0]}

    # ---------------------------------------------------------------- terminal
    def on_key(self, key: str, view: TaskView, state: KeyState) -> dict[str, Any] | None:
        if key in ("1", "2"):
            return {"choice": view.generation_ids[int(key) - 1]}
        if key == "t" and view.allow_tie:
            return {"choice": TIE}
        return None

    # ---------------------------------------------------------------- Argilla
    def argilla_fields(self, n_outputs: int) -> tuple[str, ...]:
        return ("response_a", "response_b")

    def argilla_options(
        self, view: TaskView, *, default_scale: tuple[int, int], default_ties: bool,
    ) -> tuple[tuple[Any, ...], str]:
        opts = (LABEL_A, LABEL_B, TIE) if view.allow_tie else (LABEL_A, LABEL_B)
        variant = "" if view.allow_tie == default_ties else ("ties" if view.allow_tie else "no-ties")
        return opts, variant

    def argilla_main_question(self, options: tuple[Any, ...]) -> Any:
        import argilla as rg

        return rg.LabelQuestion(
            self.argilla_question, labels={o: self._ARGILLA_LABELS[o] for o in options}, title="Which response is better?",
        )

    def argilla_suggestion(self, value: dict[str, Any], generation_ids: list[int], options: tuple[Any, ...],
                           fields: tuple[str, ...]) -> Any:
        if "choice" not in value:
            return None
        if value["choice"] == TIE:
            return TIE if TIE in options else None
        choice = as_int(value["choice"])
        return {generation_ids[0]: LABEL_A, generation_ids[1]: LABEL_B}.get(choice) if choice is not None else None

    def from_argilla(self, main: Any, generation_ids: list[int], fields: tuple[str, ...]) -> dict[str, Any]:
        if main == TIE:
            return {"choice": TIE}
        if main not in (LABEL_A, LABEL_B):
            raise InvalidAnswer(f"label {main!r} is not one of A, B, tie")
        return {"choice": generation_ids[0 if main == LABEL_A else 1]}


COMPARE = CompareKind()
