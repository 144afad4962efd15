"""The local transformers judge on a tiny random-init Llama: batching, position swap, caching.

The tiny model's verdicts are arbitrary but deterministic, which is what these checks need.
"""

from __future__ import annotations

import math

import pytest

from prefloop.judges import build_judge
from prefloop.judges.base import PairwiseVerdict
from prefloop.judges.cache import MemoryCache
from prefloop.judges.llm import normalise

TINY = "tiny:llama-tiny"
PROMPTS = [[{"role": "user", "content": f"Name a colour that rhymes with {w}."}] for w in ("bed", "bellow", "bean", "fight", "clue")]
A = ["Red.", "Yellow, like a lemon.", "Green.", "White!", "Blue, of course."]
B = ["I do not know.", "Purple", "Maybe orange or something else entirely.", "Black.", "Grey"]


@pytest.fixture(scope="module")
def judge():  # noqa: ANN201
    return build_judge({"name": "tiny", "backend": "local", "model": TINY, "batch_size": 3})


def test_batched_verdicts_equal_one_by_one(judge) -> None:  # noqa: ANN001
    batched = judge.compare(PROMPTS, A, B)
    single = [judge.compare([p], [a], [b])[0] for p, a, b in zip(PROMPTS, A, B, strict=True)]
    for x, y in zip(batched, single, strict=True):
        assert x.ok and y.ok
        assert (x.winner, x.consistent) == (y.winner, y.consistent)
        assert x.prob_a == pytest.approx(y.prob_a, abs=1e-5)
        assert x.orders == pytest.approx(y.orders, abs=1e-5)
        assert x.prompt_tokens == y.prompt_tokens > 0
    # Without the shared-prefix cache (plain right-padded batches) the verdicts are the same too.
    plain = build_judge({"name": "plain", "backend": "local", "model": TINY, "batch_size": 4, "share_prefix": False})
    for x, y in zip(plain.compare(PROMPTS, A, B), batched, strict=True):
        assert x.winner == y.winner and x.prob_a == pytest.approx(y.prob_a, abs=1e-5)
    scores = judge.score(PROMPTS, A)
    one = [judge.score([p], [a])[0] for p, a in zip(PROMPTS, A, strict=True)]
    for x, y in zip(scores, one, strict=True):
        assert x.score == pytest.approx(y.score, abs=1e-5) and x.confidence == pytest.approx(y.confidence, abs=1e-5)
        assert 1 <= x.score <= 5 and set(x.distribution) == {"1", "2", "3", "4", "5"}
        assert sum(x.distribution.values()) == pytest.approx(1.0)


def test_both_orders_are_judged_and_averaged(judge) -> None:  # noqa: ANN001
    """P(A) = mean(P(A | A shown first), 1 − P(B | B shown first)), each from its own prompt."""
    v = judge.compare(PROMPTS[:1], A[:1], B[:1])[0]
    ab = judge.encode(judge.pairwise_messages(PROMPTS[0], A[0], B[0]))
    ba = judge.encode(judge.pairwise_messages(PROMPTS[0], B[0], A[0]))
    assert ab != ba
    lps, _ = judge.option_logprobs([ab, ba], ("A", "B"))
    p_ab = normalise(dict(zip("AB", lps[0], strict=True)))["A"]
    p_ba = normalise(dict(zip("AB", lps[1], strict=True)))["A"]
    assert v.orders == pytest.approx((p_ab, 1 - p_ba), abs=1e-5)
    assert v.prob_a == pytest.approx((p_ab + 1 - p_ba) / 2, abs=1e-5)
    assert v.consistent == ((p_ab > 0.5) == (1 - p_ba > 0.5))
    if not v.consistent:
        assert v.winner == "tie" and v.confidence == 0.0


def test_answer_tokens_are_distinct_first_tokens(judge) -> None:  # noqa: ANN001
    ids = judge.option_token_ids(("A", "B"))
    assert ids[0] and ids[1] and not set(ids[0]) & set(ids[1])
    digits = judge.option_token_ids(("1", "2", "3"))
    # " 1" starts with a bare-space token shared by every digit: only unshared first tokens count.
    assert all(len(d) == 1 for d in digits) and len({d[0] for d in digits}) == 3


def test_cache_means_no_second_model_call(judge) -> None:  # noqa: ANN001
    cache = MemoryCache()
    judge.cache = cache
    try:
        first = judge.compare(PROMPTS[:3], A[:3], B[:3])
        calls = judge.model_calls
        again = judge.compare(PROMPTS[:3], A[:3], B[:3])
        assert judge.model_calls == calls  # nothing ran
        assert all(v.cached for v in again) and not any(v.cached for v in first)
        assert [v.to_dict() for v in again] == [v.to_dict() for v in first]
        # A new pair in the same call: only it reaches the model.
        mixed = judge.compare(PROMPTS[:4], A[:4], B[:4])
        assert [v.cached for v in mixed] == [True, True, True, False]
        assert judge.model_calls > calls
        assert len(cache) == 4
    finally:
        judge.cache = None


def test_too_long_input_is_a_failure_not_a_truncation() -> None:
    judge = build_judge({"name": "short", "backend": "local", "model": TINY, "max_length": 64})
    v = judge.compare(PROMPTS[:1], A[:1], B[:1])[0]
    assert not v.ok and "over max_length 64" in v.error and v.winner is None
    s = judge.score(PROMPTS[:1], A[:1])[0]
    assert not s.ok and "over max_length 64" in s.error


def test_trl_shaped_judge_returns_indices(judge) -> None:  # noqa: ANN001
    prompts = [p[0]["content"] for p in PROMPTS[:3]]
    got = judge.judge(prompts, [[a, b] for a, b in zip(A[:3], B[:3], strict=True)])
    verdicts = judge.compare(PROMPTS[:3], A[:3], B[:3])
    expect = [0 if v.winner == "A" or (v.winner == "tie" and v.prob_a >= 0.5) else 1 for v in verdicts]
    assert got == expect
    with pytest.raises(ValueError, match="exactly two"):
        judge.judge(prompts[:1], [["only one"]])


def test_rationale_is_generated_after_the_answer() -> None:
    judge = build_judge({"name": "why", "backend": "local", "model": TINY, "rationale": True, "max_rationale_tokens": 5})
    v = judge.compare(PROMPTS[:2], A[:2], B[:2])
    assert all(x.ok and 0 < x.completion_tokens <= 5 for x in v)
    assert all(x.rationale is None or isinstance(x.rationale, str) for x in v)


def test_a_model_with_nan_logits_fails_its_scores_even_with_rationales() -> None:
    """NaN probabilities are a failed verdict; the rationale step skips it (it read the failed
    verdict's missing distribution and raised AttributeError)."""
    import copy

    from prefloop.judges.config import JudgeSpec
    from prefloop.judges.local import LocalJudge, load_judge_model

    tok, model = load_judge_model(TINY)
    broken = copy.deepcopy(model)
    for p in broken.parameters():
        p.data.fill_(math.nan)
    spec = JudgeSpec.model_validate({"name": "nan", "backend": "local", "model": TINY, "rationale": True, "max_rationale_tokens": 3})
    v = LocalJudge(spec, tokenizer=tok, model=broken).score(PROMPTS[:2], A[:2])
    assert [x.ok for x in v] == [False, False] and all("not numbers" in x.error for x in v)


def test_verdict_roundtrip() -> None:
    v = PairwiseVerdict("A", 0.7, True, "r", 10, 1, 0.01, 0.2, orders=(0.8, 0.6))
    w = PairwiseVerdict.from_dict(v.to_dict())
    assert w == v and math.isclose(w.confidence, 0.4)
