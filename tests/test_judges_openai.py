"""The OpenAI-compatible judge against a real chat-completions server on 127.0.0.1."""

from __future__ import annotations

import math
import threading

import pytest
from chat_server import ChatServer, Reply, completion, error, prefer, shown_answers

from prefloop.errors import ConfigError, PrefloopError
from prefloop.judges import build_judge

KEY = "sk-test-0123456789abcdef"
PROMPTS = [[{"role": "user", "content": f"What is {i} + {i}?"}] for i in range(3)]
GOOD = [f"The answer is {2 * i}, which is correct." for i in range(3)]
BAD = [f"Maybe {2 * i + 1}." for i in range(3)]


def make(server: ChatServer, **kw):  # noqa: ANN201
    spec = {"name": "remote", "backend": "openai", "base_url": server.base_url, "model": "test-judge",
            "api_key_env": "PREFLOOP_TEST_JUDGE_KEY", "backoff_s": 0.01, "timeout_s": 5, **kw}
    return build_judge(spec)


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PREFLOOP_TEST_JUDGE_KEY", KEY)


def test_logprobs_give_debiased_probability_tokens_and_cost() -> None:
    with ChatServer(prefer("correct", confidence=0.9)) as srv:
        judge = make(srv, price_prompt_per_1k=0.5, price_completion_per_1k=2.0)
        # The correct answer is A in two pairs and B in the third.
        a = [GOOD[0], BAD[1], GOOD[2]]
        b = [BAD[0], GOOD[1], BAD[2]]
        verdicts = judge.compare(PROMPTS, a, b)
    assert [v.winner for v in verdicts] == ["A", "B", "A"]
    for v in verdicts:
        assert v.ok and v.consistent
        assert math.isclose(v.confidence, 0.8, abs_tol=1e-9)  # |2·0.9 − 1|
        assert v.prompt_tokens == 200 and v.completion_tokens == 2  # two orders, 100 + 1 each
        assert math.isclose(v.cost, 200 / 1000 * 0.5 + 2 / 1000 * 2.0)
    assert math.isclose(verdicts[0].prob_a, 0.9) and math.isclose(verdicts[1].prob_a, 0.1)
    assert len(srv.requests) == 6  # both orders of three pairs
    # Both orders were really asked: each output appeared once as A and once as B.
    seen = {(s["A"], s["B"]) for s in map(shown_answers, srv.requests)}
    assert (GOOD[0], BAD[0]) in seen and (BAD[0], GOOD[0]) in seen
    body = srv.requests[0]
    assert body["model"] == "test-judge" and body["logprobs"] is True and body["top_logprobs"] == 10 and body["temperature"] == 0
    assert all(h["authorization"] == f"Bearer {KEY}" for h in srv.headers)
    assert KEY not in str(judge.identity)


def test_position_biased_answers_become_inconsistent_ties() -> None:
    with ChatServer(lambda body, n: completion("A", top={"A": math.log(0.8), "B": math.log(0.2)})) as srv:
        v = make(srv).compare(PROMPTS[:1], GOOD[:1], BAD[:1])[0]
    assert v.ok and v.winner == "tie" and v.consistent is False and v.confidence == 0.0
    assert v.orders == pytest.approx((0.8, 0.2))
    assert v.prob_a == pytest.approx(0.5)


def test_429_then_success_is_retried_with_backoff() -> None:
    def respond(body: dict, n: int) -> Reply:
        return error(429, "slow down", {"Retry-After": "0.05"}) if n <= 2 else prefer("correct")(body, n)

    with ChatServer(respond) as srv:
        judge = make(srv, concurrency=1)  # backoff_s 0.01: a wait of 0.05 can only come from Retry-After
        waits: list[float] = []
        judge.sleep = waits.append
        v = judge.compare(PROMPTS[:1], GOOD[:1], BAD[:1])[0]
    assert v.ok and v.winner == "A" and v.consistent
    assert len(srv.requests) == 4  # two rate-limited, then one per order
    assert waits == [0.05, 0.05]  # waited Retry-After twice


def test_5xx_until_retries_run_out_is_a_recorded_failure() -> None:
    with ChatServer(lambda body, n: error(503, "overloaded")) as srv:
        v = make(srv, max_retries=2, concurrency=1).compare(PROMPTS[:1], GOOD[:1], BAD[:1])[0]
    assert not v.ok and v.winner is None and math.isnan(v.prob_a)
    assert "HTTP 503: overloaded" in v.error and "gave up after 3 attempts" in v.error
    assert len(srv.requests) == 6  # 3 attempts × 2 orders


def test_timeout_is_a_failure_with_its_reason() -> None:
    held = threading.Event()  # the server answers only once the judge has given up (or after 60 s)

    def slow(body: dict, n: int) -> Reply:
        held.wait(60)
        return completion("A")

    with ChatServer(slow) as srv:
        try:
            v = make(srv, timeout_s=0.3, max_retries=1).compare(PROMPTS[:1], GOOD[:1], BAD[:1])[0]
        finally:
            held.set()
    # a judge that waited for the answers would have got them, and a verdict
    assert not v.ok and "timed out after 0.3s" in v.error and "gave up after 2 attempts" in v.error


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        (Reply(body="{not json"), "malformed response: not JSON"),
        (Reply(body={"object": "chat.completion", "choices": []}), "malformed response: no choices[0].message"),
        (completion("I think A is better"), "malformed answer 'I think A is better'"),
        (completion("", completion_tokens=0), "empty answer"),
        (completion("", refusal="I can't help with that."), "refused: I can't help with that."),
        (completion("A", finish_reason="content_filter"), "refused: the server's content filter"),
    ],
)
def test_bad_answers_are_failures_never_default_verdicts(reply: Reply, reason: str) -> None:
    with ChatServer(lambda body, n: reply) as srv:
        judge = make(srv, max_retries=3)
        v = judge.compare(PROMPTS[:1], GOOD[:1], BAD[:1])[0]
        s = judge.score(PROMPTS[:1], GOOD[:1])[0]
    assert not v.ok and v.winner is None and reason in v.error
    assert not s.ok and s.score is None and reason in s.error
    assert len(srv.requests) == 3  # a 200 with a bad answer is not retried


def test_missing_api_key_fails_before_any_request(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PREFLOOP_TEST_JUDGE_KEY")
    with ChatServer(prefer("correct")) as srv:
        judge = make(srv)
        with pytest.raises(ConfigError) as info:
            judge.compare(PROMPTS[:1], GOOD[:1], BAD[:1])
        with pytest.raises(PrefloopError):
            judge.check()
    assert "PREFLOOP_TEST_JUDGE_KEY" in info.value.message and "export PREFLOOP_TEST_JUDGE_KEY" in info.value.hint
    assert srv.requests == []


def test_keyless_endpoint_sends_no_authorization(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PREFLOOP_TEST_JUDGE_KEY")
    with ChatServer(prefer("correct")) as srv:
        v = make(srv, api_key_env=None).compare(PROMPTS[:1], GOOD[:1], BAD[:1])[0]
    assert v.ok and v.winner == "A"
    assert all("authorization" not in h for h in srv.headers)


def test_server_without_logprobs_gets_strictly_parsed_answers() -> None:
    def respond(body: dict, n: int) -> Reply:
        if body.get("logprobs"):
            return error(400, "logprobs is not supported by this model")
        pick = "B" if "correct" in shown_answers(body)["B"] else "A"
        return completion(f"**{pick}**\nBecause it is correct.")

    with ChatServer(respond) as srv:
        judge = make(srv, rationale=True, concurrency=1)
        v = judge.compare(PROMPTS[:1], BAD[:1], GOOD[:1])[0]
        judge.compare(PROMPTS[1:2], BAD[1:2], GOOD[1:2])
    assert v.ok and v.winner == "B" and v.prob_a == 0.0 and v.consistent
    assert v.rationale == "Because it is correct."
    # The refusal of the parameter was learnt once: later requests do not ask for log-probs.
    assert [bool(r.get("logprobs")) for r in srv.requests] == [True, False, False, False, False]


def test_concurrency_is_bounded() -> None:
    together = threading.Barrier(3, timeout=60)  # each answer waits until three requests are in flight

    def slow(body: dict, n: int) -> Reply:
        together.wait()
        return prefer("correct")(body, n)

    with ChatServer(slow) as srv:
        prompts = [[{"role": "user", "content": f"q{i}"}] for i in range(6)]
        verdicts = make(srv, concurrency=3).compare(prompts, ["correct"] * 6, ["wrong"] * 6)
    assert all(v.winner == "A" for v in verdicts)
    assert srv.max_in_flight == 3  # used, never exceeded


def test_pointwise_expected_score_from_logprobs() -> None:
    top = {"4": math.log(0.6), "5": math.log(0.3), "3": math.log(0.1)}
    with ChatServer(lambda body, n: completion("4", top=top, prompt_tokens=50)) as srv:
        v = make(srv, scale=[1, 5], price_prompt_per_1k=1.0).score(PROMPTS[:1], GOOD[:1])[0]
    assert v.ok and v.score == pytest.approx(0.6 * 4 + 0.3 * 5 + 0.1 * 3, rel=1e-3)
    assert v.confidence == pytest.approx(0.6, rel=1e-3)
    assert v.cost == pytest.approx(0.05)
    assert "1 (worst) to 5 (best)" in srv.requests[0]["messages"][-1]["content"]


def test_full_top_list_bounds_missing_options() -> None:
    # top_logprobs=2 requested and two entries returned: the list is truncated, so the missing
    # answer B is given the smallest listed log-prob rather than zero.
    top = {"A": math.log(0.5), "Sure": math.log(0.25)}
    with ChatServer(lambda body, n: completion("A", top=top)) as srv:
        v = make(srv, top_logprobs=2).compare(PROMPTS[:1], GOOD[:1], BAD[:1])[0]
    assert v.orders == pytest.approx((0.5 / 0.75, 1 - 0.5 / 0.75))
