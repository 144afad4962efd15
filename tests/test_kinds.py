"""The task-kind registry: each kind's answers, aggregation, judge mapping, selection signals,
terminal keys, scripted answers and Argilla mapping; a plug-in kind that goes from the queue to an
exported dataset; and no kind-name branches left outside prefloop/kinds."""

from __future__ import annotations

import random
import re
from pathlib import Path

import pytest

from prefloop.errors import ConfigError, DataError, InvalidAnswer, QueueError
from prefloop.feedback.config import AggregationConfig
from prefloop.judges.base import PairwiseVerdict, PointwiseVerdict
from prefloop.kinds import (
    COMPARE,
    EDIT,
    KINDS,
    RANK,
    RATE,
    TIE,
    KeyState,
    Preference,
    TaskKind,
    TaskLabels,
    TaskView,
    get_kind,
    kind_names,
    register_kind,
    unregister_kind,
)
from prefloop.kinds.base import Label

REPO = Path(__file__).resolve().parent.parent
CFG = AggregationConfig(min_confidence=0)


def labels(kind: str, gens: list[int], *answers: tuple[str, str, dict], task_id: int = 1, prompt_id: int = 7,
           scale: tuple[int, int] | None = None, **consistent: bool) -> TaskLabels:
    """A task with labels ``(annotator, human|judge, value)``; ``name=False`` marks a flipped judge verdict."""
    t = TaskLabels(task_id, kind, prompt_id, None, 3, gens, scale)
    t.labels = [Label(a, who, v, 0.8 if who == "judge" else None, consistent.get(a, True)) for a, who, v in answers]
    return t


# ------------------------------------------------------------------------------------------ the registry
def test_registry_lists_the_built_in_kinds_and_names_unknown_ones() -> None:
    assert kind_names() == ["compare", "rate", "rank", "edit"]
    assert [KINDS[n] for n in kind_names()] == [COMPARE, RATE, RANK, EDIT]
    assert get_kind("rank") is RANK
    from prefloop.feedback.store.models import TaskKind as StoredName

    assert get_kind(StoredName.COMPARE) is COMPARE  # the store's enum of built-in names
    with pytest.raises(QueueError, match="unknown task kind 'judge'") as err:
        get_kind("judge")
    assert err.value.hint == "use one of compare, rate, rank, edit" and "\n" not in str(err.value)


def test_shapes() -> None:
    assert [(k.name, k.outputs, k.answer_field, k.needs_scale, k.allows_tie) for k in (COMPARE, RATE, RANK, EDIT)] == [
        ("compare", (2, 2), "choice", False, True), ("rate", (1, 1), "rating", True, False),
        ("rank", (2, 64), "ranking", False, False), ("edit", (1, 1), "text", False, False),
    ]
    assert [k.judge_mode for k in (COMPARE, RATE, RANK, EDIT)] == ["pairwise", "pointwise", "pairwise", None]
    assert RANK.outputs_text() == "2–64" and COMPARE.outputs_text() == "2"


def test_register_kind_refuses_what_would_break_the_store() -> None:
    class Nameless(TaskKind):
        outputs = (1, 1)
        answer_field = "x"

    for name, outputs, why in [
        ("compare", (1, 1), "already registered"), ("Bad Name", (1, 1), "lowercase word"),
        ("x" * 17, (1, 1), "at most 16"), ("zero", (0, 1), "1 ≤ least ≤ most"), ("upside", (3, 2), "1 ≤ least ≤ most"),
    ]:
        kind = type("K", (Nameless,), {"name": name, "outputs": outputs})()
        with pytest.raises(ValueError, match=why):
            register_kind(kind)
    with pytest.raises(ValueError, match="cannot be unregistered"):
        unregister_kind("rate")
    assert kind_names() == ["compare", "rate", "rank", "edit"]


# ------------------------------------------------------------------------------------------ answers
@pytest.mark.parametrize(("kind", "value", "clean"), [
    (COMPARE, {"choice": 11}, {"choice": 11}),
    (COMPARE, {"choice": 11.0}, {"choice": 11}),
    (COMPARE, {"choice": "tie"}, {"choice": "tie"}),
    (RATE, {"rating": 3}, {"rating": 3}),
    (RATE, {"rating": 4.0}, {"rating": 4}),
    (RANK, {"ranking": [12, 11]}, {"ranking": [12, 11]}),
    (EDIT, {"text": "the cat"}, {"text": "the cat"}),
])
def test_valid_answers_are_normalised(kind: TaskKind, value: dict, clean: dict) -> None:
    assert kind.validate(value, [11, 12] if kind.outputs[1] > 1 else [11], scale=(1, 5)) == clean


@pytest.mark.parametrize(("kind", "value", "allow_tie", "message"), [
    (COMPARE, ["tie"], True, "the answer must be an object, got list"),
    (COMPARE, {"rating": 3}, True, "a compare answer needs the field 'choice'"),
    (COMPARE, {"choice": 11, "note": 1}, True, r"unexpected field\(s\) \['note'\]"),
    (COMPARE, {"choice": 13}, True, "choice 13 is not one of the shown outputs"),
    (COMPARE, {"choice": True}, True, "choice True is not one of the shown outputs"),
    (COMPARE, {"choice": "tie"}, False, "ties are not allowed"),
    (RATE, {"rating": 6}, True, "rating 6 is outside the scale 1–5"),
    (RATE, {"rating": 2.5}, True, "rating must be an integer from 1 to 5"),
    (RATE, {"rating": True}, True, "rating must be an integer"),
    (RANK, {"ranking": [11, 11]}, True, "must be a permutation"),
    (RANK, {"ranking": [11, True]}, True, "must be a permutation"),
    (EDIT, {"text": " \u200b "}, True, "the edited text is empty"),
    (EDIT, {"text": "a\x00b"}, True, "NUL"),
    (EDIT, {"text": 5}, True, "must be text, got int"),
])
def test_invalid_answers_are_refused_with_the_reason(kind: TaskKind, value: object, allow_tie: bool, message: str) -> None:
    ids = [11] if kind.outputs == (1, 1) else [11, 12]
    with pytest.raises(InvalidAnswer, match=message) as err:
        kind.validate(value, ids, scale=(1, 5), allow_tie=allow_tie, where="task 9")
    assert str(err.value).startswith("task 9: ")


# ------------------------------------------------------------------------------------------ aggregation
def test_compare_majority_disagreement_and_consistent_judges() -> None:
    humans = labels("compare", [11, 12], ("h1", "human", {"choice": 12}), ("h2", "human", {"choice": 12}),
                    ("h3", "human", {"choice": 11}), ("j", "judge", {"choice": 11}))
    split = labels("compare", [21, 22], ("h1", "human", {"choice": 21}), ("h2", "human", {"choice": 22}), task_id=2)
    judges = labels("compare", [31, 32], ("j1", "judge", {"choice": 31}), ("j2", "judge", {"choice": 31}),
                    ("j3", "judge", {"choice": 32}), task_id=3, j3=False)
    prefs = COMPARE.preferences([humans, split, judges], CFG)
    assert [(p.task_ids, p.chosen_id, p.rejected_id, p.source, p.method) for p in prefs] == [
        ([1], 12, 11, "human", "majority"), ([3], 31, 32, "judge", "judge-panel"),
    ]
    assert prefs[0].confidence == pytest.approx(2 / 3)
    assert prefs[1].confidence == pytest.approx(2 / 3 * 0.8)  # the share, times the winners' confidence
    assert COMPARE.outcome(split).status == "disagreement"
    assert COMPARE.sft_targets([humans], CFG, lambda ids: {}) == []
    assert COMPARE.agreement_label(humans, {"choice": 12}) == "second"
    assert COMPARE.agreement_label(humans, {"choice": 12}, consistent=False) == TIE


def test_rank_borda_top_vs_bottom() -> None:
    t = labels("rank", [1, 2, 3], ("h1", "human", {"ranking": [2, 1, 3]}), ("h2", "human", {"ranking": [1, 2, 3]}),
               ("h3", "human", {"ranking": [2, 3, 1]}))
    flat = labels("rank", [4, 5], ("h1", "human", {"ranking": [4, 5]}), ("h2", "human", {"ranking": [5, 4]}), task_id=2)
    (p,) = RANK.preferences([t, flat], CFG)
    assert (p.chosen_id, p.rejected_id, p.method, p.source, p.n_annotators) == (2, 3, "ranking", "human", 3)
    assert p.confidence == pytest.approx(2 / 3)


def test_rate_best_vs_worst_across_tasks_and_sft_targets() -> None:
    tasks = [
        labels("rate", [1], ("h", "human", {"rating": 5}), task_id=1, scale=(1, 5)),
        labels("rate", [2], ("h", "human", {"rating": 3}), task_id=2, scale=(1, 5)),
        labels("rate", [3], ("j", "judge", {"rating": 1}), task_id=3, scale=(1, 5)),
        labels("rate", [4], ("h", "human", {"rating": 5}), task_id=4, prompt_id=8),  # alone: no pair
    ]
    (p,) = RATE.preferences(tasks, CFG)
    assert (p.chosen_id, p.rejected_id, p.source, p.method, p.task_ids) == (1, 3, "mixed", "rating", [1, 3])
    assert p.confidence == 1.0
    assert RATE.preferences(tasks, AggregationConfig(min_confidence=0, rating_margin=5)) == []
    def texts(ids):
        return {g: f"output {g}" for g in ids}
    targets = RATE.sft_targets(tasks, AggregationConfig(sft_min_rating=4), texts)
    assert [(t.generation_id, t.text, t.method, t.confidence) for t in targets] == [(1, "output 1", "rating", 1.0), (4, "output 4", "rating", 1.0)]
    assert RATE.agreement_label(tasks[0], {"rating": 5}) == 5


def test_edit_targets_are_the_distinct_corrections() -> None:
    t = labels("edit", [1], ("h1", "human", {"text": "The cat."}), ("h2", "human", {"text": " The cat. "}),
               ("h3", "human", {"text": "A cat."}), ("j", "judge", {"text": "ignored: humans answered"}))
    targets = EDIT.sft_targets([t], CFG, lambda ids: pytest.fail("edit needs no output texts"))
    assert [(x.text, x.annotators, x.method, x.source) for x in targets] == [
        ("The cat.", ["h1"], "edit", "human"), ("A cat.", ["h3"], "edit", "human"),
    ]
    assert EDIT.preferences([t], CFG) == []


# ------------------------------------------------------------------------------------------ judges
def pair(winner: str, p: float, consistent: bool = True, **kw: object) -> PairwiseVerdict:
    return PairwiseVerdict(winner=winner, prob_a=p, consistent=consistent, prompt_tokens=10, cost=0.5, latency_s=0.1, **kw)


def test_compare_judge_answer() -> None:
    view = TaskView([11, 12], ["a", "b"], None, allow_tie=True)
    rec = COMPARE.judge_answer(view, [pair("B", 0.2, rationale="B is right")])
    assert rec["status"] == "submitted" and rec["value"] == {"choice": 12} and rec["rationale"] == "B is right"
    assert rec["confidence"] == pytest.approx(0.6) and rec["meta"]["positions"] == {"A": 11, "B": 12}
    assert (rec["prompt_tokens"], rec["cost"], rec["duration_s"]) == (10, 0.5, 0.1)
    assert COMPARE.judge_answer(view, [pair("tie", 0.5)])["value"] == {"choice": "tie"}
    no_tie = TaskView([11, 12], ["a", "b"], None, allow_tie=False)
    assert COMPARE.judge_answer(no_tie, [pair("tie", 0.6)])["value"] == {"choice": 11}  # leaned to A
    flipped = COMPARE.judge_answer(no_tie, [pair("tie", 0.5, consistent=False)])
    assert flipped["status"] == "skipped" and "allows no tie" in flipped["meta"]["error"]
    failed = COMPARE.judge_answer(view, [PairwiseVerdict.failed("HTTP 500")])
    assert (failed["status"], failed["value"], failed["rationale"], failed["confidence"]) == ("skipped", None, "HTTP 500", None)
    assert COMPARE.judge_pairs(2) == [(0, 1)]


def test_rate_judge_answer_maps_the_score_onto_the_task_scale() -> None:
    v = PointwiseVerdict(score=4.0, confidence=0.7, scale=(1, 5))
    rec = RATE.judge_answer(TaskView([5], ["x"], (1, 10)), [v])
    assert rec["meta"]["score"] == pytest.approx(7.75) and rec["value"] == {"rating": 8} and rec["confidence"] == 0.7
    assert RATE.judge_answer(TaskView([5], ["x"], (1, 10)), [PointwiseVerdict(score=2.5, scale=(1, 4))])["value"] == {"rating": 6}
    failed = RATE.judge_answer(TaskView([5], ["x"], None), [PointwiseVerdict.failed("timeout")])
    assert failed["status"] == "skipped" and failed["meta"] == {"error": "timeout", "cached": False}


def test_rank_judge_answer_orders_by_wins() -> None:
    view = TaskView([1, 2, 3], ["a", "b", "c"])
    pairs = RANK.judge_pairs(3)
    assert pairs == [(0, 1), (0, 2), (1, 2)]
    rec = RANK.judge_answer(view, [pair("B", 0.1), pair("tie", 0.5), pair("A", 0.8)], pairs)
    assert rec["value"] == {"ranking": [2, 3, 1]} and rec["meta"]["consistent"] is True  # 1 and 3 tie on wins; 3 is stronger
    assert [(p["a"], p["b"], p["winner"]) for p in rec["meta"]["pairs"]] == [(1, 2, "B"), (1, 3, "tie"), (2, 3, "A")]
    failed = RANK.judge_answer(view, [pair("A", 0.9), PairwiseVerdict.failed("boom"), pair("A", 0.9)], pairs)
    assert failed["status"] == "skipped" and failed["meta"]["error"] == "boom"


def test_edit_has_no_judge_answer() -> None:
    assert EDIT.judge_mode is None and EDIT.judge_pairs(1) == []
    with pytest.raises(NotImplementedError, match="judges do not answer edit tasks"):
        EDIT.judge_answer(TaskView([1], ["x"]), [])


def test_selection_signals_of_rank_and_edit() -> None:
    def ok(top, *probs):
        return {"status": "submitted", "value": {"ranking": [top, 0]}, "confidence": None,
                                  "meta": {"pairs": [{"prob_a": p} for p in probs]}}
    sig = RANK.signals([ok(1, 0.5, 1.0), ok(2, 0.75)], None)
    assert sig["disagreement"] == 0.5 and sig["low_margin"] == pytest.approx((1.0 + 0.0 + 0.5) / 3)
    assert RANK.position_checks({"pairs": [{"consistent": True, "winner": "A"}, {"consistent": False, "winner": "tie"},
                                           {"consistent": False, "winner": None}]}) == [True, False]
    assert COMPARE.position_checks({"consistent": False, "winner": "A"}) == [False]
    assert RATE.position_checks({"consistent": False}) == []
    failed = {"status": "skipped", "value": {}, "meta": {"error": "x"}, "confidence": None}
    assert EDIT.signals([failed], None) == {"failure": 1.0, "inconsistency": 0.0, "disagreement": 0.0, "low_margin": 0.0}
    assert EDIT.signals([], None) == {}


# ------------------------------------------------------------------------------------------ terminal
def keys(kind: TaskKind, view: TaskView, pressed: str) -> tuple[dict | None, list[str]]:
    said: list[str] = []
    state = KeyState(read_text=lambda initial: initial.upper(), say=said.append)
    result = None
    for k in pressed:
        result = kind.on_key(k, view, state)
        if result is not None:
            break
    return result, said


def test_terminal_keys() -> None:
    two = TaskView([11, 12], ["a", "b"], None, allow_tie=False)
    assert keys(COMPARE, two, "x2") == ({"choice": 12}, [])
    assert keys(COMPARE, two, "t")[0] is None  # no tie on this task
    assert keys(COMPARE, TaskView([11, 12], ["a", "b"]), "t")[0] == {"choice": "tie"}
    assert keys(RATE, TaskView([5], ["x"], (1, 3)), "904")[0] is None and keys(RATE, TaskView([5], ["x"], (1, 3)), "93")[0] == {"rating": 3}
    ranking, said = keys(RANK, TaskView([7, 8, 9], ["a", "b", "c"]), "22u3x12")
    assert ranking == {"ranking": [9, 7, 8]}
    assert said[:3] == ["ranking so far: 2", "ranking so far: 2", "ranking so far: "] and said[-1] == "ranking so far: 3 > 1 > 2"
    assert keys(EDIT, TaskView([5], ["teh cat"]), "xe")[0] == {"text": "TEH CAT"}
    assert RATE.keys_line((0, 9)) == "0…9 = rating · s = skip · q = quit"
    assert COMPARE.keys_line(None).startswith("1 = first is better")


# ------------------------------------------------------------------------------------------ scripted humans
def test_scripted_best_answers_and_mistakes() -> None:
    scores = {11: 0.9, 12: 0.2, 13: 0.5}.get
    def score(g, text):
        return scores(g)
    def no_ref():
        return pytest.fail("only edit tasks read the reference")
    assert COMPARE.best_answer(TaskView([12, 11], ["b", "a"]), score, no_ref) == {"choice": 11}
    assert COMPARE.best_answer(TaskView([12, 14], ["b", "d"]), score, no_ref) is None  # 14 has no score
    assert RATE.best_answer(TaskView([13], ["c"], (1, 5)), score, no_ref) == {"rating": 3}
    assert RANK.best_answer(TaskView([12, 13, 11], ["b", "c", "a"]), score, no_ref) == {"ranking": [11, 13, 12]}
    assert EDIT.best_answer(TaskView([1], ["teh"]), score, lambda: "the") == {"text": "the"}
    assert EDIT.best_answer(TaskView([1], ["teh"]), score, lambda: None) is None
    rng = random.Random(0)
    assert COMPARE.plausible_mistake(TaskView([11, 12]), {"choice": 11}, rng) == {"choice": 12}
    assert RATE.plausible_mistake(TaskView([1], scale=(1, 5)), {"rating": 5}, rng) == {"rating": 4}
    swapped = RANK.plausible_mistake(TaskView([1, 2, 3]), {"ranking": [1, 2, 3]}, rng)["ranking"]
    assert sorted(swapped) == [1, 2, 3] and sum(a != b for a, b in zip(swapped, [1, 2, 3], strict=False)) == 2
    assert EDIT.plausible_mistake(TaskView([1], ["  "]), None, rng) == {"text": "(no answer)"}


def test_scripted_humans_answer_through_the_kind_of_the_served_task() -> None:
    """prefloop.sim's oracle and mistakes are the kind's, fed the task as the API served it
    (display order, scale, whether a tie is allowed, the reference for an edit)."""
    from prefloop.sim.humans import ScoreOracle, SimTask, answer_like_human

    def task(kind: str, cands: list[tuple[int, str]], scale=None, tie=True) -> SimTask:
        return SimTask(1, kind, "p", cands, scale, tie)

    by_text = ScoreOracle(lambda t, g, text: {"good": 0.9, "fine": 0.5, "bad": 0.1}.get(text), lambda t: f"ref {t.ids[0]}")
    assert task("rate", [(5, "fine")], (1, 4)).view == TaskView([5], ["fine"], (1, 4), True)
    assert by_text(task("compare", [(8, "bad"), (3, "good")])) == {"choice": 3}
    assert by_text(task("compare", [(8, "fine"), (3, "fine")])) == {"choice": "tie"}
    assert by_text(task("compare", [(8, "fine"), (3, "fine")], tie=False)) is None
    assert by_text(task("compare", [(8, "?"), (3, "good")])) is None  # a score it does not know
    assert by_text(task("rate", [(5, "good")], (0, 10))) == {"rating": 9}
    assert by_text(task("rank", [(1, "fine"), (2, "bad"), (3, "good")])) == {"ranking": [3, 1, 2]}
    assert by_text(task("edit", [(4, "teh cat")])) == {"text": "ref 4"}
    assert ScoreOracle(lambda t, g, text: 1.0)(task("edit", [(4, "teh cat")])) is None  # no reference
    with pytest.raises(QueueError, match="unknown task kind 'judge'"):
        by_text(task("judge", [(4, "x")]))

    served = task("rank", [(1, "fine"), (2, "bad"), (3, "good")])
    best = {"ranking": [3, 1, 2]}
    assert answer_like_human(served, best, 1.0, random.Random(0)) == best
    rng = random.Random(7)
    rng.random()  # answer_like_human first draws whether to be right
    assert answer_like_human(served, best, 0.0, random.Random(7)) == RANK.plausible_mistake(served.view, best, rng)
    assert answer_like_human(task("edit", [(4, " ")]), None, 1.0, random.Random(0)) == {"text": "(no answer)"}


# ------------------------------------------------------------------------------------------ Argilla
def test_argilla_mapping() -> None:
    view = TaskView([11, 12], allow_tie=True)
    assert COMPARE.argilla_fields(2) == ("response_a", "response_b") and RANK.argilla_fields(3) == ("response_1", "response_2", "response_3")
    assert EDIT.argilla_fields(1) == RATE.argilla_fields(1) == ("response",)
    assert COMPARE.argilla_options(view, default_scale=(1, 5), default_ties=True) == (("A", "B", "tie"), "")
    assert COMPARE.argilla_options(TaskView([1, 2], allow_tie=False), default_scale=(1, 5), default_ties=True) == (("A", "B"), "no-ties")
    assert RATE.argilla_options(TaskView([1], scale=(0, 3)), default_scale=(1, 5), default_ties=True) == ((0, 1, 2, 3), "0-3")
    assert RANK.argilla_options(TaskView([1, 2, 3]), default_scale=(1, 5), default_ties=True) == (("response_1", "response_2", "response_3"), "3")
    with pytest.raises(ConfigError, match="cannot be shown in Argilla"):
        RATE.argilla_check_options("ds", tuple(range(1, 12)))
    # judge verdicts as suggestions
    assert COMPARE.argilla_suggestion({"choice": 12}, [11, 12], ("A", "B", "tie"), ()) == "B"
    assert COMPARE.argilla_suggestion({"choice": "tie"}, [11, 12], ("A", "B"), ()) is None
    assert RATE.argilla_suggestion({"rating": 7}, [1], (1, 2, 3, 4, 5), ()) is None
    fields = RANK.argilla_fields(3)
    assert RANK.argilla_suggestion({"ranking": [3, 1, 2]}, [1, 2, 3], fields, fields) == ["response_3", "response_1", "response_2"]
    assert RANK.argilla_suggestion({"ranking": [3, 1]}, [1, 2, 3], fields, fields) is None
    assert EDIT.argilla_suggestion({"text": "x"}, [1], (), ("response",)) is None
    assert EDIT.argilla_prefill(["teh cat"]) == "teh cat" and EDIT.argilla_prefill(["  "]) is None and RATE.argilla_prefill(["x"]) is None
    # responses back to answers
    assert COMPARE.argilla_answer({"preference": {"value": "A"}}, [11, 12], ()) == {"choice": 11}
    assert RANK.argilla_answer({"ranking": {"value": [{"rank": 2, "value": "response_1"}, {"rank": 1, "value": "response_3"},
                                                      {"rank": 3, "value": "response_2"}]}}, [1, 2, 3], fields) == {"ranking": [3, 1, 2]}
    assert RATE.argilla_answer({"rating": {"value": 4}}, [1], ("response",)) == {"rating": 4}
    assert EDIT.argilla_answer({"corrected": {"value": "fixed"}}, [1], ("response",)) == {"text": "fixed"}
    for kind, values, message in [
        (COMPARE, {}, "no value for question 'preference'"), (COMPARE, {"preference": {"value": "C"}}, "not one of A, B, tie"),
        (RANK, {"ranking": {"value": [{"rank": 1, "value": "response_1"}, {"rank": 1, "value": "response_2"}]}}, "same rank"),
        (RANK, {"ranking": {"value": ["response_9"]}}, "not responses of this record"),
    ]:
        with pytest.raises(InvalidAnswer, match=message):
            kind.argilla_answer(values, [1, 2, 3], fields)


@pytest.fixture
def offline_argilla(monkeypatch):
    """Argilla 2.8's settings objects take the SDK's default client when built (to save them later)
    and the default client signs in to a server; these tests build settings and save nothing, so a
    stand-in client that has no connection serves."""
    from types import SimpleNamespace

    import argilla as rg

    api = SimpleNamespace(questions=None, fields=None, metadata=None, vectors=None)
    monkeypatch.setattr(rg.Argilla, "_default_client", SimpleNamespace(api=api))


def test_the_argilla_package_maps_tasks_through_their_kind(offline_argilla) -> None:
    """Push groups, builds and suggests through the kind of each task (prefloop.feedback.argilla
    keeps no per-kind mapping of its own): dataset names, options, questions, suggestions, prefill."""
    import importlib

    push = importlib.import_module("prefloop.feedback.argilla.push")  # the package exports a function named push
    settings = importlib.import_module("prefloop.feedback.argilla.settings")

    ranked = ("response_1", "response_2", "response_3")
    for kind, gens, texts, scale, tie, judge, name, opts, qtype, hint in [
        (COMPARE, [11, 12], ["a", "b"], None, True, {"choice": 12}, "pf-round-2-compare", ("A", "B", "tie"), "label_selection", "B"),
        (COMPARE, [11, 12], ["a", "b"], None, False, {"choice": "tie"}, "pf-round-2-compare-no-ties", ("A", "B"), "label_selection", None),
        (RATE, [5], ["x"], (1, 5), True, {"rating": 4}, "pf-round-2-rate", (1, 2, 3, 4, 5), "rating", 4),
        (RATE, [5], ["x"], (0, 10), True, {"rating": 11}, "pf-round-2-rate-0-10", tuple(range(11)), "rating", None),
        (RANK, [1, 2, 3], ["a", "b", "c"], None, True, {"ranking": [2, 3, 1]}, "pf-round-2-rank-3", ranked, "ranking",
         ["response_2", "response_3", "response_1"]),
        (RANK, [1, 2, 3], ["a", "b", "c"], None, True, {"ranking": [2, 1]}, "pf-round-2-rank-3", ranked, "ranking", None),
        (EDIT, [5], ["teh cat"], None, True, None, "pf-round-2-edit", (), "text", "teh cat"),
        (EDIT, [5], ["  "], None, True, None, "pf-round-2-edit", (), "text", None),
    ]:
        row = push._TaskRow(1, kind.name, 2, 1, gens, texts, ["m"] * len(gens), None, "p", scale, tie,
                            {"value": judge, "confidence": 0.5, "agent": "j"} if judge else None)
        assert push._group_key(row, "pf", (1, 5), True) == (name, opts)
        spec = push._spec_for(name, [row], opts, None)
        assert spec.candidate_fields == kind.argilla_fields(len(gens)) == (
            {2: ("response_a", "response_b"), 3: ranked}[len(gens)] if kind in (COMPARE, RANK) else ("response",))
        assert spec.questions() == {kind.argilla_question: (qtype, opts or None), "comment": ("text", None)}
        main, comment = settings.build_settings(spec, "g").questions
        assert (main.name, comment.name) == (kind.argilla_question, "comment")
        assert settings._question_options(main) == (opts or None)
        hints = push._payload_for(row, spec).hints
        assert [(h.question, h.value) for h in hints] == ([(kind.argilla_question, hint)] if hint is not None else [])


# ------------------------------------------------------------------------------------------ a plug-in kind
class BestOfKind(TaskKind):
    """Pick the best of three or more outputs: a pair per other output, best chosen."""

    name = "bestof"
    outputs = (3, 8)
    answer_field = "best"
    makes_pairs = True

    def check(self, v, generation_ids, *, scale, allow_tie, where):
        if isinstance(v, bool) or v not in generation_ids:
            raise InvalidAnswer(f"{where}: best {v!r} is not one of the shown outputs")
        return int(v)

    def preferences(self, tasks, config):
        out = []
        for t in tasks:
            voters = t.voters()
            if voters:
                best = int(voters[0].value["best"])
                out += [Preference(t.prompt_id, t.round_number, best, g, voters[0].kind, "best-of", 1.0, 1,
                                   [voters[0].annotator], [t.task_id]) for g in t.generation_ids if g != best]
        return out


@pytest.fixture
def bestof():
    kind = register_kind(BestOfKind())
    yield kind
    unregister_kind(kind.name)


def test_a_registered_kind_goes_from_the_queue_to_an_exported_dataset(queue, bestof) -> None:
    from prefloop.feedback.bulk import add_tasks
    from prefloop.feedback.export import build_dpo_dataset
    from prefloop.feedback.importer import parse_task

    assert get_kind("bestof") is bestof and kind_names()[-1] == "bestof"
    line = {"prompt": "Which greeting is best?", "outputs": ["hi", "hello there!", "yo"], "kind": "bestof"}
    record = parse_task("tasks.jsonl:1", line, default_kind="compare", default_priority=0.0)  # prefloop queue add
    assert record.kind == "bestof"
    with pytest.raises(DataError, match="a bestof task needs 3–8 outputs, got 2"):
        parse_task("tasks.jsonl:2", {**line, "outputs": ["hi", "yo"]}, default_kind="compare", default_priority=0.0)
    assert add_tasks(queue, [record], source="tasks.jsonl") == 1  # the bulk path behind `prefloop queue add`
    with queue.store.session() as s:
        gens = queue.add_generations("Which farewell is best?", ["bye", "ciao"], session=s)
        with pytest.raises(QueueError, match="a bestof task needs 3–8 outputs, got 2"):
            queue.add_task("bestof", gens, session=s)
    compare = queue.add_comparison("Which is better?", ["a", "b"])
    ann = queue.ensure_annotator("ada")
    claimed = queue.claim(ann, kinds=["bestof"])
    assert claimed is not None and claimed.kind == "bestof" and len(claimed.candidates) == 3
    task = claimed.task_id
    ids = [c.generation_id for c in claimed.candidates]
    with pytest.raises(InvalidAnswer, match="a bestof answer needs the field 'best'"):
        queue.submit(ann, task, {"choice": ids[1]})
    with pytest.raises(InvalidAnswer, match="is not one of the shown outputs"):
        queue.submit(ann, task, {"best": 10_000})
    queue.submit(ann, task, {"best": ids[1]})
    assert queue.status().tasks_by_kind_status[("bestof", "complete")] == 1
    claimed = queue.claim(ann)
    queue.submit(ann, compare, {"choice": claimed.candidates[0].generation_id})
    ds = build_dpo_dataset(queue.store, min_confidence=0)
    rows = sorted((r["method"], r["chosen"][0]["content"], r["rejected"][0]["content"]) for r in ds)
    assert rows == [("best-of", "hello there!", "hi"), ("best-of", "hello there!", "yo"), ("majority", "a", "b")]
    unregister_kind("bestof")  # a stored task of a kind no longer loaded: export skips it, answers are refused
    assert [r["method"] for r in build_dpo_dataset(queue.store, min_confidence=0)] == ["majority"]
    with pytest.raises(QueueError, match="unknown task kind 'bestof'"):
        queue.record(ann, task, {"best": ids[0]})


# ------------------------------------------------------------------------------------------ no kind branches
#: Modules allowed to test kind names outside prefloop/kinds: none (every place asks the registry).
NOT_YET_CONVERTED: tuple[str, ...] = ()


def test_no_kind_name_branches_outside_the_registry() -> None:
    """What ``grep -rn 'kind == "' feedback judges training prefloop`` finds lies in prefloop/kinds."""
    found = []
    for top in ("feedback", "judges", "training", "prefloop"):
        for path in sorted((REPO / top).rglob("*")):
            rel = path.relative_to(REPO).as_posix()
            if not path.is_file() or "__pycache__" in rel or rel.startswith(("prefloop/kinds/", *NOT_YET_CONVERTED)):
                continue
            text = path.read_bytes().decode("utf-8", errors="replace")
            found += [f"{rel}:{n}: {line.strip()}" for n, line in enumerate(text.splitlines(), 1) if re.search(r'kind == "', line)]
    assert found == []


def test_the_registry_docstring_example_runs() -> None:
    """The "Adding a task kind" example in prefloop.kinds' docstring registers a working kind."""
    import textwrap

    import prefloop.kinds

    doc = prefloop.kinds.__doc__ or ""
    block = doc.split("register an instance::\n", 1)[1].split("\n\nThat is enough", 1)[0]
    scope: dict = {}
    exec(compile(textwrap.dedent(block), "prefloop.kinds example", "exec"), scope)  # noqa: S102 - our own docstring
    try:
        kind = get_kind("yesno")
        assert kind.validate({"ok": True}, [1]) == {"ok": True}
        with pytest.raises(InvalidAnswer, match="task 3: 'ok' must be true or false"):
            kind.validate({"ok": "yes"}, [1], where="task 3")
    finally:
        unregister_kind("yesno")
