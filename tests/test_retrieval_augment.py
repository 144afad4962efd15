"""Placing passages into a prompt: template, placement, the token budget, and the rag: config."""

from __future__ import annotations

import pytest

from prefloop.config import parse_config
from prefloop.errors import ConfigError
from prefloop.retrieval.augment import augment, count_tokens, fit_passages, place
from prefloop.retrieval.config import DEFAULT_TEMPLATE
from prefloop.retrieval.retrievers import Passage

TEMPLATE = "Facts:\n{% for p in passages %}[{{ p.number }}] {{ p.text }}\n{% endfor %}"


def passage(i, text, title=None):
    return Passage(i, text, 1.0 / i, i, "bm25", "kb", f"doc-{i}", title, f"src-{i}", 0, 0, len(text))


P1 = passage(1, "Refunds are paid within 14 days.")  # 6 words
P2 = passage(2, "Shipping to Canada takes 5 to 7 business days.")  # 9 words
P3 = passage(3, " ".join(f"w{i}" for i in range(20)))
CHAT = [{"role": "system", "content": "You are a support agent for Acme."}, {"role": "user", "content": "Hi, I'm Maria. When is my refund paid?"}]


def test_passages_go_into_the_system_message_numbered():
    out = augment(CHAT, [P1, P2], TEMPLATE)
    assert out[0]["content"] == ("You are a support agent for Acme.\n\nFacts:\n[1] Refunds are paid within 14 days.\n"
                                 "[2] Shipping to Canada takes 5 to 7 business days.")
    assert out[1] == CHAT[1] and CHAT[0]["content"] == "You are a support agent for Acme."  # input not changed
    user_only = augment([CHAT[1]], [P1], TEMPLATE)
    assert user_only[0] == {"role": "system", "content": "Facts:\n[1] Refunds are paid within 14 days."}
    before_user = augment(CHAT, [P1], TEMPLATE, placement="user")
    assert before_user[0] == CHAT[0]
    assert before_user[1]["content"] == "Facts:\n[1] Refunds are paid within 14 days.\n\nHi, I'm Maria. When is my refund paid?"
    assert augment(CHAT, [], TEMPLATE) == CHAT  # nothing retrieved: the prompt as it was


def test_default_template_shows_titles():
    out = augment([CHAT[1]], [passage(1, "Paid in 14 days.", title="Refunds")])
    assert "[1] Refunds: Paid in 14 days." in out[0]["content"]
    assert out[0]["content"].startswith("Use these passages")


def test_budget_keeps_whole_passages_then_cuts_one_then_stops():
    # "Facts:" = 1 word; [1] + 6 words = 7 → 8 so far; [2] + 9 = 10 → 18; P3 gets what is left
    assert [p.number for p in fit_passages([P1, P2], TEMPLATE, max_context_tokens=18)] == [1, 2]
    assert [p.number for p in fit_passages([P1, P2], TEMPLATE, max_context_tokens=17)] == [1]  # a cut of P2 would keep 7 words (< MIN_UNITS): dropped
    placed = fit_passages([P1, P3, P2], TEMPLATE, max_context_tokens=8 + 11)
    assert [p.number for p in placed] == [1, 2]
    cut = placed[1]
    assert cut.truncated and cut.text == "w0 w1 w2 w3 w4 w5 w6 w7 w8 …" and cut.passage is P3
    aug = place(CHAT, [P1, P3, P2], TEMPLATE, max_context_tokens=19)
    assert aug.context_tokens <= 19 and "[2] w0" in aug.context and "Shipping" not in aug.context
    # a cut shorter than MIN_UNITS (8) is dropped
    assert [p.number for p in fit_passages([P1, P3], TEMPLATE, max_context_tokens=8 + 5)] == [1]
    assert fit_passages([P1], TEMPLATE, max_context_tokens=3) == []


def test_budget_counts_model_tokens_with_a_tokenizer():
    from transformers import AutoTokenizer

    from prefloop.retrieval.dense import packaged_minilm_dir

    tok = AutoTokenizer.from_pretrained(str(packaged_minilm_dir()))
    for budget in (12, 20, 40, 80):
        aug = place(CHAT, [P1, P2, P3], TEMPLATE, tokenizer=tok, max_context_tokens=budget)
        assert count_tokens(aug.context, tok) <= budget
    assert count_tokens("unbelievably", tok) > count_tokens("unbelievably", None) == 1


def test_rag_config_section():
    cfg = parse_config({"rag": {"enabled": True, "k": 3, "retriever": "hybrid", "chunking": {"size": 64, "overlap": 8}}})
    assert cfg.rag.enabled and cfg.rag.k == 3 and cfg.rag.chunking.size == 64 and cfg.rag.template == DEFAULT_TEMPLATE
    with pytest.raises(ConfigError, match="rag.template: .*template line 1"):
        parse_config({"rag": {"template": "{% for p in passages %}"}})
    with pytest.raises(ConfigError, match="unknown key 'rag.top_k'"):
        parse_config({"rag": {"top_k": 3}})
    with pytest.raises(ConfigError, match="rag.retriever"):
        parse_config({"rag": {"retriever": "faiss"}})


def test_template_is_sandboxed_and_passages_are_data():
    evil = passage(1, "{{ 7 * 7 }} {% raw %}")
    assert "{{ 7 * 7 }} {% raw %}" in augment([CHAT[1]], [evil], TEMPLATE)[0]["content"]
    with pytest.raises(Exception, match="unsafe|not safely|access"):
        augment([CHAT[1]], [P1], "{{ passages.__class__.__mro__[1].__subclasses__() }}")
