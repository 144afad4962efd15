"""rank: order several outputs (2 to 64), best first.

Answer ``{"ranking": [generation_id, ...]}``, a permutation of the shown outputs. Rankings
combine by Borda count (humans first); the pair is top vs bottom. A judge compares every pair
and orders the outputs by wins (a tie is half a win).
"""

from __future__ import annotations

import itertools
import random
import statistics
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from prefloop.errors import InvalidAnswer

from .base import (
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


class RankKind(TaskKind):
    name = "rank"
    outputs = (2, 64)
    answer_field = "ranking"
    judge_mode = PAIRWISE
    makes_pairs = True
    key_help = "press the outputs' numbers best first · u = undo · s = skip · q = quit"
    argilla_question = "ranking"
    argilla_question_type = "ranking"

    # ---------------------------------------------------------------- answers
    def check(self, v: Any, generation_ids: list[int], *, scale: tuple[int, int] | None, allow_tie: bool, where: str) -> Any:
        if not isinstance(v, list) or sorted(map(_id_or_never, v)) != sorted(generation_ids) or len(v) != len(generation_ids):
            raise InvalidAnswer(
                f"{where}: ranking {v!r} must be a permutation of the shown outputs {generation_ids}, best first"
            )
        return [int(x) for x in v]

    # ---------------------------------------------------------------- aggregation
    def preferences(self, tasks: list[TaskLabels], config: AggregationConfig) -> list[Preference]:
        """Per task: Borda count over its rankings; chosen = top, rejected = bottom (none on a flat count)."""
        out = []
        for t in tasks:
            voters = t.voters()
            if not voters:
                continue
            n = len(t.generation_ids)
            points: Counter[int] = Counter()
            for lab in voters:
                for pos, g in enumerate(lab.value["ranking"]):
                    points[int(g)] += n - 1 - pos
            order = sorted(t.generation_ids, key=lambda g: (-points[g], t.generation_ids.index(g)))
            if points[order[0]] == points[order[-1]]:
                continue
            top_votes = sum(1 for lab in voters if int(lab.value["ranking"][0]) == order[0])
            out.append(Preference(
                t.prompt_id, t.round_number, order[0], order[-1], voters[0].kind, "ranking", top_votes / len(voters),
                len(voters), [lab.annotator for lab in voters], [t.task_id],
            ))
        return out

    # ---------------------------------------------------------------- judges
    def judge_pairs(self, n_outputs: int) -> list[tuple[int, int]]:
        return list(itertools.combinations(range(n_outputs), 2))

    def judge_answer(
        self, view: TaskView, verdicts: Sequence[Any], pairs: Sequence[tuple[int, int]] = (),
    ) -> dict[str, Any]:
        """Outputs ordered by pairwise wins (a tie is half a win), then by summed P(better)."""
        gens = view.generation_ids
        pair_meta_ = [{"a": gens[i], "b": gens[j], **pair_meta(v)} for (i, j), v in zip(pairs, verdicts, strict=True)]
        rec: dict[str, Any] = {**spend(verdicts), "rationale": None}
        failed = [v.error for v in verdicts if not v.ok]
        if failed:
            return {**rec, "status": "skipped", "value": None, "rationale": "; ".join(failed), "confidence": None,
                    "meta": {"error": "; ".join(failed), "pairs": pair_meta_}}
        wins = {g: 0.0 for g in gens}
        strength = {g: 0.0 for g in gens}
        for (i, j), v in zip(pairs, verdicts, strict=True):
            a, b = gens[i], gens[j]
            wins[a] += 1.0 if v.winner == "A" else 0.5 if v.winner == TIE else 0.0
            wins[b] += 1.0 if v.winner == "B" else 0.5 if v.winner == TIE else 0.0
            strength[a] += v.prob_a
            strength[b] += 1.0 - v.prob_a
        ranking = sorted(gens, key=lambda g: (-wins[g], -strength[g], gens.index(g)))
        return {
            **rec, "status": "submitted", "value": {"ranking": ranking},
            "confidence": sum(v.confidence for v in verdicts) / len(verdicts),
            "meta": {"consistent": all(v.consistent for v in verdicts), "pairs": pair_meta_, "cached": all(v.cached for v in verdicts)},
        }

    def doubt(self, ok: list[dict[str, Any]], scale: tuple[int, int] | None) -> dict[str, float]:
        """Judges that disagree on the top output; how close their pairwise calls were."""
        out = {}
        tops = [str(v["value"]["ranking"][0]) for v in ok if v["value"].get("ranking")]
        if len(tops) >= 2:
            out["disagreement"] = 1.0 - Counter(tops).most_common(1)[0][1] / len(tops)
        margins = pair_margins([p for v in ok for p in (v["meta"] or {}).get("pairs", [])])
        if margins:
            out["low_margin"] = statistics.fmean(margins)
        return out

    def position_checks(self, meta: dict[str, Any]) -> list[bool]:
        return [bool(p["consistent"]) for p in meta.get("pairs") or [] if "consistent" in p and p.get("winner") is not None]

    # ---------------------------------------------------------------- scripted humans
    def best_from_scores(self, view: TaskView, scores: list[float], tie_tolerance: float) -> dict[str, Any] | None:
        ranked = sorted(zip(scores, view.generation_ids, strict=True), key=lambda p: -p[0])
        return {"ranking": [g for _, g in ranked]}

    def plausible_mistake(self, view: TaskView, best: dict[str, Any] | None, rng: random.Random) -> dict[str, Any]:
        """Two neighbours of the right order swapped (a shuffle when it is unknown)."""
        order = list(best["ranking"]) if best else list(view.generation_ids)
        if best is None:
            rng.shuffle(order)
            return {"ranking": order}
        i = rng.randrange(len(order) - 1)
        order[i], order[i + 1] = order[i + 1], order[i]
        return {"ranking": order}

    # ---------------------------------------------------------------- terminal
    def on_key(self, key: str, view: TaskView, state: KeyState) -> dict[str, Any] | None:
        """Digits pick outputs best first, ``u`` takes the last pick back; done when all are picked."""
        ids, order = view.generation_ids, state.picked
        if key == "u" and order:
            order.pop()
        elif key.isdigit() and 1 <= int(key) <= len(ids) and ids[int(key) - 1] not in order:
            order.append(ids[int(key) - 1])
        state.say("ranking so far: " + " > ".join(str(ids.index(g) + 1) for g in order))
        return {"ranking": list(order)} if len(order) == len(ids) else None

    # ---------------------------------------------------------------- Argilla
    def argilla_fields(self, n_outputs: int) -> tuple[str, ...]:
        return tuple(f"response_{i}" for i in range(1, n_outputs + 1))

    def argilla_options(
        self, view: TaskView, *, default_scale: tuple[int, int], default_ties: bool,
    ) -> tuple[tuple[Any, ...], str]:
        n = len(view.generation_ids)
        return self.argilla_fields(n), str(n)

    def argilla_main_question(self, options: tuple[Any, ...]) -> Any:
        import argilla as rg

        return rg.RankingQuestion(
            self.argilla_question, values={o: o.replace("_", " ").capitalize() for o in options},
            title="Rank the responses, best first",
        )

    def argilla_suggestion(self, value: dict[str, Any], generation_ids: list[int], options: tuple[Any, ...],
                           fields: tuple[str, ...]) -> Any:
        """The ranking as the record's field names, only when it orders every output of the task."""
        if not isinstance(value.get("ranking"), list):
            return None
        order = [as_int(g) for g in value["ranking"]]
        if sorted(order, key=str) != sorted(generation_ids, key=str):
            return None
        return [fields[generation_ids.index(g)] for g in order]  # type: ignore[arg-type]

    def from_argilla(self, main: Any, generation_ids: list[int], fields: tuple[str, ...]) -> dict[str, Any]:
        items = [(v["rank"], v["value"]) if isinstance(v, dict) else (i + 1, v) for i, v in enumerate(main)]
        ranks = [r for r, _ in items]
        if len(set(ranks)) != len(ranks):
            raise InvalidAnswer("the ranking puts several responses at the same rank; prefloop needs a strict order")
        order = [v for _, v in sorted(items, key=lambda x: x[0])]
        unknown = [v for v in order if v not in fields]
        if unknown:
            raise InvalidAnswer(f"ranking value(s) {unknown} are not responses of this record")
        return {"ranking": [generation_ids[fields.index(v)] for v in order]}


def _id_or_never(x: Any) -> int:
    if isinstance(x, bool) or not isinstance(x, int):
        return -1  # never equal to a generation id: makes the permutation check fail cleanly
    return x


RANK = RankKind()
