"""Candidate generation on the tiny model, the backend choice, and the demo task's oracle."""

from __future__ import annotations

import json

import pytest

from prefloop.errors import ConfigError
from prefloop.training.config import GenerationSettings, ModelSettings


@pytest.mark.slow
def test_generate_n_per_prompt_with_sampling_recorded() -> None:
    from prefloop.training.generation import Policy, Sampling, generate, render_prompts

    policy = Policy(ModelSettings(source="tiny:llama-tiny", device="cpu"))
    g = GenerationSettings(candidates=3, max_new_tokens=8, temperature=1.0, batch_size=4, backend="transformers", seed=5)
    s = Sampling.from_settings(g)
    prompts = [[{"role": "user", "content": "Hi, I'm Ann. My order is late."}], [{"role": "user", "content": "Refund?"}]]
    out = generate(policy, prompts, s, batch_size=g.batch_size)
    assert [len(x) for x in out] == [3, 3]
    assert all(isinstance(t, str) for x in out for t in x)
    assert generate(policy, prompts, s, batch_size=g.batch_size) == out  # seeded
    assert len({t for x in out for t in x}) > 1  # sampled, not one answer repeated
    params = s.as_params()
    assert params == {"n": 3, "max_new_tokens": 8, "temperature": 1.0, "top_p": 0.95, "top_k": 50, "do_sample": True,
                      "seed": 5, "backend": "transformers"}
    greedy = Sampling.from_settings(g, temperature=0.0, n=2)
    twice = generate(policy, prompts[:1], greedy, batch_size=4)
    assert twice[0][0] == twice[0][1]  # greedy: the same answer
    # The chat template renders the prompt without a BOS and ends with the assistant header.
    tok, _ = policy.load()
    text = render_prompts(tok, prompts[:1])[0]
    assert text.startswith("<|im_start|>") and text.endswith("<|im_start|>assistant\n")


def test_backend_choice_without_a_gpu() -> None:
    import torch

    from prefloop.training.generation import choose_backend

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert choose_backend("auto") == "transformers"
    assert choose_backend("transformers") == "transformers"
    with pytest.raises(ConfigError, match="vllm"):
        choose_backend("vllm")


def test_support_desk_oracle_and_the_human_fix() -> None:
    from prefloop.training.demo import checks, data_path, fix_reply, support_desk_oracle

    meta = {"customer": "Maria", "keywords": ["order", "package"], "max_words": 40}
    perfect = "Hi Maria! Your order ships tomorrow, tracking is in your inbox. Anything else I can do for you?"
    assert support_desk_oracle(meta, [], perfect) == 1.0
    assert checks(meta, "Hello there, I can help. " * 10) == {
        "greets_by_name": False, "length": False, "ends_with_question": False, "on_topic": False}
    assert support_desk_oracle(meta, [], "Mariana, your order?") == 0.5  # a longer name is not Maria; too short
    assert support_desk_oracle(meta, [], "Sorry Maria, your package is delayed by the courier today. Shall I refund you?") == 1.0
    samples = [
        "",
        "The customer is frustrated because the app fails. The error message says so. What now? They can call.",
        "Hello, welcome. I'd be happy to help with your question today! " * 6,
        "Hi Maria, your package is on the way.",
        "Dear customer — unfortunately we can't help.",
    ]
    for text in samples:
        fixed = fix_reply(meta, text)
        assert support_desk_oracle(meta, [], fixed) == 1.0, fixed
    rows = [json.loads(line) for line in data_path().read_text().splitlines()]
    assert [r["split"] for r in rows].count("train") == 48 and [r["split"] for r in rows].count("eval") == 24
    names = [r["meta"]["customer"] for r in rows]
    assert len(set(names)) == len(names)  # eval customers never seen in training
    for r in rows:
        assert r["meta"]["customer"] in r["messages"][-1]["content"]


def test_an_unloadable_model_is_a_one_line_error(tmp_path) -> None:  # noqa: ANN001
    from prefloop.training.generation import Policy

    with pytest.raises(ConfigError, match="cannot load model") as err:
        Policy(ModelSettings(source=str(tmp_path / "no-such-model"), device="cpu")).load()
    assert "offline:smollm2-135m-instruct" in err.value.hint
