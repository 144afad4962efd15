"""Judge logic that needs no model: answer parsing, order debiasing, rule and callable judges,
panels, templates and the selection signals."""

from __future__ import annotations

import math

import pytest

from prefloop.errors import ConfigError
from prefloop.judges import build_judge, judges_from_config
from prefloop.judges.base import Oriented, PairwiseJudge
from prefloop.judges.cache import MemoryCache
from prefloop.judges.config import JudgesConfig, JudgeSpec, SelectionConfig
from prefloop.judges.llm import MalformedAnswer, parse_answer
from prefloop.judges.rules import CallableJudge
from prefloop.judges.selection import judge_priority, signals
from prefloop.judges.templates import JudgeTemplate

Q = [{"role": "user", "content": "Return the user as JSON."}]


@pytest.mark.parametrize(
    ("text", "expected"),
    [("A", ("A", None)), ("b", ("B", None)), ("**A**", ("A", None)), ("A.", ("A", None)), ('"B"', ("B", None)),
     ("Answer: B", ("B", None)), ("Better answer: A\nReason: shorter", ("A", "shorter")), ("(A)\n\nIt is right.", ("A", "It is right."))],
)
def test_parse_answer_accepts_one_clear_option(text: str, expected: tuple) -> None:
    assert parse_answer(text, ("A", "B")) == expected


@pytest.mark.parametrize("text", ["", "   ", "A or B", "I think A", "AB", "C", "Both are fine.\nA", None])
def test_parse_answer_refuses_anything_else(text: str | None) -> None:
    with pytest.raises(MalformedAnswer):
        parse_answer(text, ("A", "B"))


def test_parse_answer_scores() -> None:
    assert parse_answer("Score: 4", [str(d) for d in range(1, 6)]) == ("4", None)
    with pytest.raises(MalformedAnswer):
        parse_answer("4/5", [str(d) for d in range(1, 6)])
    with pytest.raises(MalformedAnswer):
        parse_answer("7", [str(d) for d in range(1, 6)])


class Scripted(PairwiseJudge):
    """P(first shown better) from a table keyed by (first, second): the debiasing under test."""

    name = "scripted"

    def __init__(self, table: dict[tuple[str, str], float | None], tie_margin: float = 0.05) -> None:
        self.table = table
        self.tie_margin = tie_margin
        self.asked: list[tuple[str, str]] = []

    @property
    def identity(self) -> dict:
        return {"name": self.name, "model": "table", "template_hash": "0"}

    def _judge_oriented(self, prompts, first, second, refs):  # noqa: ANN001, ANN202
        self.asked += list(zip(first, second, strict=True))
        return [Oriented(self.table[(f, s)], prompt_tokens=10) if self.table[(f, s)] is not None else Oriented(None, error="boom")
                for f, s in zip(first, second, strict=True)]


def test_orders_are_combined_and_flips_become_ties() -> None:
    judge = Scripted({("x", "y"): 0.9, ("y", "x"): 0.2, ("p", "q"): 0.8, ("q", "p"): 0.7, ("m", "n"): 0.52, ("n", "m"): 0.49,
                      ("e", "f"): 0.9, ("f", "e"): None})
    good, flip, close, failed = judge.compare([Q] * 4, ["x", "p", "m", "e"], ["y", "q", "n", "f"])
    assert set(judge.asked) == set(judge.table)  # every pair in both orders
    assert good.winner == "A" and good.consistent and good.prob_a == pytest.approx(0.85) and good.orders == pytest.approx((0.9, 0.8))
    assert good.prompt_tokens == 20
    # p wins when shown first, q wins when shown first: position bias, not preference.
    assert flip.winner == "tie" and not flip.consistent and flip.prob_a == pytest.approx(0.55) and flip.confidence == 0.0
    assert close.winner == "tie" and close.consistent  # |0.515 − 0.5| within the tie margin
    assert not failed.ok and failed.winner is None and "B first: boom" in failed.error and math.isnan(failed.prob_a)
    assert judge.judge(["q"] * 4, [["x", "y"], ["p", "q"], ["m", "n"], ["e", "f"]]) == [0, 0, 0, -1]


def test_a_non_finite_probability_is_a_failed_verdict_not_a_number_to_store() -> None:
    from prefloop.judges.llm import LLMJudge

    judge = Scripted({("g", "h"): math.nan, ("h", "g"): 0.3, ("i", "j"): 0.7, ("j", "i"): math.inf})
    nan_first, inf_second = judge.compare([Q] * 2, ["g", "i"], ["h", "j"])
    assert not nan_first.ok and nan_first.winner is None and "A first: the model's probability is nan" in nan_first.error
    assert not inf_second.ok and "B first: the model's probability is inf" in inf_second.error
    pointwise = build_judge(JudgeSpec(name="p", backend="openai", base_url="http://127.0.0.1:9/v1", model="m"))
    assert isinstance(pointwise, LLMJudge)
    v = pointwise.pointwise_from_probs({"1": math.nan, "5": math.nan})
    assert not v.ok and v.score is None and "not numbers" in v.error
    assert pointwise.pointwise_from_probs({"1": 0.25, "5": 0.75}).score == pytest.approx(4.0)


def test_rule_judge_checks_and_scores() -> None:
    judge = build_judge({
        "name": "json", "backend": "rules", "scale": [1, 5],
        "rules": [
            {"type": "json_schema", "schema": {"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}}}},
            {"type": "length", "max": 40},
            {"type": "keywords", "keywords": ["name"], "mode": "all"},
            {"type": "regex", "pattern": r"password", "negate": True, "weight": 2},
        ],
    })
    outs = ['{"name": "Ada"}', '```json\n{"name": "Ada", "password": "x"}\n```', '{"name": 3}', "not json at all, but a long sentence with a name"]
    s = judge.score([Q] * 4, outs)
    # fenced JSON with a password: schema and keyword pass (2 of 5), too long, forbidden word present
    assert [v.score for v in s] == [5.0, pytest.approx(1 + 4 * 2 / 5), pytest.approx(1 + 4 * 4 / 5), pytest.approx(1 + 4 * 3 / 5)]
    assert "JSON schema: name: 3 is not of type 'string'" in s[2].rationale
    assert "not JSON" in s[3].rationale and "length 48 chars" in s[3].rationale
    v = judge.compare([Q], [outs[2]], [outs[0]])[0]
    assert v.winner == "B" and v.consistent and v.prob_a == pytest.approx(0.5 + (s[2].score - 5) / 8)


def test_json_rule_fails_an_integer_too_long_for_python() -> None:
    """Python refuses to parse an integer of over 4300 digits with a plain ValueError (no ``msg``
    or ``lineno``); the rule fails the output like any other non-JSON (it raised AttributeError)."""
    judge = build_judge({"name": "json", "backend": "rules", "rules": [{"type": "json_schema", "schema": {"type": "integer"}}]})
    v = judge.score([Q], ["7" * 5000])[0]
    assert v.ok and v.score == 1.0 and "not JSON (Exceeds the limit" in v.rationale


def test_callable_judge_failures_are_verdict_failures() -> None:
    def check(prompt, output, reference):  # noqa: ANN001, ANN202
        if output == "raise":
            raise RuntimeError("bad input")
        if output == "big":
            return 9
        if output == "pair":
            return 4, "fine"
        return output == reference

    judge = CallableJudge("fn", check, scale=(1, 5))
    got = judge.score([Q] * 5, ["raise", "big", "pair", "42", "41"], references=[None, None, None, "42", "42"])
    assert "raised RuntimeError: bad input" in got[0].error and got[0].score is None
    assert "returned 9: expected a number in 1–5" in got[1].error
    assert (got[2].score, got[2].rationale) == (4.0, "fine")
    assert got[3].score == 5.0 and got[4].score == 1.0
    assert judge.identity["model"].endswith("check")


def test_the_shipped_exact_match_function_judges_against_the_reference() -> None:
    judge = build_judge({"name": "exact", "backend": "python", "function": "prefloop.judges.rules:exact_match"})
    got = judge.score([Q] * 3, [" Paris ", "Lyon", "Paris"], references=["paris", "Paris", None])
    assert (got[0].score, got[0].rationale) == (5.0, "matches the reference")
    assert (got[1].score, got[1].rationale) == (1.0, "differs from the reference")
    assert got[2].score is None and "no reference answer" in got[2].error


def test_python_backend_imports_the_function(tmp_path, monkeypatch) -> None:  # noqa: ANN001
    (tmp_path / "my_checks.py").write_text("def is_abs(prompt, output, reference):\n    return output.startswith('/')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    judge = build_judge({"name": "py", "backend": "python", "function": "my_checks:is_abs", "scale": [0, 1]})
    v = judge.score([Q, Q], ["/abs", "rel"])
    assert [x.score for x in v] == [1.0, 0.0]
    assert judge.identity["model"] == "my_checks:is_abs"
    with pytest.raises(ConfigError, match="cannot import 'nope.mod:fn'"):
        build_judge({"name": "py", "backend": "python", "function": "nope.mod:fn"})


def test_panel_majority_mean_disagreement_and_member_failures() -> None:
    cfg = JudgesConfig(panel=[
        JudgeSpec(name="short", backend="rules", rules=[{"type": "length", "max": 5}]),
        JudgeSpec(name="has-yes", backend="rules", rules=[{"type": "keywords", "keywords": ["yes"]}]),
        JudgeSpec(name="always", backend="rules", rules=[{"type": "regex", "pattern": "."}]),
        JudgeSpec(name="vote", backend="panel", members=["short", "has-yes", "always"]),
        JudgeSpec(name="avg", backend="panel", members=["short", "has-yes"], combine="mean"),
    ])
    judges = judges_from_config(cfg)
    # "yes!!!!" is long but says yes; "ok" is short without yes; "always" passes both → a tie.
    v = judges["vote"].compare([Q], ["yes!!!!"], ["ok"])[0]
    assert v.members["short"]["winner"] == "B" and v.members["has-yes"]["winner"] == "A" and v.members["always"]["winner"] == "tie"
    assert v.winner == "tie" and v.disagreement == pytest.approx(2 / 3)
    m = judges["avg"].compare([Q], ["yes!!!!"], ["ok"])[0]
    assert m.winner == "tie" and m.prob_a == pytest.approx(0.5) and m.disagreement == pytest.approx(1.0)
    agree = judges["avg"].compare([Q], ["yes"], ["nope, too long"])[0]
    assert agree.winner == "A" and agree.disagreement == 0.0
    s = judges["avg"].score([Q], ["yes"])[0]
    assert s.score == 5.0 and s.disagreement == 0.0 and set(s.members) == {"short", "has-yes"}


def test_panel_leaves_out_failed_members() -> None:
    from prefloop.judges.panel import PanelJudge

    ok = CallableJudge("ok", lambda p, o, r: len(o) < 4)
    broken = CallableJudge("broken", lambda p, o, r: 1 / 0)
    v = PanelJudge("p", [ok, broken]).compare([Q], ["abc"], ["abcdef"])[0]
    assert v.ok and v.winner == "A" and v.members["broken"]["error"].startswith("B: ") is False
    assert "ZeroDivisionError" in v.members["broken"]["error"]
    dead = PanelJudge("p2", [broken, CallableJudge("b2", lambda p, o, r: 1 / 0)]).compare([Q], ["a"], ["b"])[0]
    assert not dead.ok and "broken:" in dead.error and "b2:" in dead.error


def test_cache_keys_follow_identity() -> None:
    cache = MemoryCache()
    one = build_judge({"name": "r", "backend": "rules", "rules": [{"type": "length", "max": 3}]}, cache=cache)
    one.score([Q], ["abc"])
    assert len(cache) == 1
    assert one.score([Q], ["abc"])[0].cached
    changed = build_judge({"name": "r", "backend": "rules", "rules": [{"type": "length", "max": 4}]}, cache=cache)
    assert not changed.score([Q], ["abc"])[0].cached  # another rule set is another judge


def test_templates_render_rubric_reference_and_examples(tmp_path) -> None:  # noqa: ANN001
    spec = JudgeSpec(name="t", model="tiny:llama-tiny", rubric="Prefer valid JSON.",
                     examples=[{"prompt": "P1", "a": "{}", "b": "x", "answer": "A", "reason": "valid"},
                               {"prompt": "P2", "output": "{}", "score": 5}])
    from prefloop.judges.local import LocalJudge

    judge = LocalJudge(spec)
    msgs = judge.pairwise_messages(Q, "out-1", "out-2", "REF")
    user = msgs[-1]["content"]
    assert msgs[0]["role"] == "system"
    assert user.startswith("Prefer valid JSON.") and "Better answer: A\nReason: valid" in user
    assert user.index("[Answer A]\n{}") < user.index("Now the case to judge.") < user.index("[Answer A]\nout-1")
    assert "[Reference answer (correct, for comparison)]\nREF" in user and user.rstrip().endswith("and nothing else.")
    point = judge.pointwise_messages(Q, "out", None)[-1]["content"]
    assert "from 1 (worst) to 5 (best)" in point and "Reference" not in point
    assert "[Answer]\n{}\n[End of answer]\n\nScore: 5" in point and "P1" not in point and "P2" not in user
    # A project's own template file, relative to the project directory.
    (tmp_path / "mine.jinja").write_text("Q: {{ request }} | {{ output_a }} vs {{ output_b }}")
    own = LocalJudge(JudgeSpec(name="o", pairwise_template="mine.jinja", system_prompt=None), base_dir=tmp_path)
    assert own.pairwise_messages(Q, "1", "2") == [{"role": "user", "content": "Q: Return the user as JSON. | 1 vs 2"}]
    assert own.template_hash != judge.template_hash
    with pytest.raises(ConfigError, match="unknown judge template 'nope'"):
        JudgeTemplate.load("nope")
    (tmp_path / "bad.jinja").write_text("{{ undefined_thing }}")
    bad = LocalJudge(JudgeSpec(name="b", pairwise_template="bad.jinja"), base_dir=tmp_path)
    with pytest.raises(ConfigError, match="'undefined_thing' is undefined"):
        bad.pairwise_messages(Q, "1", "2")


def test_selection_signals() -> None:
    sub = lambda choice, p, consistent=True, **m: {  # noqa: E731
        "status": "submitted", "value": {"choice": choice}, "meta": {"prob_a": p, "consistent": consistent, **m}, "confidence": None}
    agree = signals("compare", [sub(1, 0.95), sub(1, 0.9)], None)
    split = signals("compare", [sub(1, 0.9), sub(2, 0.2), sub("tie", 0.55, consistent=False)], None)
    failed = signals("compare", [sub(1, 0.9), {"status": "skipped", "value": {}, "meta": {"error": "HTTP 500"}, "confidence": None}], None)
    assert agree["disagreement"] == 0 and agree["inconsistency"] == 0 and agree["low_margin"] == pytest.approx(0.15)
    assert split["disagreement"] == pytest.approx(2 / 3) and split["inconsistency"] == pytest.approx(1 / 3)
    assert failed["failure"] == 0.5
    w = SelectionConfig()
    assert judge_priority(split, w) > judge_priority(failed, w) > judge_priority(agree, w)
    rate = signals("rate", [
        {"status": "submitted", "value": {"rating": 1}, "meta": {"score": 1.0}, "confidence": 0.9},
        {"status": "submitted", "value": {"rating": 5}, "meta": {"score": 5.0}, "confidence": 0.7},
    ], (1, 5))
    assert rate["disagreement"] == pytest.approx(1.0) and rate["low_margin"] == pytest.approx(0.2)
    panel = signals("compare", [sub(1, 0.6, members={"a": {"consistent": True}, "b": {"consistent": False}}, disagreement=0.5)], None)
    assert panel["inconsistency"] == 0.5 and panel["disagreement"] == 0.5
